import subprocess

import numpy as np
import pytest
import soundfile

import mho.data.synth as synth
from mho.data.audio import SAMPLE_RATE
from mho.data.synth import (
    ESPEAK,
    FESTIVAL,
    FLITE,
    SynthJob,
    Voice,
    require_synthesizers,
    synthesize,
    valid_duration,
)
from mho.errors import MhoError

SENTENCE = "the quick brown fox jumps over the lazy dog"  # 9 words: ~2-4 s when spoken

VOICES = [
    Voice(ESPEAK, "en-us"),
    Voice(ESPEAK, "en-us-nyc+f2", speed=1.2, pitch=70),
    Voice(FLITE, "kal16"),
    Voice(FLITE, "awb"),
    Voice(FLITE, "rms"),
    Voice(FLITE, "slt"),
    Voice(FESTIVAL, "voice_kal_diphone"),
    Voice(FESTIVAL, "voice_ked_diphone"),
    Voice(FESTIVAL, "voice_cmu_us_slt_arctic_hts"),
]


@pytest.mark.parametrize("voice", VOICES, ids=lambda voice: voice.label())
def test_each_voice_speaks_the_sentence(voice, tmp_path):
    out = tmp_path / "utt.flac"
    durations = synthesize([SynthJob("utt", SENTENCE, voice, out)])
    info = soundfile.info(str(out))
    assert (info.format, info.samplerate, info.channels) == ("FLAC", SAMPLE_RATE, 1)
    assert durations == {"utt": pytest.approx(info.frames / SAMPLE_RATE)}
    assert 1.5 < durations["utt"] < 5.0
    samples, _ = soundfile.read(str(out))
    assert np.abs(samples).max() > 0.05  # speech, not silence
    assert not list(tmp_path.glob("*.partial"))


def test_speed_changes_duration(tmp_path):
    jobs = [
        SynthJob(name, SENTENCE, Voice(engine, voice, speed=speed), tmp_path / f"{name}.flac")
        for engine, voice in ((ESPEAK, "en-us"), (FLITE, "kal16"), (FESTIVAL, "voice_kal_diphone"))
        for name, speed in ((f"{engine}-slow", 0.8), (f"{engine}-fast", 1.25))
    ]
    durations = synthesize(jobs)
    for engine in (ESPEAK, FLITE, FESTIVAL):
        assert durations[f"{engine}-fast"] < 0.85 * durations[f"{engine}-slow"], engine


def test_pitch_shift_keeps_duration_and_changes_audio(tmp_path):
    plain, shifted = tmp_path / "plain.flac", tmp_path / "shifted.flac"
    durations = synthesize(
        [
            SynthJob("plain", SENTENCE, Voice(FLITE, "kal16"), plain),
            SynthJob("shifted", SENTENCE, Voice(FLITE, "kal16", shift_cents=500), shifted),
        ]
    )
    assert durations["shifted"] == pytest.approx(durations["plain"], abs=0.05)
    a, b = soundfile.read(str(plain))[0], soundfile.read(str(shifted))[0]
    n = min(len(a), len(b))
    assert np.abs(a[:n] - b[:n]).mean() > 0.01


def test_festival_runs_once_per_batch(tmp_path, monkeypatch):
    calls = []
    real_run = subprocess.run

    def counting_run(command, *args, **kwargs):
        calls.append(command[0])
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(synth.subprocess, "run", counting_run)
    texts = ["the cat sat on the mat", "a dog ran far away today", "we like green tea a lot"]
    voices = [Voice(FESTIVAL, "voice_kal_diphone"), Voice(FESTIVAL, "voice_ked_diphone")]
    jobs = [
        SynthJob(f"u{i}", text, voices[i % 2], tmp_path / f"u{i}.flac")
        for i, text in enumerate(texts)
    ]
    durations = synthesize(jobs)
    assert calls.count("festival") == 1
    assert calls.count("sox") == len(texts)
    assert sorted(durations) == ["u0", "u1", "u2"]
    assert all(0.8 < seconds < 4.0 for seconds in durations.values())


