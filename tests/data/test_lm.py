import gzip
import json
import math
import re

import pytest

from mho.data.lm import (
    build_arpa,
    build_binary,
    build_shipped_lm,
    kenlm_tool,
    read_word_counts,
    set_unk_log10,
    unseen_word_estimate,
    word_counts,
    write_word_counts,
)
from mho.errors import MhoError
from tests.conftest import needs_lmplz

SENTENCES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog sat on a mat",
    "i read a red book",
    "the cat sat on the mat",
]




def ngram_counts(arpa_text: str) -> dict[int, int]:
    return {int(n): int(c) for n, c in re.findall(r"^ngram (\d)=(\d+)$", arpa_text, re.M)}


@needs_lmplz
def test_build_arpa_estimates_a_pruned_4gram(tmp_path):
    full = build_arpa(SENTENCES, tmp_path / "full.arpa", prune_from=0, memory="64M")
    pruned = build_arpa(SENTENCES, tmp_path / "pruned.arpa.gz", memory="64M")
    full_text = full.read_text()
    pruned_text = gzip.open(pruned, "rt").read()
    counts, pruned_counts = ngram_counts(full_text), ngram_counts(pruned_text)
    assert sorted(counts) == [1, 2, 3, 4]
    vocabulary = {w for s in SENTENCES for w in s.split()}
    assert counts[1] == len(vocabulary) + 3  # + <s>, </s>, <unk>
    assert pruned_counts[1] == counts[1] and pruned_counts[2] == counts[2]
    # Only "the cat sat on the mat" repeats: its 3/4-grams survive, singletons go.
    assert 0 < pruned_counts[3] < counts[3] and pruned_counts[4] < counts[4]
    assert re.search(r"^\S+\tthe cat sat(\t\S+)?$", pruned_text, re.M)
    assert not list(tmp_path.glob("*.partial"))


@needs_lmplz
def test_binary_lm_scores_like_its_arpa(tmp_path):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    arpa = build_arpa(SENTENCES, tmp_path / "lm.arpa", memory="64M")
    binary = build_binary(arpa, tmp_path / "lm.bin", quantize=False, memory="64M")
    words = Dictionary()
    for word in ("<unk>", "the", "cat", "dog"):
        words.add_entry(word)
    words.set_default_index(0)
    scores = []
    for path in (arpa, binary):
        model = KenLM(str(path), words)
        state, the = model.score(model.start(False), words.get_index("the"))
        scores.append((the, model.score(state, 2)[1], model.score(state, 3)[1]))
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)
    _, after_the_cat, after_the_dog = scores[0]
    assert after_the_cat > after_the_dog  # "the cat" twice as often as "the dog"


@needs_lmplz
def test_build_shipped_lm_writes_every_asset(tmp_path):
    info = build_shipped_lm(SENTENCES, tmp_path, memory="64M")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.bin", "lm.json", "word_counts.tsv"]
    assert json.loads((tmp_path / "lm.json").read_text())["vocabulary"] == info.vocabulary == 13
    assert info.sentences == 5 and info.tokens == 32 and info.order == 4
    assert (tmp_path / "lm.bin").read_bytes()[:4] == b"mmap"  # KenLM binary magic
    assert read_word_counts(tmp_path / "word_counts.tsv")["the"] == 6


def test_unseen_word_estimate_spreads_the_held_out_oov_rate_over_unseen_words():
    counts = word_counts(SENTENCES)
    held_out = ["the cat ate a fish", "a dog sat on the rug"]  # 2 of 11 words unseen
    lexicon = [*counts, "fish", "rug", "ate", "zebra"]  # 4 words the LM never saw
    estimate = unseen_word_estimate(counts, lexicon, held_out)
    assert estimate.held_out_oov_rate == 3 / 11  # ate, fish, rug
    assert estimate.unseen_lexicon_words == 4
    assert estimate.log10 == pytest.approx(math.log10(3 / 11 / 4))
    with pytest.raises(MhoError, match="no word outside"):
        unseen_word_estimate(counts, lexicon, ["the cat sat on the mat"])


