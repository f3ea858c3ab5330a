"""Seeded WORLD voice conversion: new speakers, and a parametric vocoder's sound, from the TTS
voices, when building a corpus.

WORLD (the pyworld package) analyses an utterance into an F0 contour (DIO refined by
StoneMask), a spectral envelope (CheapTrick) and an aperiodicity (D4C) every 5 ms, and
synthesizes a waveform back from them. Between analysis and synthesis, per utterance:

- **pitch**: the contour moves to a drawn median F0, from a male or a female range
  (speakers, not the source voice, set the pitch: a female source is not pushed to 400 Hz),
  and its excursions around the median are scaled (flatter or livelier intonation);
- **formants**: the envelope and the aperiodicity are read at frequencies ``f / alpha``, so
  formants move by ``alpha``. Longer vocal tracts go with lower voices on average, so alpha
  follows the pitch change to a small power (``formant_exponent``) with some jitter;
- **vocoder**: the resynthesis itself leaves the buzzy excitation and smoothed spectra of
  statistical parametric synthesis, which the held-out test voices have (flite's clustergen
  and festival's HTS voices) and the diphone and formant voices of the training set do not;
- **HTS-style excitation** (a share of the utterances, ``hts_share``): what an HTS voice's
  vocoder does, emulated on WORLD's parameters. The envelope becomes a mel-cepstrum of
  ``cepstral_coefficients`` (WORLD's own spectral envelope coder) and back, the formants
  sharpened by a postfilter of drawn strength (the coefficients from the third on scaled by
  1 + beta, as HTS's postfilter does to its mel-cepstra; global-variance generation also
  deepens the valleys of a smoothed envelope), and the excitation is a pure pulse train in
  voiced frames and noise in unvoiced ones (aperiodicity 0 or 1, no mixed band), as in an
  HTS voice without band aperiodicity, like festival's slt.

Unlike the on-the-fly augmentation of :mod:`mho.data.augment` (speed and VTLP, which move
pitch and formants together or formants alone), this moves pitch alone; it is too slow to run
per batch (about 10x real time on one core), so it writes a converted copy of a corpus.
"""

import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mho.data.audio import SAMPLE_RATE, load_audio
from mho.data.manifest import Utterance, read_manifest, write_manifest
from mho.errors import ConfigError
from mho.io import atomic_path

FRAME_PERIOD_MS = 5.0  # WORLD's analysis hop
DRAWS_FILE = "conversions.tsv"  # beside the manifest: what each utterance was turned into


