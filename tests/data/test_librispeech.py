import numpy as np
import pytest
import soundfile

from mho.data.audio import SAMPLE_RATE
from mho.data.librispeech import check_audio, read_librispeech
from mho.data.manifest import Utterance
from mho.data.text import normalize_transcript
from mho.errors import AudioError, MhoError


def _write_flac(path, seconds, rate=SAMPLE_RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = 0.1 * np.sin(np.arange(int(seconds * rate)) * 0.05).astype(np.float32)
    soundfile.write(str(path), samples, rate)


@pytest.fixture
def libri(tmp_path):
    """dev-clean/<speaker>/<chapter>/ with two chapters of two speakers."""
    root = tmp_path / "LibriSpeech" / "dev-clean"
    chapters = {
        ("84", "121123"): {
            "84-121123-0000": "GO DO YOU HEAR",
            "84-121123-0001": "BUT IN LESS THAN",
        },
        ("1272", "128104"): {"1272-128104-0000": "MISTER QUILTER'S  MANNER, IS GOOD"},
    }
    for (speaker, chapter), lines in chapters.items():
        folder = root / speaker / chapter
        for index, utt_id in enumerate(lines):
            _write_flac(folder / f"{utt_id}.flac", 0.5 + index * 0.25)
        transcript = "\n".join(f"{utt_id} {text}" for utt_id, text in lines.items())
        (folder / f"{speaker}-{chapter}.trans.txt").write_text(transcript + "\n")
    return root


def test_reads_utterances_sorted_with_normalized_text_and_durations(libri):
    utterances = read_librispeech(libri)
    assert [utt.id for utt in utterances] == [
        "1272-128104-0000",
        "84-121123-0000",
        "84-121123-0001",
    ]
    assert [utt.text for utt in utterances] == [
        "mister quilter's manner is good",
        "go do you hear",
        "but in less than",
    ]
    assert [utt.duration for utt in utterances] == pytest.approx([0.5, 0.5, 0.75])
    assert utterances[2].audio == (libri / "84" / "121123" / "84-121123-0001.flac").resolve()
    # The parent folder of several subsets reads the same way.
    assert read_librispeech(libri.parent) == utterances


def test_missing_audio_names_id_and_path(libri):
    audio = libri / "84" / "121123" / "84-121123-0001.flac"
    audio.unlink()
    expected = f"^utterance 84-121123-0001: audio file not found: {audio}$"
    with pytest.raises(AudioError, match=expected):
        read_librispeech(libri)


def test_not_a_librispeech_tree(tmp_path):
    with pytest.raises(MhoError, match="not a LibriSpeech layout"):
        read_librispeech(tmp_path)
    with pytest.raises(MhoError, match="not found"):
        read_librispeech(tmp_path / "absent")


def test_transcript_line_without_text(libri):
    path = libri / "84" / "121123" / "84-121123.trans.txt"
    path.write_text("84-121123-0000 GO\n84-121123-0001\n")
    with pytest.raises(
        MhoError, match=r"84-121123\.trans\.txt:2: no transcript for 84-121123-0001"
    ):
        read_librispeech(libri)


def test_normalize_transcript():
    assert normalize_transcript("  HELLO,  WORLD -- IT'S ME ") == "hello world it's me"


def _utt(path, utt_id="u1"):
    return Utterance(utt_id, path, 1.0, "some words")


def test_check_audio_accepts_good_audio(tmp_path):
    paths = [tmp_path / f"{i}.flac" for i in range(3)]
    for path in paths:
        _write_flac(path, 0.3)
    assert check_audio([_utt(path, f"u{i}") for i, path in enumerate(paths)]) == 3
    assert check_audio([_utt(paths[0])], decode=True) == 1


@pytest.mark.parametrize("decode", [False, True])
def test_check_audio_reports_each_bad_case(tmp_path, decode):
    missing = tmp_path / "missing.flac"
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC\x00\x00\x00\x22 garbage, not a stream")
    empty_bytes = tmp_path / "empty.flac"
    empty_bytes.write_bytes(b"")
    no_samples = tmp_path / "silent.wav"
    soundfile.write(str(no_samples), np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    narrow = tmp_path / "narrow.flac"
    _write_flac(narrow, 0.3, rate=8000)
    cases = [
        (missing, "not found"),
        (corrupt, "cannot read"),
        (empty_bytes, "cannot read"),
        (no_samples, "empty"),
        (narrow, "8000 Hz, expected 16000 Hz"),
    ]
    good = tmp_path / "good.flac"
    _write_flac(good, 0.3)
    for path, reason in cases:
        with pytest.raises(AudioError) as caught:
            check_audio([_utt(good, "fine"), _utt(path, "bad-7")], decode=decode)
        message = str(caught.value)
        assert message.startswith("utterance bad-7: ") and str(path) in message, message
        assert reason in message and "\n" not in message, message


def test_check_audio_decode_catches_truncated_files(tmp_path):
    path = tmp_path / "cut.flac"
    _write_flac(path, 2.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert check_audio([_utt(path)]) == 1  # the header alone looks fine
    with pytest.raises(AudioError, match=f"^utterance u1: cannot read audio {path}"):
        check_audio([_utt(path)], decode=True)
