"""The ``mho`` command line: parse, call the library, print (rich tables or --json)."""

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mho.errors import MhoError

# Rich assumes 80 columns when stdout is not a terminal (make, CI logs); tables need more.
console = Console(width=None if sys.stdout.isatty() else 120)


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
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
def data_build(out: Path, hours: float, seed: int, workers: int | None, as_json: bool) -> None:
    """Synthesize the local corpus (train, dev and two held-out-voice test sets) into OUT."""
    from mho.data.build import build_corpus
    from mho.data.manifest import read_manifest

    manifests = build_corpus(out, hours=hours, seed=seed, workers=workers, progress=not as_json)
    summary = {}
    for name, path in manifests.items():
        utterances = read_manifest(path)
        summary[name] = {
            "manifest": str(path),
            "utterances": len(utterances),
            "hours": sum(u.duration for u in utterances) / 3600,
        }
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
def data_lm(out: Path | None, text: Path | None, seed: int, order: int, prune_from: int) -> None:
    """Build the word n-gram LM (KenLM lmplz, quantized binary) from training text only."""
    from mho.data.lm import LM_ASSETS, build_shipped_lm
    from mho.data.text import corpus_sentences

    out = out or LM_ASSETS
    sentences = (text.read_text(encoding="utf-8").splitlines() if text
                 else corpus_sentences(seed)["train"])
    info = build_shipped_lm(sentences, out, order, prune_from)
    console.print(f"{info.order}-gram LM on {info.sentences} sentences ({info.vocabulary} words):"
                  f" {info.lm_bytes / 1e6:.1f} MB -> {out}")


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
    from mho.data.feature_set import FeatureSet
    from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
    from mho.data.manifest import read_manifest

    utterances = read_manifest(manifest)[:count]
    feature_set = FeatureSet.cached(utterances, Lexicon.from_cmudict(), PHONE_VOCABULARY,
                                    manifest.parent / "features", desc=f"{manifest.stem} features")
    feature_set.save_archive(out)
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
    from mho.data.datasets import seeded_hours
    from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
    from mho.data.manifest import read_manifest
    from mho.data.waveform_set import WaveformSet
    from mho.models.transformer import RECEPTIVE_FIELD_SAMPLES

    utterances = read_manifest(manifest)
    if hours is not None:
        utterances = seeded_hours(utterances, hours, seed)
    waveform_set = WaveformSet.build(utterances[:count], Lexicon.from_cmudict(),
                                     PHONE_VOCABULARY, min_samples=RECEPTIVE_FIELD_SAMPLES,
                                     desc=f"{manifest.stem} waveforms")
    waveform_set.save_archive(out)
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


@main.command("eval")
@click.argument("models", nargs=-1, required=True)
@click.option("--data", "data_sets", multiple=True, required=True,
              help="Shipped set name, manifest (.jsonl) or LibriSpeech directory; repeatable.")
@click.option("--decoder", type=click.Choice(["greedy", "lm"]), default="lm", show_default=True)
@memristor_options
@click.option("--runtime", type=click.Choice(["torch", "ort", "onnx-ref", "coreml"]),
              default=None,
              help="For .onnx files: ort (default) or onnx-ref; .mlpackage: coreml; models "
                   "run in torch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Utterances per onnxruntime call (server-style batching of .onnx files).")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Programming runs (chips), each with its own seed.")
