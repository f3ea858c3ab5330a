"""PocketSphinx's LM read from its trie file: scores against PocketSphinx's own scorer, and
the ARPA file written from it against KenLM's reader."""

import numpy as np
import pytest

from mho.data.sphinx_lm import (
    LOG10_PER_UNIT,
    SphinxTrigramLM,
    pocketsphinx_lm_path,
    pseudo_counts,
    read_sphinx_lm,
    write_arpa,
)
from mho.errors import MhoError


@pytest.fixture(scope="module")
def shipped():
    return read_sphinx_lm(pocketsphinx_lm_path())


def keyed(ngrams: np.ndarray, size: int) -> np.ndarray:
    """[N, n] word ids -> [N] int64 keys (ids as digits of base ``size``)."""
    keys = np.zeros(len(ngrams), dtype=np.int64)
    for column in ngrams.T:
        keys = keys * size + column
    return keys


def backed_off_log10(lm: SphinxTrigramLM, w1: int, w2: int, w3: int) -> float:
    """log10 p(w3 | w1 w2) by the ARPA back-off rule, looked up by brute force."""
    size = len(lm.words)

    def find(order: int, ids: tuple[int, ...]) -> int | None:
        hits = np.flatnonzero(keyed(lm.ngrams[order - 1], size) == keyed(np.array([ids]), size))
        return int(hits[0]) if len(hits) else None

    if (k := find(3, (w1, w2, w3))) is not None:
        return float(lm.log10_probs[2][k])
    k = find(2, (w1, w2))
    backoff = float(lm.log10_backoffs[1][k]) if k is not None else 0.0
    if (j := find(2, (w2, w3))) is not None:
        return backoff + float(lm.log10_probs[1][j])
    return backoff + float(lm.log10_backoffs[0][w2]) + float(lm.log10_probs[0][w3])


def test_shipped_lm_scores_as_pocketsphinx_scores_it(shipped):
    """Stored trigrams, stored bigrams and unseen triples (each back-off path) score as
    PocketSphinx's own NGramModel.prob, which rounds to whole log units: so within one unit."""
    from pocketsphinx import NGramModel

    assert [len(g) for g in shipped.ngrams] == [72547, 2051541, 1669625]
    theirs = NGramModel.readfile(str(pocketsphinx_lm_path()))
    rng = np.random.default_rng(0)
    triples = [tuple(shipped.ngrams[2][i]) for i in rng.choice(len(shipped.ngrams[2]), 20)]
    triples += [(int(rng.integers(len(shipped.words))), *shipped.ngrams[1][i])
                for i in rng.choice(len(shipped.ngrams[1]), 20)]
    triples += [tuple(rng.integers(len(shipped.words), size=3)) for _ in range(20)]
    for w1, w2, w3 in triples:
        words = [shipped.words[w] for w in (w3, w2, w1)]  # PocketSphinx: word, then history
        if "<s>" in words[:1] or "</s>" in words[1:]:
            continue  # never predicted / never a history
        expected = theirs.prob(words) * LOG10_PER_UNIT
        assert backed_off_log10(shipped, int(w1), int(w2), int(w3)) == pytest.approx(
            expected, abs=LOG10_PER_UNIT * 1.001)


def test_pseudo_counts_follow_the_unigram_probabilities(shipped):
    counts = pseudo_counts(shipped)
    assert "<s>" not in counts and len(counts) == len(shipped.words) - 2
    the, of = (shipped.words.index(w) for w in ("the", "of"))
    ratio = counts["the"] / counts["of"]
    assert ratio == pytest.approx(10 ** (shipped.log10_probs[0][the] - shipped.log10_probs[0][of]),
                                  rel=1e-6)


def test_arpa_reads_back_in_kenlm(tmp_path):
    """A tiny LM written as ARPA and scored by KenLM (flashlight-text's reader, as the decoder
    uses it): a stored trigram, a bigram after a backed-off context, and <unk>."""
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    words = ["</s>", "<s>", "a", "b"]
    lm = SphinxTrigramLM(
        words=words,
        ngrams=[np.arange(4)[:, None], np.array([[1, 2], [2, 3], [3, 0]]), np.array([[1, 2, 3]])],
        log10_probs=[np.array([-1.0, -99.0, -0.5, -0.7], np.float32),
                     np.array([-0.3, -0.2, -0.1], np.float32), np.array([-0.05], np.float32)],
        log10_backoffs=[np.array([0.0, -0.4, -0.6, -0.2], np.float32),
                        np.array([-0.25, -0.15, 0.0], np.float32)],
    )
    arpa = write_arpa(lm, tmp_path / "lm.arpa", unk_log10=-3.0)
    dictionary = Dictionary()
    for word in ("<unk>", "a", "b", "c"):
        dictionary.add_entry(word)
    model = KenLM(str(arpa), dictionary)
    state = model.start(False)
    scores = []
    for word in ("a", "b", "b", "c"):
        state, score = model.score(state, dictionary.get_index(word))
        scores.append(score)
    _, end = model.finish(state)
    expected = [-0.3,  # p(a | <s>)
                -0.05,  # p(b | <s> a)
                -0.15 + -0.2 + -0.7,  # bo(a b) + bo(b) + p(b): "b b" is not stored
                -0.2 + -3.0]  # bo(b) + p(<unk>): "b b" is no context
    assert scores == pytest.approx(expected, abs=1e-4)  # ARPA's 4 decimals
    assert end == pytest.approx(0.0 + -1.0, abs=1e-4)  # bo(<unk>) + p(</s>)


def test_other_files_are_refused(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"Darpa Trigram LM" + bytes(64))
    with pytest.raises(MhoError, match="not a CMU Sphinx trie LM"):
        read_sphinx_lm(tmp_path / "x.bin")
    (tmp_path / "four.bin").write_bytes(b"Trie Language Model" + bytes([4]) + bytes(64))
    with pytest.raises(MhoError, match="4-gram LM; only trigram"):
        read_sphinx_lm(tmp_path / "four.bin")
