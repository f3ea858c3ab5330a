"""CTC decoders: CTC log-probs ``[T, V]`` -> words.

Two decoders share one tiny interface (:class:`Decoder`): ``search(emissions)`` returns a
:class:`Hypothesis`, ``decode(emissions)`` just its transcript, so evaluation code never
cares which one runs.

- :class:`GreedyDecoder`: best token per frame, CTC collapse, then each phone group between
  "|" boundaries becomes the word with that pronunciation, or, failing an exact match, the
  word with the nearest pronunciation (phone edit distance) so greedy WER stays meaningful.
- :class:`LexiconBeamDecoder`: flashlight-text's lexicon beam search with a word n-gram
  KenLM. Every pronunciation in its trie ends with "|", and the model only emits "|"
  *between* words, so one synthetic "|" frame is appended before decoding: it closes the
  last word and costs nothing (log-prob 0). This makes "|" a hard word separator, as in the
  training labels, instead of letting the search split or merge phone groups freely.
  When the audio ends inside a word (the model's last phones spell only the start of any
  lexicon word, e.g. "F EH B R UW" of "february"), no hypothesis can take that frame; the
  search then runs again with closing frames that let each hypothesis finish its word at
  a fixed cost per phone it did not hear (:attr:`BeamOptions.completion_score`).
- :class:`CharacterDecoder`: greedy over a character vocabulary (Hugging Face wav2vec2 CTC
  models): best token per frame, CTC collapse, "|" between words, lowercase.

Neither decoder is thread-safe (the beam decoder keeps search state); use one per thread.
"""

import dataclasses
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mho.data.lexicon import BLANK, BOUNDARY, PHONE_VOCABULARY, UNK, Lexicon, Vocabulary
from mho.data.lm import COUNTS_FILE, LM_ASSETS, LM_FILE, read_word_counts
from mho.errors import MhoError


@dataclass(frozen=True)
class Hypothesis:
    words: tuple[str, ...]  # the transcript, word by word
    phones: tuple[str, ...]  # collapsed tokens in label form: phones with "|" between words
    score: float  # greedy: sum of the per-frame best log-probs; beam: acoustic + weighted LM

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Decoder(ABC):
    """CTC log-probs of one utterance ``[T, V]`` -> :class:`Hypothesis`."""

    vocabulary: Vocabulary

    @abstractmethod
    def search(self, emissions: Any) -> Hypothesis:
        """Best hypothesis for ``emissions`` ``[T, V]`` (numpy array or torch tensor)."""

    def decode(self, emissions: Any) -> str:
        """The word transcript of ``emissions`` ``[T, V]``."""
        return self.search(emissions).text

    def decode_batch(self, emissions: Any, lengths: Sequence[int] | None = None) -> list[str]:
        """Transcripts of a padded batch ``[B, T, V]``; ``lengths`` ``[B]`` are valid frames."""
        batch = _to_numpy(emissions)  # [B, T, V]
        if batch.ndim != 3:
            raise MhoError(f"expected emissions [B, T, V], got shape {batch.shape}")
        if lengths is None:
            lengths = [batch.shape[1]] * batch.shape[0]
        return [self.decode(batch[b, : int(n)]) for b, n in enumerate(lengths)]


def _to_numpy(emissions: Any) -> np.ndarray:
    if hasattr(emissions, "detach"):  # a torch tensor; torch itself is not imported here
        emissions = emissions.detach().cpu().float().numpy()
    return np.asarray(emissions)


