"""Export a digital mho model to a Core ML ML program (.mlpackage) for phones.

    report = export_coreml(model, "model.mlpackage", metadata, input="waveform",
                           weights="auto", compute_units="CPU_AND_NE")

torch.jit.trace -> coremltools `convert` (mlprogram, FP16 compute by default, iOS 17), with
enumerated input lengths: Core ML plans memory per shape, and a model whose outputs ignore
padding (every mho model masks it) runs any shorter utterance padded to the next length, with
its true length as the second input. Inputs: (waveform [1, S] float32, samples [1] int32) by
default, the log-mel front end inside the program for Conformers too (as in the ONNX export),
or (features [1, T, 80] log-mels, lengths [1] int32) with input="features"; outputs
log_probs [1, T', V] and frames [1].

Weights are then compressed with coremltools.optimize.coreml: `auto` stores a QAT model's
weights at the bits it was trained with, palettized with the LUT of each tensor's own distinct
values (a b-bit QAT layer has at most 2^b - 1 of them per tensor: exact), a float model's
as int8 per channel when its matrices lie on that grid (mho's shipped float models), and
other float models' in FP16 (or FP32 with precision="fp32"); see `resolve_weights`.
The file carries mho's ONNX metadata as Core ML user-defined metadata, plus the enumerated
lengths, the weight scheme and the compute units Core ML should load it with (compute units
are a load-time choice in Core ML, so they travel as metadata; mho's Core ML session on
macOS reads them).

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
from mho.exporter.modules import WaveformInput, export_twin

LENGTHS_SECONDS = (1, 2, 4, 8, 16, 32)  # enumerated input lengths
# Of the activations (and of uncompressed weights). "mixed": the log-mel front end's DFT in
# FP16 (its basis stored in FP16, the Neural Engine's precision), the power, mel filterbank,
# log and the model behind it in FP32: 8-bit QAT models amplify FP16 rounding across their
# activation grids (mho.workflows.check; docs/coreml.md, "FP16 and 8-bit QAT Conformers").
PRECISIONS = ("fp16", "fp32", "mixed")
WEIGHTS = ("auto", "int8", "int4", "palette8", "palette4", "float")
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_ONLY")
MEMRISTOR_UNSUPPORTED = (
    "Core ML export of memristor models is not supported: a crossbar read (bit-planes, "
    "per-column ADC, read noise) has no Core ML op; export the digital model here, or the "
    "memristor model with `mho export onnx --memristor`")
LENGTHS_KEY = "enumerated_lengths"  # user-defined metadata: input lengths (samples or frames)
WEIGHTS_KEY = "weights"  # user-defined metadata: the weight scheme applied
COMPUTE_UNITS_KEY = "compute_units"  # user-defined metadata: what Core ML should load it on
# Weights smaller than this stay uncompressed (biases, norms, the first conv): coremltools'
# own default threshold; their LUT would cost more than it saves.
WEIGHT_THRESHOLD = 2048

# The one table of ops flagged as likely to run off the Neural Engine (on CPU or GPU), op ->
# why. Apple publishes no list of what the Neural Engine runs; these are our reading of:
# - coremltools' documentation (Flexible Input Shapes: only enumerated shapes keep a model
#   eligible for the Neural Engine, so ops whose shapes come from run-time values fall back;
#   Typed Execution: the Neural Engine computes in FP16, so integer arithmetic leaves it);
# - Apple's ml-ane-transformers and its article "Deploying Transformers on the Apple Neural
#   Engine" (2022): keep tensors static and 4-D channels-first, express work as convs and
#   matmuls, avoid indexing by computed indices (gathers) and data-dependent reshapes.
# A flag for the reader, not a promise about a device: Core ML decides per op at load time.
OFF_NEURAL_ENGINE = {
    "gather": "indexing by run-time values",
    "gather_along_axis": "indexing by run-time values",
    "gather_nd": "indexing by run-time values",
    "scatter": "indexing by run-time values",
    "scatter_along_axis": "indexing by run-time values",
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
    seconds: float  # tracing, conversion and compression
    ops: dict[str, int]  # the program's ops per type (constants left out)
    off_neural_engine: dict[str, str]  # op type -> why it is flagged, for ops it contains
    lengths: list[int]  # enumerated input lengths (samples or feature frames)
    input: str = "waveform"  # "waveform" or "features"
    weights: str = "float"  # the scheme applied ("auto" resolved)
    compute_units: str = "ALL"
    uncompressed: dict[str, int] = dataclasses.field(default_factory=dict)  # float weights


class _Traced(torch.nn.Module):
    """(input [1, L, ...], length [1] int32) -> (log_probs [1, T', V], frames [1] int32)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, length: torch.Tensor):
        log_probs, frames = self.model(inputs, length.long())
        return log_probs, frames.int()


def _input_lengths(kind: str, seconds: tuple[float, ...]) -> list[int]:
    from mho.data.audio import SAMPLE_RATE
    from mho.data.features import FeatureConfig

    if kind == "waveform":
        return [int(s * SAMPLE_RATE) for s in seconds]
    features = FeatureConfig()
    return [int(features.num_frames(np.array([s * features.sample_rate]))[0])
            for s in seconds]


def off_neural_engine(ops: dict[str, int]) -> dict[str, str]:
    return {op: why for op, why in OFF_NEURAL_ENGINE.items() if op in ops}


def count_ops(operations) -> dict[str, int]:
    """A MIL function's ops per type, most common first (constants left out)."""
    counts = Counter(op.op_type for op in operations
                     if op.op_type != "const" and not op.op_type.startswith("constexpr_"))
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


def resolve_weights(weights: str, weight_bits: int | None,
                    model: torch.nn.Module | None = None) -> str:
    """The scheme `weights` stands for. "auto": "unique<bits>" (each tensor palettized with
    its own distinct values, exact) for a QAT model of `weight_bits`; "int8" for a float
    model whose weight matrices all lie on a symmetric int8 grid per output channel (mho's
    shipped float models are stored so, mho.models.zoo), which int8 holds to FP16 rounding;
    "float" otherwise."""
    if weights not in WEIGHTS:
        raise MhoError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if weights != "auto":
        return weights
    if weight_bits is not None:
        return f"unique{weight_bits}"
    return "int8" if model is not None and on_int8_channel_grid(model) else "float"


def on_int8_channel_grid(model: torch.nn.Module) -> bool:
    """Whether every weight of 2+ dimensions and WEIGHT_THRESHOLD+ elements is k s_c, k an
    integer in -127..127, s_c = max |w_c| / 127 per output channel. The tolerance, 1e-3 of a
    step, is far above float32 rounding of w / s_c (~1e-5 at 127) and far below what weights
    off a grid show (uniform in -0.5..0.5 of a step)."""
    weights = [p.detach() for name, p in model.named_parameters()
               if name.endswith("weight") and p.dim() >= 2 and p.numel() >= WEIGHT_THRESHOLD]
    for w in weights:
        step = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) / 127
        steps = w / step.clamp(min=1e-30)
        if (steps - steps.round()).abs().max() > 1e-3:
            return False
    return bool(weights)


def export_coreml(model: torch.nn.Module, path: str | Path, metadata: OnnxMetadata, *,
                  input: str = "waveform", weights: str = "auto",
                  compute_units: str = "ALL", lengths: tuple[float, ...] = LENGTHS_SECONDS,
                  precision: str = "fp16") -> CoreMLReport:
    """Write `model` (eval mode, digital) to the .mlpackage `path`; `lengths` in seconds.

    input: "waveform" (16 kHz samples; a features model gets the log-mel front end in the
    program) or "features" (log-mels, Conformers only). weights: "auto" (a QAT model's
    trained bits, exact; see `resolve_weights` for float models), "int8" / "int4" (linear symmetric,
    per channel / per block of 32), "palette8" / "palette4" (k-means LUT per tensor), or
    "float". compute_units: recorded for Core ML to load the package with. precision: of
    the activations ("fp16": what the Neural Engine computes in; "mixed": the log-mel front
    end's DFT FP16, the rest FP32; see `_in_front_end`)."""
    from mho.simulator.layers import CrossbarLayer

    ct = import_coremltools()

    if any(isinstance(m, CrossbarLayer) for m in model.modules()):
        raise MhoError(MEMRISTOR_UNSUPPORTED)
    if precision not in PRECISIONS:
        raise MhoError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if input not in ("waveform", "features"):
        raise MhoError(f"input must be waveform or features, got {input!r}")
    if compute_units not in COMPUTE_UNITS:
        raise MhoError(f"compute units must be one of {', '.join(COMPUTE_UNITS)}, "
                       f"got {compute_units!r}")
    scheme = resolve_weights(weights, metadata.weight_bits, model)
    if precision == "mixed" and not (model.input_kind == "features" and input == "waveform"):
        raise MhoError("precision mixed (the log-mel front end's DFT FP16, the rest FP32) is for a "
                       "features model (Conformer) exported with waveform input")
    if model.input_kind == "waveform" and input != "waveform":
        raise MhoError("this model reads the waveform itself (wav2vec2-style): it has no "
                       "log-mel input to export; use --input waveform")
    if not lengths or min(lengths) <= 0:
        raise MhoError("enumerated lengths must be positive seconds")
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise MhoError(f"the output should end in .mlpackage: {path}")
    started = time.perf_counter()
    sizes = _input_lengths(input, tuple(sorted(set(lengths))))
    example_length = sizes[0]
    if input == "waveform":
        example = torch.zeros(1, example_length)
        shapes = [[1, n] for n in sizes]
    else:
        example = torch.zeros(1, example_length, 80)
        shapes = [[1, n, 80] for n in sizes]
    # One length: a static shape, so every shape computation folds into constants at
    # conversion (no shape, fill or range ops left); several: enumerated shapes.
    shape = shapes[0] if len(shapes) == 1 else ct.EnumeratedShapes(shapes, default=shapes[0])
    length_name = "samples" if input == "waveform" else "lengths"
    twin = export_twin(model)  # QAT layers as plain ops (no autograd Functions to trace)
    from mho.exporter.ane_lpa import ane_twin

    twin = ane_twin(twin)  # LPA layers without cumsum and gathers
    if model.input_kind == "features" and input == "waveform":
        twin = WaveformInput(twin)
    target = ct.target.iOS18 if scheme == "int4" else ct.target.iOS17  # int4 needs iOS 18
    _patch_converters()
    with _quiet():
        traced = torch.jit.trace(_Traced(twin).eval(),
                                 (example, torch.tensor([example_length], dtype=torch.int32)))
        try:
            mlmodel = ct.convert(
                traced,
                inputs=[ct.TensorType(input, shape=shape, dtype=np.float32),
                        ct.TensorType(length_name, shape=(1,), dtype=np.int32)],
                outputs=[ct.TensorType("log_probs"), ct.TensorType("frames")],
                convert_to="mlprogram",
                compute_precision={
                    "fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32,
                    "mixed": ct.transform.FP16ComputePrecision(op_selector=_in_front_end),
                }[precision],
                minimum_deployment_target=target,
                pass_pipeline=_pass_pipeline(ct),
                skip_model_load=True,  # Core ML itself only loads on macOS
            )
            mlmodel = _compress_weights(ct, mlmodel, scheme)
        except MhoError:
            raise
        except Exception as error:
            raise MhoError(f"Core ML conversion failed: {str(error).splitlines()[0]}") from error
    props = dataclasses.replace(metadata, input=input).to_props()
    mlmodel.user_defined_metadata.update({**props, LENGTHS_KEY: json.dumps(sizes),
                                          "precision": precision, WEIGHTS_KEY: scheme,
                                          COMPUTE_UNITS_KEY: compute_units})
    mlmodel.author = "mho"
    mlmodel.short_description = (f"{metadata.model_name}: CTC log-probs over "
                                 f"{len(metadata.vocabulary)} tokens, {precision} activations, "
                                 f"{scheme} weights")
    ops = count_ops(mlmodel._mil_program.functions["main"].operations)
    left = uncompressed_weights(mlmodel) if scheme != "float" else {}
    _save_atomically(mlmodel, path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return CoreMLReport(path, size, time.perf_counter() - started, ops, off_neural_engine(ops),
                        sizes, input, scheme, compute_units, left)


def _compress_weights(ct, mlmodel, scheme: str):
    """mlmodel with its weights (of WEIGHT_THRESHOLD elements or more) stored as `scheme`."""
    from coremltools.optimize import coreml as cto

    if scheme == "float":
        return mlmodel
    if scheme.startswith("unique"):
        # The LUT is the tensor's own distinct values: nbits follows from their count
        # (<= 2^b - 1 for a b-bit QAT layer, its symmetric grid), so nothing is rounded.
        # Our own LUT ("custom" mode) rather than coremltools' "unique": that one runs
        # np.unique on FP16 weights, which with numpy 2.4 counted 266 distinct values in a
        # tensor holding 220 (so it skipped the tensor, or could build a wrong table).
        names = [name for name in _weight_names(mlmodel)
                 if _lut_and_indices(_weight_value(mlmodel, name)) is not None]
        op_config = cto.OpPalettizerConfig(mode="custom", lut_function=_unique_lut,
                                           weight_threshold=WEIGHT_THRESHOLD)
        config = cto.OptimizationConfig(op_name_configs={name: op_config for name in names})
        return cto.palettize_weights(mlmodel, config)
    if scheme in ("int8", "int4"):
        granularity = ({"granularity": "per_channel"} if scheme == "int8"
                       else {"granularity": "per_block", "block_size": 32})
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=scheme,
                                                weight_threshold=WEIGHT_THRESHOLD, **granularity)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(op_config))
    op_config = cto.OpPalettizerConfig(mode="kmeans", nbits=int(scheme[-1]),
                                       granularity="per_tensor",
                                       weight_threshold=WEIGHT_THRESHOLD)
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(op_config))


