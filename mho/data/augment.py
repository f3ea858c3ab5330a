"""Seeded waveform augmentation that makes new speakers and rooms from the TTS voices.

Applied on the fly to every training batch, on whatever device holds the audio (a GPU
when there is one), then turned into the model's log-mel features:

- **speed**: band-limited resampling by a factor ``s`` (as if the tape ran ``s`` times
  faster): pitch, formants and tempo all scale by ``s``. Together with the warp below
  this moves pitch and formants independently (a voice sped up 1.15x and warped 0.9x has
  1.15x the pitch and 1.28x the formants; the corpus's pitch-shifted voices add the rest).
- **warp**: vocal-tract-length perturbation (VTLP, Jaitly & Hinton 2013): the mel
  filterbank reads the spectrum at frequencies scaled by ``alpha`` (piecewise linear so
  that Nyquist stays put), so formants move by ``1 / alpha`` and pitch does not.
- **reverb**: convolution with a synthetic room impulse response: the direct path plus
  exponentially decaying Gaussian noise whose RT60 (time to fall by 60 dB) is drawn per
  utterance, at a drawn direct-to-reverberant ratio (DRR).
- **noise**: white, pink or brown Gaussian noise (power spectrum 1/f^beta, beta 0, 1, 2)
  at a drawn signal-to-noise ratio over the utterance.
- **band-limiting**: the telephone band (300-3400 Hz) or a cheap microphone (a high-pass
  at 50-200 Hz and a low-pass at 2.5-6 kHz), as an ideal filter in the frequency domain.
- **gain**: the whole utterance louder or quieter by a drawn number of dB. The TTS corpus
  is made at nearly one level (RMS within a few dB), so without it a model learns that
  level: 6 dB quieter test audio raised a fine-tuned model's WER on a held-out voice from
  29% to 50% (docs/diverse-training.md, "Input level").

Every draw comes from ``torch.Generator`` seeded by the caller (the trainer passes a seed
per batch), so a resumed run augments exactly like an uninterrupted one.
"""

import math
from dataclasses import dataclass

import torch

from mho.data.audio import SAMPLE_RATE
from mho.data.features import FeatureConfig, LogMel, hz_to_mel, mel_to_hz

