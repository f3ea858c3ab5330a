"""JSONL manifests: one utterance per line, ``{"id", "audio", "duration", "text"}``.

``audio`` is stored relative to the manifest's directory so a corpus can be moved as a
whole; in memory it is an absolute path.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mho.errors import MhoError


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path  # absolute path to a 16 kHz mono audio file
    duration: float  # seconds
    text: str  # normalized transcript: lowercase words separated by single spaces


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a JSONL manifest; a malformed line is reported with its line number."""
    path = Path(path)
    if not path.is_file():
        raise MhoError(f"manifest not found: {path}")
    utterances = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                utterances.append(
                    Utterance(
                        id=str(record["id"]),
                        audio=(path.parent / record["audio"]).resolve(),
                        duration=float(record["duration"]),
                        text=str(record["text"]),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise MhoError(f"{path}:{number}: malformed manifest line ({error})") from None
    if not utterances:
        raise MhoError(f"manifest is empty: {path}")
    return utterances


def write_manifest(path: str | Path, utterances: list[Utterance]) -> None:
    """Write a manifest atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        for utt in utterances:
            record = {
                "id": utt.id,
                "audio": os.path.relpath(utt.audio, path.parent),
                "duration": round(utt.duration, 4),
                "text": utt.text,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)
