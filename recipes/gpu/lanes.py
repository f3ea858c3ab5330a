"""One GPU session of issue 18: synthesize diverse data there, train an ablation side by side,
fine-tune the full recipe at 8 and 4 bits, score everything, and pack what comes back.

Run by recipes/gpu/run.sh (which sets PATH to the bundled synthesizers and PYTHONPATH to
the bundled mho and wheels). Every phase has a wall-clock deadline counted from the start;
a phase that overruns is stopped with a usable result (synthesis keeps the finished audio,
training lanes get SIGINT and save a checkpoint after their current step), so the whole
run ends inside its budget. Rerun with the same --work and every phase resumes.

Lanes (same model, preset, seed and step budget; only the data recipe differs):
  classic          the shipped models' voices (espeak-ng en-us/en-us-nyc, flite kal16/awb/rms,
                   festival kal/ked), no augmentation
  voices           every English voice and accent, same hours, no augmentation
  voices-speaker   + speed (pitch, formants, tempo) and VTLP (formants)
  voices-channel   + reverberation, noise at 5-35 dB SNR, telephone / cheap-mic band
  voices-both      + both
  all              both corpora (twice the hours, half the epochs: same steps) + both
Then QAT of "all" at 8 and 4 bits on the same data and augmentation.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

T0 = time.time()

SPEAKER = {"speed_prob": 0.6, "warp_prob": 0.6}
CHANNEL = {"reverb_prob": 0.4, "noise_prob": 0.5, "bandlimit_prob": 0.3}
LANES = {  # name -> (train archive, augment table)
    "classic": ("classic", {}),
    "voices": ("voices", {}),
    "voices-speaker": ("voices", SPEAKER),
    "voices-channel": ("voices", CHANNEL),
    "voices-both": ("voices", {**SPEAKER, **CHANNEL}),
    "all": ("both", {**SPEAKER, **CHANNEL}),
}
MODES = {
    # 16 cores + one H200; the whole run must end by "end" seconds (the call allows 570).
    "full": {"hours": 4.0, "workers": 16, "device": "cuda", "epochs": 36, "qat_epochs": 2,
             "batch_seconds": 800.0, "batch_size": 128, "threads": 2, "dev_every": 10,
             "synth_end": 170, "float_end": 395, "qat_end": 470, "eval_end": 515, "end": 535},
    # the 2-core CPU machine, in resumable steps: run it with --stop-after SECONDS as often
    # as needed (each step ends with a checkpoint per lane; the next resumes)
    "cpu": {"hours": 2.0, "workers": 2, "device": "cpu", "epochs": 4, "qat_epochs": 1,
            "batch_seconds": 80.0, "batch_size": 32, "threads": 1, "dev_every": 2,
            "synth_end": 1e9, "float_end": 1e9, "qat_end": 1e9, "eval_end": 1e9, "end": 1e9},
    # the CPU dry run: minutes of audio, one epoch, same code paths
    "tiny": {"hours": 0.01, "workers": 2, "device": "cpu", "epochs": 1, "qat_epochs": 1,
             "batch_seconds": 40.0, "batch_size": 8, "threads": 1, "dev_every": 1,
             "synth_end": 240, "float_end": 900, "qat_end": 1200, "eval_end": 1500,
             "end": 1600},
}


def elapsed() -> float:
    return time.time() - T0


def log(message: str) -> None:
    print(f"[{elapsed():6.1f} s] {message}", flush=True)


class Timings:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}
        self.data.setdefault("runs", []).append({"started_unix": T0})

    def mark(self, key: str, value) -> None:
        self.data["runs"][-1][key] = value
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")


def run_until(commands: dict[str, list[str]], logs: Path, deadline: float, *,
              env: dict | None = None, grace: float = 40.0) -> dict[str, int | None]:
    """Start every command, wait until all end or ``deadline`` (seconds since start), then
    SIGINT the rest (the trainer saves and stops; a build stops), SIGKILL after ``grace``."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, command in commands.items():
        out = (logs / f"{name}.log").open("a")
        # cwd: `python -m mho` puts the working directory first on sys.path, and the
        # checkout this runs in may hold another mho than the bundled one
        procs[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       cwd=logs.parent, start_new_session=True)
    while any(p.poll() is None for p in procs.values()) and elapsed() < deadline:
        time.sleep(1.0)
    late = [n for n, p in procs.items() if p.poll() is None]
    if late:
        log(f"deadline {deadline:.0f} s: stopping {', '.join(late)}")
        for name in late:
            os.killpg(procs[name].pid, signal.SIGINT)
        stop = time.time() + grace
        while any(procs[n].poll() is None for n in late) and time.time() < stop:
            time.sleep(0.5)
        for name in late:
            if procs[name].poll() is None:
                os.killpg(procs[name].pid, signal.SIGKILL)
                procs[name].wait()
    return {name: p.returncode for name, p in procs.items()}


