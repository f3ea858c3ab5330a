"""Word error rate of a QAT model executed on memristor chips: one chip per programming run
(seed), mean and standard deviation over runs, ADC clipping per layer."""

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mho.data.manifest import Utterance
from mho.decoding.decoders import Decoder
from mho.errors import MhoError
from mho.exporter.metadata import OnnxMetadata
from mho.runtime.speech import Recognizer, SpeechSession
from mho.simulator.config import SimulatorConfig
from mho.simulator.coverage import ParameterPlacement, parameter_placements
from mho.simulator.mapping import MappingReport, load_chip, map_to_crossbars, save_chip
from mho.simulator.stats import clip_fractions, reset_clip_stats
from mho.workflows.evaluate import evaluate


@dataclass(frozen=True)
class MemristorResult:
    model: str
    data: str
    decoder: str
    wer: float  # percent, mean over programming runs
    wer_std: float  # sample standard deviation over runs (0 for one run)
    cer: float  # percent, mean over runs
    runs: list[float]  # WER of each run
    seeds: list[int]  # programming seed of each run
    clipping: dict[str, float]  # layer -> fraction of ADC conversions clipped, mean over runs
    utterances: int
    program_seconds: float  # total time spent programming chips
    runtime: str = "torch-memristor"


def evaluate_on_chips(
    model: torch.nn.Module,
    metadata: OnnxMetadata,
    utterances: list[Utterance],
    *,
    data_name: str,
    decoder: Decoder,
    decoder_name: str,
    config: SimulatorConfig,
    seed: int,
    runs: int,
    progress: bool = True,
    chip: Path | None = None,
    save_chip_to: Path | None = None,
) -> MemristorResult:
    """``model`` (a QAT speech model described by ``metadata``, see
    mho.exporter.onnx.speech_metadata): program ``runs`` chips (seeds seed, seed+1, ...) and
    score each on ``utterances``; or score the saved ``chip`` read with ``config``.
    ``save_chip_to``: keep the (one) chip."""
    if (chip is not None or save_chip_to is not None) and runs != 1:
        raise MhoError("a saved chip is one programming run: use --runs 1 with it")
    wers, cers, clippings, program_seconds = [], [], [], 0.0
    seeds = [seed + run for run in range(runs)]
    for index, run_seed in enumerate(seeds):
        if chip is not None:
            simulated, report = load_chip(model, chip, config, progress=progress)
            seeds[index] = report.seed
        else:
            simulated, report = map_to_crossbars(model, config, run_seed, progress=progress)
            program_seconds += report.seconds
        if save_chip_to is not None:
            save_chip(report, save_chip_to)
        reset_clip_stats(simulated)
        recognizer = Recognizer(metadata.model_name, SpeechSession.from_model(simulated, metadata),
                                decoder, decoder_name)
        result = evaluate(recognizer, utterances, data_name=data_name, progress=progress)
        wers.append(result.wer)
        cers.append(result.cer)
        clippings.append(clip_fractions(simulated))
    layers = clippings[0].keys()
    return MemristorResult(
        model=metadata.model_name,
        data=data_name,
        decoder=decoder_name,
        wer=statistics.fmean(wers),
        wer_std=statistics.stdev(wers) if runs > 1 else 0.0,
        cer=statistics.fmean(cers),
        runs=wers,
        seeds=seeds,
        clipping={layer: statistics.fmean(c[layer] for c in clippings) for layer in layers},
        utterances=len(utterances),
        program_seconds=program_seconds,
    )


def resolve_simulator_config(
    config_file: str | Path | None = None,
    chip: Path | None = None,
    *,
    adc: str | None = None,
    layers: Sequence[str] = (),
    digital: Sequence[str] = (),
    noise: str | None = None,
) -> SimulatorConfig:
    """The SimulatorConfig the memristor options describe: the TOML file's, else a saved
    chip's own settings, else the defaults; then the shorthands (default ADC "P/R", layer
    rules "PATTERN=P/R", digital patterns, noise mode)."""
    from mho.simulator.config import load_simulator_config, with_cli_overrides
    from mho.simulator.mapping import chip_config

    if config_file:
        config = load_simulator_config(config_file)
    else:
        config = chip_config(chip) if chip else SimulatorConfig()
    config = with_cli_overrides(config, adc=adc, layers=layers, digital=digital)
    return config if noise is None else dataclasses.replace(config, noise=noise)


def evaluate_models_on_chips(
    models: Sequence[str],
    data: Sequence[str],
    config: SimulatorConfig,
    *,
    decoder: str = "lm",
    lm: Path | None = None,
    seed: int = 0,
    runs: int = 1,
    chip: Path | None = None,
    save_chip_to: Path | None = None,
    threads: int | None = None,
    progress: bool = False,
    beam_size: int | None = None,
) -> list[MemristorResult]:
    """`mho eval --memristor`: each QAT model (shipped or checkpoint) on ``runs`` chips per
    set, or on the saved ``chip``. Sets and chip options are checked before any model loads.
    ``beam_size``: the LM search's (default: mho's)."""
    from mho.data.datasets import resolve_dataset
    from mho.decoding.decoders import check_beam_size, load_decoder
    from mho.exporter.onnx import load_for_export
    from mho.runtime.recognizer import PEER_RECOGNIZERS
    from mho.timing import torch_threads

    check_beam_size(decoder, beam_size)
    peers = [m for m in models if m in PEER_RECOGNIZERS]
    if peers:
        raise MhoError(f"--memristor needs an mho model (shipped name, checkpoint or Hugging "
                       f"Face directory), not {', '.join(peers)}")
    if any(m.endswith((".onnx", ".mlpackage")) for m in models):
        raise MhoError("an exported file already holds its chip (or none): evaluate it without "
                       "--memristor, or export the model with other settings")
    sets = [resolve_dataset(spec) for spec in data]
    if (chip or save_chip_to) and len(models) * len(sets) != 1:
        raise MhoError("--chip and --save-chip take one model and one --data set")
    results = []
    with torch_threads(threads):
        for name in models:
            model, metadata = load_for_export(name)
            if getattr(model.config, "quant", None) is None:
                raise MhoError(f"{name} is a float model: chips hold quantized weights; use a "
                               f"QAT model (mho.quantize, then calibrate or fine-tune)")
            search = load_decoder(decoder, lm, tokens=metadata.vocabulary, beam_size=beam_size)
            for data_name, utterances in sets:
                results.append(evaluate_on_chips(
                    model, metadata, utterances, data_name=data_name, decoder=search,
                    decoder_name=decoder, config=config, seed=seed, runs=runs,
                    progress=progress, chip=chip, save_chip_to=save_chip_to))
    return results


def map_model(
    name: str, config: SimulatorConfig, *, seed: int = 0, chip: Path | None = None,
    progress: bool = False,
) -> tuple[MappingReport, list[ParameterPlacement]]:
    """`mho map`: program model ``name`` (or read the saved ``chip``) and say what went where:
    each layer's mapping, and each parameter's placement with the reason."""
    from mho.models.zoo import checkpoint_path, load_model

    path = checkpoint_path(name)
    if path is None:
        raise MhoError(f"unknown model {name!r}: a shipped model name, a checkpoint path or a "
                       f"Hugging Face model directory")
    model, _ = load_model(path)
    if chip is not None:
        _, report = load_chip(model, chip, config, progress=progress)
    else:
        _, report = map_to_crossbars(model, config, seed, progress=progress)
    return report, parameter_placements(model, report)
