"""WER/CER against hand-computed cases, and evaluation of a recognizer on real audio."""

import numpy as np
import pytest
import soundfile

from mho.data.manifest import Utterance
from mho.decoding.scoring import error_rates
from mho.errors import AudioError
from mho.workflows.evaluate import evaluate


@pytest.mark.parametrize(
    ("refs", "hyps", "wer", "cer"),
    [
        (["a b c"], ["a b c"], 0.0, 0.0),
        # one substitution in three words; one char of five ("a b c")
        (["a b c"], ["a x c"], 100 / 3, 100 / 5),
        # deletion + insertion: 2 errors / 5 words; chars: " sat" + "the " = 8 / 18
        (["the cat sat", "on mats"], ["the cat", "on the mats"], 40.0, 8 / 18 * 100),
        (["hello"], [""], 100.0, 100.0),
    ],
)
def test_error_rates_match_hand_counts(refs, hyps, wer, cer):
    got_wer, got_cer = error_rates(refs, hyps)
    assert got_wer == pytest.approx(wer)
    assert got_cer == pytest.approx(cer)


class ScriptedRecognizer:
    """Answers from a script keyed by audio length: lets the test know the right WER."""

    name, runtime, decoder = "scripted", "python", "none"

    def __init__(self, answers: dict[int, str]):
        self.answers = answers

    def transcribe(self, waveform: np.ndarray) -> str:
        return self.answers[waveform.size]


def test_evaluate_scores_and_times(tmp_path):
    utterances = []
    for i, text in enumerate(["one two three", "four five"]):
        path = tmp_path / f"{i}.flac"
        soundfile.write(path, np.zeros(8000 * (i + 1), np.float32), 16_000)
        utterances.append(Utterance(str(i), path, 0.5 * (i + 1), text))
    recognizer = ScriptedRecognizer({8000: "one two tree", 16000: "four five"})
    result = evaluate(recognizer, utterances, data_name="tiny", progress=False)
    assert result.wer == pytest.approx(20.0)
    assert result.utterances == 2 and result.audio_seconds == pytest.approx(1.5)
    assert result.hypotheses == {"0": "one two tree", "1": "four five"}
    assert 0 < result.rtf < 1


def test_evaluate_names_the_bad_utterance(tmp_path):
    bad = Utterance("utt-7", tmp_path / "gone.flac", 1.0, "x")
    with pytest.raises(AudioError, match="utterance utt-7: audio file not found: .*gone.flac"):
        evaluate(ScriptedRecognizer({}), [bad], data_name="x", progress=False)