NOISE_COLORS = (0.0, 1.0, 2.0)  # power-spectrum exponents: white, pink, brown
# Utterances are zero-padded to a multiple of 0.1 s and sped-up lengths rounded to 10 ms,
# so a run meets a few hundred distinct FFT sizes, not one per utterance (cuFFT plans
# each size once; a plan per utterance would cost more than the transforms).
INPUT_QUANTUM = 1600  # samples
OUTPUT_QUANTUM = 160  # samples
TELEPHONE_BAND = (300.0, 3400.0)  # Hz


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (per utterance) and ranges; all probabilities 0 = no augmentation."""

    speed_prob: float = 0.0
    # resampling factor (pitch, formants and tempo); much above 1.15 the fastest TTS voices
    # (espeak-ng at 1.35x) would need about as many CTC labels as 25 output frames per second
    speed_range: tuple[float, float] = (0.85, 1.15)
    warp_prob: float = 0.0
    warp_range: tuple[float, float] = (0.82, 1.12)  # VTLP alpha (formants move by 1/alpha)
    warp_boundary_hz: float = 4800.0  # VTLP's f_hi: the warp is linear up to about here
    reverb_prob: float = 0.0
    rt60_range: tuple[float, float] = (0.15, 0.9)  # seconds
    drr_range: tuple[float, float] = (-3.0, 12.0)  # dB, direct path over the reverberant tail
    noise_prob: float = 0.0
    snr_range: tuple[float, float] = (5.0, 35.0)  # dB
    bandlimit_prob: float = 0.0
    telephone_share: float = 0.5  # of band-limited utterances; the rest get a cheap mic
    mic_highpass_range: tuple[float, float] = (50.0, 200.0)  # Hz
    mic_lowpass_range: tuple[float, float] = (2500.0, 6000.0)  # Hz
    gain_prob: float = 0.0
    gain_range_db: tuple[float, float] = (-12.0, 12.0)

    @property
    def enabled(self) -> bool:
        return any(p > 0 for p in (self.speed_prob, self.warp_prob, self.reverb_prob,
                                   self.noise_prob, self.bandlimit_prob, self.gain_prob))

    def __post_init__(self) -> None:
        from mho.errors import ConfigError

        for name in ("speed_prob", "warp_prob", "reverb_prob", "noise_prob", "bandlimit_prob",
                     "gain_prob", "telephone_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("speed_range", "warp_range", "rt60_range", "drr_range", "snr_range",
                     "mic_highpass_range", "mic_lowpass_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"augment.{name}: low {low} above high {high}")
        if min(*self.speed_range, *self.warp_range, *self.rt60_range) <= 0:
            raise ConfigError("augment speed, warp and rt60 ranges must be positive")


# ---- the pieces: each exact and testable on its own -------------------------------------

def resample_fft(waveform: torch.Tensor, factor: float) -> torch.Tensor:
    """Band-limited (Fourier) resampling of one waveform [S] by ``factor`` -> [round(S / f)].

    ``factor`` > 1 plays faster (shorter, higher). The spectrum is truncated or zero-padded,
    as ``scipy.signal.resample`` does; the Nyquist bin of an even-length source is split
    between the positive and negative frequency as there.
    """
    n = waveform.shape[-1]
    m = max(1, round(n / factor))
    if m == n:
        return waveform.clone()
    spectrum = torch.fft.rfft(waveform.double())
    common = min(n, m)
    out = torch.zeros(m // 2 + 1, dtype=spectrum.dtype, device=waveform.device)
    out[: common // 2 + 1] = spectrum[: common // 2 + 1]
    if common % 2 == 0:  # the shared Nyquist-frequency bin: +f and -f join or split
        out[common // 2] *= 2.0 if m < n else 0.5
    return (torch.fft.irfft(out, m) * (m / n)).to(waveform.dtype)


def room_impulse_response(rt60: float, drr_db: float, generator: torch.Generator, *,
                          sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A synthetic RIR [L]: 1 at t = 0, then Gaussian noise under exp(-6.91 t / rt60) (a
    60 dB fall in rt60 seconds) from 1 ms on, scaled so direct / tail energy = ``drr_db``.
    L covers the fall to -60 dB, at most one second."""
    length = max(2, min(sample_rate, round(rt60 * sample_rate)))
    device = generator.device
    t = torch.arange(length, dtype=torch.float64, device=device) / sample_rate
    tail = torch.randn(length, generator=generator, dtype=torch.float64, device=device)
    tail *= torch.exp(-math.log(1000.0) * t / rt60)  # amplitude: -60 dB at rt60
    tail[: max(1, sample_rate // 1000)] = 0.0
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / tail.square().sum().clamp(min=1e-12))
    tail[0] = 1.0
    return tail.float()


def convolve_fft(waveform: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Linear convolution of [S] with [L], cut to the first S samples (the room's tail
    past the end of the recording is dropped, so lengths and labels stay aligned)."""
    n = waveform.shape[-1] + kernel.shape[-1] - 1
    size = 1 << (n - 1).bit_length()
    spectrum = torch.fft.rfft(waveform.double(), size) * torch.fft.rfft(kernel.double(), size)
    return torch.fft.irfft(spectrum, size)[: waveform.shape[-1]].to(waveform.dtype)


def colored_noise(length: int, beta: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise [length] on the generator's device, with power spectrum proportional
    to 1 / f^beta (DC removed), unit mean square."""
    device = generator.device
    white = torch.randn(length, generator=generator, dtype=torch.float64, device=device)
    if beta:
        spectrum = torch.fft.rfft(white)
        f = torch.arange(spectrum.shape[0], dtype=torch.float64, device=device)
        f[0] = 1.0
        spectrum = spectrum / f ** (beta / 2)
        spectrum[0] = 0.0
        white = torch.fft.irfft(spectrum, length)
    return (white / white.square().mean().sqrt().clamp(min=1e-12)).float()


def add_noise(waveform: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """waveform + noise scaled so that mean(w^2) / mean((g n)^2) = 10^(snr_db / 10)."""
    signal_power = waveform.double().square().mean()
    noise_power = noise.double().square().mean().clamp(min=1e-20)
    gain = torch.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (waveform.double() + gain * noise.double()).to(waveform.dtype)


def bandpass_fft(waveform: torch.Tensor, low_hz: float, high_hz: float, *,
                 sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Ideal band-pass: zero every DFT bin outside [low_hz, high_hz]."""
    n = waveform.shape[-1]
    spectrum = torch.fft.rfft(waveform.double())
    hz = torch.arange(spectrum.shape[0], device=waveform.device, dtype=torch.float64)
    hz = hz * sample_rate / n
    spectrum = spectrum * ((hz >= low_hz) & (hz <= high_hz))
    return torch.fft.irfft(spectrum, n).to(waveform.dtype)


def vtlp_frequencies(hz: torch.Tensor, alpha: float, *, boundary_hz: float,
                     nyquist_hz: float) -> torch.Tensor:
    """VTLP's piecewise-linear warp: f -> alpha f below f0 = boundary min(alpha, 1) / alpha,
    then the straight line that meets Nyquist at Nyquist (continuous, monotonic)."""
    f0 = boundary_hz * min(alpha, 1.0) / alpha
    upper = nyquist_hz - (nyquist_hz - alpha * f0) * (nyquist_hz - hz) / (nyquist_hz - f0)
    return torch.where(hz <= f0, alpha * hz, upper)


def mel_filterbank_at(hz: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """The triangular HTK mel filters evaluated at arbitrary frequencies: [..., F] -> [..., F,
    M]. With the DFT bin frequencies this is ``mel_filterbank``; with warped ones, VTLP."""
    mel_edges = torch.linspace(
        hz_to_mel(torch.tensor(config.min_hz)).item(),
        hz_to_mel(torch.tensor(config.max_hz)).item(),
        config.num_mels + 2, dtype=torch.float64, device=hz.device,
    )
    edges = mel_to_hz(mel_edges)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    f = hz.double()[..., None]
    rising = (f - lower) / (centre - lower)
    falling = (upper - f) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


# ---- a whole batch ----------------------------------------------------------------------

@dataclass(frozen=True)
class UtteranceDraw:
    """What one utterance gets (None / 1.0: that step is skipped)."""

    speed: float = 1.0
    warp: float = 1.0
    reverb: tuple[float, float] | None = None  # (rt60 s, drr dB)
    noise: tuple[float, float] | None = None  # (beta, snr dB)
    band: tuple[float, float] | None = None  # (low Hz, high Hz)
    gain_db: float = 0.0


def draw(config: AugmentConfig, generator: torch.Generator) -> UtteranceDraw:
    """One utterance's augmentation; always consumes the same number of draws for a config,
    so the draws of later utterances do not depend on which steps earlier ones took. Gain
    draws two more only when it is on, so configs without it draw as they did before it."""
    u = torch.rand(16 if config.gain_prob > 0 else 14, generator=generator,
                   dtype=torch.float64).tolist()

    def between(bounds: tuple[float, float], x: float) -> float:
        return bounds[0] + (bounds[1] - bounds[0]) * x

    telephone = u[11] < config.telephone_share
    band = TELEPHONE_BAND if telephone else (between(config.mic_highpass_range, u[12]),
                                             between(config.mic_lowpass_range, u[13]))
    return UtteranceDraw(
        speed=between(config.speed_range, u[1]) if u[0] < config.speed_prob else 1.0,
        warp=between(config.warp_range, u[3]) if u[2] < config.warp_prob else 1.0,
        reverb=((between(config.rt60_range, u[5]), between(config.drr_range, u[6]))
                if u[4] < config.reverb_prob else None),
        noise=((NOISE_COLORS[min(2, int(u[8] * 3))], between(config.snr_range, u[9]))
               if u[7] < config.noise_prob else None),
        band=band if u[10] < config.bandlimit_prob else None,
        gain_db=(between(config.gain_range_db, u[15])
                 if config.gain_prob > 0 and u[14] < config.gain_prob else 0.0),
    )


def augment_waveform(waveform: torch.Tensor, d: UtteranceDraw, generator: torch.Generator,
                     ) -> torch.Tensor:
    """Speed, reverb, noise, band-limiting (a room, then a noisy channel), then gain on one
    waveform [S] -> [S'] (S' = round(S / speed)). The warp acts on the features.
    ``generator`` (on the waveform's device) draws the room's and the noise's samples."""
    if d.speed != 1.0:
        n = waveform.shape[-1]
        m = max(OUTPUT_QUANTUM, OUTPUT_QUANTUM * round(n / (d.speed * OUTPUT_QUANTUM)))
        waveform = resample_fft(waveform, n / m)  # the speed nearest d.speed at that grid
    if d.reverb is not None:
        rir = room_impulse_response(*d.reverb, generator)
        dry_power = waveform.square().mean()
        waveform = convolve_fft(waveform, rir)
        # the room adds energy; keep the level, so that the SNR below means what it says
        waveform = waveform * torch.sqrt(dry_power / waveform.square().mean().clamp(min=1e-12))
    if d.noise is not None:
        beta, snr = d.noise
        noise = colored_noise(waveform.shape[-1], beta, generator)
        waveform = add_noise(waveform, noise, snr)
    if d.band is not None:
        waveform = bandpass_fft(waveform, *d.band)
    if d.gain_db != 0.0:
        waveform = waveform * 10.0 ** (d.gain_db / 20.0)
    return waveform


class AugmentedFeatures(torch.nn.Module):
    """Waveforms -> augmented log-mel features [B, T, 80], per-utterance VTLP included."""

    def __init__(self, config: AugmentConfig, feature_config: FeatureConfig | None = None):
        super().__init__()
        self.config = config
        feature_config = feature_config or FeatureConfig()
        self.log_mel = LogMel(feature_config)
        num_bins = feature_config.fft_size // 2 + 1
        self.register_buffer("bin_hz", torch.linspace(0, feature_config.sample_rate / 2,
                                                      num_bins, dtype=torch.float64),
                             persistent=False)

    def warped_filterbank(self, alpha: float) -> torch.Tensor:
        """[F, M]: the filterbank that reads the spectrum at VTLP-warped frequencies."""
        fc = self.log_mel.config
        if alpha == 1.0:
            return self.log_mel.filterbank
        warped = vtlp_frequencies(self.bin_hz, alpha, boundary_hz=self.config.warp_boundary_hz,
                                  nyquist_hz=fc.sample_rate / 2)
        return mel_filterbank_at(warped, fc)

    @torch.no_grad()
    def forward(self, waveforms: list[torch.Tensor], seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (each [S_i], on one device) -> (features [B, T, 80] zero past each
        length, frame lengths [B]); deterministic for ``seed`` on a given device."""
        generator = torch.Generator().manual_seed(seed)
        draws = [draw(self.config, generator) for _ in waveforms]
        # noise and rooms drawn where the audio is: no host-to-device copy per utterance
        device = self.log_mel.basis.device
        samples = torch.Generator(device=device).manual_seed(seed)
        augmented = [augment_waveform(_pad_to(w.float().to(device), INPUT_QUANTUM), d, samples)
                     for w, d in zip(waveforms, draws, strict=True)]
        lengths = torch.tensor([len(w) for w in augmented])
        padded = torch.nn.utils.rnn.pad_sequence(augmented, batch_first=True)  # [B, S]
        fc = self.log_mel.config
        half = fc.window_samples // 2
        spectrum = torch.nn.functional.conv1d(
            torch.nn.functional.pad(padded[:, None, :], (half, half)), self.log_mel.basis,
            stride=fc.shift_samples)  # [B, 2F, T]
        real, imag = spectrum.chunk(2, dim=1)
        power = (real.square() + imag.square()).transpose(1, 2)  # [B, T, F]
        banks = torch.stack([self.warped_filterbank(d.warp) for d in draws])  # [B, F, M]
        features = torch.log(torch.bmm(power, banks) + fc.log_floor)  # [B, T, M]
        frames = fc.num_frames(lengths)
        valid = torch.arange(features.shape[1])[None, :] < frames[:, None]  # [B, T]
        features = features * valid.to(features.device)[..., None]
        return features, frames


def _pad_to(waveform: torch.Tensor, quantum: int) -> torch.Tensor:
    """Zero-pad [S] at the end to a multiple of ``quantum`` samples (a little more silence)."""
    return torch.nn.functional.pad(waveform, (0, -waveform.shape[-1] % quantum))