LUT_BITS = (1, 2, 4, 6, 8)  # the table sizes Core ML's constexpr_lut_to_dense (iOS 16) takes


def _lut_and_indices(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lut [2^b], indices [N] uint8) holding `weight` exactly, or None when it has more than
    256 distinct values. Distinct values found in float32 (exact for FP16 values)."""
    values, indices = np.unique(np.asarray(weight, dtype=np.float32).reshape(-1),
                                return_inverse=True)
    bits = next((b for b in LUT_BITS if len(values) <= 1 << b), None)
    if bits is None:
        return None
    lut = np.zeros(1 << bits, dtype=weight.dtype)
    lut[: len(values)] = values
    return lut, indices.astype(np.uint8)


def _unique_lut(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """coremltools' custom LUT function: only called for tensors that fit (see callers)."""
    return _lut_and_indices(weight)


def _weight_names(mlmodel) -> list[str]:
    return list(uncompressed_weights(mlmodel))


def _weight_value(mlmodel, name: str) -> np.ndarray:
    operations = mlmodel._mil_program.functions["main"].operations
    return next(np.asarray(op.outputs[0].val) for op in operations if op.name == name)


def uncompressed_weights(mlmodel) -> dict[str, int]:
    """The program's float weights of WEIGHT_THRESHOLD elements or more that feed a linear,
    conv or matmul: name -> elements. Under "unique" those are the tensors with more distinct
    values than a QAT grid (coremltools leaves them float), e.g. the log-mel front end's DFT
    basis and filterbank, float in the torch model too."""
    operations = mlmodel._mil_program.functions["main"].operations
    return {op.name: int(np.asarray(op.outputs[0].val).size) for op in operations
            if op.op_type == "const" and op.outputs[0].val is not None
            and np.asarray(op.outputs[0].val).dtype.kind == "f"
            and np.asarray(op.outputs[0].val).size >= WEIGHT_THRESHOLD
            and any(child.op_type in ("linear", "conv", "matmul")
                    for child in op.outputs[0].child_ops)}


