"""80-dim log-mel features, 25 ms window / 10 ms shift, as an exportable torch module.

The short-time Fourier transform is a strided Conv1d with a windowed DFT basis rather than
``torch.stft``: the same weights run unchanged in ONNX (Conv, opset >= 17 not even needed),
onnxruntime and CoreML, and the whole front-end is one conv, one square, one matmul and a log.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from mho.data.audio import SAMPLE_RATE


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = SAMPLE_RATE  # Hz
    num_mels: int = 80
    window_ms: float = 25.0
    shift_ms: float = 10.0
    fft_size: int = 512  # >= window length; the window is zero-padded to this size
    min_hz: float = 20.0
    max_hz: float = 7600.0  # below Nyquist: TTS audio carries nothing useful above it
    log_floor: float = 1e-6  # added to mel power before the log (silence stays finite)

    @property
    def window_samples(self) -> int:
        return round(self.sample_rate * self.window_ms / 1000)  # 400 at 16 kHz

    @property
    def shift_samples(self) -> int:
        return round(self.sample_rate * self.shift_ms / 1000)  # 160 at 16 kHz

    @property
    def frames_per_second(self) -> float:
        return 1000 / self.shift_ms  # 100 at a 10 ms shift

    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames for a waveform of ``num_samples``: the signal is centred (padded by half a
        window each side), so there is one frame per shift, plus one."""
        return num_samples // self.shift_samples + 1



FRAMES_PER_SECOND = FeatureConfig().frames_per_second  # 100 feature frames per second

def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(config: FeatureConfig) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, peak 1: [F = fft_size/2 + 1, num_mels]."""
    num_bins = config.fft_size // 2 + 1
    bin_hz = torch.linspace(0, config.sample_rate / 2, num_bins, dtype=torch.float64)  # [F]
    mel_edges = torch.linspace(
        hz_to_mel(torch.tensor(config.min_hz)).item(),
        hz_to_mel(torch.tensor(config.max_hz)).item(),
        config.num_mels + 2,
        dtype=torch.float64,
    )
    hz_edges = mel_to_hz(mel_edges)  # [M + 2]
    lower, centre, upper = hz_edges[:-2], hz_edges[1:-1], hz_edges[2:]  # [M] each
    rising = (bin_hz[:, None] - lower) / (centre - lower)  # [F, M]
    falling = (upper - bin_hz[:, None]) / (upper - centre)  # [F, M]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def dft_basis(config: FeatureConfig) -> torch.Tensor:
    """Hann-windowed real and imaginary DFT rows as conv kernels: [2 F, 1, window]."""
    window = torch.hann_window(config.window_samples, periodic=True, dtype=torch.float64)
    num_bins = config.fft_size // 2 + 1
    # The window sits at the start of the zero-padded FFT frame, so only `window` taps matter.
    n = torch.arange(config.window_samples, dtype=torch.float64)
    k = torch.arange(num_bins, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * n[None, :] / config.fft_size  # [F, W]
    real = torch.cos(angle) * window
    imag = -torch.sin(angle) * window
    return torch.cat([real, imag]).float()[:, None, :]


class LogMel(nn.Module):
    """Waveform [B, S] (16 kHz, float in [-1, 1]) -> log-mel features [B, T, 80].

    T = S // 160 + 1 (see ``FeatureConfig.num_frames``).
    """

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("basis", dft_basis(config), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(config), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        half_window = self.config.window_samples // 2
        padded = nn.functional.pad(waveform[:, None, :], (half_window, half_window))  # [B,1,S+W]
        spectrum = nn.functional.conv1d(
            padded, self.basis, stride=self.config.shift_samples
        )  # [B, 2F, T]
        real, imag = spectrum.chunk(2, dim=1)
        power = (real.square() + imag.square()).transpose(1, 2)  # [B, T, F]
        return torch.log(power @ self.filterbank + self.config.log_floor)  # [B, T, M]
