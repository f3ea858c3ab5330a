"""The ``mho`` command line: parse, call the library, print (rich tables or --json)."""

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mho.errors import MhoError

# Idle OpenMP threads (torch's and numba's GNU OpenMP teams) sleep instead of spinning,
# unless the user chose otherwise. Spinning threads take the cores from the threads that
# have work whenever the cores are shared (another job, a second OpenMP team): measured on
# a 2-core machine under load, 200 small torch matmuls on two threads took 7-9 s spinning
# and 74-80 ms sleeping, and the noisy crossbar forward 15-23 s against 1.6-1.8 s
# (docs/simulator.md). Set here, before anything loads torch or numba, which read it once.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Rich assumes 80 columns when stdout is not a terminal (make, CI logs); tables need more
# (160: the longest shipped model name fits the evaluation table unshortened).
console = Console(width=None if sys.stdout.isatty() else 160)
# mho.runtime.session.RUNTIMES, spelled out: importing it here would load torch for --help
RUNTIME_CHOICES = ["torch", "ort", "onnx-ref", "coreml", "coreml-mil"]


class MhoGroup(click.Group):
    """Turns library errors and Ctrl-C into one line and a non-zero exit, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (MhoError, OSError) as error:  # OSError: permissions, full disk, ...
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=MhoGroup)
@click.version_option(package_name="mho")
def main() -> None:
    """mho: speech recognizers on memristor crossbars and mobile accelerators."""


@main.group()
def data() -> None:
    """Build and inspect speech corpora."""


@data.command("build")
@click.argument("out", type=click.Path(path_type=Path), default=Path("data/corpus"))
@click.option("--hours", type=click.FloatRange(min=0.0, min_open=True), default=20.0,
              show_default=True, help="Hours of training audio (dev/test scale with it).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Synthesis processes (default: one per core).")
@click.option("--voices", type=click.Choice(["classic", "all"]), default="classic",
              show_default=True,
              help="classic: the shipped models' voices; all: every English accent and voice.")
@click.option("--split-seed", type=int, default=None,
              help="Seed of the sentence split (default: --seed); keep 0 when adding data "
                   "for models scored on the shipped test sets.")
@click.option("--set", "sets", multiple=True,
              type=click.Choice(["train", "dev", "test-flite-slt", "test-festival-slt"]),
              help="Build only these sets (repeat; default all four).")
@click.option("--converter", type=click.Choice(["sox", "python"]), default="sox",
              show_default=True, help="WAV to 16 kHz FLAC: sox, or soundfile + scipy.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
def data_build(out: Path, hours: float, seed: int, workers: int | None, voices: str,
               split_seed: int | None, sets: tuple[str, ...], converter: str,
               as_json: bool) -> None:
    """Synthesize the local corpus (train, dev and two held-out-voice test sets) into OUT."""
    from mho.data.build import SETS, build_corpus, corpus_summary

    manifests = build_corpus(out, hours=hours, seed=seed, voices=voices, split_seed=split_seed,
                             workers=workers,
                             progress=not as_json, sets=sets or SETS, converter=converter)
    summary = corpus_summary(manifests)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"corpus in {out}")
    for column in ("set", "utterances", "hours", "manifest"):
        table.add_column(column, justify="right" if column in ("utterances", "hours") else "left")
    for name, row in summary.items():
        table.add_row(name, str(row["utterances"]), f"{row['hours']:.2f}", row["manifest"])
    console.print(table)


@data.command("lm")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Default: mho/assets/lm (the shipped LM).")
@click.option("--text", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sentences, one per line (default: the corpus TRAIN split).")
@click.option("--seed", type=int, default=0, show_default=True, help="Corpus split seed.")
@click.option("--order", type=click.IntRange(2, 6), default=4, show_default=True)
@click.option("--prune-from", type=click.IntRange(2), default=3, show_default=True,
              help="Drop singleton n-grams of this order and above.")
@click.option("--sources", default="corpus", show_default=True,
              help="Comma-separated text sources: corpus (TRAIN split), gcide, jargon "
                   "(Debian text, `make debian-text`); dev/test sentences are always dropped.")
@click.option("--unk", type=click.Choice(["lmplz", "held-out"]), default="lmplz",
              show_default=True,
              help="<unk>'s probability: lmplz's (all unseen words together), or one unseen "
                   "CMUdict word's, from held-out text's out-of-vocabulary rate.")
@click.option("--held-out", "held_out_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --unk held-out: text the LM is not made from, one sentence per line "
                   "like --text (default: the corpus dev sentences).")
def data_lm(out: Path | None, text: Path | None, seed: int, order: int, prune_from: int,
            sources: str, unk: str, held_out_file: Path | None) -> None:
    """Build the word n-gram LM (KenLM lmplz, quantized binary) from training text only."""
    from mho.data.general_text import lm_sentences
    from mho.data.lm import LM_ASSETS, build_shipped_lm
    from mho.data.text import corpus_sentences

    if held_out_file and unk != "held-out":
        raise MhoError("--held-out is the text for --unk held-out: add --unk held-out")
    out = out or LM_ASSETS
    sentences = (text.read_text(encoding="utf-8").splitlines() if text
                 else lm_sentences([name.strip() for name in sources.split(",") if name.strip()],
                                   seed))
    held_out = None
    if unk == "held-out":
        held_out = (held_out_file.read_text(encoding="utf-8").splitlines() if held_out_file
                    else corpus_sentences(seed)["dev"])
    info = build_shipped_lm(sentences, out, order, prune_from, held_out=held_out)
    console.print(f"{info.order}-gram LM on {info.sentences} sentences ({info.vocabulary} words):"
                  f" {info.lm_bytes / 1e6:.1f} MB -> {out}")
    if info.unk_log10 is not None:
        console.print(f"<unk>: log10 p = {info.unk_log10:.2f} (held-out OOV rate "
                      f"{100 * info.held_out_oov_rate:.2f}% over {info.unseen_lexicon_words} "
                      "unseen CMUdict words)")


@data.command("lm-pocketsphinx")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="LM directory to write (e.g. data/lm-pocketsphinx).")
def data_lm_pocketsphinx(out: Path) -> None:
    """PocketSphinx's own English trigram LM as an LM directory (`mho eval --lm DIR`), to
    compare acoustic models with PocketSphinx on the same LM."""
    from mho.data.lm import build_pocketsphinx_lm

    info = build_pocketsphinx_lm(out)
    console.print(f"{info.order}-gram PocketSphinx LM ({info.vocabulary} words): "
                  f"{info.lm_bytes / 1e6:.1f} MB -> {out}; <unk>: log10 p = {info.unk_log10:.2f}")


@data.command("subset")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Manifest to write (.jsonl); audio goes to a folder of the same name.")
@click.option("--count", type=click.IntRange(min=1), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
def data_subset(source: Path, out: Path, count: int, seed: int) -> None:
    """Copy a seeded random sample of COUNT utterances of SOURCE, audio included."""
    from mho.data.datasets import copy_subset

    utterances = copy_subset(source, out, count=count, seed=seed)
    hours = sum(u.duration for u in utterances) / 3600
    console.print(f"{len(utterances)} utterances ({hours * 60:.1f} min) -> {out}")


@data.command("join")
@click.argument("manifests", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Manifest to write (.jsonl); the audio stays where it is.")
def data_join(manifests: tuple[Path, ...], out: Path) -> None:
    """Join MANIFESTS into one for training (ids prefixed with each one's position)."""
    from mho.data.manifest import join_manifests

    utterances = join_manifests(list(manifests), out)
    hours = sum(u.duration for u in utterances) / 3600
    console.print(f"{len(utterances)} utterances ({hours:.2f} h) -> {out}")


@data.command("convert-voices")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the converted audio and manifest (rerun to resume).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--female-share", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Share of utterances moved to a female pitch range.")
@click.option("--hts-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of utterances resynthesized as an HTS voice's vocoder would: "
                   "mel-cepstral envelope, postfilter, pulse-or-noise excitation.")