def _in_front_end(op) -> bool:
    """Whether `op` runs in FP16 under precision "mixed": the log-mel front end's DFT (the
    program's first conv, a strided conv over the waveform) and what comes before it. The
    power, mel filterbank and log behind it stay FP32: mel energies span the log floor
    (1e-6) to about 1e4, more than FP16's normal range (6.1e-5 to 65504), so in FP16 the
    quiet frames' energies are subnormal, keep a few bits, and their log-mels move by
    hundredths, enough to flip the 8-bit input quantizer's steps."""
    operations = list(op.enclosing_block.operations)
    first_conv = next((i for i, o in enumerate(operations) if o.op_type == "conv"), -1)
    return any(o is op for o in operations[: first_conv + 1])


def _patch_converters() -> None:
    """Two of coremltools' torch converters, registered over the originals (once):

    - `floor_divide` casts its result to fp32 ("PyTorch's floor_divide always returns
      fp32", not so for integers), which an FP16 program then computes in FP16: a frame count
      past 2048 (20.5 s of 10 ms frames) lost a frame. Integer inputs stay integer here.
    - `int` (aten::Int) calls Python's int() on a constant of shape [1], which numpy 2
      refuses; static-shape programs have such constants (a traced sequence length)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op
    from coremltools.converters.mil.mil import types

    if getattr(ops, "_mho_patched", False):
        return
    original_floor_divide = ops.floor_divide

    @register_torch_op(override=True)
    def floor_divide(context, node):
        x, y = ops.promote_input_dtypes(ops._get_inputs(context, node, expected=2))
        if types.is_int(x.dtype) and types.is_int(y.dtype):
            context.add(mb.floor_div(x=x, y=y, name=node.name))
        else:
            original_floor_divide(context, node)

    @register_torch_op(torch_alias=["int"], override=True)
    def _int(context, node):
        x = ops._get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and np.size(x.val) == 1:
            context.add(mb.const(val=np.int32(np.asarray(x.val).reshape(-1)[0]),
                                 name=node.name), node.name)
        else:
            ops._cast(context, node, int, "int32")

    ops._mho_patched = True


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
