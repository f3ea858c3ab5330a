"""Transcribe audio files with an mho bundle, without mho: onnxruntime runs the model and
flashlight-text's lexicon beam search with the bundle's KenLM turns phones into words.

    pip install onnxruntime numpy soundfile scipy flashlight-text
    python decode.py BUNDLE_DIR AUDIO...

Prints one line per file: its path, a tab, the transcript. The search is the one mho runs
(same trie, settings, closing "|" frame and tie-break), so the words are the same.
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile

SAMPLE_RATE = 16_000
MAX_WORDS_PER_SPELLING = 6  # flashlight's kTrieMaxLabel
IMPOSSIBLE = -1e9  # a log-prob no winning hypothesis uses


def load_audio(path):
    """Mono float32 at 16 kHz (channels averaged, other rates resampled)."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(rate, SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return np.ascontiguousarray(samples, dtype=np.float32)


def open_session(bundle, manifest):
    options = ort.SessionOptions()
    # quantized models: basic optimizations only; the extended fusions sum in another order
    # and move activations across their 8-bit grid steps
    quantized = manifest["metadata"]["weight_bits"] is not None
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if quantized
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(bundle / manifest["files"]["model"]), options,
                                providers=["CPUExecutionProvider"])


class BeamSearch:
    def __init__(self, bundle, manifest):
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
        )
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        files = manifest["files"]
        lines = (bundle / files["tokens"]).read_text(encoding="utf-8").splitlines()
        self.tokens = [line.rpartition(" ")[0] for line in lines]
        blank, boundary = 0, self.tokens.index("|")
        lexicon = {}  # word -> pronunciations, file order (sorted by word)
        for line in (bundle / files["lexicon"]).read_text(encoding="utf-8").splitlines():
            word, _, spelling = line.partition("\t")
            phones = tuple(spelling.split()[:-1])  # drop the trailing "|"
            prons = lexicon.setdefault(word, [])
            if phones not in prons:
                prons.append(phones)
        self.words = Dictionary()
        self.words.add_entry("<unk>")
        for word in lexicon:
            self.words.add_entry(word)
        self.words.set_default_index(self.words.get_index("<unk>"))
        self.lm = KenLM(str(bundle / files["lm"]), self.words)
        start = self.lm.start(False)
        spellings = {}
        for word, prons in lexicon.items():
            _, score = self.lm.score(start, self.words.get_index(word))
            for pron in prons:
                spellings.setdefault(pron, []).append((score, word))
        index = {token: i for i, token in enumerate(self.tokens)}
        self.trie = Trie(len(self.tokens), boundary)
        for pron, entries in spellings.items():
            entries.sort(key=lambda entry: (-entry[0], entry[1]))
            spelling = [index[p] for p in pron] + [boundary]
            for score, word in entries[:MAX_WORDS_PER_SPELLING]:
                self.trie.insert(spelling, self.words.get_index(word), score)
        self.trie.smear(SmearingMode.MAX)
        beam = manifest["beam"]
        options = LexiconDecoderOptions(
            beam_size=beam["beam_size"],
            beam_size_token=beam["beam_size_token"] or len(self.tokens),
            beam_threshold=beam["beam_threshold"], lm_weight=beam["lm_weight"],
            word_score=beam["word_score"],
            unk_score=-math.inf if beam["unk_score"] is None else beam["unk_score"],
            sil_score=beam["sil_score"], log_add=beam["log_add"],
            criterion_type=CriterionType.CTC)
        self.decoder = LexiconDecoder(options, self.trie, self.lm, boundary, blank,
                                      self.words.get_index("<unk>"), [], False)
        # one frame where "|" is certain closes the last word (the model emits "|" only
        # between words)
        self.closing = np.full((1, len(self.tokens)), IMPOSSIBLE, dtype=np.float32)
        self.closing[0, boundary] = 0.0
        # when the audio ends inside a word, frames that finish it: any phone at
        # completion_score, "|" free, no blank; as many as the longest pronunciation + 1
        longest = max(len(pron) for pron in spellings)
        self.completion = np.full((longest + 1, len(self.tokens)), beam["completion_score"],
                                  dtype=np.float32)
        self.completion[:, blank] = IMPOSSIBLE
        self.completion[:, boundary] = 0.0

    def __call__(self, log_probs):
        best = self.best(log_probs, self.closing)
        if best is not None and best.score <= IMPOSSIBLE / 2:  # every hypothesis mid-word
            best = self.best(log_probs, self.completion)
        return "" if best is None else " ".join(self.words_of(best))

    def best(self, log_probs, closing):
        frames = np.ascontiguousarray(np.concatenate([log_probs, closing]), np.float32)
        results = self.decoder.decode(frames.ctypes.data, *frames.shape)
        if not results:
            return None
        # exact ties come back in an order that varies between calls: alphabetical first
        return min((r for r in results if r.score == results[0].score), key=self.words_of)

    def words_of(self, result):
        return tuple(self.words.get_entry(i) for i in result.words if i >= 0)


def main(argv):
    if len(argv) < 2:
        print("usage: python decode.py BUNDLE_DIR AUDIO...", file=sys.stderr)
        return 2
    bundle = Path(argv[0])
    manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    session = open_session(bundle, manifest)
    search = BeamSearch(bundle, manifest)
    for path in argv[1:]:
        waveform = load_audio(path)
        log_probs, lengths = session.run(None, {
            "waveform": waveform[None, :], "samples": np.array([waveform.size], np.int64)})
        print(f"{path}\t{search(log_probs[0, : int(lengths[0])])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
