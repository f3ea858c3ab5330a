"""Sweeps: a grid of simulator settings x programming runs, run as independent jobs.

Each job scores one setting on the chip of one seed. Programming depends only on the seed
(and the device, tiles, weight bits and depthwise layouts), so jobs that share those share
one programmed chip, read with each job's converters, noise and digital layers. Jobs run in
a local process pool (one torch thread each) or, with ``ray_address``, as Ray tasks; every
finished job is written at once to ``<out>/jobs/<job id>.json``, so an interrupted sweep
resumes from the jobs that finished. The id hashes everything the result depends on (model
file, data, decoder, simulator settings, seed), so a changed setting is a new job.

Presets follow the paper (Tables 1-2, Figure 1):

- ``table2``: whole-model ADC (precision/range bits) 4/4, 4/8, 8/8, 3/5, 2/6;
- ``figure1``: ADC of the positional-encoding layers only (``*.linear_pos``), the rest at
  4/4: 4/4, 4/8, then the fixed 8-bit budget 3/5, 2/6, 1/7, 0/8;
- ``oracle``: the positional-encoding layers kept digital, the rest at 4/4.

Every sweep also scores the digital QAT model once ("base", the tables' "Base." column).
"""

import dataclasses
import functools
import hashlib
import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mho.errors import ConfigError, MhoError
from mho.io import atomic_path
from mho.simulator.config import LayerRule, SimulatorConfig
from mho.simulator.crossbar import CrossbarConfig

PE_LAYERS = "*.linear_pos"  # the positional encodings' linear projections


@dataclass(frozen=True)
class SweepSetting:
    label: str  # e.g. "all 4/8", "pe 2/6"
    preset: str  # the group it belongs to ("table2", "figure1", "oracle", "custom", "base")
    adc: tuple[int, int] = (4, 4)  # whole-model ADC
    layers: tuple[LayerRule, ...] = ()  # rules after the base config's
    seeded: bool = True  # False: the digital baseline, one run is enough
    noise: str | None = None  # read noise mode; None: the base config's
    depthwise: str | None = None  # default depthwise layout; None: the base config's

    def simulator_config(self, base: SimulatorConfig) -> SimulatorConfig:
        changes = {"noise": self.noise, "depthwise": self.depthwise}
        return dataclasses.replace(base, adc=self.adc, layers=base.layers + self.layers,
                                   **{k: v for k, v in changes.items() if v is not None})


BASE = SweepSetting("base (digital QAT)", "base", layers=(LayerRule("*", digital=True),),
                    seeded=False)
PRESETS: dict[str, tuple[SweepSetting, ...]] = {
    "table2": tuple(SweepSetting(f"all {p}/{r}", "table2", (p, r))
                    for p, r in ((4, 4), (4, 8), (8, 8), (3, 5), (2, 6))),
    "figure1": tuple(SweepSetting(f"pe {p}/{r}", "figure1", (4, 4), (LayerRule(PE_LAYERS, (p, r)),))
                     for p, r in ((4, 4), (4, 8), (3, 5), (2, 6), (1, 7), (0, 8))),
    "oracle": (SweepSetting("oracle (pe digital)", "oracle", (4, 4),
                            (LayerRule(PE_LAYERS, digital=True),)),),
}


def sweep_settings(presets: Iterable[str], adcs: Iterable[tuple[int, int]] = (),
                   noises: Sequence[str] = (), layouts: Sequence[str] = ()
                   ) -> list[SweepSetting]:
    """The base setting, then the presets' settings, then whole-model ADCs given one by one;
    a setting named twice is run once. `noises` (read noise modes) and `layouts` (depthwise
    layouts) are further axes: every chip setting once per noise mode and layout, labelled
    with them (the digital base once)."""
    settings = []
    for name in presets:
        if name not in PRESETS:
            raise ConfigError(f"unknown sweep preset {name!r}; presets: {', '.join(PRESETS)}")
        settings += PRESETS[name]
    settings += [SweepSetting(f"all {p}/{r}", "custom", (p, r)) for p, r in adcs]
    for noise in noises:
        CrossbarConfig(noise=noise)  # a clear ConfigError for an unknown mode
    for layout in layouts:
        SimulatorConfig(depthwise=layout)  # and for an unknown layout
    crossed = []
    for setting in settings:
        for noise in noises or (None,):
            for layout in layouts or (None,):
                label = setting.label + (f", noise {noise}" if noise else "") + (
                    f", {layout}" if layout else "")
                crossed.append(dataclasses.replace(setting, label=label, noise=noise,
                                                   depthwise=layout))
    unique: dict[tuple, SweepSetting] = {}
    for setting in [BASE, *crossed]:
        unique.setdefault((setting.adc, setting.layers, setting.noise, setting.depthwise),
                          setting)
    return list(unique.values())


