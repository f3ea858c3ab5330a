"""One interface over runtimes for any model: named numpy inputs in, named numpy outputs out.

    session = open_session("model.onnx")                    # onnxruntime
    session = open_session("model.onnx", "onnx-ref")        # ONNX reference evaluator
    session = open_session(module, input_names=["x"], output_names=["y"])   # torch
    outputs = session.run({"x": batch})                     # {"y": array}

Nothing here knows about speech: a digits CNN, a Conformer or a user's module run the same
way, so exported files can be compared with their torch source by `compare_sessions`
(mho.workflows.compare). The speech sessions (waveforms in, CTC log-probs out) in
mho.runtime.speech build on these.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from mho.errors import MhoError
from mho.timing import torch_threads

ONNX_RUNTIMES = ("ort", "onnx-ref")
# "coreml": Core ML's own prediction (macOS only); "coreml-mil": the package's ML program
# evaluated with numpy (mho.runtime.mil_numpy), anywhere: Core ML's numerics, not its speed.
COREML_RUNTIMES = ("coreml", "coreml-mil")
RUNTIMES = ("torch", *ONNX_RUNTIMES, *COREML_RUNTIMES)


@runtime_checkable
class Session(Protocol):
    """A model on one runtime. ``run`` takes every input by name and returns every output by
    name, numpy on every runtime."""

    runtime: str  # "torch", "ort", "onnx-ref", "coreml" or "coreml-mil"
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _check_feeds(session: Session, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    missing = [name for name in session.input_names if name not in feeds]
    unknown = [name for name in feeds if name not in session.input_names]
    if missing or unknown:
        raise MhoError(f"{session.runtime} session takes inputs {', '.join(session.input_names)}"
                       f"; got {', '.join(feeds) or 'none'}")
    return [np.asarray(feeds[name]) for name in session.input_names]


class TorchSession:
    """A torch module in eval mode: ``module(*inputs in input_names order)``; its output (a
    tensor or a tuple of tensors) is named by ``output_names``. ``threads``: torch intra-op
    threads while it runs (None: leave torch's setting)."""

    runtime = "torch"

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str],
                 output_names: Sequence[str], *, threads: int | None = None):
        self.module = module.eval()
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.threads = threads

    @torch.inference_mode()
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [torch.from_numpy(np.ascontiguousarray(x)) for x in _check_feeds(self, feeds)]
        with torch_threads(self.threads):
            outputs = self.module(*inputs)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        if len(outputs) != len(self.output_names):
            raise MhoError(f"the module returned {len(outputs)} outputs; output_names has "
                           f"{len(self.output_names)}")
        return {name: out.numpy() for name, out in zip(self.output_names, outputs, strict=True)}


def ort_session(path: str | Path, threads: int | None = None, fusions: bool = True,
                arena: bool = True):
    """An onnxruntime CPU session set up for speed: function inlining and constant folding
    (of the chip's tiling, of int8 weights times scales), with `fusions` also the extended
    and layout optimizations (LayerNorm, GELU, MatMul + Add...); `threads` intra-op threads
    (default: one per core), sequential execution. `arena=False` turns off the CPU memory
    arena, which keeps (and rounds up to powers of two) what earlier runs allocated: without
    it a run's peak resident memory is what that run itself needs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fusions
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    options.enable_cpu_mem_arena = arena
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxFileSession:
    """An ONNX file on onnxruntime ("ort") or on the ONNX reference evaluator ("onnx-ref":
    numpy, with mho's own implementations of the ai.mho.memristor ops, an independent second
    runtime). Plain onnxruntime runs the memristor ops through their function bodies."""

    def __init__(self, path: str | Path, runtime: str = "ort", *, threads: int | None = None,
                 fusions: bool = True, arena: bool = True):
        if runtime not in ONNX_RUNTIMES:
            raise MhoError(f"unknown ONNX runtime {runtime!r}; choose from "
                           f"{', '.join(ONNX_RUNTIMES)}")
        path = Path(path)
        if not path.is_file():
            raise MhoError(f"no such ONNX file: {path}")
        self.path, self.runtime = path, runtime
        try:
            if runtime == "ort":
                session = ort_session(path, threads, fusions, arena)
                self.input_names = [i.name for i in session.get_inputs()]
                self.output_names = [o.name for o in session.get_outputs()]
                self._run = lambda feeds: session.run(None, feeds)
            else:
                import onnx
                from onnx.reference import ReferenceEvaluator

                from mho.exporter.ops import reference_ops

                proto = onnx.load(str(path))
                evaluator = ReferenceEvaluator(proto, new_ops=reference_ops())
                self.input_names = list(evaluator.input_names)
                self.output_names = list(evaluator.output_names)
                self._run = lambda feeds: evaluator.run(None, feeds)
        except Exception as error:
            raise MhoError(f"{runtime} cannot load {path}: {str(error).splitlines()[0]}") from None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = _check_feeds(self, feeds)
        outputs = self._run(dict(zip(self.input_names, inputs, strict=True)))
        return {name: np.asarray(out) for name, out in zip(self.output_names, outputs,
                                                            strict=True)}


def open_session(
    source: str | Path | torch.nn.Module,
    runtime: str | None = None,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    threads: int | None = None,
) -> Session:
    """A session for a torch module (runtime "torch"; name its inputs and outputs), an .onnx
    file (runtime "ort", the default, or "onnx-ref") or a Core ML .mlpackage ("coreml" on
    macOS, the default there; "coreml-mil", the default elsewhere)."""
    if isinstance(source, torch.nn.Module):
        if runtime not in (None, "torch"):
            raise MhoError(f"a torch module runs on runtime torch, not {runtime}")
        if not input_names or not output_names:
            raise MhoError("a torch module's session needs input_names and output_names")
        return TorchSession(source, input_names, output_names, threads=threads)
    path = Path(source)
    if path.suffix == ".onnx":
        return OnnxFileSession(path, runtime or "ort", threads=threads)
    if path.suffix == ".mlpackage":
        from mho.runtime.coreml_runtime import CoreMLSession

        return CoreMLSession(path, runtime)
    raise MhoError(f"cannot open {source}: expected a torch module, an .onnx file or an "
                   f".mlpackage")
