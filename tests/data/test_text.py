import re

import pytest

from mho.data.text import (
    MAX_WORDS,
    MIN_WORDS,
    TextSources,
    cmu_lexicon,
    corpus_sentences,
    fortune_entries,
    normalize_sentence,
    normalized_sentences,
    split_sentences,
    wordnet_examples,
)
from mho.errors import MhoError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Don't STOP believing, my friend!", "don't stop believing my friend"),
        ("'Hello there,' she said   softly.", "hello there she said softly"),
        ("The dogs' bowls were   empty.", "the dogs' bowls were empty"),  # in CMUdict
        ("The cats' bowls were full", "the cats bowls were full"),  # "cats'" is not
        ("A well-known fact about cats", "a well known fact about cats"),
        ("I said (quite loudly) that I was leaving", "i said quite loudly that i was leaving"),
        ("He said \u2019tis the season to be jolly", "he said 'tis the season to be jolly"),
        ("the cat sat on the mat", "the cat sat on the mat"),
    ],
)
def test_normalize_keeps_and_cleans(raw, expected):
    assert normalize_sentence(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "He bought 3 apples at the market",  # digit
        "It costs $ five at the store today",  # spoken symbol
        "Use the mouse, e.g. for clicking on links",  # dotted abbreviation
        "(a) the first choice is always best",  # list marker
        "Visit www.example.com for all the details",  # URL
        "the xyzzyqx is not a word at all",  # not in CMUdict
        "the naive caf\u00e9 owner smiled at us",  # non-ASCII letter
        "too short here",  # 3 words
        " ".join(["the"] * (MAX_WORDS + 1)),  # 21 words
    ],
)
def test_normalize_drops(raw):
    assert normalize_sentence(raw) is None


def test_word_count_limits_are_inclusive():
    assert normalize_sentence(" ".join(["cat"] * MIN_WORDS)) == " ".join(["cat"] * MIN_WORDS)
    assert normalize_sentence(" ".join(["cat"] * MAX_WORDS)) is not None


def test_apostrophe_word_missing_from_cmudict_drops_the_sentence():
    lexicon = frozenset({"the", "cat", "sat", "down", "don't"})
    assert normalize_sentence("the cat don't sat down", lexicon) == "the cat don't sat down"
    assert normalize_sentence("the cat won't sat down", lexicon) is None


def test_split_sentences():
    text = 'Hello there, Mr. Smith! How are you?  "I am fine." She said; then... nothing'
    assert split_sentences(text) == [
        "Hello there, Mr Smith!",
        "How are you?",
        '"I am fine.',
        "She said",
        "then",
        "nothing",
    ]


def test_normalized_sentences_deduplicates_in_first_seen_order():
    texts = ["The cat sat on the mat. A dog ran far away.", "the cat sat on THE mat!"]
    assert normalized_sentences(texts) == ["the cat sat on the mat", "a dog ran far away"]


@pytest.fixture
def fake_sources(tmp_path):
    """A tiny WordNet (header + glosses) and fortunes (index files, off/, attribution)."""
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    header = "  1 This software and database is being provided\n"
    glosses = {
        "data.noun": [
            '00001 03 n 01 cat 0 000 | a small animal; "the cat sat on the mat"; '
            '"a cat has nine lives they say"',
            '00002 03 n 01 dog 0 000 | an animal; "the dog chased the big red ball"',
        ],
        "data.verb": ['00003 29 v 01 run 0 000 | move fast; "she runs to the store every day"'],
        "data.adj": [
            '00004 00 a 01 big 0 000 | large; "a big house on the hill"; "big 5 houses on it"'
        ],
        "data.adv": ['00005 02 r 01 fast 0 000 | quickly; "he drove very fast down the road"'],
    }
    for name, lines in glosses.items():
        (wordnet / name).write_text(header + "\n".join(lines) + "\n")
    fortunes = tmp_path / "fortunes"
    (fortunes / "off").mkdir(parents=True)
    (fortunes / "wisdom").write_text(
        "A stitch in time saves nine.\n%\n"
        "Never put off until tomorrow\nwhat you can do today.\n\t\t-- Ben Franklin\n%\n"
        "This is the ___\x08\x08\x08last time I go there.\n%\n"
    )
    (fortunes / "wisdom.dat").write_bytes(b"\x00\x02never read this index file")
    (fortunes / "wisdom.u8").write_text("The twin copy must not be read at all.\n%\n")
    (fortunes / "off" / "rude").write_text("The offensive file must not be read.\n%\n")
    more = ["The early bird catches the worm", "Look before you leap over it"]
    more += [f"Number {word} is a fine number here" for word in ("one", "two", "three")]
    (fortunes / "proverbs").write_text("\n%\n".join(more) + "\n")
    return TextSources(wordnet_dir=wordnet, fortunes_dir=fortunes)


