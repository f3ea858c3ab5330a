"""`mho bench runtime`: onnxruntime against torch, and the crossbar op's function body against
a Python custom op, each ratio measured in one run with the same thread count.

- ort_vs_torch_digital: the digital (QAT, 8-bit) baseline model on utterances of the shipped
  test set, torch eager vs onnxruntime on the exported file (waveform in, log-probs out).
- ort_vs_torch_memristor: the same model programmed onto one chip (default simulator
  settings, read noise on), the torch simulator vs onnxruntime on the exported chip.
- function_vs_pyop: one CrossbarLinear node (a model-sized layer, legacy read noise) run by
  onnxruntime through its function body vs the same node as an onnxruntime-extensions Python
  custom op running the op's numpy implementation from the node's inputs (the reference
  evaluator's, mho.exporter.ops.crossbar.crossbar_linear_numpy).
  function_vs_pyop_noise_off: the same without read noise.

Times are medians over `repeats` passes, the two sides of each ratio timed in turns; a pass runs
every utterance (or the layer) once.
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mho.errors import MhoError
from mho.timing import interleaved_medians_ms, torch_threads


@dataclass(frozen=True)
class RuntimeBenchConfig:
    model: str = "conformer-sinusoidal-linear-w8"
    data: str = "flite-slt"
    utterances: int = 20  # of the set, in order
    repeats: int = 3
    threads: int = 1  # torch and onnxruntime intra-op threads
    layer_rows: int = 2000  # rows through the single-op layer (e.g. 16 utterances x 5 s)
    layer_size: tuple[int, int] = (128, 512)  # in, out: a feed-forward layer of the model
    seed: int = 0


@dataclass
class RuntimeBenchResult:
    config: RuntimeBenchConfig
    audio_seconds: float
    ms: dict[str, float] = field(default_factory=dict)  # "<what>/<runtime>" -> median pass ms

    def ratio(self, what: str, slow: str, fast: str) -> float:
        return self.ms[f"{what}/{slow}"] / self.ms[f"{what}/{fast}"]

    def summary(self) -> dict:
        return {
            "model": self.config.model,
            "data": self.config.data,
            "utterances": self.config.utterances,
            "audio_seconds": self.audio_seconds,
            "threads": self.config.threads,
            "ms": self.ms,
            "ort_vs_torch_digital": self.ratio("digital", "torch", "ort"),
            "ort_vs_torch_memristor": self.ratio("memristor", "torch", "ort"),
            "function_vs_pyop": self.ratio("layer", "pyop", "function"),
            "function_vs_pyop_noise_off": self.ratio("layer_noise_off", "pyop", "function"),
        }


def _model_pair(model, metadata, scratch: Path, name: str, threads: int, waveforms, repeats):
    """Median pass times (torch, ort) of one model over the waveforms."""
    from mho.exporter.onnx import export_onnx
    from mho.runtime.speech import SpeechSession

    path = scratch / f"{name}.onnx"
    export_onnx(model, path, metadata, input="waveform")
    sessions = {"torch": SpeechSession.from_model(model, metadata),
                "ort": SpeechSession.from_file(path, "ort", threads=threads)}

    def one_pass(session: SpeechSession):
        for waveform in waveforms:
            session.log_probs([waveform])

    times = interleaved_medians_ms({name: lambda s=s: one_pass(s) for name, s in sessions.items()},
                                   repeats)
    return times["torch"], times["ort"]


def _layer_pair(config: RuntimeBenchConfig, noise: str) -> tuple[float, float]:
    """Median times (function body, Python custom op) of one crossbar layer with read noise
    `noise` ("off" or a mode)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError:
        raise MhoError("function_vs_pyop needs onnxruntime-extensions "
                       "(pip install 'mho[bench]')") from None
    from mho.exporter.ops.crossbar import (
        DOMAIN,
        NOISY,
        crossbar_functions,
        crossbar_linear_numpy,
        crossbar_tensors,
    )
    from mho.runtime.session import ort_session
    from mho.simulator import CrossbarConfig, CrossbarLinear

    in_features, out_features = config.layer_size
    generator = torch.Generator().manual_seed(config.seed)
    weight = torch.randint(-127, 128, (out_features, in_features), generator=generator)
    core = CrossbarLinear.from_integer(weight, 8, 0.01, 0.02,
                                       config=CrossbarConfig(noise=noise), seed=config.seed)
    x = torch.randn(config.layer_rows, in_features, generator=generator).numpy()
    tensors, attributes = crossbar_tensors(core)

    # Python ops are registered process-wide by name: one name per noise mode
    python_op = f"CrossbarLinearNoise{noise.capitalize()}"

    def model(domain: str, functions: list) -> bytes:
        """One CrossbarLinear node; with functions: our op, else the Python op, whose
        attributes live in the closure."""
        op_type = "CrossbarLinear" if functions else python_op
        node = helper.make_node(op_type, ["X", *tensors], ["Y"], domain=domain,
                                **(attributes if functions else {}))
        node.overload = NOISY if functions and "noise_levels" in tensors else ""
        graph = helper.make_graph(
            [node], "layer",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", in_features])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", out_features])],
            [numpy_helper.from_array(v, k) for k, v in tensors.items()])
        return helper.make_model(graph, functions=functions, ir_version=10, opset_imports=[
            helper.make_opsetid("", 20), helper.make_opsetid(domain, 1)]).SerializeToString()

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "layer.onnx"
        path.write_bytes(model(DOMAIN, crossbar_functions()))
        function_session = ort_session(path, config.threads)

    rng = np.random.default_rng(config.seed)

    @onnx_op(op_type=python_op, inputs=[PyCustomOpDef.dt_float] * (1 + len(tensors)))
    def crossbar_pyop(x, *chip):  # the op's own numpy implementation, from its inputs
        return crossbar_linear_numpy(x, *chip, rng=rng, **attributes)

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    options.intra_op_num_threads = config.threads
    pyop_session = ort.InferenceSession(model("ai.onnx.contrib", []), options,
                                        providers=["CPUExecutionProvider"])
    feeds = {"X": x}
    times = interleaved_medians_ms({"function": lambda: function_session.run(None, feeds),
                                    "pyop": lambda: pyop_session.run(None, feeds)},
                                   config.repeats)
    return times["function"], times["pyop"]


