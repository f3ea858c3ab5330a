"""Recognizers over an exported ONNX file: onnxruntime ("ort") or the ONNX reference evaluator
("onnx-ref", numpy, with mho's OpRun for the custom ops: the independent second runtime).

Both read the file's metadata (a file without it is refused), feed waveforms or log-mel
features as the file expects, and return CTC log-probs for the same decoders as torch.
"""

import os
from pathlib import Path

import numpy as np
import onnx
import torch

from mho.data.features import FeatureConfig, LogMel
from mho.decoding.decoders import Decoder
from mho.errors import MhoError
from mho.exporter.metadata import OnnxMetadata, read_metadata

ONNX_RUNTIMES = ("ort", "onnx-ref")


def ort_session(path: str | Path, threads: int | None = None, fusions: bool = True):
    """An onnxruntime CPU session set up for speed: function inlining and constant folding
    (of the chip's tiling, of int8 weights times scales), with `fusions` also the extended
    and layout optimizations (LayerNorm, GELU, MatMul + Add...); `threads` intra-op threads
    (default: one per core), sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fusions
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxSession:
    """log_probs for a batch, on one runtime: inputs padded [B, S] waveforms or [B, T, F]
    features with their lengths -> (log_probs [B, T', V], out_lengths [B])."""

    def __init__(self, path: str | Path, runtime: str = "ort", threads: int | None = None):
        if runtime not in ONNX_RUNTIMES:
            choices = ", ".join(ONNX_RUNTIMES)
            raise MhoError(f"unknown ONNX runtime {runtime!r}; choose from {choices}")
        self.metadata: OnnxMetadata = self.metadata_of(path)
        self.runtime = runtime
        self.features = FeatureConfig(**self.metadata.feature_config)  # {}: unused defaults
        self.input_names = ["waveform", "samples"] if self.metadata.input == "waveform" else [
            "features", "lengths"]
        try:
            if runtime == "ort":
                # fused kernels sum in another order; on a quantized model that moves
                # activations across their grid steps: twice the log-prob differences from
                # torch, at no speed gain (docs/onnx.md); float models keep them
                quantized = self.metadata.weight_bits is not None
                self._session = ort_session(path, threads, fusions=not quantized)
                self._run = lambda feeds: self._session.run(None, feeds)
            else:
                from onnx.reference import ReferenceEvaluator

                from mho.exporter.ops import reference_ops

                evaluator = ReferenceEvaluator(onnx.load(str(path)), new_ops=reference_ops())
                self._run = lambda feeds: evaluator.run(None, feeds)
        except MhoError:
            raise
        except Exception as error:
            raise MhoError(f"{runtime} cannot load {path}: {str(error).splitlines()[0]}") from None
        self._log_mel = LogMel(self.features) if self.metadata.input == "features" else None

    @staticmethod
    def metadata_of(path: str | Path) -> OnnxMetadata:
        """The file's mho metadata without loading a session (MhoError without it)."""
        if not Path(path).is_file():
            raise MhoError(f"no such ONNX file: {path}")
        return read_metadata(path)

    def run(self, waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """16 kHz float32 waveforms (any lengths) -> (log_probs [B, T', V], out_lengths [B])."""
        samples = np.array([w.size for w in waveforms], dtype=np.int64)
        padded = np.zeros((len(waveforms), max(samples)), dtype=np.float32)  # [B, S]
        for row, waveform in zip(padded, waveforms, strict=True):
            row[: waveform.size] = waveform
        if self._log_mel is None:
            inputs = (padded, samples)
        else:
            with torch.inference_mode():
                features = self._log_mel(torch.from_numpy(padded)).numpy()  # [B, T, F]
            inputs = (features, self.features.num_frames(samples))
        log_probs, lengths = self._run(dict(zip(self.input_names, inputs, strict=True)))
        return np.asarray(log_probs), np.asarray(lengths)


class OnnxRecognizer:
    """An exported file + a CTC decoder: the Recognizer interface of mho.runtime.recognizer."""

    def __init__(self, name: str, session: OnnxSession, decoder: Decoder, decoder_name: str):
        self.name = name
        self.session = session
        self.runtime = session.runtime
        self._decoder = decoder
        self.decoder = decoder_name

    def log_probs(self, waveform: np.ndarray) -> np.ndarray:
        """[S] -> CTC log-probs [T', V] of one utterance."""
        log_probs, _ = self.session.run([waveform])
        return log_probs[0]

    def transcribe(self, waveform: np.ndarray) -> str:
        return self._decoder.decode(self.log_probs(waveform))

    def transcribe_batch(self, waveforms: list[np.ndarray]) -> list[str]:
        """Server-style: one padded batch through the session, then decode each row."""
        log_probs, lengths = self.session.run(waveforms)
        return [self._decoder.decode(lp[:n]) for lp, n in zip(log_probs, lengths, strict=True)]
