"""JSONL manifests: one utterance per line, ``{"id", "audio", "duration", "text"}``.

``audio`` is stored relative to the manifest's directory so a corpus can be moved as a
whole; in memory it is an absolute path.
"""

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mho.data.audio import load_audio
from mho.errors import AudioError, MhoError
from mho.io import atomic_path


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path  # absolute path to a 16 kHz mono audio file
    duration: float  # seconds
    text: str  # normalized transcript: lowercase words separated by single spaces


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a JSONL manifest; a bad line is reported with its line number."""
    path = Path(path)
    if not path.is_file():
        raise MhoError(f"manifest not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise MhoError(f"cannot read manifest {path}: {error}") from None
    utterances: dict[str, Utterance] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            utt = Utterance(
                id=str(record["id"]),
                audio=(path.parent / record["audio"]).resolve(),
                duration=float(record["duration"]),
                text=str(record["text"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise MhoError(f"{path}:{number}: malformed manifest line ({error})") from None
        if utt.id in utterances:
            raise MhoError(f"{path}:{number}: duplicate utterance id {utt.id!r}")
        if not utt.duration >= 0:  # also catches NaN
            raise MhoError(f"{path}:{number}: bad duration {utt.duration}")
        utterances[utt.id] = utt
    if not utterances:
        raise MhoError(f"manifest is empty: {path}")
    return list(utterances.values())


def load_utterance_audio(utt: Utterance) -> np.ndarray:
    """The utterance's 16 kHz waveform [S]; errors name the utterance and its file."""
    try:
        return load_audio(utt.audio)
    except AudioError as error:
        raise AudioError(f"utterance {utt.id}: {error}") from None


def write_manifest(path: str | Path, utterances: list[Utterance]) -> None:
    """Write a manifest atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    with atomic_path(path) as partial, partial.open("w", encoding="utf-8") as out:
        for utt in utterances:
            record = {
                "id": utt.id,
                "audio": os.path.relpath(utt.audio, path.parent),
                "duration": round(utt.duration, 4),
                "text": utt.text,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def join_manifests(sources: list[str | Path], out: str | Path) -> list[Utterance]:
    """Write one manifest of every utterance of ``sources`` (their audio stays where it is),
    ids prefixed with the source's position (``0-train-000001``) so that corpora built
    separately, whose ids repeat, can train together. Returns the joined utterances."""
    if not sources:
        raise MhoError("nothing to join: name at least one manifest")
    joined = [replace(utt, id=f"{index}-{utt.id}")
              for index, source in enumerate(sources) for utt in read_manifest(source)]
    write_manifest(out, joined)
    return joined