def bench_runtime(config: RuntimeBenchConfig = RuntimeBenchConfig(),
                  log: Callable[[str], None] = lambda message: None) -> RuntimeBenchResult:
    """Every figure of `mho bench runtime`, on ``config.threads`` torch threads."""
    with torch_threads(config.threads):
        return _measure(config, log)


def _measure(config: RuntimeBenchConfig, log: Callable[[str], None]) -> RuntimeBenchResult:
    from mho.data.audio import SAMPLE_RATE
    from mho.data.datasets import resolve_dataset
    from mho.data.manifest import load_utterance_audio
    from mho.exporter.onnx import load_for_export
    from mho.simulator.config import SimulatorConfig

    _, utterances = resolve_dataset(config.data)
    waveforms = [load_utterance_audio(u) for u in utterances[: config.utterances]]
    result = RuntimeBenchResult(config, sum(w.size for w in waveforms) / SAMPLE_RATE)
    with tempfile.TemporaryDirectory(prefix="mho-bench-") as scratch:
        for what, simulator in (("digital", None), ("memristor", SimulatorConfig())):
            log(f"{what}: exporting {config.model} and timing torch / onnxruntime")
            model, metadata = load_for_export(config.model, simulator, config.seed)
            torch_ms, ort_ms = _model_pair(model, metadata, Path(scratch), what,
                                           config.threads, waveforms, config.repeats)
            result.ms[f"{what}/torch"], result.ms[f"{what}/ort"] = torch_ms, ort_ms
    log("crossbar layer: function body vs Python custom op")
    result.ms["layer/function"], result.ms["layer/pyop"] = _layer_pair(config, "legacy")
    result.ms["layer_noise_off/function"], result.ms["layer_noise_off/pyop"] = _layer_pair(
        config, "off")
    return result