@dataclass(frozen=True)
class SweepJob:
    model: str  # shipped name or checkpoint path
    data: str  # data set spec (shipped name, manifest, LibriSpeech folder)
    decoder: str
    setting: SweepSetting
    config: SimulatorConfig  # the base config the setting applies to
    seed: int
    model_digest: str  # of the checkpoint file: a retrained model is a new job

    @property
    def id(self) -> str:
        key = json.dumps([self.model_digest, self.data, self.decoder, self.seed,
                          self.setting.simulator_config(self.config).to_dict()], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def plan_jobs(model: str, data: str, decoder: str, settings: Sequence[SweepSetting],
              config: SimulatorConfig, runs: int, seed: int) -> list[SweepJob]:
    """All jobs of a sweep; every setting is checked against the model's layers first, so a
    pattern that matches nothing (e.g. the PE presets on a model without ``linear_pos``)
    fails before any chip is programmed."""
    from mho.models.quant import quantized_layers
    from mho.models.zoo import checkpoint_path, load_model

    path = checkpoint_path(model)
    if path is None:
        raise MhoError(f"sweeps need an mho model (shipped name or checkpoint): {model}")
    loaded, _ = load_model(path)
    names = list(quantized_layers(loaded))
    for setting in settings:
        try:
            setting.simulator_config(config).resolve(names)
        except ConfigError as error:
            raise ConfigError(f"{setting.label}: {error}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return [SweepJob(model, data, decoder, setting, config, seed + run, digest)
            for setting in settings for run in range(runs if setting.seeded else 1)]


@functools.cache
def _loaded(model: str, data: str, decoder: str):
    """Model, utterances and decoder, loaded once per worker process."""
    from mho.data.datasets import resolve_dataset
    from mho.decoding.decoders import load_decoder
    from mho.exporter.onnx import load_for_export

    loaded, metadata = load_for_export(model)
    data_name, utterances = resolve_dataset(data)
    return loaded, metadata, data_name, utterances, load_decoder(decoder,
                                                                 tokens=metadata.vocabulary)


def _programming(config: SimulatorConfig) -> SimulatorConfig:
    """What programming depends on: the config without its converters, read noise and
    digital rules (rules that re-quantize weights or pick a depthwise layout stay)."""
    rules = tuple(dataclasses.replace(rule, adc=None, digital=None) for rule in config.layers
                  if rule.weight_bits is not None or rule.depthwise is not None)
    return dataclasses.replace(config, adc=(4, 4), noise="off", layers=rules)


def chip_groups(jobs: Sequence[SweepJob]) -> list[list[SweepJob]]:
    """Jobs that can read one programmed chip: the same model, data, decoder, seed and
    programming (settings that differ only in converters, noise or digital layers)."""
    groups: dict[tuple, list[SweepJob]] = {}
    for job in jobs:
        program = _programming(job.setting.simulator_config(job.config))
        key = (job.model_digest, job.data, job.decoder, job.seed,
               json.dumps(program.to_dict(), sort_keys=True))
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def run_jobs(jobs: Sequence[SweepJob]) -> list[dict[str, Any]]:
    """Program one chip for a group of jobs (`chip_groups`) and score every job's settings
    on it: plain dicts, one per job (they cross process boundaries)."""
    from mho.timing import torch_threads

    with torch_threads(1):  # jobs run side by side, one per core
        return _run_jobs(jobs)


def run_job(job: SweepJob) -> dict[str, Any]:
    """One job on its own chip."""
    return run_jobs([job])[0]


def _run_jobs(jobs: Sequence[SweepJob]) -> list[dict[str, Any]]:
    import time

    from mho import __version__
    from mho.models.quant import quantized_layers
    from mho.runtime.speech import Recognizer, SpeechSession
    from mho.simulator.mapping import map_to_crossbars, reread
    from mho.simulator.stats import clip_fractions, reset_clip_stats
    from mho.workflows.evaluate import evaluate

    first = jobs[0]
    model, metadata, data_name, utterances, decoder = _loaded(first.model, first.data,
                                                              first.decoder)
    configs = [job.setting.simulator_config(job.config) for job in jobs]
    names = list(quantized_layers(model))
    on_chip = set()  # every layer some job reads from crossbars: the chip holds them all
    for config in configs:
        on_chip |= {name for name, s in config.resolve(names).items() if not s.digital}
    started = time.perf_counter()
    chip = None
    if on_chip:
        program = _programming(configs[0])
        digital = tuple(LayerRule(name, digital=True) for name in names if name not in on_chip)
        _, chip = map_to_crossbars(model, dataclasses.replace(
            program, layers=program.layers + digital), first.seed)
    program_seconds = (time.perf_counter() - started) / len(jobs)
    results = []
    for job, config in zip(jobs, configs, strict=True):
        started = time.perf_counter()
        if chip is None:  # nothing on crossbars (the digital base)
            simulated, report = map_to_crossbars(model, config, job.seed)
        else:
            simulated, report = reread(model, chip, config)
        reset_clip_stats(simulated)
        recognizer = Recognizer(job.model, SpeechSession.from_model(simulated, metadata),
                                decoder, job.decoder)
        result = evaluate(recognizer, utterances, data_name=data_name, progress=False)
        results.append({
            "id": job.id, "setting": job.setting.label, "preset": job.setting.preset,
            "seed": job.seed, "wer": result.wer, "cer": result.cer,
            "clipping": clip_fractions(simulated), "cells": report.cells,
            # programming is shared by the group's jobs: its time is split evenly
            "seconds": time.perf_counter() - started + program_seconds,
            # what produced it: the resolved settings and the code's version
            "config": config.to_dict(), "mho_version": __version__})
    return results


def run_sweep(jobs: Sequence[SweepJob], out_dir: Path, *, workers: int = 1,
              ray_address: str | None = None,
              on_result: Callable[[dict, int, int], None] = lambda result, done, total: None,
              ) -> list[dict]:
    """Run the jobs not yet in ``out_dir/jobs``, one programmed chip per group of jobs that
    can share it (`chip_groups`); return every job's result in job order."""
    job_dir = Path(out_dir) / "jobs"
    job_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for job in jobs:
        path = job_dir / f"{job.id}.json"
        if path.is_file():
            results[job.id] = json.loads(path.read_text())
    groups = chip_groups([job for job in jobs if job.id not in results])

    def finished(group_results: list[dict]) -> None:
        for result in group_results:
            with atomic_path(job_dir / f"{result['id']}.json") as partial:
                partial.write_text(json.dumps(result, indent=2) + "\n")
            results[result["id"]] = result
            on_result(result, len(results), len(jobs))

    if ray_address is not None:
        _run_on_ray(groups, ray_address, finished)
    elif workers == 1 or len(groups) <= 1:
        for group in groups:
            finished(run_jobs(group))
    else:
        _run_in_pool(groups, workers, finished)
    return [results[job.id] for job in jobs]


def _run_in_pool(groups: Sequence[list[SweepJob]], workers: int, finished: Callable) -> None:
    # spawn, not fork: a forked torch (OpenMP pools, LM decoder state) can deadlock
    with ProcessPoolExecutor(min(workers, len(groups)), mp_context=get_context("spawn")) as pool:
        running = {pool.submit(run_jobs, group) for group in groups}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished(future.result())


def _run_on_ray(groups: Sequence[list[SweepJob]], address: str, finished: Callable) -> None:
    try:
        import ray
    except ImportError:
        raise MhoError("--ray needs Ray: pip install 'mho[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        # "local": a fresh single-machine instance; anything else: an existing cluster
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_jobs)
        running = [remote.remote(group) for group in groups]
        while running:
            done, running = ray.wait(running, num_returns=1)
            for reference in done:
                finished(ray.get(reference))
    finally:
        if started_here:
            ray.shutdown()


# ---- reports ---------------------------------------------------------------------------------


def summarize(results: Sequence[dict]) -> list[dict]:
    """One row per setting, in first-seen order: WER mean and spread over runs, CER, and the
    most clipped layer (clipping averaged over runs)."""
    by_setting: dict[str, list[dict]] = {}
    for result in results:
        by_setting.setdefault(result["setting"], []).append(result)
    rows = []
    for label, runs in by_setting.items():
        wers = [r["wer"] for r in runs]
        clipping: dict[str, float] = {}
        for layer in runs[0]["clipping"]:
            clipping[layer] = statistics.fmean(r["clipping"][layer] for r in runs)
        worst = max(clipping.items(), key=lambda item: item[1]) if clipping else (None, 0.0)
        rows.append({
            "setting": label, "preset": runs[0]["preset"], "runs": len(runs),
            "wer": statistics.fmean(wers),
            "wer_std": statistics.stdev(wers) if len(wers) > 1 else 0.0,
            "wer_runs": wers, "cer": statistics.fmean(r["cer"] for r in runs),
            "most_clipped_layer": worst[0], "most_clipped_fraction": worst[1],
            "pe_clipping": statistics.fmean(
                [v for k, v in clipping.items() if k.endswith(".linear_pos")] or [0.0]),
        })
    return rows


def markdown_table(rows: Sequence[dict], title: str) -> str:
    lines = [f"### {title}", "",
             "| setting | runs | WER % | std | CER % | PE clipped | most clipped layer |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        layer = "-" if r["most_clipped_layer"] is None else (
            f"{r['most_clipped_layer']} ({r['most_clipped_fraction']:.1%})")
        lines.append(f"| {r['setting']} | {r['runs']} | {r['wer']:.2f} | {r['wer_std']:.2f} | "
                     f"{r['cer']:.2f} | {r['pe_clipping']:.1%} | {layer} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], title: str, path: Path) -> None:
    """WER mean +- std per setting, grouped by preset; the digital base as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["preset"] != "base"]
    base = next((r for r in rows if r["preset"] == "base"), None)
    figure, axes = plt.subplots(figsize=(max(5.0, 0.8 * len(shown) + 2), 4))
    colors = {"table2": "tab:blue", "figure1": "tab:orange", "oracle": "tab:green",
              "custom": "tab:purple"}
    for x, r in enumerate(shown):
        axes.errorbar(x, r["wer"], yerr=r["wer_std"], fmt="o", capsize=4,
                      color=colors.get(r["preset"], "black"))
    if base is not None:
        axes.axhline(base["wer"], linestyle="--", color="gray",
                     label=f"digital QAT {base['wer']:.2f}%")
        axes.legend(loc="best")
    axes.set_xticks(range(len(shown)), [r["setting"] for r in shown], rotation=45, ha="right")
    axes.set_ylabel("WER % (mean ± std over chips)")
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as partial:
        figure.savefig(partial, format="png", dpi=120)
    plt.close(figure)


CSV_COLUMNS = ("setting", "preset", "runs", "wer", "wer_std", "cer", "pe_clipping",
               "most_clipped_layer", "most_clipped_fraction", "wer_runs")


def csv_table(rows: Sequence[dict]) -> str:
    """One line per setting (CSV_COLUMNS; wer_runs: each chip's WER, separated by ';')."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([";".join(f"{w:.4f}" for w in r[c]) if c == "wer_runs" else
                         ("" if r[c] is None else r[c]) for c in CSV_COLUMNS])
    return text.getvalue()


def write_reports(rows: Sequence[dict], results: Sequence[dict], title: str, out_dir: Path,
                  ) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"markdown": out_dir / "sweep.md", "json": out_dir / "sweep.json",
             "csv": out_dir / "sweep.csv", "plot": out_dir / "sweep.png"}
    with atomic_path(paths["markdown"]) as partial:
        partial.write_text(markdown_table(rows, title))
    with atomic_path(paths["csv"]) as partial:
        partial.write_text(csv_table(rows))
    with atomic_path(paths["json"]) as partial:
        partial.write_text(json.dumps({"title": title, "settings": list(rows),
                                       "jobs": list(results)}, indent=2) + "\n")
    plot(rows, title, paths["plot"])
    return paths