@needs_lmplz
def test_held_out_unk_changes_only_the_unseen_words_scores(tmp_path):
    """Through the decoder's LM reader: an unseen word's score moves by exactly the change of
    the <unk> unigram (after <s>, which backs off to unigrams for it), a seen word's not."""
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    arpa = build_arpa(SENTENCES, tmp_path / "lm.arpa", memory="64M")
    original = set_unk_log10(arpa, -7.5)
    assert set_unk_log10(arpa, -7.5) == -7.5  # the rewrite reads back
    build_binary(arpa, tmp_path / "lm.bin", quantize=False, memory="64M")
    lmplz = build_arpa(SENTENCES, tmp_path / "lmplz.arpa", memory="64M")
    words = Dictionary()
    for word in ("<unk>", "cat", "zebra"):
        words.add_entry(word)
    words.set_default_index(0)
    scores = {}
    for name, path in (("held-out", tmp_path / "lm.bin"), ("lmplz", lmplz)):
        model = KenLM(str(path), words)
        start = model.start(False)
        scores[name] = {w: model.score(start, words.get_index(w))[1] for w in ("cat", "zebra")}
    assert scores["held-out"]["zebra"] - scores["lmplz"]["zebra"] == pytest.approx(
        -7.5 - original, abs=1e-4)
    assert scores["held-out"]["cat"] == pytest.approx(scores["lmplz"]["cat"], abs=1e-4)


@needs_lmplz
def test_build_shipped_lm_records_the_held_out_unk(tmp_path):
    info = build_shipped_lm(SENTENCES, tmp_path, memory="64M",
                            held_out=["the cat ate a fish"])
    recorded = json.loads((tmp_path / "lm.json").read_text())
    assert recorded["unk"] == "held-out" and recorded["held_out_oov_rate"] == 2 / 5
    assert recorded["unk_log10"] == pytest.approx(
        math.log10(2 / 5 / info.unseen_lexicon_words))
    assert info.unseen_lexicon_words > 100_000  # CMUdict less these 13 words


def test_word_counts_round_trip(tmp_path):
    counts = word_counts(SENTENCES)
    path = tmp_path / "counts.tsv"
    write_word_counts(path, counts)
    lines = path.read_text().splitlines()
    assert lines[0] == "the\t6"  # most frequent first
    assert read_word_counts(path) == dict(counts)
    path.write_text("the\tsix\n")
    with pytest.raises(MhoError, match=":1: malformed"):
        read_word_counts(path)


def test_build_arpa_rejects_reserved_tokens_and_empty_text(tmp_path):
    with pytest.raises(MhoError, match="reserved"):
        build_arpa(["the <unk> sat"], tmp_path / "lm.arpa", lmplz="unused")
    with pytest.raises(MhoError, match="no sentences"):
        build_arpa(["", "  "], tmp_path / "lm.arpa", lmplz="unused")


def test_missing_kenlm_tool_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv("MHO_KENLM_BIN", str(tmp_path))
    with pytest.raises(MhoError, match=r"not in \$MHO_KENLM_BIN"):
        kenlm_tool("lmplz")
    monkeypatch.delenv("MHO_KENLM_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no tools/kenlm/bin here
    with pytest.raises(MhoError, match="make kenlm"):
        kenlm_tool("lmplz")


def test_kenlm_tools_are_found_from_the_working_directory(monkeypatch, tmp_path):
    """An installed mho finds `make kenlm`'s tools under the directory it runs in."""
    tool = tmp_path / "tools" / "kenlm" / "bin" / "lmplz"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    monkeypatch.delenv("MHO_KENLM_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    assert kenlm_tool("lmplz") == tool.resolve()


def test_a_failing_lmplz_is_reported(tmp_path):
    fake = tmp_path / "lmplz"
    fake.write_text("#!/bin/sh\necho 'bad order' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(MhoError, match=r"lmplz failed \(3\): bad order"):
        build_arpa(SENTENCES, tmp_path / "lm.arpa", lmplz=fake)
    assert not (tmp_path / "lm.arpa").exists()
