import numpy as np
import pytest
import torch

from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
from mho.decoding.decoders import (
    BeamOptions,
    GreedyDecoder,
    LexiconBeamDecoder,
    collapse,
    load_decoder,
)
from mho.errors import MhoError

V = len(PHONE_VOCABULARY)
WORDS = ["the", "a", "i", "cat", "kit", "hat", "red", "read", "book"]

# A bigram LM written by hand (log10). "the cat" / "a kit" and "i read" / "a red" are the
# likely continuations; everything else backs off to the unigrams.
ARPA = r"""
\data\
ngram 1=12
ngram 2=9

\1-grams:
-2.0	<unk>	0
-99	<s>	-0.3
-1.0	</s>	0
-1.0	the	-0.5
-1.0	a	-0.5
-1.0	i	-0.5
-1.2	cat	-0.3
-1.2	kit	-0.3
-1.2	hat	-0.3
-1.2	red	-0.3
-1.2	read	-0.3
-1.2	book	-0.3

\2-grams:
-0.5	<s> the
-0.5	<s> a
-0.5	<s> i
-0.1	the cat
-0.1	a kit
-0.1	i read
-0.1	a red
-0.2	cat </s>
-0.2	kit </s>

\end\
"""


def emissions(*frames: str | tuple[str, ...], margin: float = 10.0) -> np.ndarray:
    """Log-probs [T, V]: each frame's token(s) score ``margin`` above all others (ties split)."""
    logits = np.zeros((len(frames), V), dtype=np.float32)  # [T, V]
    for t, frame in enumerate(frames):
        for token in (frame,) if isinstance(frame, str) else frame:
            logits[t, PHONE_VOCABULARY.index(token)] = margin
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def sentence_frames(*groups: str) -> list[str]:
    """'K AE T' groups -> frames with doubled phones, blanks and boundaries between words."""
    frames: list[str] = ["<blank>"]
    for i, group in enumerate(groups):
        if i:
            frames += ["|", "|"]
        for phone in group.split():
            frames += [phone, phone, "<blank>"]
    return frames


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.from_cmudict().restrict(WORDS)