def salvage_manifest(corpus: Path, config, name: str) -> Path:
    """After a stopped build: a manifest of the planned utterances whose audio is finished."""
    from mho.data.build import plan_corpus
    from mho.data.manifest import Utterance, write_manifest
    from mho.data.synth import valid_duration

    kept = []
    for item in plan_corpus(config)[name]:
        audio = corpus / "audio" / name / f"{item.id}.flac"
        duration = valid_duration(audio)
        if duration is not None:
            kept.append(Utterance(item.id, audio.resolve(), round(duration, 4), item.text))
    path = corpus / f"{name}.jsonl"
    write_manifest(path, kept)
    return path


def _waveform_chunk(utterances):
    import torch

    from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
    from mho.data.waveform_set import WaveformSet
    from mho.models.transformer import RECEPTIVE_FIELD_SAMPLES

    torch.set_num_threads(1)
    part = WaveformSet.build(utterances, Lexicon.from_cmudict(), PHONE_VOCABULARY,
                             min_samples=RECEPTIVE_FIELD_SAMPLES, progress=False)
    return part.utterances, [c.numpy() for c in part.codes], [x.numpy() for x in part.labels], \
        part.skipped


def decode_waveforms(manifests: dict[str, Path], workers: int) -> dict:
    """Train manifests -> one `WaveformSet` each (8-bit mu-law), decoded on ``workers``
    processes in one pool (each process loads the lexicon once)."""
    import torch

    from mho.data.manifest import read_manifest
    from mho.data.waveform_set import WaveformSet

    utterances = {name: read_manifest(path) for name, path in manifests.items()}
    jobs = []
    for name, utts in utterances.items():
        size = max(1, len(utts) // (workers * 2) + 1)
        jobs += [(name, utts[i:i + size]) for i in range(0, len(utts), size)]
    parts: dict[str, list] = {name: [] for name in manifests}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for (name, _), part in zip(jobs, pool.map(_waveform_chunk, [j[1] for j in jobs]),
                                   strict=True):
            parts[name].append(part)
    sets = {}
    for name, chunks in parts.items():
        kept, codes, labels, skipped = [], [], [], 0
        for utts, c, lab, s in chunks:
            kept += utts
            codes += [torch.from_numpy(x) for x in c]
            labels += [torch.from_numpy(x) for x in lab]
            skipped += s
        sets[name] = WaveformSet(kept, codes, labels, skipped)
    return sets


def save_archive(waveform_sets: list, out: Path) -> dict:
    """Concatenate sets into one archive; what it holds."""
    from mho.data.waveform_set import WaveformSet

    joined = WaveformSet([u for w in waveform_sets for u in w.utterances],
                         [c for w in waveform_sets for c in w.codes],
                         [x for w in waveform_sets for x in w.labels],
                         sum(w.skipped for w in waveform_sets))
    joined.save_archive(out)
    return {"utterances": len(joined), "skipped": joined.skipped,
            "hours": sum(joined.durations) / 3600}


def lane_config(path: Path, mode: dict, *, train: Path, dev: Path, augment: dict, epochs: int,
                seed: int, weight_bits: int | None = None, init: Path | None = None) -> Path:
    """A TOML training config (the conformer-small-gpu preset's values where they apply)."""
    lines = [
        'size = "small"', 'pe = "sinusoidal+linear"', f"epochs = {epochs}",
        f"dev_every = {min(mode['dev_every'], epochs)}",
        f"max_batch_seconds = {mode['batch_seconds']}", f"max_batch_size = {mode['batch_size']}",
        f"peak_lr = {3e-4 if weight_bits else 2e-3}", "warmup_fraction = 0.05",
        f"seed = {seed}", f"threads = {mode['threads']}", f"device = \"{mode['device']}\"",
    ]
    if weight_bits:
        lines += [f"weight_bits = {weight_bits}", f'init = "{init}"']
    lines += ["", "[data]", f'train = "{train}"', f'dev = "{dev}"', "max_dev_utterances = 200",
              "", "[augment]"] + [f"{key} = {value}" for key, value in augment.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def slim_checkpoint(source: Path, target: Path) -> None:
    """Weights only, floats as fp16 (about 5 MB for the small conformer): the training state
    stays on the machine; mho's loader casts back to float32."""
    import torch

    payload = torch.load(source, map_location="cpu", weights_only=True)
    payload.pop("training", None)
    payload["state_dict"] = {k: v.half() if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()}
    payload.setdefault("metadata", {})["stored_as"] = "fp16 weights (mho data for issue 18)"
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mho18"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stop-after", type=float, default=None,
                        help="Stop every phase this many seconds after the start (a step of a "
                             "long CPU run; rerun to resume).")
    args = parser.parse_args()
    mode = dict(MODES[args.mode])
    if args.stop_after is not None:
        for key in ("synth_end", "float_end", "qat_end", "eval_end", "end"):
            mode[key] = min(mode[key], args.stop_after)
    work, out = args.work.resolve(), args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    timings = Timings(work / "timing.json")
    timings.mark("mode", args.mode)
    py = [sys.executable, "-m", "mho"]
    env = {**os.environ, "OMP_NUM_THREADS": str(mode["threads"])}
    import torch

    timings.mark("torch", torch.__version__)
    timings.mark("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    timings.mark("cpus", os.cpu_count())
    which_mho = subprocess.run([sys.executable, "-c", "import mho; print(mho.__file__)"],
                               capture_output=True, text=True, cwd=work).stdout.strip()
    log(f"mho: {which_mho}")
    timings.mark("mho", which_mho)
    for tool in ("espeak-ng", "flite", "festival"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                               text=True).stdout.strip()
        log(f"{tool}: {found}")
        timings.mark(f"which_{tool}", found)

    # ---- 1. synthesis: two corpora at once, each on half the cores --------------------
    from mho.data.build import CorpusConfig

    corpora = {
        "classic": CorpusConfig(hours=mode["hours"], seed=0, voices="classic"),
        "voices": CorpusConfig(hours=mode["hours"], seed=1, voices="all", split_seed=0),
    }
    half = str(max(1, mode["workers"] // 2))
    commands = {}
    for name, config in corpora.items():
        if (work / f"corpus-{name}" / ".complete").is_file():
            continue
        commands[f"build-{name}"] = [
            *py, "data", "build", str(work / f"corpus-{name}"), "--hours", str(config.hours),
            "--seed", str(config.seed), "--voices", config.voices, "--set", "train",
            "--set", "dev", "--converter", "python", "--workers", half, "--json"]
        if config.split_seed is not None:
            commands[f"build-{name}"] += ["--split-seed", str(config.split_seed)]
    log(f"synthesizing {mode['hours']} h + {mode['hours']} h on {mode['workers']} processes")
    codes = run_until(commands, work / "logs", mode["synth_end"], env=env, grace=10)
    for name, config in corpora.items():
        corpus = work / f"corpus-{name}"
        if codes.get(f"build-{name}") == 0:
            (corpus / ".complete").touch()
        for set_name in ("train", "dev"):
            if not (corpus / ".complete").is_file():
                log(f"{name}/{set_name}: build stopped ({codes}); using the finished audio")
                salvage_manifest(corpus, config, set_name)
    complete = all((work / f"corpus-{name}" / ".complete").is_file() for name in corpora)
    synth = {}
    for name in corpora:
        lines = (work / f"corpus-{name}" / "train.jsonl").read_text().splitlines()
        seconds = sum(json.loads(line)["duration"] for line in lines)
        synth[name] = {"utterances": len(lines), "hours": seconds / 3600}
    timings.mark("synthesis", {"seconds": elapsed(), "corpora": synth, "exit": codes})
    log(f"synthesis done: {synth}")

    # ---- 2. waveform archives (decoded once, in parallel; every lane reads one) --------
    t = elapsed()
    train = {name: work / f"corpus-{name}" / "train.jsonl" for name in corpora}
    archives = {"classic": work / "classic.pt", "voices": work / "voices.pt",
                "both": work / "both.pt"}
    packed = {}
    # archives of a finished synthesis are kept; of a stopped one, made again next time
    if not (complete and (work / "archives.complete").is_file()):
        decoded = decode_waveforms(train, mode["workers"])
        for name in corpora:
            packed[name] = save_archive([decoded[name]], archives[name])
        packed["both"] = save_archive([decoded["classic"], decoded["voices"]], archives["both"])
        if complete:
            (work / "archives.complete").touch()
    dev = work / "corpus-voices" / "dev.jsonl"
    timings.mark("archives", {"seconds": elapsed() - t, **packed})
    log(f"archives in {elapsed() - t:.1f} s")

    # ---- 3. float lanes side by side ---------------------------------------------------
    t = elapsed()
    commands = {}
    for lane, (data, augment) in LANES.items():
        epochs = mode["epochs"] if data != "both" else max(1, mode["epochs"] // 2)
        config = lane_config(work / "configs" / f"{lane}.toml", mode, train=archives[data],
                             dev=dev, augment=augment, epochs=epochs, seed=0)
        commands[lane] = [*py, "train", str(config), "-o", str(work / "runs" / lane),
                          "--resume"]
    codes = run_until(commands, work / "logs", mode["float_end"], env=env)
    timings.mark("float", {"seconds": elapsed() - t, "exit": codes})
    log(f"float lanes in {elapsed() - t:.1f} s: {codes}")

    # ---- 4. QAT of the full recipe at 8 and 4 bits -------------------------------------
    t = elapsed()
    source = work / "runs" / "all" / "checkpoint.pt"
    commands = {}
    if source.is_file():
        slim_source = work / "runs" / "all-float-init.pt"  # a frozen copy to start from
        if not slim_source.is_file():
            import shutil

            shutil.copyfile(source, slim_source)
        for bits in (8, 4):
            config = lane_config(work / "configs" / f"all-w{bits}.toml", mode,
                                 train=archives["both"], dev=dev, augment=LANES["all"][1],
                                 epochs=mode["qat_epochs"], seed=1, weight_bits=bits,
                                 init=slim_source)
            commands[f"all-w{bits}"] = [*py, "train", str(config), "-o",
                                        str(work / "runs" / f"all-w{bits}"), "--resume"]
        codes = run_until(commands, work / "logs", mode["qat_end"], env=env)
    else:
        codes = {"skipped": "no float checkpoint of lane all"}
    timings.mark("qat", {"seconds": elapsed() - t, "exit": codes})
    log(f"QAT in {elapsed() - t:.1f} s: {codes}")

    # ---- 5. slim checkpoints, then score them if time is left --------------------------
    slim = {}
    for run in sorted((work / "runs").glob("*/checkpoint.pt")):
        target = work / "slim" / f"{run.parent.name}.pt"
        slim_checkpoint(run, target)
        slim[run.parent.name] = target
    timings.mark("checkpoints", {name: path.stat().st_size for name, path in slim.items()})
    t = elapsed()
    if slim and elapsed() < mode["eval_end"] - 20:
        commands = {
            f"eval-{decoder}-{name}": [*py, "eval", str(path), "--data", "flite-slt", "--data",
                                       "festival-slt", "--decoder", decoder, "--json"]
            for name, path in slim.items() for decoder in ("greedy", "lm")
        }
        run_until(commands, work / "logs", mode["eval_end"], env={**env, "OMP_NUM_THREADS": "1"},
                  grace=5)
        scores = []
        for name in commands:
            text = (work / "logs" / f"{name}.log").read_text()
            start = min((i for i in (text.find("\n["), text.find("\n{")) if i >= 0),
                        default=-1) + 1
            start = 0 if text[:1] in "[{" else start
            try:
                parsed = json.loads(text[start:]) if start >= 0 else []
            except json.JSONDecodeError:
                continue  # stopped at the deadline: its log says so
            for result in parsed if isinstance(parsed, list) else [parsed]:
                scores.append({"run": name, **result})
        (work / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
        timings.mark("eval", {"seconds": elapsed() - t, "results": len(scores)})
        log(f"scored in {elapsed() - t:.1f} s: {len(scores)} results")

    # ---- 6. what comes back: at most 8 files, each under 16 MiB ------------------------
    timings.mark("total_seconds", elapsed())
    groups = {
        "float-1.tar": ["classic", "voices"],
        "float-2.tar": ["voices-speaker", "voices-channel"],
        "float-3.tar": ["voices-both", "all"],
        "qat.tar": ["all-w8", "all-w4"],
    }
    for name, runs in groups.items():
        present = [slim[r] for r in runs if r in slim]
        if present:
            with tarfile.open(out / name, "w") as tar:
                for path in present:
                    tar.add(path, arcname=path.name)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for path in [work / "timing.json", work / "scores.jsonl", *(work / "logs").glob("*"),
                     *(work / "configs").glob("*"), *(work / "runs").glob("*/log.jsonl"),
                     *work.glob("corpus-*/*.voices.tsv"), *work.glob("corpus-*/corpus.json")]:
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(work)))
    (out / "timing.json").write_text((work / "timing.json").read_text())
    for path in sorted(out.iterdir()):
        log(f"out: {path.name} {path.stat().st_size / 2**20:.2f} MiB")
    log("done")


if __name__ == "__main__":
    main()
