"""The augmentation pieces against independent references (scipy, numpy, closed forms)."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from mho.data.augment import (
    AugmentConfig,
    AugmentedFeatures,
    UtteranceDraw,
    add_noise,
    augment_waveform,
    bandpass_fft,
    colored_noise,
    convolve_fft,
    draw,
    mel_filterbank_at,
    resample_fft,
    room_impulse_response,
    vtlp_frequencies,
)
from mho.data.features import FeatureConfig, mel_filterbank
from mho.errors import ConfigError

RATE = 16_000
ALL_ON = AugmentConfig(speed_prob=1, warp_prob=1, reverb_prob=1, noise_prob=1, bandlimit_prob=1)


@pytest.mark.parametrize("n", [1000, 1001])
@pytest.mark.parametrize("factor", [0.5, 0.85, 1.3, 2.0])
def test_resample_matches_scipy(n, factor):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    ours = resample_fft(x, factor).numpy()
    theirs = scipy.signal.resample(x.numpy(), round(n / factor))
    # both are the same DFT algebra in float64: only rounding differs (~1e-15)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_resample_scales_a_tone_frequency():
    # an integer number of cycles keeps the tone exactly periodic: after speeding up by 1.25,
    # 440 Hz over 1 s becomes 550 Hz over 0.8 s, i.e. the same 440 cycles in 12800 samples
    t = torch.arange(RATE, dtype=torch.float64) / RATE
    fast = resample_fft(torch.sin(2 * math.pi * 440 * t), 1.25)
    assert fast.shape == (12_800,)
    expected = torch.sin(2 * math.pi * 550 * torch.arange(12_800, dtype=torch.float64) / RATE)
    torch.testing.assert_close(fast, expected, atol=1e-9, rtol=0)


def test_convolution_matches_numpy():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, generator=g, dtype=torch.float64)
    h = torch.randn(700, generator=g, dtype=torch.float64)
    ours = convolve_fft(x, h).numpy()
    np.testing.assert_allclose(ours, np.convolve(x.numpy(), h.numpy())[:5000], atol=1e-10)


def test_room_impulse_response_decay_and_drr():
    g = torch.Generator().manual_seed(2)
    rir = room_impulse_response(0.5, 6.0, g).double()
    assert rir.shape == (8000,) and rir[0] == 1.0
    assert torch.all(rir[1:16] == 0)  # nothing before 1 ms but the direct path
    tail = rir[1:]
    assert 10 * math.log10(1.0 / tail.square().sum().item()) == pytest.approx(6.0, abs=1e-4)
    # energy in the window at 0.25 s vs the one at 0.05 s: the envelope falls 60 dB per
    # 0.5 s, i.e. 24 dB over 0.2 s; Gaussian samples make each window's energy noisy
    # (800 samples: relative spread about 5%, well under 1 dB)
    early, late = tail[800:1600].square().sum(), tail[4000:4800].square().sum()
    assert 10 * math.log10(early / late) == pytest.approx(24.0, abs=1.5)


@pytest.mark.parametrize("snr", [0.0, 10.0, 27.5])
def test_noise_is_added_at_the_snr(snr):
    g = torch.Generator().manual_seed(3)
    speech = torch.randn(16_000, generator=g, dtype=torch.float64) * 0.1
    noise = colored_noise(16_000, 1.0, g).double()
    noisy = add_noise(speech, noise, snr)
    added = noisy - speech
    measured = 10 * np.log10(np.mean(speech.numpy() ** 2) / np.mean(added.numpy() ** 2))
    assert measured == pytest.approx(snr, abs=1e-9)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_noise_color_slope(beta):
    # log power vs log frequency: slope -beta, fitted on Welch's periodogram
    noise = colored_noise(2**18, beta, torch.Generator().manual_seed(4)).double().numpy()
    f, p = scipy.signal.welch(noise, fs=RATE, nperseg=4096)
    band = (f > 100) & (f < 6000)
    slope = np.polyfit(np.log(f[band]), np.log(p[band]), 1)[0]
    assert np.mean(noise**2) == pytest.approx(1.0, rel=1e-6)
    # Welch with 128 segments: the fitted slope is good to a few hundredths
    assert slope == pytest.approx(-beta, abs=0.08)


def test_bandpass_keeps_inside_and_removes_outside():
    t = torch.arange(RATE, dtype=torch.float64) / RATE
    inside, below, above = (torch.sin(2 * math.pi * f * t) for f in (1000, 100, 5000))
    out = bandpass_fft(inside + below + above, 300.0, 3400.0)
    # whole cycles in the 1 s window: each tone is one DFT bin pair, so the ideal filter
    # is exact
    torch.testing.assert_close(out, inside, atol=1e-9, rtol=0)


def test_vtlp_warp_is_continuous_and_fixes_the_ends():
    hz = torch.linspace(0, 8000, 257, dtype=torch.float64)
    for alpha in (0.82, 1.0, 1.12):
        warped = vtlp_frequencies(hz, alpha, boundary_hz=4800.0, nyquist_hz=8000.0)
        assert warped[0] == 0 and warped[-1] == pytest.approx(8000.0)
        assert torch.all(torch.diff(warped) > 0)
        f0 = 4800.0 * min(alpha, 1) / alpha
        low = hz <= f0
        torch.testing.assert_close(warped[low], alpha * hz[low])


def test_unwarped_filterbank_is_the_feature_filterbank():
    config = FeatureConfig()
    bins = torch.linspace(0, config.sample_rate / 2, config.fft_size // 2 + 1, dtype=torch.float64)
    torch.testing.assert_close(mel_filterbank_at(bins, config), mel_filterbank(config))


def test_warped_filterbank_reads_bins_at_alpha_f():
    # below the warp's boundary, DFT bin f is read as if it were alpha f: the warped bank is
    # the plain triangles evaluated at alpha f (independent of vtlp_frequencies' formula)
    config = FeatureConfig()
    module = AugmentedFeatures(AugmentConfig())
    bins = module.bin_hz
    alpha = 0.9
    warped = module.warped_filterbank(alpha).double()  # [F, M]
    reference = mel_filterbank_at(alpha * bins, config).double()  # below the boundary: linear
    low = bins < 4000
    torch.testing.assert_close(warped[low], reference[low], atol=1e-6, rtol=0)


def test_draws_are_seeded_and_independent_of_earlier_choices():
    a = [draw(ALL_ON, g) for g in [torch.Generator().manual_seed(5)] for _ in range(3)]
    b = [draw(ALL_ON, g) for g in [torch.Generator().manual_seed(5)] for _ in range(3)]
    assert a == b
    off = [draw(AugmentConfig(), g) for g in [torch.Generator().manual_seed(5)] for _ in range(3)]
    assert all(d == UtteranceDraw() for d in off)
    for d in a:
        assert 0.85 <= d.speed <= 1.15 and 0.82 <= d.warp <= 1.12
        assert d.reverb is not None and d.noise is not None and d.band is not None


def test_identity_draw_changes_nothing():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(augment_waveform(x, UtteranceDraw(), torch.Generator()), x)


def test_augmented_features_without_augmentation_are_the_plain_features():
    from mho.data.features import LogMel

    g = torch.Generator().manual_seed(7)
    waves = [torch.randn(n, generator=g) * 0.1 for n in (3200, 4800)]
    features, frames = AugmentedFeatures(AugmentConfig())(waves, seed=0)
    assert frames.tolist() == [3200 // 160 + 1, 4800 // 160 + 1]
    for wave, feature, count in zip(waves, features, frames, strict=True):
        torch.testing.assert_close(feature[:count], LogMel()(wave[None])[0], atol=1e-4, rtol=1e-5)
        assert torch.all(feature[count:] == 0)


def test_augmented_features_are_seeded():
    g = torch.Generator().manual_seed(8)
    waves = [torch.randn(n, generator=g) * 0.1 for n in (8000, 9600)]
    module = AugmentedFeatures(ALL_ON)
    first, frames = module(waves, seed=11)
    again, _ = module(waves, seed=11)
    other, _ = module(waves, seed=12)
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert first.shape[0] == 2 and first.shape[2] == 80


def test_gain_scales_the_waveform_and_shifts_the_log_mel_by_its_log():
    """x * 10^(dB/20): power, hence every mel band's energy, times 10^(dB/10); where the
    energy is far above the log floor the log-mel moves by dB * ln(10) / 10."""
    from mho.data.features import LogMel

    x = torch.randn(8000, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    louder = augment_waveform(x, UtteranceDraw(gain_db=6.0), torch.Generator())
    torch.testing.assert_close(louder, x * 10 ** 0.3)
    shift = LogMel()(louder[None].float())[0] - LogMel()(x[None].float())[0]
    torch.testing.assert_close(shift, torch.full_like(shift, 6.0 * math.log(10) / 10),
                               atol=1e-3, rtol=0)


def test_gain_draws_and_the_draws_of_configs_without_gain():
    """Gain on: dB drawn in its range with the given probability. Gain off: the same draws
    as before gain existed (14 uniforms per utterance), so older runs augment as they did."""
    config = AugmentConfig(gain_prob=0.5, gain_range_db=(-12.0, 12.0))
    draws = [draw(config, g) for g in [torch.Generator().manual_seed(3)] for _ in range(400)]
    gains = [d.gain_db for d in draws if d.gain_db != 0.0]
    assert all(-12.0 <= db <= 12.0 for db in gains)
    assert abs(len(gains) - 200) < 3 * math.sqrt(400 * 0.25)  # binomial(400, 0.5)
    generator = torch.Generator().manual_seed(4)
    speed_only = AugmentConfig(speed_prob=1.0)
    first = draw(speed_only, generator).speed
    uniforms = torch.rand(14, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert first == pytest.approx(0.85 + 0.3 * uniforms[1].item())
    second = draw(speed_only, generator).speed
    later = torch.rand(28, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert second == pytest.approx(0.85 + 0.3 * later[15].item())


def test_config_is_checked():
    with pytest.raises(ConfigError):
        AugmentConfig(noise_prob=1.5)
    with pytest.raises(ConfigError):
        AugmentConfig(snr_range=(30.0, 5.0))
    assert not AugmentConfig().enabled and ALL_ON.enabled
