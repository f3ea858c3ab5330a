"""Audio constants and loading.

Every model in mho consumes 16 kHz mono float32 audio in [-1, 1].
"""

from pathlib import Path

import numpy as np
import soundfile

from mho.errors import AudioError

SAMPLE_RATE = 16_000  # Hz
# Longer files are refused (split them first): full self-attention over 300 s already
# needs about 2 GB for its [heads, T', 2T'] relative-position scores.
MAX_AUDIO_SECONDS = 300.0


def load_audio(
    path: str | Path, *, expected_rate: int | None = SAMPLE_RATE, resample: bool = False
) -> np.ndarray:
    """Read a mono waveform as float32 [T].

    ``expected_rate`` rejects files at another rate (manifests must be consistent);
    ``resample=True`` instead converts any rate to 16 kHz (for ``mho transcribe``).
    Multi-channel audio is averaged to mono.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        info = soundfile.info(str(path))  # the header first: refuse huge files undecoded
        seconds = info.frames / info.samplerate
        if seconds <= MAX_AUDIO_SECONDS:
            samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for corrupt files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AudioError(f"cannot read audio {path}: {message}") from None
    if seconds > MAX_AUDIO_SECONDS:
        raise AudioError(f"{path} is {seconds:.0f} s long; the limit is {MAX_AUDIO_SECONDS:.0f} s")
    samples = samples.mean(axis=1)  # [T]
    if samples.size == 0:
        raise AudioError(f"audio file is empty: {path}")
    if not np.isfinite(samples).all():
        raise AudioError(f"audio file holds NaN or infinite samples: {path}")
    if resample and rate != SAMPLE_RATE:
        samples = resample_audio(samples, rate, SAMPLE_RATE)
        rate = SAMPLE_RATE
    if expected_rate is not None and rate != expected_rate:
        raise AudioError(f"{path} has sample rate {rate} Hz, expected {expected_rate} Hz")
    return np.ascontiguousarray(samples, dtype=np.float32)


def resample_audio(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling with scipy's anti-aliasing FIR filter."""
    from math import gcd

    from scipy.signal import resample_poly

    if source_rate == target_rate:
        return samples
    g = gcd(source_rate, target_rate)
    return resample_poly(samples, target_rate // g, source_rate // g).astype(np.float32)
