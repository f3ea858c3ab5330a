"""Log-mel features against an independent numpy computation (np.fft.rfft + HTK filters)."""

import numpy as np
import pytest
import torch

from mho.data.features import FeatureConfig, LogMel


def numpy_log_mel(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Textbook log-mel, written separately from the module: frame, window, rfft, filter."""
    win, hop, nfft = config.window_samples, config.shift_samples, config.fft_size
    padded = np.pad(waveform.astype(np.float64), (win // 2, win // 2))
    num_frames = (len(padded) - win) // hop + 1
    frames = np.stack([padded[i * hop : i * hop + win] for i in range(num_frames)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, n=nfft)) ** 2  # [T, F]

    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    edges_mel = np.linspace(mel(config.min_hz), mel(config.max_hz), config.num_mels + 2)
    edges_hz = 700 * (10 ** (edges_mel / 2595) - 1)
    freqs = np.fft.rfftfreq(nfft, 1 / config.sample_rate)
    filters = np.zeros((len(freqs), config.num_mels))
    for m in range(config.num_mels):
        lo, mid, hi = edges_hz[m : m + 3]
        for i, f in enumerate(freqs):
            if lo < f <= mid:
                filters[i, m] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                filters[i, m] = (hi - f) / (hi - mid)
    return np.log(power @ filters + config.log_floor)


@pytest.mark.parametrize("num_samples", [1, 159, 160, 400, 16_000, 23_456])
def test_shape_follows_frame_formula(num_samples):
    config = FeatureConfig()
    features = LogMel(config)(torch.zeros(3, num_samples))
    assert features.shape == (3, num_samples // 160 + 1, 80)
    assert torch.isfinite(features).all()


def test_values_match_numpy_reference():
    config = FeatureConfig()
    rng = np.random.default_rng(0)
    t = np.arange(16_000 + 123) / 16_000
    waveform = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    ours = LogMel(config)(torch.tensor(waveform, dtype=torch.float32)[None])[0].numpy()
    reference = numpy_log_mel(waveform, config)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=2e-3, rtol=1e-4)


def test_tone_peaks_in_the_right_mel_band():
    config = FeatureConfig()
    t = torch.arange(8_000) / 16_000
    features = LogMel(config)(torch.sin(2 * torch.pi * 1000 * t)[None])[0]  # [T, 80]
    mel_1000 = 2595 * np.log10(1 + 1000 / 700)
    edges = np.linspace(2595 * np.log10(1 + 20 / 700), 2595 * np.log10(1 + 7600 / 700), 82)
    expected_band = int(np.argmin(np.abs(edges[1:-1] - mel_1000)))
    assert abs(int(features[10:-10].mean(0).argmax()) - expected_band) <= 1


def test_batch_rows_are_independent():
    log_mel = LogMel()
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 4000, generator=generator), torch.randn(1, 4000, generator=generator)
    both = log_mel(torch.cat([a, b]))
    # float32 kernels round a batch of two and a batch of one differently, and the log
    # magnifies that in quiet bins (2e-5 seen, unseeded, in a CI run); a row mixed with its
    # neighbour would be off by whole units
    torch.testing.assert_close(both[1:], log_mel(b), atol=1e-4, rtol=1e-4)