@click.option("--postfilter", type=(float, float), default=(0.0, 0.3), show_default=True,
              metavar="LOW HIGH", help="Range of the HTS postfilter's beta, drawn per utterance.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes (default: one per core).")
def data_convert_voices(manifest: Path, out: Path, seed: int, female_share: float,
                        hts_share: float, postfilter: tuple[float, float],
                        workers: int | None) -> None:
    """Turn each utterance of MANIFEST into a new speaker with the WORLD vocoder (drawn median
    pitch and intonation, formants following the pitch), for training on more voices."""
    from mho.data.voice_conversion import VoiceConversionConfig, convert_corpus

    config = VoiceConversionConfig(female_share=female_share, hts_share=hts_share,
                                   postfilter=postfilter)
    target = convert_corpus(manifest, out, seed=seed, workers=workers, config=config)
    console.print(f"converted {manifest} -> {target}")


@data.command("features")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Archive to write (.pt).")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Only the first COUNT utterances.")
def data_features(manifest: Path, out: Path, count: int | None) -> None:
    """Write MANIFEST's log-mel features and labels as an 8-bit archive that `mho train`
    reads in place of the manifest (data.train / data.dev = "FILE.pt"): training without
    the audio, e.g. on a GPU machine."""
    from mho.data.feature_set import write_feature_archive

    feature_set = write_feature_archive(manifest, out, count=count)
    hours = sum(feature_set.durations) / 3600
    console.print(f"{len(feature_set)} utterances ({hours:.2f} h, {feature_set.skipped} left "
                  f"out of the lexicon) -> {out} ({out.stat().st_size / 1e6:.1f} MB)")


@data.command("waveforms")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Archive to write (.pt).")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Only a seeded random subset of about H hours.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Only the first COUNT utterances.")
@click.option("--seed", type=int, default=0, show_default=True)
def data_waveforms(manifest: Path, out: Path, hours: float | None, count: int | None,
                   seed: int) -> None:
    """Write MANIFEST's audio (8-bit mu-law) and labels as an archive that `mho train` reads
    for waveform models (family = "wav2vec2"), without the corpus."""
    from mho.data.waveform_set import write_waveform_archive
    from mho.models.transformer import RECEPTIVE_FIELD_SAMPLES

    waveform_set = write_waveform_archive(manifest, out, min_samples=RECEPTIVE_FIELD_SAMPLES,
                                          hours=hours, count=count, seed=seed)
    total = sum(waveform_set.durations) / 3600
    console.print(f"{len(waveform_set)} utterances ({total:.2f} h, {waveform_set.skipped} left "
                  f"out) -> {out} ({out.stat().st_size / 1e6:.1f} MB)")