def _as_emissions(emissions: Any, vocabulary: Sized) -> np.ndarray:
    """-> C-contiguous float32 ``[T, V]`` (flashlight reads the raw buffer)."""
    array = _to_numpy(emissions)
    if array.ndim != 2 or array.shape[1] != len(vocabulary):
        raise MhoError(f"expected emissions [T, {len(vocabulary)}], got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def collapse(tokens: Iterable[str]) -> tuple[str, ...]:
    """CTC collapse to label form: merge repeats, drop blanks, one "|" only between words."""
    merged = [token for token, _ in itertools.groupby(tokens)]
    phones: list[str] = []
    for token in merged:
        # "| <blank> |" is still one boundary; "T <blank> T" is two T's.
        if token != BLANK and not (token == BOUNDARY and phones and phones[-1] == BOUNDARY):
            phones.append(token)
    # Boundaries at the ends carry no word.
    while phones and phones[0] == BOUNDARY:
        phones.pop(0)
    while phones and phones[-1] == BOUNDARY:
        phones.pop()
    return tuple(phones)


def _word_groups(phones: Sequence[str]) -> list[tuple[str, ...]]:
    groups = itertools.groupby(phones, lambda p: p == BOUNDARY)
    return [tuple(group) for is_boundary, group in groups if not is_boundary]


def _preference(words: Iterable[str], word_counts: Mapping[str, int] | None) -> list[str]:
    """Words most preferred first: most frequent in the LM text, then alphabetical."""
    counts = word_counts or {}
    return sorted(words, key=lambda w: (-counts.get(w, 0), w))


class GreedyDecoder(Decoder):
    """Best path + inverse lexicon (pronunciation -> word), nearest pronunciation as fallback."""

    def __init__(
        self,
        lexicon: Lexicon,
        word_counts: Mapping[str, int] | None = None,
        vocabulary: Vocabulary = PHONE_VOCABULARY,
    ) -> None:
        """``word_counts`` (e.g. from the LM training text) choose among homophones."""
        self.vocabulary = vocabulary
        # Each phone becomes one character so rapidfuzz compares plain strings (its fastest
        # path); insertion order = preference order, which breaks distance ties.
        self._char = {token: chr(0x100 + i) for i, token in enumerate(vocabulary.tokens)}
        self._word_of: dict[str, str] = {}
        for word in _preference(lexicon.words, word_counts):
            for pron in lexicon.pronunciations(word):
                self._word_of.setdefault(self._key(pron), word)
        if not self._word_of:
            raise MhoError("greedy decoder needs a non-empty lexicon")
        self._rank = {key: rank for rank, key in enumerate(self._word_of)}
        # Pronunciations by length, each list in preference order: an edit distance is at
        # least the length difference, so the nearest search can stop early (exactly).
        self._by_length: dict[int, list[str]] = {}
        for key in self._word_of:
            self._by_length.setdefault(len(key), []).append(key)
        self._nearest: dict[str, str] = {}  # cache: groups repeat across utterances

    @classmethod
    def from_assets(
        cls, directory: str | Path = LM_ASSETS, open_vocabulary: bool = True
    ) -> "GreedyDecoder":
        """CMUdict (or only the LM's words), homophones chosen by LM training counts."""
        counts = read_word_counts(Path(directory) / COUNTS_FILE)
        return cls(_decoding_lexicon(counts, open_vocabulary), counts)

    def _key(self, phones: Sequence[str]) -> str:
        return "".join(self._char[p] for p in phones)

    def word(self, phones: Sequence[str]) -> str:
        """The word pronounced ``phones``, or the one with the nearest pronunciation.

        Nearest = fewest phone edits; ties go to the preferred word (most frequent, then
        alphabetical).
        """
        key = self._key(phones)
        word = self._word_of.get(key) or self._nearest.get(key)
        if word is None:
            word = self._nearest[key] = self._word_of[self._nearest_key(key)]
        return word

    def _nearest_key(self, key: str) -> str:
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        best: tuple[int, int, str] | None = None  # (distance, preference rank, key)
        longest = max(self._by_length)
        for gap in range(max(len(key), longest) + 1):
            if best is not None and gap > best[0]:
                break  # every remaining pronunciation is at least `gap` edits away
            for length in {len(key) - gap, len(key) + gap}:
                bucket = self._by_length.get(length)
                if not bucket:
                    continue
                cutoff = None if best is None else best[0]
                found = process.extractOne(
                    key, bucket, scorer=Levenshtein.distance, score_cutoff=cutoff
                )
                if found is not None:
                    candidate = (int(found[1]), self._rank[found[0]], found[0])
                    best = candidate if best is None else min(best, candidate)
        assert best is not None  # the lexicon is not empty
        return best[2]

    def search(self, emissions: Any) -> Hypothesis:
        logp = _as_emissions(emissions, self.vocabulary)  # [T, V]
        best = logp.argmax(axis=1)  # [T]
        phones = collapse(self.vocabulary.tokens[i] for i in best)
        words = tuple(self.word(group) for group in _word_groups(phones))
        score = float(logp[np.arange(len(best)), best].sum())
        return Hypothesis(words=words, phones=phones, score=score)


# A log-prob low enough that no hypothesis using it can win against one that does not.
IMPOSSIBLE = -1e9

# flashlight's kTrieMaxLabel: words sharing one pronunciation in the beam decoder's trie.
TRIE_MAX_LABELS = 6


@dataclass(frozen=True)
class BeamOptions:
    # Hypotheses kept after each frame. With CMUdict's 126k words many partial words share
    # each phone prefix, so a narrow beam loses the right one on unfamiliar voices: on the
    # held-out voices WER falls steeply up to about 1024 and little after (docs/lm.md),
    # at about 0.1 s of search per utterance on one core.
    beam_size: int = 1024
    # Tokens tried per frame, best acoustic scores first; 0 = all (the vocabulary is small).
    beam_size_token: int = 0
    # Hypotheses scoring this far (nats) below the frame's best are dropped.
    beam_threshold: float = 25.0
    # Weight of the LM's log10 word probabilities against the acoustic log-probs.
    lm_weight: float = 2.0
    # Added per emitted word; positive favours more words. "|" already fixes the word count
    # on clean audio, so this mainly matters when the model misses a boundary.
    word_score: float = 0.0
    # Score of emitting <unk> for a phone string no lexicon word spells: -inf = never.
    unk_score: float = -math.inf
    # Added per "|" frame consumed between words; 0 keeps boundaries neutral.
    sil_score: float = 0.0
    # Merge equal hypotheses by log-add instead of max (max is the usual CTC choice).
    log_add: bool = False
    # Added per phone the search supplies to finish a last word the audio cut short (used
    # only when no hypothesis is between words at the end): about a phone the model gives
    # probability e^-10, so finishing a word costs more the more of it is missing.
    completion_score: float = -10.0


class LexiconBeamDecoder(Decoder):
    """Lexicon-constrained CTC beam search with a word n-gram KenLM (flashlight-text)."""

    def __init__(
        self,
        lexicon: Lexicon,
        lm: str | Path | None,
        options: BeamOptions = BeamOptions(),
        vocabulary: Vocabulary = PHONE_VOCABULARY,
    ) -> None:
        """``lm``: an ARPA file (``.arpa`` / ``.arpa.gz``) or KenLM binary; ``None``: no LM.

        Only ``lexicon`` words can be recognized; words missing from the LM get its <unk>
        probability.
        """
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
            ZeroLM,
        )
        from flashlight.lib.text.dictionary import Dictionary

        self.vocabulary = vocabulary
        self.options = options
        self._words = Dictionary()
        for word in (UNK, *lexicon.words):
            self._words.add_entry(word)
        self._words.set_default_index(self._words.get_index(UNK))

        if lm is None:
            self._lm = ZeroLM()
        else:
            from flashlight.lib.text.decoder.kenlm import KenLM

            if not Path(lm).is_file():
                raise MhoError(f"language model not found: {lm}")
            self._lm = KenLM(str(lm), self._words)

        # The trie spells each word as phones + "|"; each node carries the best unigram
        # score below it (smearing), so partial words are ranked by the LM before they end.
        start = self._lm.start(False)
        homophones: dict[tuple[str, ...], list[tuple[float, str]]] = {}
        for word in lexicon.words:
            _, score = self._lm.score(start, self._words.get_index(word))
            for pron in lexicon.pronunciations(word):
                homophones.setdefault(pron, []).append((score, word))
        self._trie = Trie(len(vocabulary), vocabulary.boundary_id)
        for pron, entries in homophones.items():
            # A trie node holds at most TRIE_MAX_LABELS words (flashlight drops the rest with
            # a message per word): keep the LM's likeliest, ties alphabetical.
            entries.sort(key=lambda entry: (-entry[0], entry[1]))
            spelling = vocabulary.encode([*pron, BOUNDARY])
            for score, word in entries[:TRIE_MAX_LABELS]:
                self._trie.insert(spelling, self._words.get_index(word), score)
        self._trie.smear(SmearingMode.MAX)

        fl_options = LexiconDecoderOptions(
            beam_size=options.beam_size,
            beam_size_token=options.beam_size_token or len(vocabulary),
            beam_threshold=options.beam_threshold,
            lm_weight=options.lm_weight,
            word_score=options.word_score,
            unk_score=options.unk_score,
            sil_score=options.sil_score,
            log_add=options.log_add,
            criterion_type=CriterionType.CTC,
        )
        # The decoder holds raw pointers to the trie and LM: self keeps them alive.
        self._decoder = LexiconDecoder(
            fl_options,
            self._trie,
            self._lm,
            vocabulary.boundary_id,
            vocabulary.blank_id,
            self._words.get_index(UNK),
            [],  # transitions: ASG only
            False,  # word-level LM, not a token LM
        )
        # The appended frame: "|" certain, everything else (practically) impossible.
        self._closing = np.full((1, len(vocabulary)), IMPOSSIBLE, dtype=np.float32)  # [1, V]
        self._closing[0, vocabulary.boundary_id] = 0.0
        # The frames that finish a cut-short word: any phone at completion_score, "|" free
        # (a finished hypothesis repeats it as silence), no blank. One frame per phone of
        # the longest pronunciation, plus its "|".
        longest = max(map(len, homophones))
        self._completion = np.full((longest + 1, len(vocabulary)), options.completion_score,
                                   dtype=np.float32)  # [longest + 1, V]
        self._completion[:, vocabulary.blank_id] = IMPOSSIBLE
        self._completion[:, vocabulary.boundary_id] = 0.0

    @classmethod
    def from_assets(
        cls,
        directory: str | Path = LM_ASSETS,
        options: BeamOptions = BeamOptions(),
        open_vocabulary: bool = True,
    ) -> "LexiconBeamDecoder":
        """The shipped LM (see :mod:`mho.data.lm`) over CMUdict or only the LM's words."""
        directory = Path(directory)
        counts = read_word_counts(directory / COUNTS_FILE)
        return cls(_decoding_lexicon(counts, open_vocabulary), directory / LM_FILE, options)

    def search(self, emissions: Any) -> Hypothesis:
        logp = _as_emissions(emissions, self.vocabulary)  # [T, V]
        best = self._best(logp, self._closing)
        if best is not None and best.score <= IMPOSSIBLE / 2:
            # Every hypothesis was inside a word when the audio ended: finish one instead of
            # returning whichever lost its last word.
            best = self._best(logp, self._completion)
        if best is None:
            return Hypothesis(words=(), phones=(), score=-math.inf)
        # flashlight's tokens: one per frame, between a leading and a trailing "|"; the
        # phones are those of the model's frames, not of the closing ones.
        heard = best.tokens[1 : len(logp) + 1]
        phones = collapse(self.vocabulary.tokens[i] for i in heard if i >= 0)
        return Hypothesis(words=self._words_of(best), phones=phones, score=float(best.score))

    def _best(self, logp: np.ndarray, closing: np.ndarray) -> Any:
        """flashlight's best result for ``logp`` ``[T, V]`` followed by ``closing``, or None."""
        frames = np.concatenate([logp, closing])  # [T + closing, V]
        results = self._decoder.decode(frames.ctypes.data, *frames.shape)
        if not results:
            return None
        # flashlight orders exactly tied hypotheses by memory addresses (its candidate merge
        # sorts on LM-state and trie-node pointers), so the first one changes from call to
        # call: take the alphabetically first of the tied words instead
        return min((r for r in results if r.score == results[0].score), key=self._words_of)

    def _words_of(self, result: Any) -> tuple[str, ...]:
        return tuple(self._words.get_entry(i) for i in result.words if i >= 0)


