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


def load_recognizer(
    name: str, *, decoder: str = "lm", runtime: str | None = None, threads: int | None = None
) -> Recognizer:
    """A peer recognizer, a shipped model, a checkpoint path, a Hugging Face wav2vec2 CTC
    model directory, an exported .onnx file, a deployment bundle (its own lexicon, LM and
    settings) or .mlpackage, with the chosen decoder (character models: greedy only).
    runtime: "torch" for models and checkpoints; "ort" (default) or "onnx-ref" for .onnx
    files and bundles; "coreml" for .mlpackage (Core ML on macOS, its ML program on
    numpy elsewhere). threads: onnxruntime's intra-op threads (default: all)."""
    from mho.decoding.decoders import load_decoder
    from mho.errors import MhoError
    from mho.exporter.bundle import Bundle, is_bundle
    from mho.models.zoo import checkpoint_path, shipped_models

    if is_bundle(name):
        from mho.runtime.onnx_runtime import OnnxRecognizer, OnnxSession

        if runtime not in (None, "ort", "onnx-ref"):
            raise MhoError(f"{name} is an mho bundle: run it with --runtime ort or onnx-ref")
        bundle = Bundle.open(name)
        session = OnnxSession(bundle.model_path, runtime or "ort", threads)
        return OnnxRecognizer(name, session, bundle.decoder(decoder), decoder)
    if name.endswith(".onnx"):
        from mho.runtime.onnx_runtime import OnnxRecognizer, OnnxSession

        if runtime not in (None, "ort", "onnx-ref"):
            raise MhoError(f"{name} is an ONNX file: run it with --runtime ort or onnx-ref")
        session = OnnxSession(name, runtime or "ort", threads)
        search = load_decoder(decoder, tokens=session.metadata.vocabulary)
        return OnnxRecognizer(name, session, search, decoder)
    if name.rstrip("/").endswith(".mlpackage"):
        from mho.runtime.coreml_runtime import CoreMLRecognizer, CoreMLSession

        if runtime not in (None, "coreml"):
            raise MhoError(f"{name} is a Core ML package: it runs on --runtime coreml")
        session = CoreMLSession(name)
        search = load_decoder(decoder, tokens=session.metadata.vocabulary)
        return CoreMLRecognizer(name, session, search, decoder)
    if runtime not in (None, "torch"):
        raise MhoError(f"--runtime {runtime} runs exported .onnx or .mlpackage files; {name} "
                       f"runs in torch")
    if name == "pocketsphinx":
        from mho.runtime.pocketsphinx import PocketsphinxRecognizer

        return PocketsphinxRecognizer()
    path = checkpoint_path(name)
    if path is None:
        available = ", ".join([*PEER_RECOGNIZERS, *shipped_models()])
        raise MhoError(f"unknown model {name!r}; available: {available}, a checkpoint path, "
                       f"a Hugging Face model directory or an exported .onnx file")
    from mho.models.zoo import load_model
    from mho.runtime.torch_runtime import TorchRecognizer

    model, payload = load_model(path)
    search = load_decoder(decoder, tokens=payload.get("vocabulary"))
    return TorchRecognizer(name, model, search, decoder)
