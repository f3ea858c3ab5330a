"""The models a server offers: what the user named (an exported .onnx file, a deployment
bundle or a shipped model name, exported on start), resolved to a name clients select it by,
an onnxruntime session and a decoder per worker thread."""

import queue
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mho.decoding.decoders import Decoder, load_decoder
from mho.errors import MhoError
from mho.exporter.bundle import Bundle, is_bundle
from mho.exporter.metadata import OnnxMetadata, read_metadata
from mho.exporter.onnx import MIN_WAVEFORM_SAMPLES
from mho.runtime.speech import SpeechSession

# The shortest clip served: 0.1 s. Every exported file accepts it (wav2vec2-style files need
# 1,600 samples, log-mel ones 800), and shorter uploads hold no word.
MIN_SAMPLES = MIN_WAVEFORM_SAMPLES


@dataclass(frozen=True)
class ModelSource:
    """A model as the user named it, checked but not loaded."""

    name: str  # what clients send as `model`
    spec: str  # what the user gave
    kind: str  # "onnx" | "bundle" | "shipped"


def resolve_sources(specs: list[str] | tuple[str, ...]) -> list[ModelSource]:
    """Check each spec (``FILE.onnx``, a bundle directory, a shipped model name, any of them
    as ``NAME=SPEC`` to choose its name) quickly, before anything loads: a wrong path fails
    here in one line, not after minutes of exports."""
    from mho.models.zoo import shipped_models

    if not specs:
        raise MhoError("name at least one model: an exported .onnx file, a bundle directory "
                       "or a shipped model name")
    shipped = shipped_models()
    sources: list[ModelSource] = []
    for given in specs:
        name, _, spec = given.rpartition("=") if "=" in given else ("", "", given)
        if is_bundle(spec):
            source = ModelSource(name or Bundle.open(spec).name, spec, "bundle")
        elif spec.endswith(".onnx"):
            if not Path(spec).is_file():
                raise MhoError(f"no such ONNX file: {spec}")
            read_metadata(spec)  # an mho export
            source = ModelSource(name or Path(spec).stem, spec, "onnx")
        elif spec in shipped:
            source = ModelSource(name or spec, spec, "shipped")
        else:
            raise MhoError(f"cannot serve {spec!r}: give an exported .onnx file, a bundle "
                           f"directory or a shipped model ({', '.join(shipped)})")
        if not source.name or "/" in source.name:
            raise MhoError(f"bad model name {source.name!r}: use NAME=SPEC with a plain name")
        sources.append(source)
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise MhoError(f"two models are named {', '.join(duplicates)}: name them apart with "
                       f"NAME=SPEC")
    return sources


class ServedModel:
    """One model being served: a session shared by the worker threads (onnxruntime runs
    concurrent calls on one session) and a pool of decoders, one lent to each batch at a
    time (decoders keep search state and are not thread-safe; building one costs a second
    or two, so they are kept)."""

    def __init__(self, name: str, path: Path, session: SpeechSession,
                 make_decoder: Callable[[], Decoder], first: Decoder | None = None):
        self.name = name
        self.path = path
        self.session = session
        self.metadata: OnnxMetadata = session.metadata
        self._make_decoder = make_decoder
        self._decoders: queue.SimpleQueue[Decoder] = queue.SimpleQueue()
        if first is not None:
            self._decoders.put(first)

    def transcribe_batch(self, waveforms: list[np.ndarray]) -> list[str]:
        """One onnxruntime call over the padded batch, then each row decoded on its own
        frames (called from a worker thread)."""
        log_probs, lengths = self.session.run_batch(waveforms)
        try:
            decoder = self._decoders.get_nowait()
        except queue.Empty:
            decoder = self._make_decoder()
        try:
            return [decoder.decode(rows[: int(n)])
                    for rows, n in zip(log_probs, lengths, strict=True)]
        finally:
            self._decoders.put(decoder)


def load_model(source: ModelSource, workdir: Path, decoder: str,
               threads: int | None, beam_size: int | None = None) -> ServedModel:
    """Open (a shipped model: first export, into ``workdir``) one model and its decoder
    (``beam_size``: the LM search's; default mho's, or a bundle's own)."""
    if source.kind == "bundle":
        bundle = Bundle.open(source.spec)
        first = bundle.decoder(decoder, beam_size)  # fails now, not in the first batch
        session = SpeechSession.from_file(bundle.model_path, "ort", threads=threads)
        return ServedModel(source.name, bundle.model_path, session,
                           lambda: bundle.decoder(decoder, beam_size), first)
    if source.kind == "shipped":
        from mho.exporter.onnx import export_onnx, load_for_export

        model, metadata = load_for_export(source.spec)
        path = workdir / f"{source.name}.onnx"
        export_onnx(model, path, metadata, input="waveform")
    else:
        path = Path(source.spec)
    session = SpeechSession.from_file(path, "ort", threads=threads)
    tokens = session.metadata.vocabulary
    # fails now for a character model and "lm"
    first = load_decoder(decoder, tokens=tokens, beam_size=beam_size)
    return ServedModel(source.name, path, session,
                       lambda: load_decoder(decoder, tokens=tokens, beam_size=beam_size), first)
