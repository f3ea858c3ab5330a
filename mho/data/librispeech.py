"""Corpora on disk: the LibriSpeech layout reader, and a check of any utterances' audio.

LibriSpeech layout::

    <root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<id> TRANSCRIPT" per line
    <root>/<speaker>/<chapter>/<id>.flac

``root`` may be one subset (``LibriSpeech/dev-clean``) or a folder holding several.
"""

from collections.abc import Iterable
from pathlib import Path

import soundfile

from mho.data.audio import SAMPLE_RATE
from mho.data.manifest import Utterance, load_utterance_audio
from mho.data.text import normalize_transcript
from mho.errors import AudioError, MhoError

TRANSCRIPT_GLOB = "*.trans.txt"
AUDIO_SUFFIX = ".flac"


def read_librispeech(root: str | Path) -> list[Utterance]:
    """Read every ``*.trans.txt`` under ``root``; utterances sorted by id.

    Durations come from the audio headers (soundfile.info). A missing or unreadable audio
    file raises AudioError naming the utterance id and path.
    """
    root = Path(root)
    if not root.is_dir():
        raise MhoError(f"LibriSpeech directory not found: {root}")
    transcripts = sorted(root.rglob(TRANSCRIPT_GLOB))
    if not transcripts:
        raise MhoError(f"no {TRANSCRIPT_GLOB} files under {root}: not a LibriSpeech layout")
    utterances = []
    for transcript in transcripts:
        lines = transcript.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            text = normalize_transcript(text)
            if not text:
                raise MhoError(f"{transcript}:{number}: no transcript for {utt_id}")
            audio = (transcript.parent / f"{utt_id}{AUDIO_SUFFIX}").resolve()
            frames, rate = _audio_info(utt_id, audio)
            utterances.append(Utterance(utt_id, audio, frames / rate, text))
    return sorted(utterances, key=lambda utt: utt.id)


def _audio_info(utt_id: str, path: Path) -> tuple[int, int]:
    """(frames, sample rate) from the file header; AudioError naming id and path."""
    if not path.is_file():
        raise AudioError(f"utterance {utt_id}: audio file not found: {path}")
    try:
        info = soundfile.info(str(path))
    except Exception as error:  # soundfile raises several types for corrupt files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AudioError(f"utterance {utt_id}: cannot read audio {path}: {message}") from None
    return info.frames, info.samplerate


def check_audio(
    utterances: Iterable[Utterance], *, decode: bool = False
) -> int:
    """Check that every utterance's audio is readable, non-empty and at 16 kHz.

    Reads headers only, unless ``decode`` (slower: every sample is decoded, which also
    catches files truncated after a valid header). Raises AudioError for the first bad
    file, naming its utterance id and path in one line; returns how many were checked.
    """
    count = 0
    for utt in utterances:
        if decode:
            load_utterance_audio(utt)
        else:
            frames, rate = _audio_info(utt.id, utt.audio)
            if frames == 0:
                raise AudioError(f"utterance {utt.id}: audio file is empty: {utt.audio}")
            if rate != SAMPLE_RATE:
                raise AudioError(f"utterance {utt.id}: {utt.audio} has sample rate {rate} Hz, "
                                 f"expected {SAMPLE_RATE} Hz")
        count += 1
    return count
