"""Build the local speech corpus: a seeded plan of (sentence, voice) pairs, synthesized.

Layout of ``out_dir``::

    train.jsonl  dev.jsonl  test-flite-slt.jsonl  test-festival-slt.jsonl   manifests
    <set>.voices.tsv                                  engine and prosody of each utterance
    audio/<set>/<id>.flac                             16 kHz mono FLAC
    corpus.json                                       hours, seed and a hash of the plan

The plan depends only on (hours, seed) and the installed text, so rebuilding is
deterministic; audio files that already exist and are valid are kept, so an interrupted
build resumes where it stopped. A directory built from a different plan is refused
rather than silently mixed.
"""

import hashlib
import json
import os
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from mho.data.manifest import Utterance, read_manifest, write_manifest
from mho.data.synth import (
    ESPEAK,
    FESTIVAL,
    FLITE,
    SynthJob,
    Voice,
    require_synthesizers,
    synthesize,
    valid_duration,
)
from mho.data.text import corpus_sentences
from mho.errors import MhoError
from mho.io import atomic_path

TRAIN, DEV = "train", "dev"
TEST_FLITE, TEST_FESTIVAL = "test-flite-slt", "test-festival-slt"
SETS = (TRAIN, DEV, TEST_FLITE, TEST_FESTIVAL)
# Held-out voices: never used for train or dev.
TEST_VOICES = {
    TEST_FLITE: Voice(FLITE, "slt"),
    TEST_FESTIVAL: Voice(FESTIVAL, "voice_cmu_us_slt_arctic_hts"),
}

ESPEAK_BASES = ("en-us", "en-us-nyc")
# Every English accent of espeak-ng 1.51 (voice set "all"): British, Scottish, RP,
# Lancaster, West Midlands, Caribbean and the two American ones.
ALL_ESPEAK_BASES = (
    "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
    "en-us", "en-us-nyc",
)  # fmt: skip
# Human-sounding espeak-ng variants ("" = the plain voice); whisper, croak and the robot
# and novelty variants are left out, and so are klatt6 and caleb (same sound as klatt).
ESPEAK_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "adam", "Andy", "Annie",
    "aunty", "benjamin", "david", "ed", "edward", "john", "linda", "max",
    "Michael", "paul", "rob", "robert", "steph", "grandma", "grandpa", "norbert",
    "shelby", "travis", "victor",
)  # fmt: skip
FLITE_TRAIN_VOICES = ("kal16", "awb", "rms")
FESTIVAL_TRAIN_VOICES = ("voice_kal_diphone", "voice_ked_diphone")
# Voice set "all" adds flite's 8 kHz diphone voice kal (band-limited: a telephone-like
# channel of its own). Debian 12 has no other English flite or festival voice but the
# held-out slt ones.
ALL_FLITE_VOICES = ("kal", "kal16", "awb", "rms")
# "classic": the voices of the shipped models (the plan of earlier corpora, unchanged);
# "all": every English voice and accent the Debian engines have, test voices excepted.
VOICE_SETS = ("classic", "all")

ESPEAK_SPEED = (0.8, 1.35)  # tempo factor range (1.0 = 175 words per minute)
ESPEAK_PITCH = (20, 80)  # espeak-ng -p range (default 50)
OTHER_SPEED = (0.85, 1.2)  # flite duration_stretch / festival Duration_Stretch = 1 / speed
# flite and festival train voices are all male; shifting some of them up (sox pitch,
# in cents) adds higher voices, the held-out test voices being female.
SHIFT_CENTS = (-300, 700)
UNSHIFTED_SHARE = 1 / 3

