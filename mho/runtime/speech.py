"""Speech on any runtime: waveforms in, CTC log-probs out, numpy everywhere.

A `SpeechSession` wraps a generic `Session` (mho.runtime.session) of a model that keeps the
speech model contract (`SpeechModel`), pads a batch, computes log-mel features when the model
takes them, and cuts each utterance's valid frames out of the padded output. A `Recognizer`
is a speech session plus a CTC decoder. Evaluation, parity checks, chip studies and the
benchmarks all go through these two, whichever runtime executes the model.

    session = SpeechSession.from_model(model, vocabulary)       # torch
    session = SpeechSession.from_file("model.onnx", "ort")      # or "onnx-ref", .mlpackage
    log_probs = session.log_probs([waveform])[0]                # [T', V]
    text = Recognizer("mine", session, load_decoder("greedy", tokens=vocabulary)).transcribe(w)
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from mho.data.features import FeatureConfig, LogMel
from mho.decoding.decoders import Decoder
from mho.errors import MhoError
from mho.exporter.metadata import OnnxMetadata, read_metadata
from mho.runtime.session import ONNX_RUNTIMES, OnnxFileSession, Session, TorchSession

# Input names of a speech model (and of its exported file), by what it reads.
SPEECH_INPUTS = {"waveform": ("waveform", "samples"), "features": ("features", "lengths")}
SPEECH_OUTPUTS = ("log_probs", "out_lengths")


@runtime_checkable
class SpeechModel(Protocol):
    """What mho's speech helpers need of a torch model (evaluation, parity, export with the
    front end, chip studies):

    - ``input_kind``: "waveform" (16 kHz mono samples [B, S], float32 in [-1, 1]) or "features"
      (mho's log-mel features [B, T, 80], mho.data.features.LogMel);
    - ``model(inputs, lengths)`` with lengths [B] int64 (samples or frames) returns
      ``(log_probs [B, T', V], out_lengths [B])``: CTC log-probabilities over a vocabulary
      whose index 0 is the blank, and each utterance's number of valid output frames.

    The vocabulary travels beside the model (checkpoint, export metadata). Padding beyond an
    utterance's length must not change its valid outputs.
    """

    input_kind: str

    def __call__(self, inputs: torch.Tensor, lengths: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]: ...


class SpeechSession:
    """A speech model on one runtime. ``metadata`` says what it reads and its vocabulary."""

    def __init__(self, session: Session, metadata: OnnxMetadata):
        kind = next((k for k, names in SPEECH_INPUTS.items()
                     if list(names) == session.input_names), None)
        if kind is None or list(SPEECH_OUTPUTS) != session.output_names[:2]:
            raise MhoError(
                f"not a speech model: inputs {session.input_names}, outputs "
                f"{session.output_names} (expected waveform/samples or features/lengths in, "
                f"log_probs/out_lengths out)")
        self.session = session
        self.metadata = metadata
        self.runtime = session.runtime
        self.vocabulary = list(metadata.vocabulary)
        self.input_kind = kind
        self.features = FeatureConfig(**metadata.feature_config) if kind == "features" else None
        self._log_mel = LogMel(self.features) if self.features is not None else None

    @classmethod
    def from_model(cls, model: torch.nn.Module, metadata: OnnxMetadata, *,
                   threads: int | None = None) -> "SpeechSession":
        """A torch model that keeps the `SpeechModel` contract, described by ``metadata``
        (mho.exporter.onnx.speech_metadata builds it)."""
        kind = getattr(model, "input_kind", None)
        if kind not in SPEECH_INPUTS:
            raise MhoError(f"{type(model).__name__} does not keep the speech model contract: "
                           f"it needs input_kind 'waveform' or 'features' (mho.runtime.speech."
                           f"SpeechModel)")
        return cls(TorchSession(model, SPEECH_INPUTS[kind], SPEECH_OUTPUTS, threads=threads),
                   metadata)

    @classmethod
    def from_file(cls, path: str | Path, runtime: str | None = None, *,
                  threads: int | None = None) -> "SpeechSession":
        """An exported .onnx file (runtime "ort", the default, or "onnx-ref") or .mlpackage
        ("coreml" on macOS, "coreml-mil" anywhere; see mho.runtime.coreml_runtime), with the
        mho metadata it carries."""
        path = Path(path)
        if path.suffix == ".mlpackage":
            from mho.runtime.coreml_runtime import CoreMLSession

            session = CoreMLSession(path, runtime)
            return cls(session, session.metadata)
        if path.suffix != ".onnx":
            raise MhoError(f"{path}: expected an exported .onnx file or .mlpackage")
        runtime = runtime or "ort"
        if runtime not in ONNX_RUNTIMES:
            raise MhoError(f"{path} is an ONNX file: run it on {' or '.join(ONNX_RUNTIMES)}")
        if not path.is_file():
            raise MhoError(f"no such ONNX file: {path}")
        metadata = read_metadata(path)
        # fused kernels sum in another order; on a quantized model that moves activations
        # across their grid steps: twice the log-prob differences from torch, at no speed
        # gain (docs/onnx.md); float models keep them
        fusions = metadata.weight_bits is None
        return cls(OnnxFileSession(path, runtime, threads=threads, fusions=fusions), metadata)

    def run_batch(self, waveforms: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """16 kHz float32 waveforms [S_i] -> (log_probs [B, T', V] padded, out_lengths [B])."""
        if not len(waveforms):
            raise MhoError("no waveforms to run")
        samples = np.array([w.size for w in waveforms], dtype=np.int64)
        padded = np.zeros((len(waveforms), max(samples)), dtype=np.float32)  # [B, S]
        for row, waveform in zip(padded, waveforms, strict=True):
            row[: waveform.size] = waveform
        if self._log_mel is None:
            feeds = {"waveform": padded, "samples": samples}
        else:
            with torch.inference_mode():
                features = self._log_mel(torch.from_numpy(padded)).numpy()  # [B, T, F]
            lengths = np.asarray(self.features.num_frames(samples), dtype=np.int64)
            feeds = {"features": features, "lengths": lengths}
        outputs = self.session.run(feeds)
        return (np.asarray(outputs["log_probs"], dtype=np.float32),
                np.asarray(outputs["out_lengths"], dtype=np.int64))

    def log_probs(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """16 kHz float32 waveforms [S_i] -> each one's CTC log-probs [T'_i, V], in one batch."""
        log_probs, lengths = self.run_batch(waveforms)
        return [lp[:n] for lp, n in zip(log_probs, lengths, strict=True)]


class Recognizer:
    """A speech session and a CTC decoder: waveform in, words out."""

    def __init__(self, name: str, session: SpeechSession, decoder: Decoder,
                 decoder_name: str = "greedy"):
        self.name = name  # the model as the user named it
        self.session = session
        self.runtime = session.runtime
        self.decoder = decoder_name
        self._decoder = decoder

    def log_probs(self, waveform: np.ndarray) -> np.ndarray:
        """16 kHz float32 waveform [S] -> CTC log-probs [T', V]."""
        return self.session.log_probs([waveform])[0]

    def transcribe(self, waveform: np.ndarray) -> str:
        return self._decoder.decode(self.log_probs(waveform))

    def transcribe_batch(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """One padded batch through the session, then each row decoded."""
        return [self._decoder.decode(lp) for lp in self.session.log_probs(waveforms)]
