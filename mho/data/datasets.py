"""Resolve what the user passes as ``--data``: a shipped set name, a manifest, or LibriSpeech."""

from importlib import resources
from pathlib import Path

from mho.data.manifest import Utterance, read_manifest, write_manifest
from mho.errors import MhoError

SHIPPED_SETS = ("flite-slt", "festival-slt")  # held-out voices, ~50 utterances each


def shipped_set_dir() -> Path:
    return Path(str(resources.files("mho") / "assets" / "testsets"))


def shipped_manifest(name: str) -> Path:
    return shipped_set_dir() / f"{name}.jsonl"


def resolve_dataset(spec: str) -> tuple[str, list[Utterance]]:
    """Return (display name, utterances) for a set name, a .jsonl manifest or a directory in
    LibriSpeech layout."""
    if spec in SHIPPED_SETS:
        manifest = shipped_manifest(spec)
        if not manifest.is_file():
            raise MhoError(f"shipped set {spec!r} missing from {manifest.parent}: make testsets")
        return spec, read_manifest(manifest)
    path = Path(spec)
    if path.is_file() or path.suffix == ".jsonl":
        return path.stem, read_manifest(path)
    if path.is_dir():
        from mho.data.librispeech import read_librispeech

        return path.name, read_librispeech(path)
    raise MhoError(
        f"unknown data set {spec!r}: give a manifest (.jsonl), a LibriSpeech directory "
        f"or one of the shipped sets: {', '.join(SHIPPED_SETS)}"
    )


def copy_subset(source: Path, out_manifest: Path, *, count: int, seed: int = 0) -> list[Utterance]:
    """Copy a seeded random sample of ``count`` utterances (audio included) next to
    ``out_manifest``, into a folder named after it; used to cut the shipped test sets."""
    import random
    import shutil

    if out_manifest.suffix != ".jsonl":
        raise MhoError(f"the output manifest must end in .jsonl: {out_manifest}")
    utterances = read_manifest(source)
    if count > len(utterances):
        raise MhoError(f"{source} has {len(utterances)} utterances, fewer than {count}")
    chosen = sorted(random.Random(seed).sample(utterances, count), key=lambda u: u.id)
    audio_dir = out_manifest.with_suffix("")
    audio_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for utt in chosen:
        target = audio_dir / utt.audio.name
        shutil.copyfile(utt.audio, target)
        copied.append(Utterance(utt.id, target, utt.duration, utt.text))
    write_manifest(out_manifest, copied)
    return copied


def seeded_hours(utterances: list[Utterance], hours: float, seed: int) -> list[Utterance]:
    """A seeded random subset of about ``hours`` of audio."""
    import random

    shuffled = list(utterances)
    random.Random(seed).shuffle(shuffled)
    chosen, total = [], 0.0
    for utt in shuffled:
        if total >= hours * 3600:
            break
        chosen.append(utt)
        total += utt.duration
    return chosen