# Audio seconds per character of text at speed 1.0 (measured on 40 train sentences:
# 0.057-0.072 across voices); used only to plan how many utterances make the hours.
SECONDS_PER_CHAR = {ESPEAK: 0.060, FLITE: 0.064, FESTIVAL: 0.063}
# Utterances per worker task, slowest engine first so the end of a run is not one long
# batch. A festival batch is one festival process (~0.3 s to start, ~1 s of work per 30
# utterances); the others start in milliseconds, and small batches keep the bar moving.
BATCH_SIZES = {FESTIVAL: 64, FLITE: 16, ESPEAK: 32}
DEFAULT_HOURS = 20.0
SECONDS_PER_HOUR = 3600.0
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CorpusConfig:
    """What to build; everything the plan depends on."""

    hours: float = DEFAULT_HOURS  # train audio (planned from text length; actual within ~5%)
    seed: int = 0  # sentence split, sentence order and every voice/prosody choice
    # Share of train (and dev) hours per engine. Speed per CPU-second, sox included:
    # espeak-ng ~75x real time, flite kal16 ~95x, awb/rms ~40x, festival diphones ~85x.
    # espeak-ng has by far the most voices (2 accents x 41 variants x pitch); flite and
    # festival sound like the held-out test engines. 20 h take ~1200 CPU-seconds.
    engine_shares: tuple[tuple[str, float], ...] = ((ESPEAK, 0.45), (FLITE, 0.30), (FESTIVAL, 0.25))
    eval_utterances: int = 400  # dev and each test set at DEFAULT_HOURS; scales with hours
    min_eval_utterances: int = 10  # even tiny builds get this many per eval set
    voices: str = "classic"  # VOICE_SETS: which engine voices and accents train/dev draw from
    # Seed of the train/dev/test sentence split (None: ``seed``). Corpora built with other
    # seeds to add data must keep the split of the test sets they are scored on (seed 0
    # for the shipped ones), or the test sentences leak into training.
    split_seed: int | None = None

    def __post_init__(self) -> None:
        if self.voices not in VOICE_SETS:
            raise MhoError(f"voices must be one of {', '.join(VOICE_SETS)}, got {self.voices!r}")


@dataclass(frozen=True)
class PlannedUtterance:
    """One line of the plan: who says what, under which id."""

    id: str  # "<set>-<index:06d>", also the audio file's stem
    text: str  # a normalized sentence from the set's split
    voice: Voice


def plan_corpus(config: CorpusConfig) -> dict[str, list[PlannedUtterance]]:
    """The seeded plan: set name -> utterances to synthesize (sentences from its split).

    Train draws sentences in a seeded order without repeats until the train split is used
    up. Dev reads dev sentences; both test sets read the same test sentences, so their
    error rates compare voices, not texts.
    """
    if config.hours <= 0:
        raise MhoError(f"hours must be positive, got {config.hours}")
    splits = corpus_sentences(config.seed if config.split_seed is None else config.split_seed)
    rng = random.Random(f"mho-corpus-{config.seed}")
    scale = config.hours / DEFAULT_HOURS
    n_eval = max(config.min_eval_utterances, round(config.eval_utterances * scale))

    train_texts = _endless(splits["train"], rng)
    plan = {TRAIN: [], DEV: []}
    remaining = {
        engine: share * config.hours * SECONDS_PER_HOUR for engine, share in config.engine_shares
    }
    while any(seconds > 0 for seconds in remaining.values()):
        engines = [engine for engine, seconds in remaining.items() if seconds > 0]
        # Weighted by what is left, so every engine's hours run out at about the same time
        # and the engines stay interleaved through the plan.
        engine = rng.choices(engines, weights=[remaining[e] for e in engines])[0]
        voice = _random_voice(engine, rng, config.voices)
        text = next(train_texts)
        remaining[engine] -= SECONDS_PER_CHAR[engine] * len(text) / voice.speed
        plan[TRAIN].append(PlannedUtterance(f"{TRAIN}-{len(plan[TRAIN]):06d}", text, voice))

    dev_texts = rng.sample(splits["dev"], min(n_eval, len(splits["dev"])))
    engines, shares = zip(*config.engine_shares, strict=True)
    for index, text in enumerate(dev_texts):
        voice = _random_voice(rng.choices(engines, weights=shares)[0], rng, config.voices)
        plan[DEV].append(PlannedUtterance(f"{DEV}-{index:06d}", text, voice))

    test_texts = rng.sample(splits["test"], min(n_eval, len(splits["test"])))
    for name, voice in TEST_VOICES.items():
        plan[name] = [
            PlannedUtterance(f"{name}-{index:06d}", text, voice)
            for index, text in enumerate(test_texts)
        ]
    return plan