@click.option("--save-chip", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the programmed chip (.npz) for later runs or export.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model and set.")
def eval_command(models: tuple[str, ...], data_sets: tuple[str, ...], decoder: str,
                 memristor: str | None, adc: str | None, layer_rules: tuple[str, ...],
                 digital_patterns: tuple[str, ...], noise: str | None, seed: int,
                 chip: Path | None, runtime: str | None, batch_size: int, runs: int,
                 save_chip: Path | None, as_json: bool) -> None:
    """Word and character error rate and real-time factor of MODELS on --data sets."""
    from mho.data.datasets import resolve_dataset
    from mho.runtime.recognizer import load_recognizer
    from mho.workflows.evaluate import evaluate

    sets = [resolve_dataset(spec) for spec in data_sets]  # fail on bad data before loading
    if (chip or save_chip) and memristor is None:
        memristor = ""  # a chip option means a memristor run
    if (chip or save_chip) and len(models) * len(sets) != 1:
        raise MhoError("--chip and --save-chip take one model and one --data set")
    if memristor is not None:
        if any(m.endswith(".onnx") for m in models):
            raise MhoError("an exported .onnx file already holds its chip: evaluate it without "
                           "--memristor, or export the model with other settings")
        results = _eval_memristor(models, sets, decoder, memristor, adc, layer_rules,
                                  digital_patterns, noise, runs, seed, as_json, chip, save_chip)
        _print_results(results, as_json, memristor=True)
        return
    results = []
    for model in models:
        recognizer = load_recognizer(model, decoder=decoder, runtime=runtime)
        for name, utterances in sets:
            results.append(evaluate(recognizer, utterances, data_name=name,
                                    progress=not as_json, batch_size=batch_size).summary())
    _print_results(results, as_json)


def _simulator_config(memristor, chip, adc, layer_rules, digital_patterns, noise):
    """The SimulatorConfig the memristor options describe: the TOML file's, else a saved chip's
    own settings, else the defaults; then the CLI shorthands."""
    import dataclasses

    from mho.simulator.config import SimulatorConfig, load_simulator_config, with_cli_overrides
    from mho.simulator.mapping import chip_config

    if memristor:
        config = load_simulator_config(memristor)
    else:
        config = chip_config(chip) if chip else SimulatorConfig()
    config = with_cli_overrides(config, adc=adc, layers=layer_rules, digital=digital_patterns)
    return config if noise is None else dataclasses.replace(config, noise=noise)


def _eval_memristor(models, sets, decoder, memristor, adc, layer_rules, digital_patterns, noise,
                    runs, seed, as_json, chip, save_chip) -> list[dict]:
    import dataclasses

    from mho.decoding.decoders import load_decoder
    from mho.models.zoo import checkpoint_path, load_model
    from mho.workflows.chips import evaluate_on_chips

    config = _simulator_config(memristor, chip, adc, layer_rules, digital_patterns, noise)
    search = load_decoder(decoder)
    results = []
    for name in models:
        path = checkpoint_path(name)
        if path is None:
            raise MhoError(f"--memristor needs an mho model (shipped name or checkpoint): {name}")
        model, _ = load_model(path)
        for data_name, utterances in sets:
            result = evaluate_on_chips(
                model, utterances, name=name, data_name=data_name, decoder=search,
                decoder_name=decoder, config=config, seed=seed, runs=runs, progress=not as_json,
                chip=chip, save_chip_to=save_chip,
            )
            results.append(dataclasses.asdict(result))
    return results


def _print_results(results: list[dict], as_json: bool, memristor: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return
    table = Table(title="evaluation on memristor chips" if memristor else "evaluation")
    last = ("runs", "WER std", "most clipped layer") if memristor else ("RTF",)
    for column in ("model", "data", "decoder", "runtime", "utts", "WER %", "CER %", *last):
        table.add_column(column, justify="left" if column in ("model", "data") else "right")
    for r in results:
        row = [r["model"], r["data"], r["decoder"], r["runtime"], str(r["utterances"]),
               f"{r['wer']:.2f}", f"{r['cer']:.2f}"]
        if memristor:
            layer, fraction = max(r["clipping"].items(), key=lambda item: item[1])
            row += [str(len(r["runs"])), f"{r['wer_std']:.2f}", f"{layer} ({fraction:.1%})"]
        else:
            row.append(f"{r['rtf']:.3f}")
        table.add_row(*row)
    console.print(table)


@main.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="A list of model cards.")
@click.option("--markdown", is_flag=True, help="A markdown table (for the README).")
@click.pass_context
def models_group(ctx: click.Context, as_json: bool, markdown: bool) -> None:
    """List the shipped models (or pack a trained one with `mho models pack`)."""
    if ctx.invoked_subcommand is not None:
        return
    from mho.models.zoo import model_card, shipped_models

    cards = [model_card(name) for name in shipped_models()]
    if as_json:
        click.echo(json.dumps(cards, indent=2))
        return
    sets = list(dict.fromkeys(r["data"] for c in cards for r in c.get("results", [])))
    columns = ["name", "pe", "bits", "LPA layers", "params", "train h", "train min",
               "dev WER (greedy)", *(f"{s} greedy / LM" for s in sets)]
    rows = []
    for card in cards:
        wer = {(r["data"], r["decoder"]): r["wer"] for r in card.get("results", [])}
        lpa_layers = card.get("lpa_layers")
        rows.append([
            card["name"], card["pe"], str(card["weight_bits"] or "float"),
            "-" if lpa_layers is None
            else f"{len(lpa_layers)} of {card['architecture']['num_layers']}",
            f"{card['params'] / 1e6:.2f} M",
            f"{card['train_hours']:.1f}", f"{card['train_minutes']:.0f}",
            f"{card['history'][-1]['dev_wer']:.2f}" if card["history"] else "-",
            *(f"{wer.get((s, 'greedy'), float('nan')):.2f} / {wer.get((s, 'lm'), float('nan')):.2f}"
              for s in sets),
        ])
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
    from mho.data.datasets import resolve_dataset
    from mho.decoding.decoders import load_decoder
    from mho.io import atomic_path
    from mho.models.zoo import MODEL_DIR, load_model, pack_model, training_summary
    from mho.runtime.torch_runtime import TorchRecognizer
    from mho.workflows.evaluate import evaluate

    sets = [resolve_dataset(spec) for spec in eval_data]  # fail on bad data before work
    out_dir = out_dir or MODEL_DIR
    model, payload = load_model(checkpoint)
    quant = getattr(model.config, "quant", None)
    card = {
        "name": name,
        "family": payload["model_type"],
        "pe": getattr(model.config, "pe", "conv"),  # wav2vec2: its conv positional embedding
        "weight_bits": quant.weight_bits if quant else None,
        "params": model.num_parameters(),
        "architecture": payload["model_config"],
        **training_summary(payload),
    }
    if hasattr(model.config, "lpa_layers"):  # wav2vec2 family: which layers hold an LPA
        card["lpa_layers"] = list(model.config.lpa_layers)
        card["lpa_order"] = payload["metadata"].get("lpa_order", [])  # as converted
        if "conversion_seconds" in payload["metadata"]:
            card["conversion_minutes"] = payload["metadata"]["conversion_seconds"] / 60
    target = out_dir / f"{name}.pt"
    with atomic_path(target) as packed_path:
        pack_model(model, payload, packed_path)
        packed, _ = load_model(packed_path)
        decoders = {kind: load_decoder(kind) for kind in ("greedy", "lm") if sets}
        card["results"] = [
            evaluate(TorchRecognizer(name, packed, decoder, kind), utterances,
                     data_name=data_name).summary()
            for data_name, utterances in sets
            for kind, decoder in decoders.items()
        ]
        card["bytes"] = packed_path.stat().st_size
        with atomic_path(target.with_suffix(".json")) as card_path:
            card_path.write_text(json.dumps(card, indent=2) + "\n")
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
    import dataclasses
    import os

    from tqdm import tqdm

    from mho.data.datasets import resolve_dataset
    from mho.simulator.config import (
        SimulatorConfig,
        load_simulator_config,
        parse_adc,
        with_cli_overrides,
    )
    from mho.workflows.sweep import plan_jobs, run_sweep, summarize, sweep_settings, write_reports

    data_name, _ = resolve_dataset(data_set)  # fail on bad data before any work
    config = load_simulator_config(config_file) if config_file else SimulatorConfig()
    config = with_cli_overrides(config, layers=layer_rules, digital=digital_patterns)
    # one value sets the base config; several are an axis
    if len(noises) == 1:
        config, noises = dataclasses.replace(config, noise=noises[0]), ()
    if len(layouts) == 1:
        config, layouts = dataclasses.replace(config, depthwise=layouts[0]), ()
    settings = sweep_settings(presets or (() if adcs else ("table2",)), map(parse_adc, adcs),
                              noises, layouts)
    jobs = plan_jobs(model, data_set, decoder, settings, config, runs, seed)
    bar = None if as_json else tqdm(total=len(jobs), desc="sweep jobs", unit="job")

    def on_result(result: dict, done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.set_postfix(last=f"{result['setting']}: {result['wer']:.2f}%")
            bar.refresh()

    results = run_sweep(jobs, out, workers=workers or os.cpu_count() or 1,
                        ray_address=ray_address, on_result=on_result)
    if bar is not None:
        bar.close()
    rows = summarize(results)
    title = (f"{model} on {data_name}: WER over {runs} chips per setting"
             + (f" ({config.noise} noise)" if not noises else ""))
    paths = write_reports(rows, results, title, out)
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
    from mho.workflows.bench.sim import SimBenchConfig, bench_sim

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
    for measure, value, target in (
        ("digital matmul (ms)", f"{summary['digital_ms']:.1f}", ""),
        ("floor = planes x digital (ms)", f"{summary['floor_ms']:.1f}", ""),
        ("simulator, noise off (ms)", f"{summary['simulator_ms']['off']:.1f}", ""),
        ("simulator, noise on (ms)", f"{summary['simulator_ms']['legacy']:.1f}", ""),
        ("floor ratio, noise off", f"{summary['floor_ratio_noise_off']:.2f}", "<= 1.5"),
        ("floor ratio, noise on", f"{summary['floor_ratio_noise_on']:.2f}", "<= 2.5"),
        ("speed-up over naive per-cell", f"{summary['speedup_vs_naive']:.0f}", ">= 20"),
        ("peak memory over digital", "n/a" if memory is None else f"{memory:.2f}", "<= 3"),
        ("programming (cells/s)", f"{summary['program_cells_per_s']:,.0f}", ""),
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
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .onnx file to write (weights over 1 GiB go to FILE.data beside it).")
@click.option("--input", "input_kind", type=click.Choice(["features", "waveform"]),
              default="waveform", show_default=True,
              help="waveform: 16 kHz samples in, log-mel front-end inside the graph.")
@memristor_options
@click.option("--json", "as_json", is_flag=True)
def export_onnx_command(model, out, input_kind, memristor, adc, layer_rules, digital_patterns,
                        noise, seed, chip, as_json) -> None:
    """Export MODEL (digital, or programmed onto a memristor chip) to one ONNX file."""
    from mho.exporter.onnx import export_onnx, load_for_export

    if out.suffix != ".onnx":
        raise MhoError(f"the output file should end in .onnx: {out}")
    simulator = None
    if memristor is not None or chip is not None:
        simulator = _simulator_config(memristor, chip, adc, layer_rules, digital_patterns, noise)
    elif adc or layer_rules or digital_patterns or noise:
        raise MhoError("--adc, --layer, --digital and --noise need --memristor (or --chip)")
    torch_model, metadata = load_for_export(model, simulator, seed, chip, progress=not as_json)
    report = export_onnx(torch_model, out, metadata, input=input_kind)
    summary = {"path": str(report.path), "bytes": report.bytes, "seconds": report.seconds,
               "external_data": report.external_data, "nodes": report.nodes}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    kind = "digital" if simulator is None else f"memristor chip (seed {metadata.programming_seed})"
    console.print(f"{model} ({kind}, {input_kind} input) -> {report.path}: "
                  f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s"
                  + (" (external data)" if report.external_data else ""))
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
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16",
              show_default=True)
@click.option("--memristor", is_flag=True, help="Not supported: says why.")
@click.option("--json", "as_json", is_flag=True)
def export_coreml_command(model, out, lengths, precision, memristor, as_json) -> None:
    """Export MODEL (digital Conformer, wav2vec2 or LPA model) to a Core ML ML program."""
    from mho.exporter.coreml import MEMRISTOR_UNSUPPORTED, export_coreml
    from mho.exporter.onnx import load_for_export

    if memristor:
        raise MhoError(MEMRISTOR_UNSUPPORTED)
    if out.suffix != ".mlpackage":
        raise MhoError(f"the output should end in .mlpackage: {out}")
    seconds = _seconds_list(lengths, "--lengths")
    torch_model, metadata = load_for_export(model)
    report = export_coreml(torch_model, out, metadata, lengths=seconds, precision=precision)
    summary = {"path": str(report.path), "bytes": report.bytes, "seconds": report.seconds,
               "lengths": report.lengths, "ops": report.ops,
               "off_neural_engine": report.off_neural_engine}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console.print(f"{model} ({precision}) -> {report.path}: {report.bytes / 1e6:.1f} MB in "
                  f"{report.seconds:.1f} s; input lengths {report.lengths}")
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
@click.option("--runtime", type=click.Choice(["torch", "ort", "onnx-ref", "coreml"]),
              default=None,
              help="For .onnx files: ort (default) or onnx-ref; .mlpackage: coreml.")
def transcribe_command(model, audio, decoder, runtime) -> None:
    """Print one line per AUDIO file: its name and MODEL's transcript (any sample rate)."""
    from mho.data.audio import load_audio
    from mho.runtime.recognizer import load_recognizer

    recognizer = load_recognizer(model, decoder=decoder, runtime=runtime)
    for path in audio:
        waveform = load_audio(path, resample=True)
        click.echo(f"{path}\t{recognizer.transcribe(waveform)}")


@main.command("check")
@click.argument("model")
@click.option("--onnx", "onnx_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="An exported file of MODEL (default: export one now).")
@click.option("--coreml", "coreml_file", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="An exported .mlpackage of MODEL (default: export one now).")
@click.option("--data", "data_set", required=True, help="Shipped set name or manifest.")
@click.option("--runtimes", default="torch,ort,onnx-ref", show_default=True,
              help="Comma-separated from torch, ort, onnx-ref, coreml; torch is the reference.")
@click.option("--decoder", type=click.Choice(["greedy", "lm"]), default="greedy",
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N utterances of the set.")
@memristor_options
@click.option("--mean-abs", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Tolerance: mean |log-prob difference| over the set.")
@click.option("--max-cer", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Tolerance: CER %% between greedy transcripts and torch's.")
@click.option("--max-wer-delta", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Tolerance: absolute WER difference (points) from torch's.")
@click.option("--runs", type=click.IntRange(min=2), default=None,
              help="Models that read with noise: passes over the set (fresh noise each); "
                   "parity is judged on the WER distributions.  [default: 3]")
@click.option("--json", "as_json", is_flag=True, help="One entry per runtime.")
def check_command(model, onnx_file, coreml_file, data_set, runtimes, decoder, limit, memristor,
                  adc, layer_rules, digital_patterns, noise, seed, chip, mean_abs, max_cer,
                  max_wer_delta, runs, as_json) -> None:
    """Parity of MODEL across runtimes: log-probs, transcripts and WER against torch; exits 1
    when a tolerance is exceeded. With read noise on, the WER distributions over --runs
    passes are compared instead."""
    import tempfile

    from mho.data.datasets import resolve_dataset
    from mho.runtime.onnx_runtime import OnnxSession
    from mho.workflows.check import Tolerances, check_noisy_parity, check_parity
    from mho.workflows.sessions import parity_runtimes

    names = [r.strip() for r in runtimes.split(",") if r.strip()]
    data_name, utterances = resolve_dataset(data_set)
    utterances = utterances[:limit] if limit else utterances
    simulator, memristor_settings = None, None
    if memristor is not None or chip is not None:
        simulator = _simulator_config(memristor, chip, adc, layer_rules, digital_patterns, noise)
        memristor_settings = simulator.to_dict()
    elif onnx_file is not None:
        memristor_settings = OnnxSession.metadata_of(onnx_file).memristor
    noisy = memristor_settings is not None and memristor_settings.get("noise", "off") != "off"
    if runs is not None and not noisy:
        raise MhoError("--runs is for models that read with noise; this one is deterministic")
    tolerances = Tolerances(mean_abs=mean_abs, transcript_cer=max_cer, wer_delta=max_wer_delta)
    with tempfile.TemporaryDirectory(prefix="mho-check-") as scratch:
        reference, others, search = parity_runtimes(
            model, names, onnx_file=onnx_file, coreml_file=coreml_file, simulator=simulator,
            seed=seed, chip=chip, decoder=decoder, scratch=Path(scratch), progress=not as_json)
        if noisy:
            results = check_noisy_parity(reference, others, utterances, search, runs or 3,
                                         tolerances, progress=not as_json)
            _print_noisy_parity(model, data_name, len(utterances), decoder, results, as_json)
            if not all(r.passed for r in results):
                sys.exit(1)
            return
        torch_wer, results = check_parity(reference, others, utterances, search, tolerances,
                                          progress=not as_json)
        coreml = None
        if "coreml" in others:  # what the program holds, and what may leave the Neural Engine
            from mho.exporter.coreml import off_neural_engine

            session = others["coreml"]
            ops = session.op_counts()
            coreml = {"executor": session.executor, "ops": ops,
                      "off_neural_engine": off_neural_engine(ops)}
    import dataclasses

    entries = [{"runtime": "torch", "wer": torch_wer, "passed": True},
               *({**dataclasses.asdict(r), **(coreml if r.runtime == "coreml" else {})}
                 for r in results)]
    if as_json:
        click.echo(json.dumps({"model": model, "data": data_name, "decoder": decoder,
                               "utterances": len(utterances), "runtimes": entries}, indent=2))
    else:
        table = Table(title=f"parity of {model} on {data_name} ({len(utterances)} utts, "
                            f"{decoder} decoding) against torch")
        for column in ("runtime", "max |diff|", "mean |diff|", "frames agree", "transcript CER %",
                       "WER %", "WER delta", "s", "pass"):
            table.add_column(column, justify="left" if column == "runtime" else "right")
        table.add_row("torch", "", "", "", "", f"{torch_wer:.2f}", "", "", "reference")
        for r in results:
            table.add_row(r.runtime, f"{r.max_abs:.3g}", f"{r.mean_abs:.3g}",
                          f"{r.frames_agree:.2%}", f"{r.transcript_cer:.2f}", f"{r.wer:.2f}",
                          f"{r.wer_delta:+.2f}", f"{r.seconds:.1f}",
                          "yes" if r.passed else "NO: " + "; ".join(r.failures))
        console.print(table)
        if coreml is not None:
            console.print(f"coreml ran as: {coreml['executor']}")
            _print_ops(coreml["ops"], coreml["off_neural_engine"])
    if not all(r.passed for r in results):
        sys.exit(1)


def _print_noisy_parity(model, data_name, count, decoder, results, as_json) -> None:
    import numpy as np

    torch_wers = results[0].torch_wers
    if as_json:
        entries = [{"runtime": "torch", "wers": torch_wers, "wer": float(np.mean(torch_wers)),
                    "wer_std": float(np.std(torch_wers, ddof=1)), "passed": True},
                   *({"runtime": r.runtime, "wers": r.wers, "wer": r.wer, "wer_std": r.wer_std,
                      "wer_delta": r.wer_delta, "allowed": r.allowed, "passed": r.passed,
                      "failures": r.failures} for r in results)]
        click.echo(json.dumps({"model": model, "data": data_name, "decoder": decoder,
                               "utterances": count, "runs": len(torch_wers),
                               "runtimes": entries}, indent=2))
        return
    table = Table(title=f"parity of {model} on {data_name} ({count} utts, {decoder} decoding, "
                        f"read noise: WER over {len(torch_wers)} runs) against torch")
    for column in ("runtime", "WER % per run", "mean", "std", "delta", "allowed", "pass"):
        table.add_column(column, justify="left" if column == "runtime" else "right")

    def row(name, wers, *rest):
        table.add_row(name, " ".join(f"{w:.2f}" for w in wers), f"{np.mean(wers):.2f}",
                      f"{np.std(wers, ddof=1):.2f}", *rest)

    row("torch", torch_wers, "", "", "reference")
    for r in results:
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


@bench.command("lpa")
@click.option("--model", default="wav2vec2-small", show_default=True,
              help="A wav2vec2-style model: its size is benchmarked with attention and with LPA.")
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
                   "attention layer ms", "LPA layer ms", "layer speed-up"):
        table.add_column(column, justify="right")
    for length in seconds:
        key = f"{length:g}"
        table.add_row(key, f"{summary['attention_ms'][key]:.0f}", f"{summary['lpa_ms'][key]:.0f}",
                      f"{summary['speedup'][key]:.2f}",
                      f"{summary['layer_attention_ms'][key]:.1f}",
                      f"{summary['layer_lpa_ms'][key]:.1f}",
                      f"{summary['layer_speedup'][key]:.2f}")
    console.print(table)
    if summary["scaling_120_60"] is not None:
        console.print(f"time 120 s / 60 s: LPA model {summary['scaling_120_60']:.2f} "
                      f"(target <= 2.2), attention model {summary['attention_scaling_120_60']:.2f}")
    if plot is not None:
        console.print(f"plot: {plot}")


@main.command("train")
@click.argument("config")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for checkpoint.pt and log.jsonl.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt exactly.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field (TOML value syntax), e.g. --set pe='\"none\"'.")
def train_command(config: str, out: Path, resume: bool, overrides: tuple[str, ...]) -> None:
    """Train a Conformer-CTC from CONFIG (a TOML file or a preset name)."""
    from mho.train.config import apply_overrides, load_train_config
    from mho.train.trainer import Trainer

    train_config = apply_overrides(load_train_config(config), overrides)
    trainer = Trainer(train_config, out, log=console.print)
    state = trainer.fit(resume=resume)
    console.print(f"done: {state.epoch} epochs, {state.seconds / 60:.1f} min -> {out}")


@main.group()
def lpa() -> None:
    """Learnable Pulse Accumulator: rank layers, convert a wav2vec2-style model."""


def _lpa_teacher(model: str):
    from mho.models.transformer import Wav2Vec2CTC
    from mho.models.zoo import checkpoint_path, load_model

    path = checkpoint_path(model)
    if path is None:
        raise MhoError(f"unknown model {model!r}: give a shipped name, a checkpoint path or "
                       f"a Hugging Face model folder")
    teacher, payload = load_model(path)
    if not isinstance(teacher, Wav2Vec2CTC):
        raise MhoError(f"{model} is not a wav2vec2-style model (LPA replaces its attention)")
    return teacher, payload


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


def _fit_config(steps: int, batch_seconds: float, lpa_settings: tuple[str, ...], seed: int):
    import tomllib

    from mho.lpa.fitting import FitConfig

    try:
        settings = tomllib.loads("\n".join(lpa_settings))
    except tomllib.TOMLDecodeError as error:
        raise MhoError(f"bad --lpa value ({error})") from None
    return FitConfig(steps=steps, max_batch_seconds=batch_seconds, seed=seed, lpa=settings)


@lpa.command("sweep")
@click.argument("model")
@click.option("--data", "data_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="Waveform archive (.pt) or manifest to fit on; every 10th item is held out.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for sweep.json and sweep.png.")
@_fit_options
@click.option("--json", "as_json", is_flag=True)
def lpa_sweep(model: str, data_path: Path, out: Path, steps: int, batch_seconds: float,
              lpa_settings: tuple[str, ...], seed: int, device: str, as_json: bool) -> None:
    """The MSE diagnostic: fit an LPA to each layer's attention, rank layers by difficulty."""
    import dataclasses
    import json

    from tqdm import tqdm

    from mho.lpa.diagnostic import diagnose, mse_order
    from mho.lpa.fitting import load_waveform_set
    from mho.lpa.report import plot_sweep
    from mho.train.trainer import training_device

    teacher, _ = _lpa_teacher(model)
    config = _fit_config(steps, batch_seconds, lpa_settings, seed)
    data = load_waveform_set(data_path)
    ids = [u.id for u in data.utterances]
    held_out = data.select(set(ids[::10]))
    train = data.select(set(ids) - set(ids[::10]))
    layers = teacher.config.num_layers
    bar = tqdm(total=layers * steps, desc="fitting", unit="step", disable=as_json)
    fits = diagnose(teacher, train, held_out, config, training_device(device),
                    progress=lambda layer, step: bar.update())
    bar.close()
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": model, "config": dataclasses.asdict(config),
              "layers": [dataclasses.asdict(f) for f in fits], "mse_order": mse_order(fits)}
    (out / "sweep.json").write_text(json.dumps(report, indent=2))
    plot_sweep(fits, out / "sweep.png", title=f"LPA fit per layer: {model}")
    if as_json:
        click.echo(json.dumps(report))
        return
    table = Table(title=f"LPA fit per layer ({steps} steps each); easiest first")
    for column in ("rank", "layer", "rel. MSE (hard)", "rel. MSE (soft)", "seconds"):
        table.add_column(column, justify="right")
    by_layer = {f.layer: f for f in fits}
    for rank, layer in enumerate(report["mse_order"], start=1):
        fit = by_layer[layer]
        table.add_row(str(rank), str(layer), f"{fit.mse:.4f}", f"{fit.soft_mse:.4f}",
                      f"{fit.seconds:.0f}")
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
              help="Waveform archive (.pt) or manifest to train on.")
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
    import json

    from tqdm import tqdm

    from mho.data.lexicon import PHONE_VOCABULARY
    from mho.lpa.convert import ConversionConfig, Converter
    from mho.lpa.fitting import load_waveform_set
    from mho.train.trainer import training_device

    teacher, payload = _lpa_teacher(model)
    if finetune_steps and list(payload["vocabulary"]) != list(PHONE_VOCABULARY.tokens):
        raise MhoError(f"{model} outputs another vocabulary than mho's phones (a Hugging Face "
                       "character model?): CTC fine-tuning needs phone targets; pass "
                       "--finetune-steps 0 to convert with fitting and co-adaptation only")
    num_layers = teacher.config.num_layers
    if "," in layers_spec or not layers_spec.isdigit():
        try:
            layer_order = [int(x) for x in layers_spec.split(",") if x.strip()]
        except ValueError:
            raise MhoError(f"--layers takes N or a comma list of indices, got {layers_spec!r}") \
                from None
    else:
        if order == "mse":
            if ranking is None:
                raise MhoError("--order mse needs --ranking sweep.json (run `mho lpa sweep`)")
            full = json.loads(ranking.read_text())["mse_order"]
        else:
            full = list(range(num_layers))
        layer_order = full[: int(layers_spec)]
    if not layer_order or len(set(layer_order)) != len(layer_order) or \
            any(not 0 <= i < num_layers for i in layer_order):
        raise MhoError(f"--layers must name distinct layers in 0..{num_layers - 1}")
    if set(layer_order) & set(teacher.config.lpa_layers):
        raise MhoError(f"layers {sorted(set(layer_order) & set(teacher.config.lpa_layers))} "
                       "are already LPA layers")
    config = ConversionConfig(fit=_fit_config(steps, batch_seconds, lpa_settings, seed),
                              coadapt_steps=coadapt_steps, finetune_steps=finetune_steps)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, step: int, total: int) -> None:
        if stage not in bars or bars[stage].total != total or step == 1:
            if stage in bars:
                bars[stage].close()
            bars[stage] = tqdm(total=total, desc=stage, unit="step", leave=False)
        bars[stage].n = step
        bars[stage].refresh()

    converter = Converter(payload, teacher, layer_order, load_waveform_set(data_path), config,
                          out, training_device(device), log=console.print, progress=progress)
    state = converter.run(resume=resume)
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
    from mho.models.zoo import model_card, shipped_models

    cards = []
    for model in models:
        card_path = Path(model).with_suffix(".json")
        if model in shipped_models():
            cards.append(model_card(model))
        elif card_path.is_file():
            cards.append(json.loads(card_path.read_text()))
        else:
            raise MhoError(f"no model card for {model} (pack it with `mho models pack`)")
    rows = conversion_rows(cards)
    table = conversion_markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conversion.md").write_text(table)
    plot_conversion(rows, out / "conversion.png",
                    num_layers=cards[0]["architecture"]["num_layers"])
    click.echo(table, nl=False)
    console.print(f"-> {out / 'conversion.md'}, {out / 'conversion.png'}")
