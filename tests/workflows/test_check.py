"""Noisy parity: WER distributions over runs, on the shipped baseline's real log-probs with
Gaussian perturbations standing in for two runtimes' independent read-noise streams."""

import hashlib

import numpy as np
import pytest

from mho.data.datasets import resolve_dataset
from mho.data.lexicon import PHONE_VOCABULARY
from mho.data.manifest import load_utterance_audio
from mho.decoding.decoders import GreedyDecoder
from mho.errors import MhoError
from mho.runtime.recognizer import load_recognizer
from mho.workflows.check import check_noisy_parity


def key(waveform: np.ndarray) -> str:
    return hashlib.sha1(waveform.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def clean():
    """12 utterances of flite-slt and the baseline's log-probs of each, by waveform."""
    _, utterances = resolve_dataset("flite-slt")
    utterances = utterances[:12]
    recognizer = load_recognizer("conformer-sinusoidal-linear-w8", decoder="greedy")
    log_probs = {}
    for utt in utterances:
        waveform = load_utterance_audio(utt)
        log_probs[key(waveform)] = np.asarray(recognizer.log_probs(waveform))
    return utterances, log_probs


class NoisySession:
    """A runtime's session that draws fresh noise on every call: clean log-probs + N(0, sigma)."""

    vocabulary = list(PHONE_VOCABULARY.tokens)

    def __init__(self, log_probs: dict, sigma: float, seed: int):
        self.clean, self.sigma = log_probs, sigma
        self.rng = np.random.default_rng(seed)

    def log_probs(self, waveforms):
        return [(clean := self.clean[key(w)]) + self.rng.normal(0, self.sigma, clean.shape)
                for w in waveforms]


def test_same_noise_distribution_passes_and_a_worse_one_fails(clean):
    utterances, log_probs = clean
    reference = NoisySession(log_probs, 1.0, seed=0)
    runtimes = {"same": NoisySession(log_probs, 1.0, seed=1),
                "worse": NoisySession(log_probs, 6.0, seed=2)}
    results = check_noisy_parity(reference, runtimes, utterances, GreedyDecoder.from_assets(),
                                 runs=3, progress=False)
    same, worse = results
    assert len(same.wers) == len(same.torch_wers) == 3
    assert len(set(same.torch_wers)) > 1  # every run drew fresh noise
    assert same.passed, same
    assert not worse.passed and worse.wer_delta > 10
    assert worse.failures[0].startswith("|mean WER delta|")


def test_a_noisy_check_needs_two_runs(clean):
    utterances, log_probs = clean
    with pytest.raises(MhoError, match="at least 2 runs"):
        check_noisy_parity(NoisySession(log_probs, 1.0, 0), {}, utterances,
                           GreedyDecoder.from_assets(), runs=1)


def test_wer_tolerance_is_two_binomial_standard_errors_and_at_least_one_word():
    from mho.workflows.check import wer_tolerance

    # 116 words at 30% WER: 2 x sqrt(0.3 x 0.7 / 116) = 8.51 points (one word is 0.86)
    assert wer_tolerance(116, 30.0) == pytest.approx(200 * (0.3 * 0.7 / 116) ** 0.5)
    # a perfect score on 3 words: the binomial spread is 0, one word is 33 points
    assert wer_tolerance(3, 0.0) == pytest.approx(100 / 3)
    # large sets tighten it: 20,000 words at 10% allow 0.42 points
    assert wer_tolerance(20_000, 10.0) == pytest.approx(200 * (0.1 * 0.9 / 20_000) ** 0.5)