class CharacterDecoder(Decoder):
    """Greedy CTC over characters: best token per frame, repeats merged, the blank (id 0)
    and special tokens ("<s>", "[UNK]") dropped, "|" between words, lowercase."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = tuple(tokens)

    def search(self, emissions: Any) -> Hypothesis:
        logp = _as_emissions(emissions, self.tokens)  # [T, V]
        best = logp.argmax(axis=1)  # [T]
        kept = tuple(token for token in (self.tokens[i] for i, _ in itertools.groupby(best)
                                         if i != 0) if not _special(token))
        words = tuple("".join(kept).replace(BOUNDARY, " ").lower().split())
        score = float(logp[np.arange(len(best)), best].sum())
        return Hypothesis(words=words, phones=kept, score=score)


def _special(token: str) -> bool:
    return len(token) > 2 and token[0] + token[-1] in ("<>", "[]")


def _decoding_lexicon(word_counts: Mapping[str, int], open_vocabulary: bool) -> Lexicon:
    """All of CMUdict, or only the words the LM was trained on.

    Open vocabulary is the default: words the LM never saw still decode (with its <unk>
    probability), where a closed lexicon turns every one of them into an error. On
    simulated emissions of the dev sentences (2.3% of their words are not in the training
    text) it cut beam-search WER from 4.9% to 1.5%, greedy WER from 4.2% to 2.0%.
    """
    lexicon = Lexicon.from_cmudict()
    if open_vocabulary:
        return lexicon
    return lexicon.restrict(word for word in word_counts if word in lexicon)


def check_beam_size(kind: str, beam_size: int | None) -> None:
    """Refuse a beam size the decoder ``kind`` would not use, or one below 1."""
    if beam_size is None:
        return
    if kind != "lm":
        raise MhoError(f"a beam size is for the LM decoder, not {kind!r}")
    if beam_size < 1:
        raise MhoError(f"beam size must be at least 1, got {beam_size}")


def load_decoder(
    kind: str = "lm",
    directory: str | Path | None = None,
    options: BeamOptions = BeamOptions(),
    open_vocabulary: bool = True,
    tokens: Sequence[str] | None = None,
    beam_size: int | None = None,
) -> Decoder:
    """``"greedy"`` or ``"lm"`` (lexicon + LM beam search), from the LM in ``directory`` (an
    `mho data lm` output; default: the shipped LM).

    ``tokens``: the model's outputs. Other than mho's phones (a Hugging Face model's
    characters), "greedy" decodes characters and "lm" is refused. ``beam_size``: the LM
    search's, instead of ``options``'."""
    check_beam_size(kind, beam_size)
    if beam_size is not None:
        options = dataclasses.replace(options, beam_size=beam_size)
    characters = tokens is not None and tuple(tokens) != PHONE_VOCABULARY.tokens
    directory = LM_ASSETS if directory is None else Path(directory)
    if kind in ("greedy", "lm") and not characters and not directory.is_dir():
        raise MhoError(f"no LM directory {directory} (make one with `mho data lm`)")
    if kind == "greedy":
        if characters:
            return CharacterDecoder(tokens)
        return GreedyDecoder.from_assets(directory, open_vocabulary)
    if kind == "lm":
        if characters:
            raise MhoError("the model outputs characters, not mho's phones: decode it with "
                           "--decoder greedy (the LM decoder spells words in phones)")
        return LexiconBeamDecoder.from_assets(directory, options, open_vocabulary)
    raise MhoError(f"unknown decoder {kind!r}: choose 'greedy' or 'lm'")
