import gzip
import itertools
import re
from pathlib import Path

import pytest

from mho.data.general_text import (
    GeneralSources,
    gcide_quotations,
    general_sentences,
    general_split,
    jargon_paragraphs,
    lm_sentences,
)
from mho.data.lm import build_arpa, build_shipped_lm, perplexity
from mho.data.text import TextSources, corpus_sentences
from mho.errors import MhoError
from tests.conftest import needs_lmplz

GCIDE = """\
Affect \\Af*fect"\\, v. t. [imp. & p. p. {Affected}.]
   1. To act upon; to produce an effect or change upon.
      [1913 Webster]

            As might affect the earth with cold heat. --Milton.
      [1913 Webster]

            The climate affected their health and spirits.
                                                  --Macaulay.
      [1913 Webster]
"""

JARGON = """\
:hack: n.

   Originally, a quick job that produces what is needed,
   but not well.

   An incredibly good piece of work.
"""

WORDS = ["the", "cat", "dog", "sat", "ran", "saw", "a", "big", "small", "red", "old", "new"]


@pytest.fixture
def general(tmp_path) -> GeneralSources:
    with gzip.open(tmp_path / "gcide.dict.dz", "wt") as out:
        out.write(GCIDE)
    with gzip.open(tmp_path / "jargon.txt.gz", "wt") as out:
        out.write(JARGON)
    return GeneralSources(gcide=tmp_path / "gcide.dict.dz", jargon=tmp_path / "jargon.txt.gz")


@pytest.fixture
def corpus(tmp_path) -> TextSources:
    """A fake corpus of 1,000 distinct five-word fortunes (no WordNet examples)."""
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        (wordnet / name).write_text("")
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    sentences = [" ".join(("the", *words)) + "." for words in
                 itertools.islice(itertools.product(WORDS, repeat=4), 1000)]
    (fortunes / "fake").write_text("\n%\n".join(sentences) + "\n")
    return TextSources(wordnet_dir=wordnet, fortunes_dir=fortunes)


def test_gcide_quotations_are_the_indented_blocks_without_attribution(general):
    assert list(gcide_quotations(general.gcide)) == [
        "As might affect the earth with cold heat.",
        "The climate affected their health and spirits.",
    ]


def test_jargon_paragraphs_are_joined(general):
    paragraphs = list(jargon_paragraphs(general.jargon))
    assert "Originally, a quick job that produces what is needed, but not well." in paragraphs


def test_general_sentences_are_normalized_and_exclude_held_out_text(general):
    excluded = "the climate affected their health and spirits"
    got = general_sentences(["gcide", "jargon"], exclude={excluded}, sources=general)
    assert got == [
        "as might affect the earth with cold heat",
        "originally a quick job that produces what is needed but not well",
        "an incredibly good piece of work",
    ]  # ":hack: n." is too short; the excluded quotation is gone


def test_unknown_source_and_missing_package_are_one_line_errors(tmp_path):
    with pytest.raises(MhoError, match="unknown text source 'bible'"):
        general_sentences(["bible"], exclude=())
    with pytest.raises(MhoError, match="apt-get install dict-gcide"):
        general_sentences(["gcide"], exclude=(), sources=GeneralSources(gcide=tmp_path / "no"))


def test_lm_text_never_holds_a_dev_or_test_sentence(general, corpus, tmp_path):
    split = corpus_sentences(0, sources=corpus)
    held_out = split["dev"] + split["test"]
    # A general source that quotes held-out corpus sentences verbatim (as a book might).
    with gzip.open(general.gcide, "at") as out:
        for sentence in held_out[:50] + split["train"][:20]:
            out.write(f"\n            {sentence.capitalize()}. --Somebody.\n      [1913 Webster]\n")
    assert set(held_out[:50]) <= set(general_sentences(["gcide"], (), general))  # really there
    parts = general_split(sources=general, corpus=corpus, held_out=1)
    text = lm_sentences(["corpus", "gcide", "jargon"], sources=general, corpus=corpus,
                        held_out=1)
    assert not set(held_out) & set(text)
    assert not set(parts["test"]) & set(text)  # the general held-out sentence is out too
    assert set(split["train"]) <= set(text) and len(text) == len(set(text))
    assert set(parts["train"]) <= set(text)
    assert not set(parts["test"]) & set(split["train"])  # held-out text is not corpus text
    only_gcide = lm_sentences(["gcide"], sources=general, corpus=corpus, held_out=1)
    assert not set(parts["test"]) & set(only_gcide)  # the same held-out set, whatever is named




def _arpa_log10(arpa: Path, sentence: str) -> float:
    """log10 P(sentence </s> | <s>) from the ARPA text by the backoff rule (the reference)."""
    prob: dict[tuple[str, ...], float] = {}
    backoff: dict[tuple[str, ...], float] = {}
    for line in arpa.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and re.match(r"^-?[\d.]+(e-?\d+)?$", fields[0]):
            ngram = tuple(fields[1].split())
            prob[ngram] = float(fields[0])
            backoff[ngram] = float(fields[2]) if len(fields) > 2 else 0.0
    history, total = ["<s>"], 0.0
    for word in [*sentence.split(), "</s>"]:
        word = word if (word,) in prob else "<unk>"
        context = tuple(history[-3:])
        penalty = 0.0
        while (*context, word) not in prob:
            penalty += backoff.get(context, 0.0)
            context = context[1:]
        total += penalty + prob[(*context, word)]
        history.append(word)
    return total


@needs_lmplz
def test_perplexity_matches_the_arpa_by_hand(tmp_path):
    text = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog",
            "the cat sat on the log", "a dog sat on a mat"]
    arpa = build_arpa(text, tmp_path / "lm.arpa", prune_from=0, memory="64M")
    info = build_shipped_lm(text, tmp_path / "lm", prune_from=0, quantize=False, memory="64M")
    assert (info.sentences, info.tokens, info.vocabulary) == (5, 29, 9)  # 6+6+5+6+6 words
    probe = ["the cat sat on a log", "a dog saw the zebra"]
    result = perplexity(tmp_path / "lm", probe)
    expected = sum(_arpa_log10(arpa, sentence) for sentence in probe)
    assert result.log10_prob == pytest.approx(expected, abs=1e-3)
    assert (result.words, result.oov) == (11, 1)
    assert result.perplexity == pytest.approx(10 ** (-expected / 13), rel=1e-3)
