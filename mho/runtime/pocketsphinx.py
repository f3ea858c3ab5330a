"""The peer recognizer: CMU PocketSphinx with the English model its PyPI wheel ships.

It runs with its own acoustic model, dictionary and 3-gram LM, untouched, so its WER is a
reference point from outside mho on exactly our test sets and scoring.
"""

import numpy as np

from mho.data.audio import SAMPLE_RATE


class PocketsphinxRecognizer:
    name = "pocketsphinx"
    runtime = "pocketsphinx"
    decoder = "pocketsphinx-lm"

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def transcribe(self, waveform: np.ndarray) -> str:
        pcm = (np.clip(waveform, -1.0, 1.0) * 32767).astype(np.int16)  # [S] 16-bit PCM
        self._decoder.start_utt()
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return "" if hypothesis is None else hypothesis.hypstr
