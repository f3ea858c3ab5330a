"""Word error rate of a QAT model executed on memristor chips: one chip per programming run
(seed), mean and standard deviation over runs, ADC clipping per layer."""

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from mho.data.manifest import Utterance
from mho.decoding.decoders import Decoder
from mho.errors import MhoError
from mho.runtime.torch_runtime import TorchRecognizer
from mho.simulator.config import SimulatorConfig
from mho.simulator.mapping import load_chip, map_to_crossbars, save_chip
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
    utterances: list[Utterance],
    *,
    name: str,
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
    """Program ``runs`` chips (seeds seed, seed+1, ...) and score each on ``utterances``;
    or score the saved ``chip`` read with ``config``. ``save_chip_to``: keep the (one) chip."""
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
        recognizer = TorchRecognizer(name, simulated, decoder, decoder_name)
        result = evaluate(recognizer, utterances, data_name=data_name, progress=progress)
        wers.append(result.wer)
        cers.append(result.cer)
        clippings.append(clip_fractions(simulated))
    layers = clippings[0].keys()
    return MemristorResult(
        model=name,
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
