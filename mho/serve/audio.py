"""Uploaded audio -> the 16 kHz mono float32 waveform the models read, or a one-line reason
why not (the HTTP status it deserves attached)."""

import io
import re

import numpy as np
import soundfile

from mho.data.audio import SAMPLE_RATE, resample_audio
from mho.errors import AudioError


class UploadError(AudioError):
    """An upload that cannot be transcribed; ``status`` is the HTTP answer, ``kind`` the
    error kind of the metrics and the JSON body."""

    def __init__(self, message: str, status: int = 400, kind: str = "bad_audio"):
        super().__init__(message)
        self.status = status
        self.kind = kind


def decode_upload(data: bytes, filename: str, *, max_seconds: float,
                  min_samples: int) -> np.ndarray:
    """Any format libsndfile reads (WAV, FLAC, OGG/Vorbis or Opus, MP3...), any rate, any
    channel count -> [S] float32 at 16 kHz. Refuses empty, corrupt, too short (400) and
    too long (413) audio; the length is read from the header before the samples, so a long
    file is refused undecoded."""
    if not data:
        raise UploadError(f"the uploaded file {filename!r} is empty")
    try:
        info = soundfile.info(io.BytesIO(data))
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if seconds > max_seconds:
            raise UploadError(f"{filename!r} is {seconds:.1f} s long; this server takes at "
                              f"most {max_seconds:g} s per request: split it",
                              status=413, kind="too_large")
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except UploadError:
        raise
    except Exception as error:  # libsndfile's errors have several types and long texts
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = re.sub(r"^Error opening <[^>]*>: ", "", message)  # names our buffer, not
        # the user's file
        raise UploadError(f"cannot decode {filename!r} as audio: {message}") from None
    waveform = samples.mean(axis=1)  # [S]
    if waveform.size == 0:
        raise UploadError(f"{filename!r} holds no audio samples")
    if not np.isfinite(waveform).all():
        raise UploadError(f"{filename!r} holds NaN or infinite samples")
    if rate != SAMPLE_RATE:
        waveform = resample_audio(waveform, rate, SAMPLE_RATE)
    if waveform.size < min_samples:
        raise UploadError(f"{filename!r} is {waveform.size / SAMPLE_RATE * 1000:.0f} ms long; "
                          f"the shortest clip served is {min_samples / SAMPLE_RATE * 1000:.0f} "
                          f"ms")
    return np.ascontiguousarray(waveform, dtype=np.float32)
