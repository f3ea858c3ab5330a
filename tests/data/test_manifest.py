"""Manifests round trip; audio loading rejects what cannot be used, with a clear message."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from mho.data.audio import load_audio
from mho.data.manifest import Utterance, join_manifests, read_manifest, write_manifest
from mho.errors import AudioError, MhoError


def write_tone(path: Path, seconds: float = 0.5, rate: int = 16_000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)
    return path


def test_round_trip_keeps_records_and_relative_audio(tmp_path):
    (tmp_path / "audio").mkdir()
    utterances = [
        Utterance("a-1", write_tone(tmp_path / "audio" / "a-1.flac"), 0.5, "hello there world"),
        Utterance("a-2", write_tone(tmp_path / "audio" / "a-2.flac"), 0.5, "it's a test"),
    ]
    manifest = tmp_path / "set.jsonl"
    write_manifest(manifest, utterances)
    assert '"audio": "audio/a-1.flac"' in manifest.read_text()
    assert read_manifest(manifest) == utterances
    # Moving the corpus as a whole keeps it valid: paths are relative to the manifest.
    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "-moved"))
    assert [u.audio.is_file() for u in read_manifest(moved / "set.jsonl")] == [True, True]


def test_join_keeps_every_utterance_and_its_audio(tmp_path):
    # two corpora built separately: the same ids, different audio and text
    sources = []
    for corpus in ("one", "two"):
        (tmp_path / corpus).mkdir()
        utt = Utterance("train-000000", write_tone(tmp_path / corpus / "a.flac"), 0.5, corpus)
        write_manifest(tmp_path / corpus / "train.jsonl", [utt])
        sources.append(tmp_path / corpus / "train.jsonl")
    assert join_manifests(sources, tmp_path / "mix" / "train.jsonl") == read_manifest(
        tmp_path / "mix" / "train.jsonl")
    joined = read_manifest(tmp_path / "mix" / "train.jsonl")
    assert [(u.id, u.audio, u.text) for u in joined] == [
        ("0-train-000000", tmp_path / "one" / "a.flac", "one"),
        ("1-train-000000", tmp_path / "two" / "a.flac", "two")]
    with pytest.raises(MhoError, match="nothing to join"):
        join_manifests([], tmp_path / "empty.jsonl")


def test_malformed_lines_name_the_line(tmp_path):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"id": "x", "audio": "x.flac", "duration": 1, "text": "a"}\n{"id": 1}\n')
    with pytest.raises(MhoError, match=r"bad.jsonl:2: malformed"):
        read_manifest(manifest)
    manifest.write_text("not json\n")
    with pytest.raises(MhoError, match=r":1: malformed"):
        read_manifest(manifest)


def test_missing_and_empty_manifests(tmp_path):
    with pytest.raises(MhoError, match="not found"):
        read_manifest(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(MhoError, match="empty"):
        read_manifest(tmp_path / "empty.jsonl")


def test_load_audio_reads_mono_float(tmp_path):
    stereo = np.stack([np.full(800, 0.5), np.full(800, -0.1)], axis=1).astype(np.float32)
    soundfile.write(tmp_path / "s.flac", stereo, 16_000)
    samples = load_audio(tmp_path / "s.flac")
    assert samples.dtype == np.float32 and samples.shape == (800,)
    np.testing.assert_allclose(samples, 0.2, atol=1e-3)


def test_bad_audio_is_refused(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.flac")
    (tmp_path / "corrupt.flac").write_bytes(b"fLaC this is not audio")
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(tmp_path / "corrupt.flac")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16_000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    write_tone(tmp_path / "8k.wav", rate=8_000)
    with pytest.raises(AudioError, match="8000 Hz, expected 16000"):
        load_audio(tmp_path / "8k.wav")


def test_resampling_keeps_a_tone(tmp_path):
    write_tone(tmp_path / "44k.wav", seconds=1.0, rate=44_100)
    samples = load_audio(tmp_path / "44k.wav", resample=True)
    assert abs(samples.size - 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16_000 / samples.size - 300) < 2  # the 300 Hz tone survives