@dataclass(frozen=True)
class VoiceConversionConfig:
    """Ranges the per-utterance conversions are drawn from (uniform unless noted)."""

    female_share: float = 0.5  # of utterances given a female-range median F0
    male_f0_hz: tuple[float, float] = (85.0, 155.0)  # target median F0 ranges
    female_f0_hz: tuple[float, float] = (165.0, 255.0)
    excursion: tuple[float, float] = (0.7, 1.4)  # scale of log-F0 around its median
    formant_exponent: float = 0.25  # alpha = (target / source median F0) ** exponent ...
    formant_jitter: tuple[float, float] = (0.95, 1.05)  # ... times this ...
    formant_limits: tuple[float, float] = (0.85, 1.2)  # ... clipped to these
    hts_share: float = 0.0  # of utterances resynthesized with HTS-style excitation
    # of the HTS-style mel-cepstrum (festival's slt voice has 45 at 32 kHz)
    cepstral_coefficients: int = 40
    postfilter: tuple[float, float] = (0.0, 0.3)  # HTS postfilter beta, drawn per utterance

    def __post_init__(self) -> None:
        for name in ("female_share", "hts_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("male_f0_hz", "female_f0_hz", "excursion", "formant_jitter",
                     "formant_limits"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(f"{name} must be a positive range (low <= high), got "
                                  f"{(low, high)}")
        if not 0.0 <= self.postfilter[0] <= self.postfilter[1]:
            raise ConfigError(f"postfilter must be a range 0 <= low <= high, got "
                              f"{self.postfilter}")
        if self.cepstral_coefficients < 3:
            raise ConfigError(f"cepstral_coefficients must be at least 3, got "
                              f"{self.cepstral_coefficients}")


@dataclass(frozen=True)
class ConversionDraw:
    """One utterance's target: median F0 in Hz, intonation scale, formant jitter and, with
    HTS-style excitation, the postfilter's beta (None: WORLD's own excitation)."""

    target_f0_hz: float
    excursion: float
    jitter: float
    postfilter: float | None = None


def draw_conversion(config: VoiceConversionConfig, rng: np.random.Generator) -> ConversionDraw:
    female = rng.random() < config.female_share
    low, high = config.female_f0_hz if female else config.male_f0_hz
    # log-uniform: a semitone is a semitone anywhere in the range
    target_f0_hz = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    excursion = float(rng.uniform(*config.excursion))
    jitter = float(rng.uniform(*config.formant_jitter))
    # drawn after the others, so a seed converts without HTS-style excitation as it did
    # before the option existed
    postfilter = None
    if config.hts_share > 0 and rng.random() < config.hts_share:
        postfilter = float(rng.uniform(*config.postfilter))
    return ConversionDraw(target_f0_hz, excursion, jitter, postfilter)


def warp_frequency_axis(envelope: np.ndarray, alpha: float) -> np.ndarray:
    """[frames, bins] spectra (bin k at k * rate / fft size) read at frequency f / alpha: a
    peak at f moves to alpha * f; above the top bin the top bin's value holds."""
    bins = np.arange(envelope.shape[1], dtype=np.float64)
    source = np.minimum(bins / alpha, bins[-1])
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, bins.size - 1)
    weight = source - lower
    return envelope[:, lower] * (1 - weight) + envelope[:, upper] * weight


def hts_style(f0: np.ndarray, envelope: np.ndarray, aperiodicity: np.ndarray, *,
              coefficients: int, postfilter: float, sample_rate: int = SAMPLE_RATE
              ) -> tuple[np.ndarray, np.ndarray]:
    """WORLD's envelope and aperiodicity [frames, bins] as an HTS voice's vocoder would
    render them: the envelope through a mel-cepstrum of ``coefficients`` with the postfilter
    (beta = ``postfilter``) applied, and a pulse-or-noise excitation (aperiodicity 0 where
    ``f0`` [frames] is voiced, 1 where it is not)."""
    import pyworld

    fft_size = (envelope.shape[1] - 1) * 2
    cepstrum = pyworld.code_spectral_envelope(np.ascontiguousarray(envelope), sample_rate,
                                              coefficients)
    cepstrum[:, 2:] *= 1.0 + postfilter  # the first two (level and tilt) stay, as in HTS
    envelope = pyworld.decode_spectral_envelope(cepstrum, sample_rate, fft_size)
    voiced = (f0 > 0)[:, None]
    # 1e-3 (-60 dB of noise) is D4C's own floor: the most periodic band WORLD ever analyses
    return envelope, np.where(voiced, 1e-3, 1.0) * np.ones_like(aperiodicity)


