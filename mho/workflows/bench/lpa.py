"""`mho bench lpa`: the attention model against the same model with every attention replaced by a
PulseAccumulator, and one attention layer against one LPA layer, at several audio lengths,
batch 1, on torch or onnxruntime; ratios measured in one run.

Both models have the size of MODEL (a wav2vec2-style checkpoint, by default the shipped
teacher, or a Conformer): the attention model is MODEL with every layer's attention, the
LPA model the same weights with an LPA in every layer (selective initialization; its timing
does not depend on what it learned: the hard gates cost the same whatever they select). On
onnxruntime each is exported first (`mho export onnx`'s path, waveform input: a Conformer's
log-mel front-end is in the graph) and run through the file, as a server would; a QAT
Conformer's layers through their export twins, as `mho export onnx` writes them.

Times are medians over `repeats` passes after one warm-up pass. Peak memory is the rise of
the process's peak resident set during one more pass (mho.timing.peak_memory_rise; Linux
only): on onnxruntime through a second session of the same file without the CPU memory
arena, which would otherwise keep earlier, shorter runs' buffers and round its growth up to
powers of two.
"""

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mho.errors import MhoError
from mho.lpa.host import host_of, model_pair
from mho.models.transformer import SAMPLE_RATE
from mho.timing import median_ms, peak_memory_rise, torch_threads

RUNTIMES = ("ort", "torch")


@dataclass(frozen=True)
class LpaBenchConfig:
    model: str = "wav2vec2-small"  # shipped name or checkpoint: wav2vec2-style or Conformer
    lengths: tuple[float, ...] = (10, 30, 60, 120)  # seconds of audio, batch 1
    runtime: str = "ort"  # "ort" (exported files) or "torch" (eager)
    repeats: int = 3
    threads: int = 2  # onnxruntime intra-op threads and torch threads
    seed: int = 0  # of the random waveforms and layer inputs

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise MhoError(f"unknown runtime {self.runtime!r}; choose from {', '.join(RUNTIMES)}")
        if not self.lengths or min(self.lengths) <= 0:
            raise MhoError("lengths must be positive seconds")


@dataclass
class LpaBenchResult:
    config: LpaBenchConfig
    ms: dict[str, dict[float, float]] = field(default_factory=dict)  # what -> length -> ms
    # what -> length -> peak resident-set rise of one pass in bytes (empty off Linux)
    peak_bytes: dict[str, dict[float, int]] = field(default_factory=dict)

    def speedup(self, slow: str, fast: str) -> dict[float, float]:
        return {s: self.ms[slow][s] / self.ms[fast][s] for s in self.config.lengths}

    def scaling(self, what: str, long: float = 120, short: float = 60) -> float | None:
        """Time ratio between two lengths (2 = linear for 120 s / 60 s); None if not run."""
        times = self.ms[what]
        return times[long] / times[short] if long in times and short in times else None

    def memory_scaling(self, what: str, long: float = 120, short: float = 60) -> float | None:
        """Peak-memory ratio between two lengths (2 = linear, 4 = quadratic for 120 s / 60 s);
        None if not measured."""
        peaks = self.peak_bytes.get(what, {})
        return peaks[long] / peaks[short] if long in peaks and short in peaks else None

    def summary(self) -> dict:
        def keyed(values: dict[float, float]) -> dict[str, float]:
            return {f"{s:g}": v for s, v in values.items()}

        def peak_mb(what: str) -> dict[str, float]:
            return {f"{s:g}": v / 2**20 for s, v in self.peak_bytes.get(what, {}).items()}

        return {
            "model": self.config.model,
            "runtime": self.config.runtime,
            "threads": self.config.threads,
            "repeats": self.config.repeats,
            "speedup": keyed(self.speedup("attention", "lpa")),
            "lpa_ms": keyed(self.ms["lpa"]),
            "attention_ms": keyed(self.ms["attention"]),
            "scaling_120_60": self.scaling("lpa"),
            "attention_scaling_120_60": self.scaling("attention"),
            "layer_speedup": keyed(self.speedup("attention_layer", "lpa_layer")),
            "layer_lpa_ms": keyed(self.ms["lpa_layer"]),
            "layer_attention_ms": keyed(self.ms["attention_layer"]),
            "lpa_peak_mb": peak_mb("lpa"),
            "attention_peak_mb": peak_mb("attention"),
            "memory_scaling_120_60": self.memory_scaling("lpa"),
            "attention_memory_scaling_120_60": self.memory_scaling("attention"),
            "layer_lpa_peak_mb": peak_mb("lpa_layer"),
            "layer_attention_peak_mb": peak_mb("attention_layer"),
        }