@pytest.fixture(scope="module")
def arpa(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    path.write_text(ARPA.lstrip())
    return str(path)


def test_collapse_merges_repeats_and_normalizes_boundaries():
    tokens = ["|", "<blank>", "K", "K", "<blank>", "AE", "|", "<blank>", "|", "T", "T", "|"]
    assert collapse(tokens) == ("K", "AE", "|", "T")


def test_greedy_collapses_repeats_blanks_and_boundaries(lexicon):
    decoder = GreedyDecoder(lexicon)
    logp = emissions("<blank>", "DH", "DH", "<blank>", "AH", "|", "|", "<blank>", "|",
                     "K", "K", "AE", "<blank>", "<blank>", "T", "T", "|")  # fmt: skip
    hyp = decoder.search(logp)
    assert hyp.words == ("the", "cat")
    assert hyp.phones == ("DH", "AH", "|", "K", "AE", "T")
    assert hyp.text == decoder.decode(logp) == "the cat"
    assert hyp.score == pytest.approx(float(logp.max(axis=1).sum()))


def test_greedy_keeps_a_repeated_phone_split_by_a_blank(lexicon):
    # "kit" needs K IH T; "K IH IH T" collapses, "T <blank> T" does not.
    decoder = GreedyDecoder(lexicon)
    assert decoder.search(emissions("K", "IH", "IH", "T")).phones == ("K", "IH", "T")
    assert decoder.search(emissions("K", "IH", "T", "<blank>", "T")).phones == (
        "K", "IH", "T", "T",
    )  # fmt: skip


def test_greedy_maps_an_unknown_pronunciation_to_the_nearest_word(lexicon):
    decoder = GreedyDecoder(lexicon)
    # K AH T is no word: "cat" (K AE T) and "kit" (K IH T) are 1 edit away, "hat" 2.
    # Tie -> alphabetical without counts, most frequent with counts.
    assert decoder.decode(emissions("K", "AH", "T")) == "cat"
    assert GreedyDecoder(lexicon, {"kit": 5, "cat": 1}).decode(emissions("K", "AH", "T")) == "kit"
    # B UH K S: one deletion from "book".
    assert decoder.decode(emissions("DH", "AH", "|", "B", "UH", "K", "S")) == "the book"


def test_greedy_prefers_frequent_homophones(lexicon):
    logp = emissions("R", "EH", "D")  # "read" (past tense) and "red"
    assert GreedyDecoder(lexicon).decode(logp) == "read"  # alphabetical
    assert GreedyDecoder(lexicon, {"red": 3, "read": 1}).decode(logp) == "red"


def test_decoders_accept_torch_tensors_and_batches(lexicon, arpa):
    logp = emissions(*sentence_frames("DH AH", "K AE T"))
    batch = np.stack([logp, logp])  # [2, T, V]
    lengths = [len(logp), 7]  # the second keeps "the" and the boundary only
    for decoder in (GreedyDecoder(lexicon), LexiconBeamDecoder(lexicon, arpa)):
        assert decoder.decode(torch.from_numpy(logp)) == "the cat"
        assert decoder.decode_batch(torch.from_numpy(batch), lengths) == ["the cat", "the"]


def test_decoders_reject_wrong_shapes(lexicon):
    decoder = GreedyDecoder(lexicon)
    with pytest.raises(MhoError, match=r"\[T, 41\]"):
        decoder.decode(np.zeros((5, 40), dtype=np.float32))
    with pytest.raises(MhoError, match=r"\[B, T, V\]"):
        decoder.decode_batch(np.zeros((5, 41), dtype=np.float32))


def test_beam_lm_decides_between_acoustically_tied_words(lexicon, arpa):
    decoder = LexiconBeamDecoder(lexicon, arpa)
    tied = ("AE", "IH")  # the vowel of "cat" and "kit", equally likely
    the_x = emissions("DH", "AH", "|", "K", tied, tied, "T")
    a_x = emissions("AH", "|", "K", tied, tied, "T")
    assert decoder.decode(the_x) == "the cat"  # LM: "the cat" >> "the kit"
    assert decoder.decode(a_x) == "a kit"  # LM: "a kit" >> "a cat"
    hyp = decoder.search(the_x)
    assert hyp.phones == ("DH", "AH", "|", "K", "AE", "T")


def test_beam_lm_chooses_among_homophones_by_context(lexicon, arpa):
    decoder = LexiconBeamDecoder(lexicon, arpa)
    assert decoder.decode(emissions(*sentence_frames("AY", "R EH D"))) == "i read"
    assert decoder.decode(emissions(*sentence_frames("AH", "R EH D"))) == "a red"


def test_beam_without_lm_follows_the_lexicon(lexicon):
    decoder = LexiconBeamDecoder(lexicon, None, BeamOptions(beam_size=8))
    # AH wins the frame but K AH T spells nothing; AE is the runner-up -> "cat".
    logp = emissions("K", ("AH",), "T")
    logp[1, PHONE_VOCABULARY.index("AE")] = logp[1, PHONE_VOCABULARY.index("AH")] - 2.0
    assert decoder.decode(logp) == "cat"


def test_beam_boundary_separates_words(lexicon, arpa):
    # "a" + "kit" vs one word: the "|" between them must split the phones into two words,
    # and the last word closes without a trailing "|".
    decoder = LexiconBeamDecoder(lexicon, arpa)
    hyp = decoder.search(emissions(*sentence_frames("AH", "K IH T")))
    assert hyp.words == ("a", "kit")
    assert hyp.phones == ("AH", "|", "K", "IH", "T")


def test_beam_finishes_a_last_word_the_audio_cut_short(lexicon, arpa):
    # The model is sure of "the", then of K and blanks: the audio ends two phones into "cat"
    # or "kit". No hypothesis can take the closing "|"; the search finishes the word the LM
    # prefers ("the cat") at completion_score per missing phone instead of dropping it.
    decoder = LexiconBeamDecoder(lexicon, arpa)
    cut = decoder.search(emissions(*sentence_frames("DH AH", "K"), margin=40.0))
    whole = decoder.search(emissions(*sentence_frames("DH AH", "K AE T"), margin=40.0))
    assert cut.words == whole.words == ("the", "cat")
    assert cut.phones == ("DH", "AH", "|", "K")  # what the model emitted, not the supplied
    # margin 40: every frame's acoustic log-prob is 0 to within V * e^-40, so the scores
    # differ by exactly the two supplied phones (AE, T)
    assert cut.score - whole.score == pytest.approx(2 * BeamOptions().completion_score,
                                                    abs=1e-4)


def test_beam_rejects_a_missing_lm(lexicon, tmp_path):
    with pytest.raises(MhoError, match="language model not found"):
        LexiconBeamDecoder(lexicon, tmp_path / "missing.bin")


def test_load_decoder_from_assets_open_and_closed_vocabulary(tmp_path):
    # KenLM recognizes the format by content, so an ARPA text under the shipped name works.
    (tmp_path / "lm.bin").write_text(ARPA.lstrip())
    (tmp_path / "word_counts.tsv").write_text("the\t9\nred\t2\nread\t1\n")
    logp = emissions(*sentence_frames("DH AH", "D AO G"))  # "dog" is not in the LM
    assert load_decoder("lm", tmp_path).decode(logp) == "the dog"
    assert load_decoder("greedy", tmp_path).decode(logp) == "the dog"
    closed = load_decoder("greedy", tmp_path, open_vocabulary=False)
    assert closed.decode(emissions("R", "EH", "D")) == "red"  # training counts choose
    assert closed.decode(logp).split()[1] in {"the", "red", "read"}
    with pytest.raises(MhoError, match="unknown decoder"):
        load_decoder("viterbi", tmp_path)
    assert load_decoder("lm", tmp_path, beam_size=7).options.beam_size == 7
    with pytest.raises(MhoError, match="a beam size is for the LM decoder"):
        load_decoder("greedy", tmp_path, beam_size=7)


def test_beam_search_is_deterministic_on_tied_hypotheses():
    # utterance 30 of flite-slt has 8 exactly tied best hypotheses under the shipped model and
    # LM; flashlight returns them in memory-address order, which changes between calls
    from mho.data.datasets import resolve_dataset
    from mho.data.manifest import load_utterance_audio
    from mho.runtime.recognizer import load_recognizer

    recognizer = load_recognizer("conformer-none-w8", decoder="greedy")
    utterance = resolve_dataset("flite-slt")[1][30]
    emissions = np.asarray(recognizer.log_probs(load_utterance_audio(utterance)), np.float32)
    decoder = load_decoder("lm")
    hypotheses = {decoder.search(emissions) for _ in range(8)}
    assert len(hypotheses) == 1
