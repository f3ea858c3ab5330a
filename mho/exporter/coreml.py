"""Export a digital mho model to a Core ML ML program (.mlpackage) for phones.

    report = export_coreml(model, "model.mlpackage", metadata)

torch.jit.trace -> coremltools `convert` (mlprogram, FP16 compute by default, iOS 17), with
enumerated input lengths: Core ML plans memory per shape, and a model whose outputs ignore
padding (every mho model masks it) runs any shorter utterance padded to the next length, with
its true length as the second input. Inputs: (waveform [1, S] float32, samples [1] int32) for
wav2vec2-style models, (features [1, T, 80] log-mels, lengths [1] int32) for Conformers, whose
log-mel front-end the app computes (the metadata has its settings); outputs log_probs [1, T', V]
and frames [1]. The file carries mho's ONNX metadata as Core ML user-defined metadata, plus the
enumerated lengths.

Memristor models are refused: a crossbar read (bit-planes, per-column ADC, read noise) has no
Core ML op and no accelerator on a phone to run it; export them to ONNX instead.
"""

import contextlib
import dataclasses
import io
import json
import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mho.errors import MhoError
from mho.exporter.metadata import OnnxMetadata
from mho.exporter.modules import export_twin

LENGTHS_SECONDS = (1, 2, 4, 8, 16, 32)  # enumerated input lengths
PRECISIONS = ("fp16", "fp32")
MEMRISTOR_UNSUPPORTED = (
    "Core ML export of memristor models is not supported: a crossbar read (bit-planes, "
    "per-column ADC, read noise) has no Core ML op; export the digital model here, or the "
    "memristor model with `mho export onnx --memristor`")
LENGTHS_KEY = "enumerated_lengths"  # user-defined metadata: input lengths (samples or frames)

# Ops that Core ML runs off the Neural Engine (on CPU or GPU) by our reading of Apple's and
# the community's notes: integer arithmetic, indexing by run-time values, run-time shapes and
# scans. A heuristic flag for the reader, not a promise about a device.
OFF_NEURAL_ENGINE = {
    "gather": "indexing by run-time values",
    "gather_along_axis": "indexing by run-time values",
    "gather_nd": "indexing by run-time values",
    "scatter": "indexing by run-time values",
    "cumsum": "scan along an axis",
    "shape": "run-time shape",
    "fill": "run-time shape",
    "range_1d": "run-time shape",
    "tile": "run-time repetition",
    "non_zero": "data-dependent shape",
    "while_loop": "control flow",
    "cond": "control flow",
}


@dataclass(frozen=True)
class CoreMLReport:
    path: Path
    bytes: int  # the whole .mlpackage
    seconds: float  # tracing and conversion
    ops: dict[str, int]  # the program's ops per type (constants left out)
    off_neural_engine: dict[str, str]  # op type -> why it is flagged, for ops it contains
    lengths: list[int]  # enumerated input lengths (samples or feature frames)


class _Traced(torch.nn.Module):
    """(input [1, L, ...], length [1] int32) -> (log_probs [1, T', V], frames [1] int32)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, length: torch.Tensor):
        log_probs, frames = self.model(inputs, length.long())
        return log_probs, frames.int()


def _input_lengths(model: torch.nn.Module, seconds: tuple[float, ...]) -> tuple[str, list[int]]:
    from mho.data.audio import SAMPLE_RATE
    from mho.data.features import FeatureConfig

    if model.input_kind == "waveform":
        return "waveform", [int(s * SAMPLE_RATE) for s in seconds]
    features = FeatureConfig()
    return "features", [int(features.num_frames(np.array([s * features.sample_rate]))[0])
                        for s in seconds]


def off_neural_engine(ops: dict[str, int]) -> dict[str, str]:
    return {op: why for op, why in OFF_NEURAL_ENGINE.items() if op in ops}


def count_ops(operations) -> dict[str, int]:
    """A MIL function's ops per type, most common first (constants left out)."""
    counts = Counter(op.op_type for op in operations if op.op_type != "const")
    return dict(counts.most_common())


