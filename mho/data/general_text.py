"""General English sentences for the word LM, from text that Debian packages ship.

The corpus text (WordNet examples and fortunes, :mod:`mho.data.text`) is all the shipped LM
knows; these sources add running English so that text unlike the corpus decodes better:

- ``gcide``: the literary quotations in the GNU Collaborative International Dictionary of
  English (Debian ``dict-gcide``, GPL-2+; Webster's 1913 quoting Milton, Macaulay, ...).
  Only the indented quotation blocks are read, not the definitions.
- ``jargon``: the Jargon File (Debian ``jargon-text``, public domain), paragraphs of prose.

Every sentence goes through the corpus's own normalization (lowercase, CMUdict words only,
4-20 words) and any sentence of the corpus's dev or test split is dropped, so an LM built
from these never sees a held-out sentence.
"""

import gzip
import random
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mho.data.text import TextSources, corpus_sentences, normalized_sentences
from mho.errors import MhoError

GCIDE_FILE = Path("/usr/share/dictd/gcide.dict.dz")  # dictzip: gzip-readable
JARGON_FILE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")

# Quotations sit at 8+ spaces; definitions at 3-6 (see the GCIDE entry layout).
_QUOTE_INDENT = 8
_ATTRIBUTION = re.compile(r"\s--\s*\S.*$|^\s*--.*$")  # "... cold heat. --Milton."
_SOURCE_TAG = re.compile(r"^\s*\[[^\]]*\]\s*$")  # "[1913 Webster]" closes a block


@dataclass(frozen=True)
class GeneralSources:
    """Where each general-text source lives (Debian paths; tests point these elsewhere)."""

    gcide: Path = GCIDE_FILE
    jargon: Path = JARGON_FILE


SOURCE_PACKAGES = {"gcide": "dict-gcide", "jargon": "jargon-text"}


def _read(path: Path, name: str) -> str:
    if not path.is_file():
        raise MhoError(f"{name} text not found: {path}: apt-get install {SOURCE_PACKAGES[name]}")
    opener = gzip.open if path.suffix in (".gz", ".dz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        return handle.read()


def gcide_quotations(path: Path = GCIDE_FILE) -> Iterator[str]:
    """Yield each quotation block of GCIDE (lines indented 8+ spaces), attributions removed."""
    block: list[str] = []
    for line in _read(path, "gcide").splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() and indent >= _QUOTE_INDENT and not _SOURCE_TAG.match(line):
            block.append(_ATTRIBUTION.sub("", line).strip())
            continue
        if block:
            yield " ".join(part for part in block if part)
            block = []
    if block:
        yield " ".join(block)


def jargon_paragraphs(path: Path = JARGON_FILE) -> Iterator[str]:
    """Yield the Jargon File's blank-line separated paragraphs, each joined into one line."""
    for paragraph in re.split(r"\n\s*\n", _read(path, "jargon")):
        yield " ".join(paragraph.split())


READERS: dict[str, Callable[[Path], Iterator[str]]] = {
    "gcide": gcide_quotations,
    "jargon": jargon_paragraphs,
}
SOURCES = tuple(READERS)


def general_sentences(
    names: Sequence[str],
    exclude: Collection[str],
    sources: GeneralSources = GeneralSources(),  # noqa: B008 (frozen, hence safe as a default)
    lexicon: frozenset[str] | None = None,
) -> list[str]:
    """Normalized unique sentences of the named sources, none of them in ``exclude``.

    ``exclude`` is the held-out text (the corpus dev and test sentences, normalized):
    a source that happens to contain a test sentence must not teach it to the LM.
    Order: sources in the order named, then file order (deterministic, no randomness).
    """
    unknown = [name for name in names if name not in READERS]
    if unknown:
        raise MhoError(f"unknown text source {unknown[0]!r}; choose from {', '.join(SOURCES)}")
    held_out = frozenset(exclude)
    kept: dict[str, None] = {}
    for name in names:
        texts = READERS[name](getattr(sources, name))
        for sentence in normalized_sentences(texts, lexicon):
            if sentence not in held_out:
                kept.setdefault(sentence, None)
    return list(kept)


GENERAL_HELD_OUT = 400  # general sentences kept out of the LM to measure it on unseen text


def general_split(
    seed: int = 0,
    held_out: int = GENERAL_HELD_OUT,
    sources: GeneralSources = GeneralSources(),  # noqa: B008 (frozen, hence safe as a default)
    corpus: TextSources = TextSources(),  # noqa: B008
) -> dict[str, list[str]]:
    """``{"train": [...], "test": [...]}`` of all general sources' sentences.

    Without any corpus sentence (train, dev or test); ``held_out`` sentences, drawn with
    ``random.Random(seed)``, form "test": never in an LM, whichever sources it names, so a
    perplexity or WER on them is on text that is neither the corpus's nor the LM's. Both
    lists keep the sources' order.
    """
    split = corpus_sentences(seed, sources=corpus)
    sentences = general_sentences(SOURCES, {s for part in split.values() for s in part}, sources)
    if len(sentences) <= held_out:
        raise MhoError(f"only {len(sentences)} general sentences; need more than {held_out}")
    test = set(random.Random(seed).sample(range(len(sentences)), held_out))
    return {
        "train": [s for i, s in enumerate(sentences) if i not in test],
        "test": [s for i, s in enumerate(sentences) if i in test],
    }


def lm_sentences(
    names: Sequence[str],
    seed: int = 0,
    sources: GeneralSources = GeneralSources(),  # noqa: B008 (frozen, hence safe as a default)
    corpus: TextSources = TextSources(),  # noqa: B008
    held_out: int = GENERAL_HELD_OUT,
) -> list[str]:
    """The LM's training text: ``corpus`` (the corpus TRAIN split) and/or general sources.

    General sentences already in the TRAIN split are not repeated; the corpus's dev and
    test sentences and the general held-out ones (:func:`general_split`, drawn from all
    sources, so every source's package must be installed) never appear.
    """
    if not names:
        raise MhoError("no LM text sources named")
    unknown = [name for name in names if name != "corpus" and name not in READERS]
    if unknown:
        raise MhoError(f"unknown text source {unknown[0]!r}; choose from corpus, "
                       f"{', '.join(SOURCES)}")
    split = corpus_sentences(seed, sources=corpus)
    train = split["train"] if "corpus" in names else []
    general = [name for name in names if name != "corpus"]
    if not general:
        return list(train)
    excluded = {s for part in split.values() for s in part}
    excluded.update(general_split(seed, held_out, sources, corpus)["test"])
    return [*train, *general_sentences(general, excluded, sources)]