def memristor_options(command):
    """The options that put a model on a simulated memristor chip (eval, export, check)."""
    options = [
        click.option("--memristor", is_flag=False, flag_value="", default=None,
                     metavar="[CONFIG]",
                     help="Run on simulated memristor chips (optionally configured by a TOML "
                          "file)."),
        click.option("--adc", metavar="P/R", help="Default ADC precision/range bits (e.g. 4/4)."),
        click.option("--layer", "layer_rules", multiple=True, metavar="PATTERN=P/R",
                     help="ADC (or =digital, or depthwise layout =per-channel / "
                          "=block-diagonal) of the layers matching a glob; repeatable."),
        click.option("--digital", "digital_patterns", multiple=True, metavar="PATTERN",
                     help="Keep matching layers digital (the paper's oracle); repeatable."),
        click.option("--noise", type=click.Choice(["off", "legacy", "physical"]), default=None,
                     help="Read noise mode (default: the config's, legacy)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Programming seed (of the first chip)."),
        click.option("--chip", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None,
                     help="Read this saved chip (no programming) with the given settings."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def run_options(command):
    """The options of commands that run models: threads and the LM."""
    options = [
        click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Intra-op threads of torch and onnxruntime (one is fastest for "
                          "these small models on a shared machine)."),
        click.option("--lm", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     default=None, help="LM directory from `mho data lm` (default: shipped)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


beam_size_option = click.option(
    "--beam-size", type=int, default=None,
    help="Hypotheses the LM search keeps per frame (default: mho's, or a bundle's own); "
         "smaller is faster, larger more accurate (docs/lm.md).")


@main.command("eval")
@click.argument("models", nargs=-1, required=True)
@click.option("--data", "data_sets", multiple=True, required=True,
              help="Shipped set name, manifest (.jsonl) or LibriSpeech directory; repeatable.")
@click.option("--decoder", type=click.Choice(["greedy", "lm"]), default="lm", show_default=True)
@memristor_options
@click.option("--runtime", type=click.Choice(RUNTIME_CHOICES),
              default=None,
              help="For .onnx files: ort (default) or onnx-ref; .mlpackage: coreml (macOS) or "
                   "coreml-mil (its ML program on numpy, the default off macOS); models "
                   "run in torch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Utterances per call, padded (server-style batching; results may differ "
                   "from one at a time by float rounding).")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Programming runs (chips), each with its own seed.")
@click.option("--save-chip", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the programmed chip (.npz) for later runs or export.")
@click.option("--gain", "gain_db", type=float, default=0.0, metavar="DB",
              help="Play every utterance this many dB louder (negative: quieter), clipped, "
                   "to see how much a model depends on the input level.")
@beam_size_option
@run_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model and set.")
def eval_command(models: tuple[str, ...], data_sets: tuple[str, ...], decoder: str,
                 memristor: str | None, adc: str | None, layer_rules: tuple[str, ...],
                 digital_patterns: tuple[str, ...], noise: str | None, seed: int,
                 chip: Path | None, runtime: str | None, batch_size: int, runs: int,
                 save_chip: Path | None, gain_db: float, beam_size: int | None, threads: int,
                 lm: Path | None, as_json: bool) -> None:
    """Word and character error rate and real-time factor of MODELS on --data sets."""
    import dataclasses

    if chip or save_chip:
        memristor = "" if memristor is None else memristor  # a chip option means a chip run
    if memristor is None:
        if runs != 1:
            raise MhoError("--runs counts chips: add --memristor")
        from mho.workflows.evaluate import evaluate_models

        results = evaluate_models(models, data_sets, decoder=decoder, lm=lm, runtime=runtime,
                                  batch_size=batch_size, threads=threads, progress=not as_json,
                                  gain_db=gain_db, beam_size=beam_size)
        _print_results([r.summary() for r in results], as_json)
        return
    if gain_db:
        raise MhoError("--gain is for runs without --memristor")
    if runtime not in (None, "torch") or batch_size != 1:
        raise MhoError("chips are simulated in torch, one utterance at a time: drop --runtime "
                       "and --batch-size (export the chip to run it on onnxruntime)")
    from mho.workflows.chips import evaluate_models_on_chips, resolve_simulator_config

    config = resolve_simulator_config(memristor, chip, adc=adc, layers=layer_rules,
                                      digital=digital_patterns, noise=noise)
    results = evaluate_models_on_chips(models, data_sets, config, decoder=decoder, lm=lm,
                                       seed=seed, runs=runs, chip=chip, save_chip_to=save_chip,
                                       threads=threads, progress=not as_json,
                                       beam_size=beam_size)
    _print_results([dataclasses.asdict(r) for r in results], as_json, memristor=True)


def _print_results(results: list[dict], as_json: bool, memristor: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return
    table = Table(title="evaluation on memristor chips" if memristor else "evaluation")
    last = ("runs", "WER std", "most clipped layer") if memristor else ("RTF",)
    for column in ("model", "data", "decoder", "runtime", "utts", "WER %", "CER %", *last):
        table.add_column(column, justify="left" if column in ("model", "data") else "right")
    for r in results:
        data = r["data"] + (f" ({r['gain_db']:+g} dB)" if r.get("gain_db") else "")
        row = [r["model"], data, r["decoder"], r["runtime"], str(r["utterances"]),
               f"{r['wer']:.2f}", f"{r['cer']:.2f}"]
        if memristor:
            clipped = "-"  # every layer digital
            if r["clipping"]:
                layer, fraction = max(r["clipping"].items(), key=lambda item: item[1])
                clipped = f"{layer} ({fraction:.1%})"
            row += [str(len(r["runs"])), f"{r['wer_std']:.2f}", clipped]
        else:
            row.append(f"{r['rtf']:.3f}")
        table.add_row(*row)
    console.print(table)


@main.command("map")
@click.argument("model")
@memristor_options
@click.option("--json", "as_json", is_flag=True, help="Layers and parameters as JSON.")
def map_command(model, memristor, adc, layer_rules, digital_patterns, noise, seed, chip,
                as_json) -> None:
    """Map MODEL onto a chip and report what went where: every layer (crossbar or digital,
    ADC, tiles, cells) and every parameter (crossbar or digital, and why)."""
    import dataclasses

    from mho.simulator.coverage import crossbar_share
    from mho.workflows.chips import map_model, resolve_simulator_config

    config = resolve_simulator_config(memristor or None, chip, adc=adc, layers=layer_rules,
                                      digital=digital_patterns, noise=noise)
    report, placements = map_model(model, config, seed=seed, chip=chip, progress=not as_json)
    if as_json:
        layers = [{k: v for k, v in dataclasses.asdict(m).items() if k != "chips"}
                  for m in report.layers]
        click.echo(json.dumps({"model": model, "seed": report.seed, "cells": report.cells,
                               "crossbar_share": crossbar_share(placements), "layers": layers,
                               "parameters": [dataclasses.asdict(p) for p in placements]},
                              indent=2))
        return
    console.print(report.table())
    table = Table(title=f"parameters of {model}: {crossbar_share(placements):.1%} of the "
                        f"weights on crossbars")
    for column in ("parameter", "elements", "placement", "why"):
        table.add_column(column, justify="right" if column == "elements" else "left")
    for p in placements:
        table.add_row(p.name, f"{p.size:,}", p.placement, p.reason)
    console.print(table)


@main.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="A list of model cards.")
@click.option("--markdown", is_flag=True, help="A markdown table (for the README).")
@click.pass_context
def models_group(ctx: click.Context, as_json: bool, markdown: bool) -> None:
    """List the shipped models (or pack a trained one with `mho models pack`)."""
    if ctx.invoked_subcommand is not None:
        return
    from mho.models.zoo import model_card, models_table, shipped_models

    cards = [model_card(name) for name in shipped_models()]
    if as_json:
        click.echo(json.dumps(cards, indent=2))
        return
    columns, rows = models_table(cards)
    if markdown:
        click.echo("| " + " | ".join(columns) + " |")
        click.echo("|" + " --- |" * len(columns))
        for row in rows:
            click.echo("| " + " | ".join(row) + " |")
        return
    table = Table(title="shipped models: WER %")
    for column in columns:
        table.add_column(column, justify="left" if column in ("name", "pe") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@models_group.command("runs")
@click.argument("name")
def models_runs(name: str) -> None:
    """The training runs behind shipped model NAME (from its card): data, epochs, wall time,
    seconds of audio per second, and the machine each ran on."""
    from mho.models.zoo import model_card, shipped_models, training_runs_table

    if name not in shipped_models():
        raise MhoError(f"no shipped model {name!r} (`mho models` lists them)")
    card = model_card(name)
    columns, rows = training_runs_table(card)
    if not rows:
        console.print(f"{name}: its card records no training runs (packed before runs were "
                      "recorded)")
        return
    table = Table(title=f"{name}: training runs")
    for column in columns:
        table.add_column(column, justify="left" if column in ("from", "device", "machine")
                         else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@models_group.command("pack")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Shipped model name.")
@click.option("--eval-data", multiple=True, help="Sets to score for the model card.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Default: mho/assets/models.")
def models_pack(checkpoint: Path, name: str, eval_data: tuple[str, ...],
                out_dir: Path | None) -> None:
    """Pack a trained CHECKPOINT compactly as NAME, with a model card scored on --eval-data
    (the packed weights are what gets scored). CHECKPOINT may be a packed model: re-scoring."""
    from mho.workflows.pack import pack_and_score

    card, target = pack_and_score(checkpoint, name, eval_data, out_dir=out_dir, progress=True)
    console.print(f"{name}: {card['bytes'] / 1e6:.1f} MB -> {target}")
    for r in card["results"]:
        console.print(f"  {r['data']:>18} {r['decoder']:>6}: WER {r['wer']:.2f}%")


@main.command("sweep")
@click.argument("model")
@click.option("--data", "data_set", required=True, help="Set to score every chip on.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for sweep.md, .json, .csv, .png and finished jobs (resume).")
@click.option("--preset", "presets", multiple=True,
              type=click.Choice(["table2", "figure1", "oracle"]),
              help="Settings of the paper (repeatable; default table2 unless --adc is given).")
@click.option("--adc", "adcs", multiple=True, metavar="P/R",
              help="Also a whole-model ADC setting (repeatable).")
@click.option("--memristor", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Base simulator config (TOML) the settings apply to.")
@click.option("--noise", "noises", multiple=True,
              type=click.Choice(["off", "legacy", "physical"]),
              help="Read noise mode; repeated: an axis of the sweep.")
@click.option("--depthwise", "layouts", multiple=True,
              type=click.Choice(["per-channel", "block-diagonal"]),
              help="Depthwise layout; repeated: an axis of the sweep.")
@click.option("--layer", "layer_rules", multiple=True, metavar="PATTERN=P/R",
              help="Rule added to the base config (as in mho eval); repeatable.")
@click.option("--digital", "digital_patterns", multiple=True, metavar="PATTERN",
              help="Keep matching layers digital in every setting; repeatable.")
@click.option("--decoder", type=click.Choice(["greedy", "lm"]), default="lm", show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Programming runs (chips) per setting.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first chip.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes (default: one per CPU core).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              metavar="[ADDRESS]", help="Run the jobs on Ray: a cluster ADDRESS, or a local "
              "instance when none is given (pip install 'mho[ray]').")
@click.option("--json", "as_json", is_flag=True, help="Print the per-setting rows as JSON.")
def sweep_command(model, data_set, out, presets, adcs, config_file, noises, layouts,
                  layer_rules, digital_patterns, decoder, runs, seed, workers, ray_address,
                  as_json) -> None:
    """Score MODEL on simulated chips over a grid of ADC settings x programming runs."""
    from tqdm import tqdm

    from mho.workflows.sweep import sweep_model

    bar = None if as_json else tqdm(desc="sweep jobs", unit="job")

    def on_result(result: dict, done: int, total: int) -> None:
        if bar is not None:
            bar.total, bar.n = total, done
            bar.set_postfix(last=f"{result['setting']}: {result['wer']:.2f}%")
            bar.refresh()

    rows, title, paths = sweep_model(
        model, data_set, out, presets=presets, adcs=adcs, config_file=config_file,
        noises=noises, layouts=layouts, layers=layer_rules, digital=digital_patterns,
        decoder=decoder, runs=runs, seed=seed, workers=workers, ray_address=ray_address,
        on_result=on_result)
    if bar is not None:
        bar.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=title)
    for column in ("setting", "runs", "WER %", "std", "CER %", "PE clipped", "most clipped layer"):
        table.add_column(column, justify="left" if column in ("setting",) else "right")
    for r in rows:
        layer = r["most_clipped_layer"] or "-"
        table.add_row(r["setting"], str(r["runs"]), f"{r['wer']:.2f}", f"{r['wer_std']:.2f}",
                      f"{r['cer']:.2f}", f"{r['pe_clipping']:.1%}",
                      f"{layer} ({r['most_clipped_fraction']:.1%})")
    console.print(table)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


@main.group()
def bench() -> None:
    """Reproducible speed and memory measurements (ratios measured in one run)."""


@bench.command("sim")
@click.option("--rows", type=click.IntRange(min=1), default=6400, show_default=True,
              help="Input rows (64 utterances x 100 frames).")
@click.option("--size", type=click.IntRange(min=1), default=512, show_default=True,
              help="Layer inputs = outputs.")
@click.option("--weight-bits", type=click.IntRange(2, 8), default=8, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="Also time programming this model (repeatable; 'all': every shipped one).")
@click.option("--json", "as_json", is_flag=True)
def bench_sim_command(rows, size, weight_bits, repeats, threads, models, as_json) -> None:
    """Simulator time over the bit-plane x matmul floor (noise off and on), speed-up over the
    naive per-cell reference, peak memory over the digital layer's, programming speed."""
    from mho.models.zoo import shipped_models
    from mho.workflows.bench.sim import TARGETS, SimBenchConfig, bench_sim

    if "all" in models:
        models = tuple(shipped_models())
    config = SimBenchConfig(in_features=size, out_features=size, rows=rows,
                            weight_bits=weight_bits, repeats=repeats, threads=threads)
    log = (lambda message: None) if as_json else (lambda message: console.print(f"[dim]{message}"))
    summary = bench_sim(config, models, log=log).summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"simulator bench: {summary['layer']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    memory = summary["memory_ratio"]

    def goal(key: str) -> str:
        comparison, bound = TARGETS[key]
        return f"{comparison} {bound:,.0f}" if bound >= 1000 else f"{comparison} {bound}"

    for measure, value, target in (
        ("digital matmul (ms)", f"{summary['digital_ms']:.1f}", ""),
        ("floor = planes x digital (ms)", f"{summary['floor_ms']:.1f}", ""),
        ("simulator, noise off (ms)", f"{summary['simulator_ms']['off']:.1f}", ""),
        ("simulator, noise on (ms)", f"{summary['simulator_ms']['legacy']:.1f}", ""),
        ("floor ratio, noise off", f"{summary['floor_ratio_noise_off']:.2f}",
         goal("floor_ratio_noise_off")),
        ("floor ratio, noise on", f"{summary['floor_ratio_noise_on']:.2f}",
         goal("floor_ratio_noise_on")),
        ("speed-up over naive per-cell", f"{summary['speedup_vs_naive']:.0f}",
         goal("speedup_vs_naive")),
        ("peak memory over digital", "n/a" if memory is None else f"{memory:.2f}",
         goal("memory_ratio")),
        ("programming (cells/s)", f"{summary['program_cells_per_s']:,.0f}",
         goal("program_cells_per_s")),
        *((f"program {name} (s, {m['cells']:,} cells)", f"{m['seconds']:.1f}", "")
          for name, m in summary["models"].items()),
    ):
        table.add_row(measure, value, target)
    console.print(table)


@main.group("export")
def export_group() -> None:
    """Export models to portable files."""


@export_group.command("onnx")
@click.argument("model")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The .onnx file to write (weights over 1 GiB go to FILE.data beside it).")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path),
              help="Write a deployment bundle here instead: model.onnx (waveform input), "
                   "tokens, lexicon, LM, bundle.json, decode.py, README.")
@click.option("--input", "input_kind", type=click.Choice(["features", "waveform"]),
              default="waveform", show_default=True,
              help="waveform: 16 kHz samples in, log-mel front-end inside the graph.")
@memristor_options
@click.option("--json", "as_json", is_flag=True)
def export_onnx_command(model, out, bundle, input_kind, memristor, adc, layer_rules,
                        digital_patterns, noise, seed, chip, as_json) -> None:
    """Export MODEL (digital, or programmed onto a memristor chip) to one ONNX file or a
    deployment bundle (--bundle DIR)."""
    from mho.exporter.bundle import export_model_bundle
    from mho.exporter.onnx import export_model_onnx
    from mho.workflows.chips import resolve_simulator_config

    if (out is None) == (bundle is None):
        raise MhoError("give the output: -o FILE.onnx or --bundle DIR (one of them)")
    if bundle is not None and input_kind != "waveform":
        raise MhoError("a bundle carries a waveform-input model (its users need no log-mel "
                       "code): drop --input features")
    simulator = None
    if memristor is not None or chip is not None:
        simulator = resolve_simulator_config(memristor, chip, adc=adc, layers=layer_rules,
                                             digital=digital_patterns, noise=noise)
    elif adc or layer_rules or digital_patterns or noise:
        raise MhoError("--adc, --layer, --digital and --noise need --memristor (or --chip)")
    summary = {}
    if bundle is not None:
        written, metadata = export_model_bundle(model, bundle, simulator=simulator, seed=seed,
                                                chip=chip, progress=not as_json)
        report = written.export
        summary = {"bundle": str(written.directory), "bundle_bytes": written.bytes,
                   "files": written.files}
    else:
        report, metadata = export_model_onnx(model, out, input=input_kind, simulator=simulator,
                                             seed=seed, chip=chip, progress=not as_json)
    summary.update({"path": str(report.path), "bytes": report.bytes, "seconds": report.seconds,
                    "external_data": report.external_data, "nodes": report.nodes})
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    kind = "digital" if simulator is None else f"memristor chip (seed {metadata.programming_seed})"
    console.print(f"{model} ({kind}, {input_kind} input) -> {report.path}: "
                  f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s"
                  + (" (external data)" if report.external_data else ""))
    if bundle is not None:
        console.print(f"bundle {bundle}: {', '.join(summary['files'])} "
                      f"({summary['bundle_bytes'] / 1e6:.1f} MB)")
    table = Table(title="nodes by op type")
    table.add_column("op")
    table.add_column("nodes", justify="right")
    for op, count in report.nodes.items():
        table.add_row(op, str(count))
    console.print(table)


@export_group.command("coreml")
@click.argument("model")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The .mlpackage to write.")
@click.option("--lengths", default="1,2,4,8,16,32", show_default=True,
              help="Enumerated input lengths in seconds (shorter inputs are padded up).")
@click.option("--input", "input_kind", type=click.Choice(["waveform", "features"]),
              default="waveform", show_default=True,
              help="waveform: 16 kHz samples, the log-mel front end inside the program; "
                   "features: log-mels (Conformers only).")
@click.option("--weights", type=click.Choice(["auto", "int8", "int4", "palette8", "palette4",
                                              "float"]),
              default="auto", show_default=True,
              help="auto: a QAT model's weights at its trained bits (exact LUT); float models "
                   "int8 when their weights are on an int8 grid per channel, else as "
                   "--precision.")
@click.option("--compute-units", type=click.Choice(["ALL", "CPU_AND_NE", "CPU_ONLY"]),
              default="ALL", show_default=True,
              help="Recorded in the package: what Core ML loads it on (macOS).")
@click.option("--precision", type=click.Choice(["fp16", "fp32", "mixed"]), default="fp16",
              show_default=True,
              help="Of the activations (and of uncompressed weights); mixed: the log-mel "
                   "front end's DFT FP16, the rest FP32.")
@click.option("--memristor", is_flag=True, help="Not supported: says why.")
@click.option("--json", "as_json", is_flag=True)
def export_coreml_command(model, out, lengths, input_kind, weights, compute_units, precision,
                          memristor, as_json) -> None:
    """Export MODEL (digital Conformer, wav2vec2 or LPA model) to a Core ML ML program."""
    from mho.exporter.coreml import MEMRISTOR_UNSUPPORTED, export_coreml
    from mho.exporter.onnx import load_for_export

    if memristor:
        raise MhoError(MEMRISTOR_UNSUPPORTED)
    if out.suffix != ".mlpackage":
        raise MhoError(f"the output should end in .mlpackage: {out}")
    seconds = _seconds_list(lengths, "--lengths")
    torch_model, metadata = load_for_export(model)
    report = export_coreml(torch_model, out, metadata, input=input_kind, weights=weights,
                           compute_units=compute_units, lengths=seconds, precision=precision)
    summary = {"path": str(report.path), "bytes": report.bytes, "seconds": report.seconds,
               "input": report.input, "weights": report.weights,
               "compute_units": report.compute_units, "uncompressed": report.uncompressed,
               "lengths": report.lengths, "ops": report.ops,
               "off_neural_engine": report.off_neural_engine}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console.print(f"{model} ({report.input} input, {report.weights} weights, {precision} "
                  f"activations, {report.compute_units}) -> {report.path}: "
                  f"{report.bytes / 1e6:.2f} MB in {report.seconds:.1f} s; input lengths "
                  f"{report.lengths}")
    if report.uncompressed:
        console.print("weights left float (not on a QAT grid): " + ", ".join(
            f"{name} ({elements:,})" for name, elements in report.uncompressed.items()))
    _print_ops(report.ops, report.off_neural_engine)


def _print_ops(ops: dict[str, int], flagged: dict[str, str]) -> None:
    """The op histogram of a Core ML program, ops flagged as off the Neural Engine marked."""
    table = Table(title="Core ML program: ops by type")
    for column in ("op", "count", "Neural Engine"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for op, count in ops.items():
        table.add_row(op, str(count), f"[yellow]likely off: {flagged[op]}" if op in flagged
                      else "")
    console.print(table)


def _seconds_list(text: str, option: str) -> tuple[float, ...]:
    try:
        seconds = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise MhoError(f"{option} takes comma-separated seconds, got {text!r}") from None
    if not seconds or min(seconds) <= 0:
        raise MhoError(f"{option} takes positive seconds, got {text!r}")
    return seconds


@main.command("transcribe")
@click.argument("model")
@click.argument("audio", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--decoder", type=click.Choice(["greedy", "lm"]), default="lm", show_default=True)
@click.option("--runtime", type=click.Choice(RUNTIME_CHOICES),
              default=None,
              help="For .onnx files and bundles: ort (default) or onnx-ref; .mlpackage: coreml "
                   "(macOS) or coreml-mil (its ML program on numpy).")
@beam_size_option
@run_options
def transcribe_command(model, audio, decoder, runtime, beam_size, threads, lm) -> None:
    """Print one line per AUDIO file: its name and MODEL's transcript (any sample rate).
    MODEL may be a deployment bundle directory (`mho export onnx --bundle`)."""
    from mho.runtime.recognizer import transcribe_files

    for path, text in transcribe_files(model, audio, decoder=decoder, runtime=runtime,
                                       threads=threads, lm=lm, beam_size=beam_size):
        click.echo(f"{path}\t{text}")


@main.command("serve")
@click.argument("models", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Requests per onnxruntime call at most.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="How long a batch waits for more requests after its first.")
@click.option("--max-length-ratio", type=click.FloatRange(min=1), default=1.5,
              show_default=True,
              help="Longest / shortest upload of one batch at most (inf: any mix).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Batches run at once (worker threads).")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests waiting per model; past it: 503 with Retry-After.")
@click.option("--max-audio-seconds", type=click.FloatRange(min=0, min_open=True),
              default=60.0, show_default=True, help="Longer uploads: 413.")
@click.option("--decoder", type=click.Choice(["greedy", "lm"]), default="lm", show_default=True)
@beam_size_option
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime threads per session (default: cores / workers).")
def serve_command(models, host, port, max_batch, max_wait_ms, max_length_ratio, workers,
                  max_queue, max_audio_seconds, decoder, beam_size, threads) -> None:
    """Serve MODELS (exported .onnx files, bundles, shipped model names exported on start;
    NAME=MODEL names one) over an OpenAI-compatible HTTP API until SIGTERM or Ctrl-C."""
    import logging

    from mho.serve.config import ServeConfig
    from mho.serve.server import serve

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    serve(ServeConfig(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                      max_length_ratio=max_length_ratio, workers=workers, max_queue=max_queue,
                      max_audio_seconds=max_audio_seconds, decoder=decoder,
                      beam_size=beam_size, threads=threads),
          models)


@main.command("check")
@click.argument("model")
@click.option("--onnx", "onnx_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="An exported file of MODEL (default: export one now).")
@click.option("--coreml", "coreml_file", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="An exported .mlpackage of MODEL (default: export one now).")
@click.option("--data", "data_set", required=True, help="Shipped set name or manifest.")
@click.option("--runtimes", default="torch,ort,onnx-ref", show_default=True,
              help="Comma-separated from torch, ort, onnx-ref, coreml (Core ML, macOS only), "
                   "coreml-mil (the package's ML program on numpy); torch is the reference.")
@click.option("--decoder", type=click.Choice(["greedy", "lm"]), default="greedy",
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N utterances of the set.")
@memristor_options
@click.option("--mean-abs", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Tolerance: mean |log-prob difference| over the set.")
@click.option("--max-cer", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Tolerance: CER %% between greedy transcripts and torch's.")
@click.option("--max-wer-delta", type=click.FloatRange(min=0), default=None,
              help="Tolerance: absolute WER difference (points) from torch's  [default: two "
                   "binomial standard errors of the set's WER, at least one word]")
@click.option("--runs", type=click.IntRange(min=2), default=None,
              help="Models that read with noise: passes over the set (fresh noise each); "
                   "parity is judged on the WER distributions.  [default: 3]")
@run_options
@click.option("--json", "as_json", is_flag=True, help="One entry per runtime.")
def check_command(model, onnx_file, coreml_file, data_set, runtimes, decoder, limit, memristor,
                  adc, layer_rules, digital_patterns, noise, seed, chip, mean_abs, max_cer,
                  max_wer_delta, runs, threads, lm, as_json) -> None:
    """Parity of MODEL across runtimes: log-probs, transcripts and WER against torch; exits 1
    when a tolerance is exceeded. With read noise on, the WER distributions over --runs
    passes are compared instead."""
    from mho.workflows.check import Tolerances, check_model
    from mho.workflows.chips import resolve_simulator_config

    simulator = None
    if memristor is not None or chip is not None:
        simulator = resolve_simulator_config(memristor, chip, adc=adc, layers=layer_rules,
                                             digital=digital_patterns, noise=noise)
    report = check_model(
        model, data_set, [r.strip() for r in runtimes.split(",") if r.strip()],
        onnx_file=onnx_file, coreml_file=coreml_file, simulator=simulator, seed=seed,
        chip=chip, decoder=decoder, lm=lm, limit=limit, runs=runs, threads=threads,
        tolerances=Tolerances(mean_abs=mean_abs, transcript_cer=max_cer,
                              wer_delta=max_wer_delta),
        progress=not as_json)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif report.noisy:
        _print_noisy_parity(report)
    else:
        _print_parity(report)
    if not report.passed:
        sys.exit(1)


def _print_parity(report) -> None:
    table = Table(title=f"parity of {report.model} on {report.data} ({report.utterances} utts, "
                        f"{report.decoder} decoding) against torch")
    for column in ("runtime", "max |diff|", "mean |diff|", "frames agree", "transcript CER %",
                   "WER %", "WER delta", "allowed", "s", "pass"):
        table.add_column(column, justify="left" if column == "runtime" else "right")
    table.add_row("torch", "", "", "", "", f"{report.torch_wer:.2f}", "", "", "", "reference")
    for r in report.results:
        table.add_row(r.runtime, f"{r.max_abs:.3g}", f"{r.mean_abs:.3g}",
                      f"{r.frames_agree:.2%}", f"{r.transcript_cer:.2f}", f"{r.wer:.2f}",
                      f"{r.wer_delta:+.2f}", f"{r.wer_allowed:.2f}", f"{r.seconds:.1f}",
                      "yes" if r.passed else "NO: " + "; ".join(r.failures))
    console.print(table)
    if report.coreml is not None:
        console.print(f"Core ML package ran as: {report.coreml['executor']}")
        _print_ops(report.coreml["ops"], report.coreml["off_neural_engine"])


def _print_noisy_parity(report) -> None:
    import numpy as np

    torch_wers = report.results[0].torch_wers
    table = Table(title=f"parity of {report.model} on {report.data} ({report.utterances} utts, "
                        f"{report.decoder} decoding, read noise: WER over {len(torch_wers)} "
                        f"runs) against torch")
    for column in ("runtime", "WER % per run", "mean", "std", "delta", "allowed", "pass"):
        table.add_column(column, justify="left" if column == "runtime" else "right")

    def row(name, wers, *rest):
        table.add_row(name, " ".join(f"{w:.2f}" for w in wers), f"{np.mean(wers):.2f}",
                      f"{np.std(wers, ddof=1):.2f}", *rest)

    row("torch", torch_wers, "", "", "reference")
    for r in report.results:
        row(r.runtime, r.wers, f"{r.wer_delta:+.2f}", f"{r.allowed:.2f}",
            "yes" if r.passed else "NO: " + "; ".join(r.failures))
    console.print(table)


@bench.command("runtime")
@click.option("--model", default="conformer-sinusoidal-linear-w8", show_default=True)
@click.option("--data", "data_set", default="flite-slt", show_default=True)
@click.option("--utterances", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_runtime_command(model, data_set, utterances, repeats, threads, as_json) -> None:
    """onnxruntime vs torch (digital and memristor model) and the crossbar op's function body
    vs a Python custom op: speed-ups measured in one run."""
    from mho.workflows.bench.runtime import RuntimeBenchConfig, bench_runtime

    config = RuntimeBenchConfig(model=model, data=data_set, utterances=utterances,
                                repeats=repeats, threads=threads)
    log = (lambda message: None) if as_json else (lambda message: console.print(f"[dim]{message}"))
    summary = bench_runtime(config, log=log).summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"runtime bench: {model}, {utterances} utts of {data_set} "
                        f"({summary['audio_seconds']:.0f} s audio), {threads} thread(s)")
    for column in ("measure", "slow (ms)", "fast (ms)", "speed-up", "target"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    ms = summary["ms"]
    for label, key, slow, fast, target in (
        ("onnxruntime vs torch, digital", "ort_vs_torch_digital", "digital/torch",
         "digital/ort", ">= 1.5"),
        ("onnxruntime vs torch simulator, memristor", "ort_vs_torch_memristor",
         "memristor/torch", "memristor/ort", ">= 1"),
        ("function body vs Python op, crossbar layer", "function_vs_pyop", "layer/pyop",
         "layer/function", ">= 5"),
        ("the same, read noise off", "function_vs_pyop_noise_off", "layer_noise_off/pyop",
         "layer_noise_off/function", ""),
    ):
        table.add_row(label, f"{ms[slow]:.0f}", f"{ms[fast]:.0f}", f"{summary[key]:.2f}", target)
    console.print(table)


@bench.command("serve")
@click.option("--model", default="conformer-sinusoidal-linear-w8", show_default=True,
              help="An exported .onnx file, a bundle, or a shipped model (exported first).")
@click.option("--data", "data_sets", multiple=True, default=("flite-slt", "festival-slt"),
              show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--requests", type=click.IntRange(min=1), default=100, show_default=True,
              help="Requests per round and side.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True)
@click.option("--max-length-ratio", type=click.FloatRange(min=1), default=1.5, show_default=True,
              help="Of the batched server (inf: any mix of lengths in a batch).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime threads per session of both servers (default: cores / workers).")
@click.option("--decoder", type=click.Choice(["greedy", "lm"]), default="lm", show_default=True)
@click.option("--no-compare", is_flag=True, help="Skip the --max-batch 1 server.")
@click.option("--soak", "soak_seconds", type=click.FloatRange(min=0), default=0.0,
              help="Seconds of soak (good and bad uploads) instead of the comparison.")
@click.option("--json", "as_json", is_flag=True)
def bench_serve_command(model, data_sets, concurrency, requests, rounds, max_batch, max_wait_ms,
                        max_length_ratio, workers, threads, decoder, no_compare, soak_seconds,
                        as_json) -> None:
    """Load-test `mho serve` on 127.0.0.1 from concurrent clients: throughput, latency
    percentiles, batch sizes, errors, lost requests; batching against --max-batch 1."""
    from mho.serve.bench import ServeBenchConfig, bench_serve

    config = ServeBenchConfig(model=model, data=data_sets, concurrency=concurrency,
                              requests=requests, rounds=rounds, max_batch=max_batch,
                              max_wait_ms=max_wait_ms, max_length_ratio=max_length_ratio,
                              workers=workers, threads=threads, decoder=decoder,
                              compare=not no_compare, soak_seconds=soak_seconds)
    log = (lambda message: None) if as_json else (lambda message: console.print(f"[dim]{message}"))
    summary = bench_serve(config, log=log)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"serve bench: {model}, concurrency {concurrency}")
    for column in ("side", "audio s/s", "p50 ms", "p95 ms", "p99 ms", "batches by size",
                   "errors", "lost", "same text", "server CPU ms/req", "RSS MB start/end"):
        table.add_column(column, justify="left" if column in ("side", "batches by size")
                         else "right")
    for name, side in summary["sides"].items():
        lat = side["latency_ms"]
        table.add_row(name, f"{side['audio_seconds_per_second']:.1f}", f"{lat['p50']:.0f}",
                      f"{lat['p95']:.0f}", f"{lat['p99']:.0f}",
                      " ".join(f"{k}:{v}" for k, v in side["batch_sizes"].items()),
                      str(side["errors"]), str(side["lost"]),
                      f"{side['transcripts_identical']}/{side['transcripts_checked']}",
                      (f"{side['server_cpu_ms_per_request']:.1f}"
                       if "server_cpu_ms_per_request" in side else "-"),
                      f"{side['rss_mb']['start']:.0f}/{side['rss_mb']['end']:.0f}")
    console.print(table)
    if summary.get("speedup"):
        console.print(f"batching speed-up: {summary['speedup']:.2f}x")
    if "soak" in summary:
        soak = summary["soak"]
        console.print(f"soak: {soak['good_answered_correctly']}/{soak['good']} good answered "
                      f"correctly, {soak['bad_answered_as_expected']}/{soak['bad']} bad refused "
                      f"as expected")


@bench.command("lpa")
@click.option("--model", default="wav2vec2-small", show_default=True,
              help="A wav2vec2-style model or Conformer: its size is benchmarked with attention "
                   "and with LPA.")
@click.option("--lengths", default="10,30,60,120", show_default=True,
              help="Comma-separated seconds of audio (batch 1).")
@click.option("--runtime", type=click.Choice(["ort", "torch"]), default="ort", show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write time vs length as a PNG.")
@click.option("--json", "as_json", is_flag=True)
def bench_lpa_command(model, lengths, runtime, repeats, threads, plot, as_json) -> None:
    """Attention model vs all-LPA model (and one layer vs one layer) at several lengths:
    median times and speed-ups measured in one run."""
    from mho.workflows.bench.lpa import LpaBenchConfig, bench_lpa, plot_bench

    seconds = _seconds_list(lengths, "--lengths")
    config = LpaBenchConfig(model=model, lengths=seconds, runtime=runtime, repeats=repeats,
                            threads=threads)
    log = (lambda message: None) if as_json else (lambda message: console.print(f"[dim]{message}"))
    result = bench_lpa(config, log=log)
    if plot is not None:
        plot_bench(result, plot)
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"LPA bench: {model} on {runtime}, batch 1, {threads} thread(s), "
                        f"median of {repeats}")
    for column in ("audio (s)", "attention model ms", "LPA model ms", "speed-up",
                   "attention layer ms", "LPA layer ms", "layer speed-up",
                   "attention model peak MiB", "LPA model peak MiB"):
        table.add_column(column, justify="right")
    for length in seconds:
        key = f"{length:g}"
        peaks = [summary[what].get(key) for what in ("attention_peak_mb", "lpa_peak_mb")]
        table.add_row(key, f"{summary['attention_ms'][key]:.0f}", f"{summary['lpa_ms'][key]:.0f}",
                      f"{summary['speedup'][key]:.2f}",
                      f"{summary['layer_attention_ms'][key]:.1f}",
                      f"{summary['layer_lpa_ms'][key]:.1f}",
                      f"{summary['layer_speedup'][key]:.2f}",
                      *("-" if peak is None else f"{peak:.0f}" for peak in peaks))
    console.print(table)
    if summary["scaling_120_60"] is not None:
        console.print(f"time 120 s / 60 s: LPA model {summary['scaling_120_60']:.2f} "
                      f"(target <= 2.2), attention model {summary['attention_scaling_120_60']:.2f}")
    if summary["memory_scaling_120_60"] is not None:
        console.print(f"peak memory 120 s / 60 s (2 = linear, 4 = quadratic): LPA model "
                      f"{summary['memory_scaling_120_60']:.2f}, attention model "
                      f"{summary['attention_memory_scaling_120_60']:.2f}")
    if plot is not None:
        console.print(f"plot: {plot}")


@main.command("train")
@click.argument("config")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for checkpoint.pt and log.jsonl.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt exactly.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field (TOML value syntax), e.g. --set pe='\"none\"'.")
@click.option("--save-every", "save_every_min", type=click.FloatRange(min=0), default=10.0,
              show_default=True, metavar="MINUTES",
              help="Also write the checkpoint mid-epoch this often (a kill loses at most "
                   "this much training).")
def train_command(config: str, out: Path, resume: bool, overrides: tuple[str, ...],
                  save_every_min: float) -> None:
    """Train a Conformer-CTC from CONFIG (a TOML file or a preset name)."""
    from mho.train.trainer import train

    state = train(config, out, overrides=overrides, resume=resume,
                  save_every_s=save_every_min * 60, log=console.print)
    console.print(f"done: {state.epoch} epochs, {state.seconds / 60:.1f} min -> {out}")


@main.group()
def lpa() -> None:
    """Learnable Pulse Accumulator: rank layers, convert a wav2vec2-style model or Conformer."""


def _fit_options(command):
    for option in reversed([
        click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True,
                     help="Fitting steps per layer."),
        click.option("--batch-seconds", type=click.FloatRange(min=1), default=160.0,
                     show_default=True, help="Padded audio per batch."),
        click.option("--lpa", "lpa_settings", multiple=True, metavar="KEY=VALUE",
                     help="PulseAccumulator setting, e.g. --lpa content_pulses=8."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True),
    ]):
        command = option(command)
    return command


@lpa.command("sweep")
@click.argument("model")
@click.option("--data", "data_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="Archive (.pt: waveforms for wav2vec2-style models, features for Conformers) "
                   "or manifest to fit on; every 10th item is held out.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for sweep.json and sweep.png.")
@_fit_options
@click.option("--json", "as_json", is_flag=True)
def lpa_sweep(model: str, data_path: Path, out: Path, steps: int, batch_seconds: float,
              lpa_settings: tuple[str, ...], seed: int, device: str, as_json: bool) -> None:
    """The MSE diagnostic: fit an LPA to each layer's attention, rank layers by difficulty."""
    from tqdm import tqdm

    from mho.lpa.host import host_of
    from mho.lpa.study import fit_config, load_teacher, run_sweep
    from mho.train.trainer import training_device

    config = fit_config(steps, batch_seconds, lpa_settings, seed)
    teacher, _ = load_teacher(model)  # fails fast on a wrong model, before the data loads
    bar = tqdm(total=host_of(teacher).num_layers(teacher) * steps, desc="fitting", unit="step",
               disable=as_json)
    report = run_sweep(model, data_path, out, config, training_device(device),
                       progress=lambda layer, step: bar.update())
    bar.close()
    fits = report["layers"]
    if as_json:
        click.echo(json.dumps(report))
        return
    table = Table(title=f"LPA fit per layer ({steps} steps each); easiest first")
    for column in ("rank", "layer", "rel. MSE (hard)", "rel. MSE (soft)", "seconds"):
        table.add_column(column, justify="right")
    by_layer = {f["layer"]: f for f in fits}
    for rank, layer in enumerate(report["mse_order"], start=1):
        fit = by_layer[layer]
        table.add_row(str(rank), str(layer), f"{fit['mse']:.4f}", f"{fit['soft_mse']:.4f}",
                      f"{fit['seconds']:.0f}")
    console.print(table)
    console.print(f"-> {out / 'sweep.json'}, {out / 'sweep.png'}")


@lpa.command("convert")
@click.argument("model")
@click.option("--layers", "layers_spec", required=True,
              help="N: the first N layers of --order; or a comma list of layer indices.")
@click.option("--order", type=click.Choice(["mse", "naive"]), default="mse", show_default=True,
              help="mse: easiest first by the diagnostic (--ranking, else run here); "
                   "naive: first to last.")
@click.option("--ranking", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="sweep.json of `mho lpa sweep` for --order mse.")
@click.option("--data", "data_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="Archive (.pt: waveforms for wav2vec2-style models, features for "
                   "Conformers) or manifest to train on.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for depth-<k>.pt checkpoints and state.pt.")
@click.option("--coadapt-steps", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--finetune-steps", type=click.IntRange(min=0), default=400, show_default=True)
@click.option("--resume", is_flag=True, help="Continue OUT/state.pt.")
@_fit_options
def lpa_convert(model: str, layers_spec: str, order: str, ranking: Path | None, data_path: Path,
                out: Path, coadapt_steps: int, finetune_steps: int, resume: bool, steps: int,
                batch_seconds: float, lpa_settings: tuple[str, ...], seed: int,
                device: str) -> None:
    """Replace attention layers of MODEL by LPAs, one at a time, with CTC fine-tuning."""
    from tqdm import tqdm

    from mho.lpa.convert import ConversionConfig
    from mho.lpa.study import fit_config, run_conversion
    from mho.train.trainer import training_device

    config = ConversionConfig(fit=fit_config(steps, batch_seconds, lpa_settings, seed),
                              coadapt_steps=coadapt_steps, finetune_steps=finetune_steps)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, step: int, total: int) -> None:
        if stage not in bars or bars[stage].total != total or step == 1:
            if stage in bars:
                bars[stage].close()
            bars[stage] = tqdm(total=total, desc=stage, unit="step", leave=False)
        bars[stage].n = step
        bars[stage].refresh()

    state = run_conversion(model, layers_spec, data_path, out, config, training_device(device),
                           order=order, ranking=ranking, resume=resume, log=console.print,
                           progress=progress)
    for bar in bars.values():
        bar.close()
    console.print(f"done: layers {state.order} replaced in {state.seconds / 60:.1f} min -> "
                  f"{out}/depth-1.pt .. depth-{len(state.order)}.pt")


@lpa.command("report")
@click.argument("models", nargs=-1, required=True)
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for conversion.md and conversion.png.")
def lpa_report(models: tuple[str, ...], out: Path) -> None:
    """WER vs replaced layers (MSE-ranked and naive order) from the cards of MODELS: shipped
    names or packed checkpoints with their .json card beside them."""
    from mho.lpa.report import conversion_markdown, conversion_rows, plot_conversion
    from mho.lpa.study import model_cards
    from mho.models.zoo import card_layer_count

    cards = model_cards(models)
    rows = conversion_rows(cards)
    table = conversion_markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conversion.md").write_text(table)
    plot_conversion(rows, out / "conversion.png", num_layers=card_layer_count(cards[0]))
    click.echo(table, nl=False)
    console.print(f"-> {out / 'conversion.md'}, {out / 'conversion.png'}")