def test_wordnet_examples_are_the_quoted_glosses(fake_sources):
    examples = list(wordnet_examples(fake_sources.wordnet_dir))
    assert examples[:2] == ["the cat sat on the mat", "a cat has nine lives they say"]
    assert "big 5 houses on it" in examples  # digits are dropped later, by normalization
    assert len(examples) == 7


def test_fortune_entries_skip_index_offensive_and_attribution(fake_sources):
    entries = [" ".join(entry.split()) for entry in fortune_entries(fake_sources.fortunes_dir)]
    entries = [entry for entry in entries if entry]
    assert "Never put off until tomorrow what you can do today." in entries
    assert "This is the last time I go there." in entries  # overstrike removed
    joined = " ".join(entries)
    assert "Franklin" not in joined
    assert "twin copy" not in joined and "offensive" not in joined and "index" not in joined


def test_corpus_split_is_seeded_deterministic_and_disjoint(fake_sources):
    split = corpus_sentences(0, dev=2, test=2, sources=fake_sources)
    assert split == corpus_sentences(0, dev=2, test=2, sources=fake_sources)
    assert [len(split[name]) for name in ("dev", "test")] == [2, 2]
    sets = {name: set(sentences) for name, sentences in split.items()}
    assert not sets["train"] & sets["dev"] and not sets["train"] & sets["test"]
    assert not sets["dev"] & sets["test"]
    everything = sets["train"] | sets["dev"] | sets["test"]
    assert "the cat sat on the mat" in everything
    assert "never put off until tomorrow what you can do today" in everything
    assert not any("houses on it" in sentence for sentence in everything)  # had a digit
    assert len(everything) == 14  # 6 WordNet examples, 8 fortune sentences
    others = [corpus_sentences(seed, dev=2, test=2, sources=fake_sources) for seed in (1, 2, 3)]
    assert any(other["test"] != split["test"] for other in others)


def test_too_few_sentences_is_an_error(fake_sources):
    with pytest.raises(MhoError, match="usable sentences"):
        corpus_sentences(0, dev=10, test=10, sources=fake_sources)


def test_missing_text_package_names_it(tmp_path):
    with pytest.raises(MhoError, match="apt-get install wordnet-base"):
        list(wordnet_examples(tmp_path))
    with pytest.raises(MhoError, match="apt-get install fortunes"):
        list(fortune_entries(tmp_path / "nowhere"))


def test_real_corpus_split_is_covered_by_cmudict():
    split = corpus_sentences(0)
    assert len(split["dev"]) == len(split["test"]) == 400
    assert len(split["train"]) > 20_000
    assert split == corpus_sentences(0)
    assert split["test"] != corpus_sentences(1)["test"]
    assert not set(split["train"]) & (set(split["dev"]) | set(split["test"]))
    lexicon = cmu_lexicon()
    for sentence in split["train"] + split["dev"] + split["test"]:
        words = sentence.split()
        assert MIN_WORDS <= len(words) <= MAX_WORDS, sentence
        assert re.fullmatch(r"[a-z' ]+", sentence) and " ".join(words) == sentence, sentence
        assert all(word in lexicon for word in words), sentence