def _endless(sentences: Sequence[str], rng: random.Random) -> Iterator[str]:
    """Seeded permutations of ``sentences``, one after another (repeats only when used up)."""
    while True:
        order = list(sentences)
        rng.shuffle(order)
        yield from order


def _random_voice(engine: str, rng: random.Random, voices: str = "classic") -> Voice:
    # "classic" draws exactly what earlier corpora drew, so their plans stay valid.
    every = voices == "all"
    if engine == ESPEAK:
        variant = rng.choice(ESPEAK_VARIANTS)
        base = rng.choice(ALL_ESPEAK_BASES if every else ESPEAK_BASES)
        return Voice(
            ESPEAK,
            f"{base}+{variant}" if variant else base,
            speed=round(rng.uniform(*ESPEAK_SPEED), 2),
            pitch=rng.randint(*ESPEAK_PITCH),
        )
    flite = ALL_FLITE_VOICES if every else FLITE_TRAIN_VOICES
    names = {FLITE: flite, FESTIVAL: FESTIVAL_TRAIN_VOICES}.get(engine)
    if names is None:
        raise MhoError(f"unknown synthesizer {engine!r} in engine_shares")
    name = rng.choice(names)
    speed = round(rng.uniform(*OTHER_SPEED), 2)
    shift = 0 if rng.random() < UNSHIFTED_SHARE else 10 * (rng.randint(*SHIFT_CENTS) // 10)
    return Voice(engine, name, speed=speed, shift_cents=shift)


def build_corpus(
    out_dir: Path,
    *,
    hours: float = DEFAULT_HOURS,
    seed: int = 0,
    voices: str = "classic",
    split_seed: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    sets: Sequence[str] = SETS,
    converter: str = "sox",
) -> dict[str, Path]:
    """Synthesize the corpus into ``out_dir``; returns set name -> manifest path.

    ``workers`` synthesis processes (default: one per core); ``progress`` shows a bar.
    ``sets``: which of train, dev and the test sets to synthesize (a training machine that
    must not hold the test voices builds train and dev only). ``converter``: "sox" or
    "python" (mho.data.synth). Resumable: valid existing audio is kept, and a finished
    corpus rebuilds as a no-op.
    """
    return build_from_config(
        Path(out_dir), CorpusConfig(hours=hours, seed=seed, voices=voices, split_seed=split_seed),
        workers=workers,
        progress=progress, sets=sets, converter=converter,
    )


def build_from_config(
    out_dir: Path,
    config: CorpusConfig,
    *,
    workers: int | None = None,
    progress: bool = True,
    sets: Sequence[str] = SETS,
    converter: str = "sox",
) -> dict[str, Path]:
    """:func:`build_corpus` with a full config."""
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise MhoError(f"workers must be at least 1, got {workers}")
    unknown = sorted(set(sets) - set(SETS))
    if unknown or not sets:
        raise MhoError(f"sets must be among {', '.join(SETS)}, got {', '.join(sets) or 'none'}")
    full_plan = plan_corpus(config)
    plan = {name: items for name, items in full_plan.items() if name in sets}
    require_synthesizers({item.voice for items in plan.values() for item in items}, converter)
    _claim_directory(out_dir, config, full_plan)

    jobs = {
        item.id: SynthJob(
            item.id, item.text, item.voice, out_dir / "audio" / name / f"{item.id}.flac"
        )
        for name, items in plan.items()
        for item in items
    }
    durations: dict[str, float] = {}
    todo = []
    for job in jobs.values():
        duration = valid_duration(job.out)
        if duration is None:
            todo.append(job)
        else:
            durations[job.id] = duration
    durations.update(
        _synthesize_all(todo, workers=workers, progress=progress, converter=converter)
    )

    manifests = {}
    for name, items in plan.items():
        utterances = [
            Utterance(
                id=item.id,
                audio=jobs[item.id].out.resolve(),
                duration=round(durations[item.id], 4),
                text=item.text,
            )
            for item in items
        ]
        manifests[name] = out_dir / f"{name}.jsonl"
        _write_if_changed(manifests[name], utterances)
        _write_voices(out_dir / f"{name}.voices.tsv", items)
    return manifests


def _synthesize_all(
    jobs: list[SynthJob], *, workers: int, progress: bool, converter: str = "sox"
) -> dict[str, float]:
    """Run the jobs in batches of one engine on ``workers`` processes, with a progress bar."""
    batches = []
    for engine, size in BATCH_SIZES.items():
        of_engine = [job for job in jobs if job.voice.engine == engine]
        batches += [of_engine[i : i + size] for i in range(0, len(of_engine), size)]
    durations: dict[str, float] = {}
    bar = tqdm(total=len(jobs), unit="utt", desc="synthesizing", disable=not progress or not jobs)
    with bar:
        if workers == 1:
            for batch in batches:
                durations.update(synthesize(batch, converter))
                bar.update(len(batch))
            return durations
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending: set[Future] = {
                pool.submit(synthesize, batch, converter) for batch in batches
            }
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()  # re-raises a worker's MhoError
                        durations.update(result)
                        bar.update(len(result))
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    return durations


def _plan_digest(plan: dict[str, list[PlannedUtterance]]) -> str:
    digest = hashlib.sha256()
    for name, items in plan.items():
        for item in items:
            digest.update(f"{name}\t{item.id}\t{item.text}\t{item.voice.label()}\n".encode())
    return digest.hexdigest()


def _claim_directory(
    out_dir: Path, config: CorpusConfig, plan: dict[str, list[PlannedUtterance]]
) -> None:
    """Record the plan in corpus.json; refuse a directory that holds another plan's audio."""
    stamp = {"format": FORMAT_VERSION, **asdict(config), "plan_sha256": _plan_digest(plan)}
    stamp["engine_shares"] = [list(pair) for pair in config.engine_shares]
    # corpora built before voice sets and split seeds existed stay valid
    if config.voices == "classic":
        del stamp["voices"]
    if config.split_seed is None:
        del stamp["split_seed"]
    path = out_dir / "corpus.json"
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise MhoError(f"cannot read {path}: {error}") from None
        if existing != stamp:
            raise MhoError(
                f"{out_dir} holds a corpus of another plan (hours={existing.get('hours')}, "
                f"seed={existing.get('seed')}); choose another directory or delete it"
            )
        return
    if (out_dir / "audio").exists():
        raise MhoError(f"{out_dir}/audio exists but {path} does not; delete it or choose another")
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")


def _write_if_changed(path: Path, utterances: list[Utterance]) -> None:
    """Keep a finished manifest untouched (same bytes, same mtime) on a no-op rebuild."""
    if path.is_file():
        try:
            if read_manifest(path) == utterances:
                return
        except MhoError:
            pass  # malformed: rewrite it
    write_manifest(path, utterances)


def _write_voices(path: Path, items: list[PlannedUtterance]) -> None:
    lines = ["id\tengine\tvoice\tspeed\tpitch\tshift_cents"]
    for item in items:
        v = item.voice
        pitch = "" if v.pitch is None else str(v.pitch)
        lines.append(f"{item.id}\t{v.engine}\t{v.name}\t{v.speed}\t{pitch}\t{v.shift_cents}")
    content = "\n".join(lines) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == content:
        return
    with atomic_path(path) as partial:
        partial.write_text(content, encoding="utf-8")


def corpus_summary(manifests: dict[str, Path]) -> dict[str, dict]:
    """Set name -> its manifest path, utterance count and hours (what `mho data build`
    prints)."""
    summary = {}
    for name, path in manifests.items():
        utterances = read_manifest(path)
        summary[name] = {"manifest": str(path), "utterances": len(utterances),
                         "hours": sum(u.duration for u in utterances) / 3600}
    return summary
