"""Run a Core ML ML program (MIL) with numpy: Core ML's numerics checked on Linux, where Core ML
itself does not run.

Ops run in program order. Each op computes from its input values either with a numpy kernel
below (the heavy ops and those whose coremltools value inference reads static shapes or
refuses large tensors) or with coremltools' own `value_inference` (the op's reference Python
implementation, fed our values in place of its compile-time constants). Every result is then
cast to the dtype the program declares for it, so an FP16 program keeps FP16 activations
between ops, as the device does; inside an op the kernels accumulate in float32, like the
Neural Engine and GPU.

Written by hand: coremltools has no evaluator for a whole program (its value inference only
folds constants at conversion), and Core ML's own runtime is macOS-only.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.special import erf

from mho.errors import MhoError
from mho.exporter.ops.crossbar import conv_windows

Kernel = Callable[..., np.ndarray | tuple[np.ndarray, ...]]
KERNELS: dict[str, Kernel] = {}


def kernel(*op_types: str):
    def register(function: Kernel) -> Kernel:
        for op_type in op_types:
            KERNELS[op_type] = function
        return function

    return register


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


@kernel("shape")
def _shape(x, **_):
    return np.array(x.shape, dtype=np.int32)


@kernel("linear")
def _linear(x, weight, bias=None):
    y = _f32(x) @ _f32(weight).T
    return y if bias is None else y + _f32(bias)


@kernel("matmul")
def _matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = _f32(x), _f32(y)
    x = np.swapaxes(x, -1, -2) if transpose_x else x
    y = np.swapaxes(y, -1, -2) if transpose_y else y
    return x @ y


@kernel("layer_norm")
def _layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    x = _f32(x)
    axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
    mean = x.mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + float(epsilon))
    y = y if gamma is None else y * _f32(gamma)
    return y if beta is None else y + _f32(beta)


@kernel("gelu")
def _gelu(x, mode="EXACT"):
    x = _f32(x)
    if mode == "EXACT":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return x / (1 + np.exp(-1.702 * x))  # SIGMOID_APPROXIMATION


@kernel("softmax")
def _softmax(x, axis=-1):
    x = _f32(x)
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


@kernel("sigmoid")
def _sigmoid(x):
    return 1 / (1 + np.exp(-_f32(x)))


@kernel("silu")
def _silu(x):
    x = _f32(x)
    return x / (1 + np.exp(-x))


def _reduction(numpy_reduce):
    def reduce(x, axes=None, keep_dims=False):
        axis = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        return numpy_reduce(_f32(x), axis=axis, keepdims=bool(keep_dims))

    return reduce


for _name, _reduce in (("sum", np.sum), ("mean", np.mean), ("max", np.max), ("min", np.min),
                       ("prod", np.prod)):
    KERNELS[f"reduce_{_name}"] = _reduction(_reduce)


@kernel("fill")
def _fill(shape, value=0.0):
    return np.full([int(s) for s in shape], value)


@kernel("range_1d")
def _range(start, end, step):
    return np.arange(start, end, step)


@kernel("conv")
def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None,
          groups=1):
    """x [N, C, *S] (1-D or 2-D spatial), weight [O, C / groups, *K]: im2col + matmul."""
    x, weight = _f32(x), _f32(weight)
    spatial = x.ndim - 2
    kernel_size = weight.shape[2:]
    strides = [1] * spatial if strides is None else [int(s) for s in strides]
    dilations = [1] * spatial if dilations is None else [int(d) for d in dilations]
    if pad_type == "custom":
        pads = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(spatial)]
    elif pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(x.shape[2:], kernel_size, strides, dilations, strict=True):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            before = total // 2 if pad_type == "same" else total - total // 2
            pads.append((before, total - before))
    else:  # valid
        pads = [(0, 0)] * spatial
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    windows = conv_windows(x, kernel_size, strides, dilations)  # [N, C, *S_out, *K]
    groups = int(groups)
    per_group_in, per_group_out = x.shape[1] // groups, weight.shape[0] // groups
    outputs = []
    for g in range(groups):  # grouped (incl. depthwise) convs: one contraction per group
        patch = windows[:, g * per_group_in:(g + 1) * per_group_in]  # [N, Cg, *S_out, *K]
        w = weight[g * per_group_out:(g + 1) * per_group_out]  # [Og, Cg, *K]
        in_axes = [1, *range(2 + spatial, 2 + 2 * spatial)]
        y = np.tensordot(patch, w, axes=(in_axes, [1, *range(2, 2 + spatial)]))  # [N,*S,Og]
        outputs.append(np.moveaxis(y, -1, 1))
    y = np.concatenate(outputs, axis=1) if groups > 1 else outputs[0]
    return y if bias is None else y + _f32(bias).reshape(-1, *[1] * spatial)


def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """uint8 bytes holding n-bit unsigned integers, least significant bit first (Core ML's
    packing) -> [count] int64."""
    bits = np.unpackbits(np.asarray(packed).view(np.uint8), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.int64)
    return bits @ (1 << np.arange(nbits, dtype=np.int64))


@kernel("constexpr_lut_to_dense")
def _lut_to_dense(indices, lut, shape=None, vector_axis=None):
    """Palettized weights. iOS 16: `indices` bit-packed bytes, `lut` [2^n] for the whole
    tensor, `shape` the output's. iOS 18: `indices` [*shape] unpacked, `lut` [*groups, 2^n,
    1]: one table per block of the output (groups divide each axis)."""
    lut = np.asarray(lut)
    if shape is not None:  # iOS 16
        shape = [int(s) for s in shape]
        nbits = int(np.log2(lut.size))
        return lut[_unpack_bits(indices, nbits, int(np.prod(shape)))].reshape(shape)
    if vector_axis is not None or lut.shape[-1] != 1:
        raise MhoError("vector palettization (constexpr_lut_to_dense with vector_axis) is "
                       "not evaluated here")
    indices = np.asarray(indices).astype(np.int64)
    tables = lut[..., 0]  # [*groups, 2^n]
    groups = [np.arange(size) // (size // count)  # which table each row of each axis reads
              for size, count in zip(indices.shape, tables.shape[:-1], strict=True)]
    return tables[(*np.ix_(*groups), indices)]


@kernel("constexpr_affine_dequantize")
def _affine_dequantize(quantized_data, zero_point, scale, axis):
    """iOS 16 linear quantization: (q - zero_point) * scale, scale and zero point scalars or
    vectors along `axis`."""
    q = np.asarray(quantized_data)
    shape = [1] * q.ndim
    shape[int(axis)] = -1
    scale, zero_point = np.asarray(scale), np.asarray(zero_point)
    if scale.ndim:
        scale = scale.reshape(shape)
    if zero_point.ndim:
        zero_point = zero_point.reshape(shape)
    return ((q.astype(np.float32) - zero_point.astype(np.float32)) * scale).astype(scale.dtype)


@kernel("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(data, scale, offset=None):
    """iOS 18 linear quantization: scale * (data - offset), scale and offset one per block
    (scale's shape divides data's on every axis)."""
    data, scale = np.asarray(data), np.asarray(scale)
    blocks = [size // count for size, count in zip(data.shape, scale.shape, strict=True)]
    out = data.astype(np.float32)
    if offset is not None:
        out = out - _repeat_blocks(np.asarray(offset).astype(np.float32), blocks)
    return (out * _repeat_blocks(scale.astype(np.float32), blocks)).astype(scale.dtype)


def _repeat_blocks(x: np.ndarray, blocks: list[int]) -> np.ndarray:
    for axis, block in enumerate(blocks):
        if block > 1:
            x = np.repeat(x, block, axis)
    return x


class MilProgram:
    """A loaded ML program: `run(feeds)` -> {output name: array}; `op_counts` its ops."""

    def __init__(self, program):
        # value inference warns on every scalar it is handed as a 0-d array
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        self.function = program.functions["main"]
        self.operations = list(self.function.operations)
        self._weights: dict[str, np.ndarray] = {}  # decompressed constexpr outputs

    @classmethod
    def load(cls, package: str | Path) -> "MilProgram":
        """From an .mlpackage (weights from its weight folder)."""
        from mho.exporter.coreml import import_coremltools

        ct = import_coremltools()
        from coremltools.converters.mil.frontend.milproto.load import load

        package = Path(package)
        spec = ct.utils.load_spec(str(package))
        if spec.WhichOneof("Type") != "mlProgram":
            raise MhoError(f"{package} is not an ML program (neural-network models are not "
                           "evaluated here)")
        weights = package / "Data" / "com.apple.CoreML" / "weights"
        return cls(load(spec, spec.specificationVersion, str(weights)))

    def op_counts(self) -> dict[str, int]:
        from mho.exporter.coreml import count_ops

        return count_ops(self.operations)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from coremltools.converters.mil.mil import types

        values: dict[str, np.ndarray] = {}
        for name, var in self.function.inputs.items():
            if name not in feeds:
                raise MhoError(f"the Core ML program needs input {name!r}")
            values[var.name] = np.asarray(feeds[name], dtype=types.nptype_from_builtin(var.dtype))
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            # overflow to inf in FP16 (e.g. an additive -1e9 attention mask) is what the
            # device computes too; numpy's warnings about it are noise here
            self._run_ops(values)
        return {var.name: values[var.name] for var in self.function.outputs}

    def _run_ops(self, values: dict[str, np.ndarray]) -> None:
        from coremltools.converters.mil.mil import types

        for op in self.operations:
            if op.op_type == "const":
                values[op.outputs[0].name] = op.outputs[0].val
                continue
            if op.op_type.startswith("constexpr_"):  # compressed weights: decompressed once
                name = op.outputs[0].name
                if name not in self._weights:
                    self._weights[name] = self._run_op(op, values)[0].astype(
                        types.nptype_from_builtin(op.outputs[0].dtype), copy=False)
                values[name] = self._weights[name]
                continue
            outputs = self._run_op(op, values)
            for var, value in zip(op.outputs, outputs, strict=True):
                values[var.name] = np.asarray(value).astype(
                    types.nptype_from_builtin(var.dtype), copy=False)

    @staticmethod
    def _run_op(op, values: dict[str, np.ndarray]) -> tuple:
        def value_of(var):
            return values[var.name] if var.name in values else var.val

        arguments = {name: tuple(value_of(v) for v in var) if isinstance(var, (list, tuple))
                     else value_of(var) for name, var in op.inputs.items()}
        if op.op_type in KERNELS:
            outputs = KERNELS[op.op_type](**arguments)
        else:
            outputs = _value_inference(op, arguments)
        return outputs if isinstance(outputs, tuple) else (outputs,)


def _value_inference(op, arguments: dict) -> np.ndarray | tuple:
    """coremltools' reference implementation of `op`, with its inputs' values (and their
    concrete shapes, where the program has symbols) swapped in."""
    from coremltools.converters.mil.mil import types

    saved = []
    try:
        for name, var in op.inputs.items():
            for v, value in (zip(var, arguments[name], strict=True)
                             if isinstance(var, (list, tuple)) else [(var, arguments[name])]):
                saved.append((v, v._sym_type, v._sym_val))
                if types.is_tensor(v.sym_type):
                    v._sym_type = types.tensor(v.dtype, np.shape(value))
                holder = v._sym_type()
                holder.val = value
                v._sym_val = holder
        try:
            result = op.value_inference()
        except NotImplementedError:
            raise MhoError(f"no numpy evaluation for Core ML op {op.op_type!r}") from None
    finally:
        for v, sym_type, sym_val in reversed(saved):
            v._sym_type, v._sym_val = sym_type, sym_val
    if result is None:
        raise MhoError(f"Core ML op {op.op_type!r} ({op.name}) gave no value")
    return result