def import_coremltools():
    """coremltools, imported without its notes about untested torch versions and the missing
    macOS-only runtime library; MhoError when it is not installed."""
    try:
        with _quiet():
            import coremltools
    except ImportError:
        raise MhoError("Core ML needs coremltools: pip install 'mho[coreml]'") from None
    return coremltools


def export_coreml(model: torch.nn.Module, path: str | Path, metadata: OnnxMetadata, *,
                  lengths: tuple[float, ...] = LENGTHS_SECONDS, precision: str = "fp16"
                  ) -> CoreMLReport:
    """Write `model` (eval mode, digital) to the .mlpackage `path`; `lengths` in seconds."""
    from mho.simulator.layers import CrossbarLayer

    ct = import_coremltools()

    if any(isinstance(m, CrossbarLayer) for m in model.modules()):
        raise MhoError(MEMRISTOR_UNSUPPORTED)
    if precision not in PRECISIONS:
        raise MhoError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not lengths or min(lengths) <= 0:
        raise MhoError("enumerated lengths must be positive seconds")
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise MhoError(f"the output should end in .mlpackage: {path}")
    started = time.perf_counter()
    kind, sizes = _input_lengths(model, tuple(sorted(set(lengths))))
    example_length = sizes[0]
    if kind == "waveform":
        example = torch.zeros(1, example_length)
        shapes = [[1, n] for n in sizes]
    else:
        example = torch.zeros(1, example_length, 80)
        shapes = [[1, n, 80] for n in sizes]
    length_name = "samples" if kind == "waveform" else "lengths"
    twin = export_twin(model)  # QAT layers as plain ops (no autograd Functions to trace)
    with _quiet():
        traced = torch.jit.trace(_Traced(twin).eval(),
                                 (example, torch.tensor([example_length], dtype=torch.int32)))
        try:
            mlmodel = ct.convert(
                traced,
                inputs=[ct.TensorType(kind, shape=ct.EnumeratedShapes(shapes, default=shapes[0]),
                                      dtype=np.float32),
                        ct.TensorType(length_name, shape=(1,), dtype=np.int32)],
                outputs=[ct.TensorType("log_probs"), ct.TensorType("frames")],
                convert_to="mlprogram",
                compute_precision=(ct.precision.FLOAT16 if precision == "fp16"
                                   else ct.precision.FLOAT32),
                minimum_deployment_target=ct.target.iOS17,
                pass_pipeline=_pass_pipeline(ct),
                skip_model_load=True,  # Core ML itself only loads on macOS
            )
        except Exception as error:
            raise MhoError(f"Core ML conversion failed: {str(error).splitlines()[0]}") from error
    props = dataclasses.replace(metadata, input=kind).to_props()
    mlmodel.user_defined_metadata.update({**props, LENGTHS_KEY: json.dumps(sizes),
                                          "precision": precision})
    mlmodel.author = "mho"
    mlmodel.short_description = (f"{metadata.model_name}: CTC log-probs over "
                                 f"{len(metadata.vocabulary)} tokens, {precision}")
    ops = count_ops(mlmodel._mil_program.functions["main"].operations)
    _save_atomically(mlmodel, path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return CoreMLReport(path, size, time.perf_counter() - started, ops, off_neural_engine(ops),
                        sizes)


def _pass_pipeline(ct):
    """The default passes without `add_int16_cast`: for iOS 17 FP16 programs it stores integer
    tensors as int16, shapes included, so a waveform of more than 32,767 samples (2 s) wraps
    to a negative length (found by evaluating the program with mho.runtime.mil_numpy)."""
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(["common::add_int16_cast"])
    return pipeline


def _save_atomically(mlmodel, path: Path) -> None:
    """An .mlpackage is a folder: written beside the target, then renamed over it."""
    import shutil

    partial = path.with_name(f".partial-{path.name}")  # coremltools wants the suffix
    shutil.rmtree(partial, ignore_errors=True)
    try:
        mlmodel.save(str(partial))
        if path.exists():
            shutil.rmtree(path)
        partial.rename(path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def _quiet():
    """Tracing and conversion without their warnings and progress bars (stderr)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
