"""PocketSphinx's English LM as an ARPA file, read from its binary trie format.

The pocketsphinx package (a dependency: the peer recognizer) ships the trigram LM that
PocketSphinx decodes with, ``model/en-us/en-us.lm.bin``: 72,547 words, 2 M bigrams and 1.7 M
trigrams in the "trie" format of CMU Sphinx (KenLM's trie with 16-bit quantization). Decoding
mho's models with it compares acoustic models with the language model held equal. Its own
converters (pocketsphinx 5.1.1's ``NGramModel.write``, Debian's ``sphinx_lm_convert``) crash
on this file: its header declares 6 more bigrams than its trie holds (upstream issue #502,
fixed after 5.1.1), so this module reads the trie itself, walking it from the unigrams, which
visits exactly the n-grams it holds. No maintained Python library reads the format.

Layout (little-endian), as CMU Sphinx writes it (src/lm/ngram_model_trie.c, lm_trie.c):

- "Trie Language Model", the order (uint8), the n-gram counts (uint32 each);
- the quantizer: an int32, then float32 tables of 2^16 values each: for every middle order
  (2 .. order-1) its probabilities then its backoffs, then the highest order's probabilities;
- the unigrams, count + 1 records of (prob float32, backoff float32, next uint32), ``next``
  the first child in the bigram array (the extra record closes the last word's range);
- the bigram (middle) array then the trigram (longest) array, bit-packed records of
  (word, backoff index, prob index, next) and (word, prob index), each field as many bits
  as its largest value needs; a record's bit offset is its index times the record's bits;
- the words, NUL-terminated, in id order, after their total byte count (uint32).

N-grams are stored backwards: a bigram record with word ``j`` under unigram ``i`` is "j i"
(p(i | j)), a trigram record ``m`` under it is "m j i". Probabilities and backoffs are in
CMU Sphinx's log units, logarithms to the base 1.0001 (its default log base, the one the
shipped model was built with).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mho.errors import MhoError

MAGIC = b"Trie Language Model"
QUANT_BITS = 16  # of each quantized probability and backoff
LOG10_PER_UNIT = math.log10(1.0001)  # log10 of one CMU Sphinx log unit


def required_bits(max_value: int) -> int:
    """Bits of ``max_value`` (0 for 0), as the format sizes each field."""
    return int(max_value).bit_length()


@dataclass
class SphinxTrigramLM:
    """A trigram LM: words, and per order the word ids (oldest first), log10 probabilities
    and (below the top order) log10 backoffs."""

    words: list[str]
    ngrams: list[np.ndarray]  # [N_n, n] int64 word ids, per order n = 1..3
    log10_probs: list[np.ndarray]  # [N_n] float32
    log10_backoffs: list[np.ndarray]  # [N_n] float32, orders 1..2


def _read_fields(memory: np.ndarray, start_bit: np.ndarray, bits: int) -> np.ndarray:
    """The ``bits``-bit little-endian unsigned integers starting at bit offsets
    ``start_bit`` [N] of ``memory`` (uint8, padded by 8 bytes) -> [N] int64."""
    byte = start_bit >> 3
    word = np.zeros(len(start_bit), dtype=np.uint64)
    for k in range(8):  # the 64 bits from the first byte on hold any field of <= 57 bits
        word |= memory[byte + k].astype(np.uint64) << np.uint64(8 * k)
    shifted = word >> (start_bit & 7).astype(np.uint64)
    return (shifted & np.uint64((1 << bits) - 1)).astype(np.int64)


def read_sphinx_lm(path: str | Path) -> SphinxTrigramLM:
    """Read a CMU Sphinx trie-format trigram LM (e.g. PocketSphinx's en-us.lm.bin)."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise MhoError(f"{path} is not a CMU Sphinx trie LM (no {MAGIC.decode()!r} header)")
    at = len(MAGIC)
    order = data[at]
    if order != 3:
        raise MhoError(f"{path}: a {order}-gram LM; only trigram LMs are read")
    counts = np.frombuffer(data, np.uint32, order, at + 1).astype(np.int64)
    at += 1 + 4 * order + 4  # counts, then the quantizer's int32
    table_size = 1 << QUANT_BITS
    tables = np.frombuffer(data, np.float32, 3 * table_size, at)  # bigram prob, bo; trigram prob
    bigram_probs, bigram_backoffs = tables[:table_size], tables[table_size:2 * table_size]
    trigram_probs = tables[2 * table_size:]
    at += 4 * 3 * table_size
    unigrams = np.frombuffer(data, np.dtype([("prob", "<f4"), ("bo", "<f4"), ("next", "<u4")]),
                             counts[0] + 1, at)
    at += 12 * (counts[0] + 1)

    word_bits = required_bits(counts[0])
    next_bits = required_bits(counts[2])
    middle_bits = word_bits + 2 * QUANT_BITS + next_bits
    longest_bits = word_bits + QUANT_BITS
    middle_bytes = ((1 + counts[1]) * middle_bits + 7) // 8 + 8  # + 8: the reader's slack
    longest_bytes = ((1 + counts[2]) * longest_bits + 7) // 8 + 8
    memory = np.frombuffer(data, np.uint8, middle_bytes + longest_bytes, at)
    memory = np.concatenate([memory, np.zeros(8, np.uint8)])
    at += middle_bytes + longest_bytes
    word_bytes = int(np.frombuffer(data, np.uint32, 1, at)[0])
    words = data[at + 4: at + 4 + word_bytes].decode("utf-8").split("\0")[:-1]
    if len(words) != counts[0]:
        raise MhoError(f"{path}: {len(words)} words for {counts[0]} unigrams")

    # bigrams: unigram i's children are records next[i] .. next[i + 1] - 1
    starts = unigrams["next"].astype(np.int64)
    bigram_count = int(starts[-1])  # what the trie holds (the header may claim more)
    last = np.repeat(np.arange(counts[0]), np.diff(starts))  # [N2] the predicted word
    record = np.arange(bigram_count + 1, dtype=np.int64) * middle_bits
    first = _read_fields(memory, record[:-1], word_bits)
    backoff_index = _read_fields(memory, record[:-1] + word_bits, QUANT_BITS)
    prob_index = _read_fields(memory, record[:-1] + word_bits + QUANT_BITS, QUANT_BITS)
    child = _read_fields(memory, record + word_bits + 2 * QUANT_BITS, next_bits)  # [N2 + 1]

    trigram_count = int(child[-1])
    longest = memory[middle_bytes:]
    context = np.repeat(np.arange(bigram_count), np.diff(child))  # [N3] its bigram record
    trigram_record = np.arange(trigram_count, dtype=np.int64) * longest_bits
    oldest = _read_fields(longest, trigram_record, word_bits)
    trigram_prob_index = _read_fields(longest, trigram_record + word_bits, QUANT_BITS)

    unit = np.float32(LOG10_PER_UNIT)
    return SphinxTrigramLM(
        words=words,
        ngrams=[np.arange(counts[0])[:, None], np.stack([first, last], 1),
                np.stack([oldest, first[context], last[context]], 1)],
        log10_probs=[unigrams["prob"][:-1] * unit, bigram_probs[prob_index] * unit,
                     trigram_probs[trigram_prob_index] * unit],
        log10_backoffs=[unigrams["bo"][:-1] * unit, bigram_backoffs[backoff_index] * unit],
    )


def write_arpa(lm: SphinxTrigramLM, path: str | Path, unk_log10: float | None = None) -> Path:
    """Write ``lm`` as an ARPA file (4 decimals, as CMU Sphinx writes them), with an <unk>
    unigram of log10 probability ``unk_log10`` if given (CMU Sphinx LMs have none)."""
    path = Path(path)
    words = np.array(lm.words, dtype=object)
    extra = 0 if unk_log10 is None else 1
    with path.open("w", encoding="utf-8") as out:
        out.write("\\data\\\n")
        for n, ids in enumerate(lm.ngrams, 1):
            out.write(f"ngram {n}={len(ids) + (extra if n == 1 else 0)}\n")
        for n, ids in enumerate(lm.ngrams, 1):
            out.write(f"\n\\{n}-grams:\n")
            if n == 1 and unk_log10 is not None:
                out.write(f"{unk_log10:.4f}\t<unk>\t0.0000\n")
            texts = words[ids[:, 0]]
            for k in range(1, n):
                texts = texts + " " + words[ids[:, k]]
            probs = lm.log10_probs[n - 1]
            if n <= len(lm.log10_backoffs):
                backoffs = lm.log10_backoffs[n - 1]
                out.writelines(f"{p:.4f}\t{t}\t{b:.4f}\n"
                               for p, t, b in zip(probs, texts, backoffs, strict=True))
            else:
                out.writelines(f"{p:.4f}\t{t}\n" for p, t in zip(probs, texts, strict=True))
        out.write("\n\\end\\\n")
    return path


def pocketsphinx_lm_path() -> Path:
    """The English LM the installed pocketsphinx package ships."""
    from pocketsphinx import get_model_path

    return Path(get_model_path()) / "en-us" / "en-us.lm.bin"


def pseudo_counts(lm: SphinxTrigramLM, total: int = 10**9) -> dict[str, int]:
    """Word counts for an LM directory's word_counts.tsv, from the unigram probabilities
    (the training counts are not in the file): ``total`` tokens shared in proportion, at
    least 1 each. <s> and </s> are not words."""
    probs = np.power(10.0, lm.log10_probs[0].astype(np.float64))
    return {w: max(1, round(p * total)) for w, p in zip(lm.words, probs, strict=True)
            if w not in ("<s>", "</s>")}