def world_analysis(x: np.ndarray, sample_rate: int = SAMPLE_RATE
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[S] float64 waveform -> WORLD's F0 contour [frames] (0 where unvoiced), spectral
    envelope and aperiodicity [frames, bins], every ``FRAME_PERIOD_MS``."""
    import pyworld

    f0, times = pyworld.dio(x, sample_rate, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    return (f0, pyworld.cheaptrick(x, f0, times, sample_rate),
            pyworld.d4c(x, f0, times, sample_rate))


def convert_voice(waveform: np.ndarray, draw: ConversionDraw, config: VoiceConversionConfig,
                  sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """[S] float waveform -> ([S'] float32 converted waveform at the source's RMS level, S'
    within one frame of S; the formant factor alpha used). A source with no voiced frame keeps
    its (empty) contour and gets only the formant jitter."""
    import pyworld

    x = np.ascontiguousarray(waveform, dtype=np.float64)
    f0, envelope, aperiodicity = world_analysis(x, sample_rate)
    voiced = f0 > 0
    alpha = draw.jitter
    if voiced.any():
        median = float(np.median(f0[voiced]))
        log_f0 = np.log(f0[voiced])
        f0 = f0.copy()
        f0[voiced] = np.exp(math.log(draw.target_f0_hz)
                            + draw.excursion * (log_f0 - math.log(median)))
        alpha *= (draw.target_f0_hz / median) ** config.formant_exponent
    alpha = float(np.clip(alpha, *config.formant_limits))
    envelope = warp_frequency_axis(envelope, alpha)
    aperiodicity = np.clip(warp_frequency_axis(aperiodicity, alpha), 0.0, 1.0)
    if draw.postfilter is not None:
        envelope, aperiodicity = hts_style(f0, envelope, aperiodicity,
                                           coefficients=config.cepstral_coefficients,
                                           postfilter=draw.postfilter, sample_rate=sample_rate)
    y = pyworld.synthesize(*map(np.ascontiguousarray, (f0, envelope, aperiodicity)), sample_rate,
                           frame_period=FRAME_PERIOD_MS)
    y = y[: x.size]
    source_rms, rms = np.sqrt(np.mean(x**2)), np.sqrt(np.mean(y**2))
    if rms > 0:
        y *= source_rms / rms
    return np.clip(y, -1.0, 1.0).astype(np.float32), alpha


def _utterance_rng(seed: int, index: int) -> np.random.Generator:
    # one stream per (seed, position): any worker, order or resumption draws the same
    return np.random.default_rng([seed, index])


def _convert_one(job: tuple[int, Utterance, Path, int, VoiceConversionConfig]
                 ) -> tuple[str, str]:
    """(id, its conversions.tsv row), the audio written unless an earlier run did."""
    import soundfile

    index, utt, target, seed, config = job
    draw = draw_conversion(config, _utterance_rng(seed, index))
    if not target.is_file():  # else done by an earlier, interrupted run: the same audio
        converted, _ = convert_voice(load_audio(utt.audio, resample=True), draw, config)
        with atomic_path(target) as partial:
            soundfile.write(partial, converted, SAMPLE_RATE, format="FLAC")
    postfilter = "-" if draw.postfilter is None else f"{draw.postfilter:.3f}"
    return utt.id, (f"{utt.id}\t{draw.target_f0_hz:.1f}\t{draw.excursion:.3f}\t"
                    f"{draw.jitter:.4f}\t{postfilter}")


def convert_corpus(
    manifest: str | Path, out_dir: str | Path, *, config: VoiceConversionConfig | None = None,
    seed: int = 0, workers: int | None = None, progress: bool = True,
) -> Path:
    """Convert every utterance of ``manifest`` (same ids, texts and durations within 5 ms) into
    ``out_dir`` (audio under ``audio/``, the manifest as ``<name>.jsonl``, the draws as
    conversions.tsv) on ``workers`` processes (default: one per core). Resumable: audio
    already written is kept (the same seed draws the same conversion). Returns the new
    manifest's path."""
    config = config or VoiceConversionConfig()
    manifest, out_dir = Path(manifest), Path(out_dir)
    utterances = read_manifest(manifest)  # refuses an empty manifest
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(i, u, audio_dir / f"{u.id}.flac", seed, config) for i, u in enumerate(utterances)]
    rows = {}
    workers = workers or (multiprocessing.cpu_count() or 1)
    with (multiprocessing.get_context("spawn").Pool(workers) as pool,
          tqdm(total=len(jobs), desc="converting voices", unit="utt", disable=not progress,
               leave=False) as bar):
        for utt_id, row in pool.imap_unordered(_convert_one, jobs, chunksize=4):
            rows[utt_id] = row
            bar.update()
    converted = [Utterance(u.id, audio, u.duration, u.text) for _, u, audio, _, _ in jobs]
    target = out_dir / manifest.name
    write_manifest(target, converted)
    with atomic_path(out_dir / DRAWS_FILE) as partial:
        lines = (["id\ttarget_f0_hz\texcursion\tformant_jitter\thts_postfilter"]
                 + [rows[u.id] for u in utterances])
        partial.write_text("\n".join(lines) + "\n")
    return target
