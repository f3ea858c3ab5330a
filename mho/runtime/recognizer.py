"""The interface every recognizer offers to evaluation: waveform in, words out."""

from typing import Protocol

import numpy as np


class Recognizer(Protocol):
    name: str  # model name as the user gave it
    runtime: str  # what executes it: "torch", "ort", "onnx-ref", "coreml", "pocketsphinx"
    decoder: str  # "greedy", "lm", or the recognizer's own search

    def transcribe(self, waveform: np.ndarray) -> str:
        """16 kHz mono float32 waveform [S] -> lowercase words separated by spaces."""
        ...


PEER_RECOGNIZERS = ("pocketsphinx",)


def load_recognizer(name: str, *, decoder: str = "lm") -> Recognizer:
    """A peer recognizer, a shipped model or a checkpoint path, with the chosen decoder."""
    from mho.errors import MhoError
    from mho.models.zoo import checkpoint_path, load_model, shipped_models

    if name == "pocketsphinx":
        from mho.runtime.pocketsphinx import PocketsphinxRecognizer

        return PocketsphinxRecognizer()
    path = checkpoint_path(name)
    if path is None:
        available = ", ".join([*PEER_RECOGNIZERS, *shipped_models()])
        raise MhoError(f"unknown model {name!r}; available: {available}, or a checkpoint path")
    from mho.runtime.decode import load_decoder
    from mho.runtime.torch_runtime import TorchRecognizer

    model, _ = load_model(path)
    return TorchRecognizer(name, model, load_decoder(decoder), decoder)