def sweep_model(
    model: str,
    data: str,
    out: Path,
    *,
    presets: Sequence[str] = (),
    adcs: Sequence[str] = (),
    config_file: str | Path | None = None,
    noises: Sequence[str] = (),
    layouts: Sequence[str] = (),
    layers: Sequence[str] = (),
    digital: Sequence[str] = (),
    decoder: str = "lm",
    runs: int = 3,
    seed: int = 0,
    workers: int | None = None,
    ray_address: str | None = None,
    on_result: Callable[[dict, int, int], None] = lambda result, done, total: None,
) -> tuple[list[dict], str, dict[str, Path]]:
    """`mho sweep`: plan the grid (the paper's ``presets``, whole-model ``adcs`` "P/R", noise
    modes and depthwise layouts: one value sets the base config, several are an axis), run
    it resumably into ``out`` and write its reports; returns the per-setting rows, the title
    and the report paths. The data set is checked before any work."""
    import os

    from mho.data.datasets import resolve_dataset
    from mho.simulator.config import load_simulator_config, parse_adc, with_cli_overrides

    data_name, _ = resolve_dataset(data)
    config = load_simulator_config(config_file) if config_file else SimulatorConfig()
    config = with_cli_overrides(config, layers=layers, digital=digital)
    noises, layouts = tuple(noises), tuple(layouts)
    if len(noises) == 1:
        config, noises = dataclasses.replace(config, noise=noises[0]), ()
    if len(layouts) == 1:
        config, layouts = dataclasses.replace(config, depthwise=layouts[0]), ()
    settings = sweep_settings(presets or (() if adcs else ("table2",)), map(parse_adc, adcs),
                              noises, layouts)
    jobs = plan_jobs(model, data, decoder, settings, config, runs, seed)
    results = run_sweep(jobs, out, workers=workers or os.cpu_count() or 1,
                        ray_address=ray_address, on_result=on_result)
    rows = summarize(results)
    title = (f"{model} on {data_name}: WER over {runs} chips per setting"
             + (f" ({config.noise} noise)" if not noises else ""))
    return rows, title, write_reports(rows, results, title, out)