def test_text_cannot_escape_the_festival_script(tmp_path):
    out = tmp_path / "q.flac"
    synthesize(
        [SynthJob("q", 'he said "hello" \\ (exit)', Voice(FESTIVAL, "voice_kal_diphone"), out)]
    )
    assert valid_duration(out) > 0.5


def test_missing_synthesizer_names_the_package(monkeypatch):
    real_which = synth.shutil.which
    monkeypatch.setattr(
        synth.shutil, "which", lambda tool: None if tool == FLITE else real_which(tool)
    )
    with pytest.raises(MhoError, match=r"^flite not found: apt-get install flite$"):
        require_synthesizers([Voice(ESPEAK, "en-us"), Voice(FLITE, "kal16")])
    require_synthesizers([Voice(ESPEAK, "en-us")])  # flite not needed: no error


def test_missing_sox_is_checked_even_without_voices(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(MhoError, match="sox not found: apt-get install sox"):
        require_synthesizers([])


def test_missing_festival_voice_names_the_festvox_package(monkeypatch, tmp_path):
    monkeypatch.setattr(synth, "FESTIVAL_VOICES", tmp_path)
    with pytest.raises(MhoError, match="apt-get install festvox-us-slt-hts"):
        require_synthesizers([Voice(FESTIVAL, "voice_cmu_us_slt_arctic_hts")])


def test_unknown_voices_are_refused():
    with pytest.raises(MhoError, match="unknown flite voice"):
        require_synthesizers([Voice(FLITE, "nosuch")])  # flite itself would fall back silently
    with pytest.raises(MhoError, match="unknown festival voice"):
        require_synthesizers([Voice(FESTIVAL, "voice_nosuch")])


def test_failing_engine_reports_the_utterance(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "ESPEAK", "false")  # a command that always fails
    job = SynthJob("utt-7", SENTENCE, Voice(ESPEAK, "en-us"), tmp_path / "x.flac")
    with pytest.raises(MhoError, match="utt-7"):
        synth._run_espeak(job, tmp_path / "x.wav")


def test_valid_duration(tmp_path):
    good = tmp_path / "good.flac"
    soundfile.write(str(good), np.zeros(8000, dtype=np.float32), SAMPLE_RATE)
    assert valid_duration(good) == pytest.approx(0.5)
    narrow = tmp_path / "narrow.flac"
    soundfile.write(str(narrow), np.zeros(8000, dtype=np.float32), 8000)
    stereo = tmp_path / "stereo.flac"
    soundfile.write(str(stereo), np.zeros((8000, 2), dtype=np.float32), SAMPLE_RATE)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC not really")
    for bad in (narrow, stereo, corrupt, tmp_path / "missing.flac"):
        assert valid_duration(bad) is None, bad.name


def test_python_converter_shifts_pitch_like_a_resampled_tape(tmp_path):
    # the python converter asks flite for f-times-longer audio and plays it f times faster:
    # same duration (to the engine's frame rounding), every frequency times f
    f = 2 ** (500 / 1200)
    plain, shifted = tmp_path / "plain.flac", tmp_path / "shifted.flac"
    durations = synthesize(
        [
            SynthJob("plain", SENTENCE, Voice(FLITE, "kal16"), plain),
            SynthJob("shifted", SENTENCE, Voice(FLITE, "kal16", shift_cents=500), shifted),
        ],
        converter="python",
    )
    assert durations["shifted"] == pytest.approx(durations["plain"], rel=0.03)

    def mean_spectral_frequency(path):
        x = soundfile.read(str(path))[0]
        power = np.abs(np.fft.rfft(x)) ** 2
        hz = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
        band = hz < 3000  # below the band edge that resampling would move
        return (hz[band] * power[band]).sum() / power[band].sum()

    ratio = mean_spectral_frequency(shifted) / mean_spectral_frequency(plain)
    # a uniform frequency scaling moves the spectral centroid by f (content crossing the
    # 3 kHz edge and the engine's own variation make it approximate: within 10%)
    assert ratio == pytest.approx(f, rel=0.1)


def test_unknown_converter_is_refused(tmp_path):
    with pytest.raises(MhoError, match="unknown converter"):
        synthesize([SynthJob("x", SENTENCE, Voice(ESPEAK, "en-us"), tmp_path / "x.flac")], "lame")