class _Layer(nn.Module):
    """An attention or LPA module as a (x [B, T, D], mask [B, T]) -> [B, T, D] graph."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.module(x, mask)


def export_layer(module: nn.Module, path: Path, dim: int) -> None:
    """An attention or LPA module of model dim `dim` (float or QAT) as an ONNX file:
    (x [1, T, D], mask [1, T]) -> [1, T, D]. QAT layers go through their export twins, as
    in `mho export onnx`: the QAT modules' own straight-through rounding (a custom autograd
    Function) does not export."""
    from mho.exporter.modules import export_twin
    from mho.exporter.onnx import OPSET, quiet_export

    frames = torch.export.Dim("frames", min=2, max=1_000_000)
    x, mask = torch.randn(1, 37, dim), torch.ones(1, 37, dtype=torch.bool)
    with quiet_export():
        torch.onnx.export(_Layer(export_twin(module)).eval(), (x, mask), path, dynamo=True,
                          opset_version=OPSET, input_names=["x", "mask"],
                          dynamic_shapes=({1: frames}, {1: frames}), verbose=False)


def _runners(config: LpaBenchConfig, scratch: Path, log: Callable[[str], None]):
    """name -> (seconds -> feeds, timed pass, memory pass) for the two models and the two
    layers; the memory pass is the timed one on torch, an arena-free session on onnxruntime."""
    from mho.exporter.modules import WaveformInput
    from mho.exporter.onnx import export_onnx, load_for_export
    from mho.runtime.session import OnnxFileSession, TorchSession
    from mho.runtime.speech import SPEECH_INPUTS, SPEECH_OUTPUTS

    model, metadata = load_for_export(config.model)
    try:
        host = host_of(model)
    except MhoError as error:
        raise MhoError(f"{config.model}: {error}") from None
    attention, lpa = model_pair(model)
    modules = {"attention": attention, "lpa": lpa,
               "attention_layer": host.attention(attention, 0),
               "lpa_layer": host.attention(lpa, 0)}
    # output frames per second: 50 for the wav2vec2 host (20 ms), 25 for a Conformer (40 ms)
    frames_per_second = 1000 / (metadata.frame_shift_ms * metadata.subsampling)
    generator = np.random.default_rng(config.seed)

    def waveform(seconds: float) -> dict[str, np.ndarray]:
        samples = int(seconds * SAMPLE_RATE)
        return {"waveform": 0.1 * generator.standard_normal((1, samples), dtype=np.float32),
                "samples": np.array([samples])}

    def layer_input(seconds: float) -> dict[str, np.ndarray]:
        frames = int(seconds * frames_per_second)
        return {"x": generator.standard_normal((1, frames, model.config.dim), dtype=np.float32),
                "mask": np.ones((1, frames), dtype=bool)}

    runners = {}
    for name, module in modules.items():
        layer = name.endswith("_layer")
        make_input = layer_input if layer else waveform
        if config.runtime == "torch":
            inputs, outputs = (["x", "mask"], ["y"]) if layer else (SPEECH_INPUTS["waveform"],
                                                                    SPEECH_OUTPUTS)
            if not layer and module.input_kind == "features":  # the log-mels in the model
                module = WaveformInput(module).eval()
            session = TorchSession(_Layer(module) if layer else module, inputs, outputs)
            memory_session = session
        else:
            log(f"exporting the {name.replace('_', ' ')} to ONNX")
            path = scratch / f"{name}.onnx"
            if layer:
                export_layer(module, path, model.config.dim)
            else:
                export_onnx(module, path, dataclasses.replace(metadata, model_name=name),
                            input="waveform")
            session = OnnxFileSession(path, "ort", threads=config.threads)
            memory_session = OnnxFileSession(path, "ort", threads=config.threads, arena=False)
        runners[name] = (make_input, session.run, memory_session.run)
    return runners


def bench_lpa(config: LpaBenchConfig, log: Callable[[str], None] = lambda message: None
              ) -> LpaBenchResult:
    """Median ms and peak memory rise of each model and layer at each length, on one runtime,
    in one run."""
    result = LpaBenchResult(config)
    with torch_threads(config.threads):
        with tempfile.TemporaryDirectory(prefix="mho-bench-lpa-") as scratch:
            runners = _runners(config, Path(scratch), log)
            for seconds in config.lengths:
                for name, (make_input, run, memory_run) in runners.items():
                    feeds = make_input(seconds)
                    log(f"{name.replace('_', ' ')}, {seconds:g} s")
                    result.ms.setdefault(name, {})[seconds] = median_ms(
                        lambda run=run, feeds=feeds: run(feeds), config.repeats)
                    peak = peak_memory_rise(lambda run=memory_run, feeds=feeds: run(feeds))
                    if peak is not None:
                        result.peak_bytes.setdefault(name, {})[seconds] = peak
    return result


def plot_bench(result: LpaBenchResult, path: Path) -> None:
    """Median time vs audio length, log-log, models and layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, (slow, fast, title) in zip(axes, (
            ("attention", "lpa", "whole model"), ("attention_layer", "lpa_layer", "one layer")),
            strict=True):
        for name, label in ((slow, "attention"), (fast, "LPA")):
            lengths = sorted(result.ms[name])
            axis.loglog(lengths, [result.ms[name][s] for s in lengths], "o-", label=label)
        axis.set(title=f"{title} ({result.config.runtime})", xlabel="audio (s)",
                 ylabel="median ms")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
