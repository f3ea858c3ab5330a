"""WORLD voice conversion: pitch lands on the drawn target, formants move by alpha, corpora
convert reproducibly and resume."""

import numpy as np
import pytest
import soundfile
from scipy.signal import lfilter

from mho.data.audio import SAMPLE_RATE
from mho.data.manifest import Utterance, read_manifest, write_manifest
from mho.data.voice_conversion import (
    ConversionDraw,
    VoiceConversionConfig,
    convert_corpus,
    convert_voice,
    draw_conversion,
    hts_style,
    warp_frequency_axis,
    world_analysis,
)
from mho.errors import ConfigError


def vowel(f0_hz: float, seconds: float = 1.0, formants=(700.0, 1200.0)) -> np.ndarray:
    """An impulse train at f0 through two resonators: a steady vowel with known pitch."""
    x = np.zeros(int(seconds * SAMPLE_RATE))
    x[:: int(round(SAMPLE_RATE / f0_hz))] = 1.0
    for freq in formants:  # two-pole resonator, 80 Hz bandwidth
        r = np.exp(-np.pi * 80.0 / SAMPLE_RATE)
        x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r], x)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def autocorrelation_f0(x: np.ndarray) -> float:
    """F0 of a steady voiced signal from the autocorrelation peak in 60-400 Hz, refined by a
    parabola through the peak and its neighbours (independent of WORLD's estimator)."""
    middle = x[len(x) // 4 : 3 * len(x) // 4].astype(np.float64)
    spectrum = np.fft.rfft(middle, 2 * len(middle))
    corr = np.fft.irfft(np.abs(spectrum) ** 2)[: len(middle)]
    low, high = SAMPLE_RATE // 400, SAMPLE_RATE // 60
    lag = low + int(np.argmax(corr[low:high]))
    a, b, c = corr[lag - 1], corr[lag], corr[lag + 1]
    return SAMPLE_RATE / (lag + 0.5 * (a - c) / (a - 2 * b + c))


@pytest.mark.parametrize("target", [95.0, 210.0])
def test_pitch_lands_on_the_drawn_median(target):
    config = VoiceConversionConfig(formant_exponent=0.0)
    source = vowel(125.0)
    assert autocorrelation_f0(source) == pytest.approx(125.0, rel=0.01)
    converted, alpha = convert_voice(source, ConversionDraw(target, 1.0, 1.0), config)
    assert alpha == 1.0
    assert abs(len(converted) - len(source)) <= SAMPLE_RATE * 5 // 1000
    # a steady source has one F0, so every voiced frame is moved to the target; 1% covers
    # WORLD's frame-to-frame estimate of the source and the lag refinement
    assert autocorrelation_f0(converted) == pytest.approx(target, rel=0.01)
    assert np.sqrt(np.mean(converted**2)) == pytest.approx(np.sqrt(np.mean(source**2)), rel=1e-3)


def test_alpha_follows_the_pitch_and_stays_in_limits():
    config = VoiceConversionConfig(formant_exponent=0.25, formant_limits=(0.85, 1.2))
    _, alpha = convert_voice(vowel(100.0), ConversionDraw(200.0, 1.0, 1.0), config)
    assert alpha == pytest.approx(2.0**0.25, rel=0.02)  # WORLD's median of the source ~100
    _, alpha = convert_voice(vowel(100.0), ConversionDraw(250.0, 1.0, 1.1), config)
    assert alpha == 1.2  # 2.5 ** 0.25 * 1.1 = 1.38, clipped


def test_warp_moves_a_peak_by_alpha():
    envelope = np.zeros((2, 513))
    envelope[:, 100] = 1.0
    assert np.argmax(warp_frequency_axis(envelope, 1.2)[0]) == 120
    assert np.argmax(warp_frequency_axis(envelope, 0.8)[0]) == 80
    shrunk = warp_frequency_axis(np.tile(np.arange(513.0), (1, 1)), 0.5)
    assert shrunk[0, -1] == 512.0  # beyond the top bin the top bin holds
    np.testing.assert_allclose(shrunk[0, :257], np.arange(257) / 0.5)


def test_draws_stay_in_their_ranges_and_split_by_sex():
    config = VoiceConversionConfig(female_share=0.3)
    rng = np.random.default_rng(0)
    draws = [draw_conversion(config, rng) for _ in range(2000)]
    female = np.array([d.target_f0_hz >= config.female_f0_hz[0] for d in draws])
    # binomial share: 0.3 +- 4 standard errors of 2000 draws
    assert abs(female.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)
    for d, f in zip(draws, female, strict=True):
        low, high = config.female_f0_hz if f else config.male_f0_hz
        assert low <= d.target_f0_hz <= high
        assert config.excursion[0] <= d.excursion <= config.excursion[1]
    with pytest.raises(ConfigError):
        VoiceConversionConfig(male_f0_hz=(150.0, 90.0))


def harmonicity(x: np.ndarray, f0_hz: float) -> float:
    """Normalized autocorrelation at the pitch lag (1: perfectly periodic, 0: noise), over the
    middle half of a steady signal."""
    middle = x[len(x) // 4 : 3 * len(x) // 4].astype(np.float64)
    lag = int(round(SAMPLE_RATE / f0_hz))
    a, b = middle[:-lag], middle[lag:]
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def test_hts_style_conversion_is_a_periodic_voice_at_the_target_pitch():
    """Pulse excitation: the converted vowel is periodic at the drawn pitch, and it is not
    WORLD's conversion (the envelope went through the mel-cepstrum)."""
    config = VoiceConversionConfig(formant_exponent=0.0)
    source = vowel(125.0)
    world, _ = convert_voice(source, ConversionDraw(180.0, 1.0, 1.0), config)
    hts, _ = convert_voice(source, ConversionDraw(180.0, 1.0, 1.0, postfilter=0.2), config)
    assert autocorrelation_f0(hts) == pytest.approx(180.0, rel=0.01)
    assert harmonicity(hts, autocorrelation_f0(hts)) > 0.95
    assert np.sqrt(np.mean(hts**2)) == pytest.approx(np.sqrt(np.mean(source**2)), rel=1e-3)
    assert not np.allclose(hts, world, atol=1e-2)


def test_postfilter_deepens_the_valleys_between_formants():
    """The postfilter scales the mel-cepstrum from the third coefficient on by 1 + beta: the
    log-distance between a formant peak and the valley next to it grows with beta, by less
    than 1 + beta (the first two coefficients, level and tilt, carry part of it unscaled)."""
    f0, envelope, aperiodicity = world_analysis(vowel(125.0, formants=(700.0, 2200.0))
                                                .astype(np.float64))
    hz = np.linspace(0, SAMPLE_RATE / 2, envelope.shape[1])
    peak, valley = np.argmin(abs(hz - 700)), np.argmin(abs(hz - 1400))
    frame = len(f0) // 2

    def depth(beta: float) -> float:
        smoothed, ap = hts_style(f0, envelope, aperiodicity, coefficients=40, postfilter=beta)
        assert set(np.unique(ap[f0 > 0])) == {1e-3} and (ap[f0 == 0] == 1.0).all()
        return float(np.log(smoothed[frame, peak] / smoothed[frame, valley]))

    flat = depth(0.0)
    assert flat > 1.0  # the smoothed envelope keeps the formant
    assert 1.05 < depth(0.3) / flat < 1.3
    assert depth(0.6) > depth(0.3) * 1.05


def test_hts_draws_keep_the_other_draws_of_a_seed():
    plain, hts = VoiceConversionConfig(), VoiceConversionConfig(hts_share=0.4,
                                                                postfilter=(0.1, 0.2))
    plain_draws = [draw_conversion(plain, np.random.default_rng([2, i])) for i in range(2000)]
    hts_draws = [draw_conversion(hts, np.random.default_rng([2, i])) for i in range(2000)]
    for a, b in zip(plain_draws, hts_draws, strict=True):
        assert a.postfilter is None
        assert (a.target_f0_hz, a.excursion, a.jitter) == (b.target_f0_hz, b.excursion, b.jitter)
    betas = [d.postfilter for d in hts_draws if d.postfilter is not None]
    assert abs(len(betas) / 2000 - 0.4) < 4 * np.sqrt(0.4 * 0.6 / 2000)
    assert 0.1 <= min(betas) and max(betas) <= 0.2
    with pytest.raises(ConfigError):
        VoiceConversionConfig(hts_share=1.5)
    with pytest.raises(ConfigError):
        VoiceConversionConfig(postfilter=(0.3, 0.1))


def test_corpus_converts_reproducibly_and_resumes(tmp_path):
    source_dir = tmp_path / "source"
    utterances = []
    for i, f0 in enumerate((110.0, 140.0, 180.0)):
        path = source_dir / f"u{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, vowel(f0, 0.6), SAMPLE_RATE)
        utterances.append(Utterance(f"u{i}", path, 0.6, f"word {i}"))
    write_manifest(source_dir / "train.jsonl", utterances)

    out = tmp_path / "converted"
    manifest = convert_corpus(source_dir / "train.jsonl", out, seed=3, workers=1, progress=False)
    converted = read_manifest(manifest)
    assert [(u.id, u.text) for u in converted] == [(u.id, u.text) for u in utterances]
    first = {u.id: soundfile.read(u.audio)[0] for u in converted}
    assert not np.allclose(first["u0"][:9000], soundfile.read(utterances[0].audio)[0][:9000])
    draws = (out / "conversions.tsv").read_text().splitlines()
    assert len(draws) == 4 and draws[1].startswith("u0\t")

    (out / "audio" / "u1.flac").unlink()  # an interrupted run: one file missing
    convert_corpus(source_dir / "train.jsonl", out, seed=3, workers=1, progress=False)
    np.testing.assert_array_equal(soundfile.read(out / "audio" / "u1.flac")[0], first["u1"])
    assert (out / "conversions.tsv").read_text().splitlines() == draws
