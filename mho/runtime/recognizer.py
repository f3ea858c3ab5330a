"""What evaluation needs of any recognizer (waveform in, words out), and how to load one by
name: a peer recognizer, a shipped model, a checkpoint, a Hugging Face model directory or an
exported file."""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from mho.errors import MhoError


class Transcriber(Protocol):
    name: str  # model name as the user gave it
    runtime: str  # what executes it: "torch", "ort", "onnx-ref", "coreml", "coreml-mil",
    # "pocketsphinx"
    decoder: str  # "greedy", "lm", or the recognizer's own search

    def transcribe(self, waveform: np.ndarray) -> str:
        """16 kHz mono float32 waveform [S] -> lowercase words separated by spaces."""
        ...


PEER_RECOGNIZERS = ("pocketsphinx",)


def load_recognizer(
    name: str, *, decoder: str = "lm", runtime: str | None = None, threads: int | None = None,
    lm: str | Path | None = None, beam_size: int | None = None,
) -> Transcriber:
    """A peer recognizer, a shipped model, a checkpoint path, a Hugging Face wav2vec2 CTC
    model directory, an exported .onnx file, a deployment bundle (its own lexicon, LM and
    settings) or .mlpackage, with the chosen decoder (character models: greedy only).
    runtime: "torch" for models and checkpoints; "ort" (default) or "onnx-ref" for .onnx
    files and bundles; "coreml" (Core ML, macOS only) or "coreml-mil" (its ML program on
    numpy, anywhere) for .mlpackage, by default the one the platform has. threads: intra-op
    threads (default: onnxruntime one per core, torch's own setting). lm: a directory from
    `mho data lm` (default: the shipped LM; a bundle brings its own). beam_size: the LM
    search's (default: mho's, or a bundle's own)."""
    from mho.decoding.decoders import check_beam_size, load_decoder
    from mho.exporter.bundle import Bundle, is_bundle
    from mho.runtime.speech import Recognizer, SpeechSession

    check_beam_size(decoder, beam_size)
    if name == "pocketsphinx":
        if runtime not in (None, "pocketsphinx"):
            raise MhoError("pocketsphinx runs on its own runtime; drop --runtime")
        if beam_size is not None:
            raise MhoError("pocketsphinx runs its own search; drop --beam-size")
        from mho.runtime.pocketsphinx import PocketsphinxRecognizer

        return PocketsphinxRecognizer()
    if is_bundle(name):
        if runtime not in (None, "ort", "onnx-ref"):
            raise MhoError(f"{name} is an mho bundle: run it with --runtime ort or onnx-ref")
        if lm is not None:
            raise MhoError(f"{name} is an mho bundle: it decodes with its own LM; drop --lm")
        bundle = Bundle.open(name)
        session = SpeechSession.from_file(bundle.model_path, runtime, threads=threads)
        return Recognizer(name, session, bundle.decoder(decoder, beam_size), decoder)
    if name.endswith(".onnx") or name.rstrip("/").endswith(".mlpackage"):
        session = SpeechSession.from_file(name.rstrip("/"), runtime, threads=threads)
    else:
        if runtime not in (None, "torch"):
            raise MhoError(f"--runtime {runtime} runs exported .onnx or .mlpackage files; "
                           f"{name} runs in torch")
        from mho.exporter.onnx import load_for_export

        model, metadata = load_for_export(name)
        session = SpeechSession.from_model(model, metadata, threads=threads)
    search = load_decoder(decoder, lm, tokens=session.vocabulary, beam_size=beam_size)
    return Recognizer(name, session, search, decoder)


def transcribe_files(
    model: str, paths: Sequence[str | Path], *, decoder: str = "lm", runtime: str | None = None,
    threads: int | None = None, lm: str | Path | None = None, beam_size: int | None = None,
) -> Iterator[tuple[Path, str]]:
    """`mho transcribe`: (path, transcript) for each audio file (any sample rate, resampled to
    16 kHz), in order. Every path is checked before the model loads. ``beam_size``: the LM
    search's (default: mho's, or a bundle's own)."""
    from mho.data.audio import load_audio

    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MhoError(f"no such audio file: {', '.join(missing)}")
    recognizer = load_recognizer(model, decoder=decoder, runtime=runtime, threads=threads, lm=lm,
                                 beam_size=beam_size)
    for path in paths:
        yield path, recognizer.transcribe(load_audio(path, resample=True))
