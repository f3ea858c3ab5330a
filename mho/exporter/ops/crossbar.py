"""`ai.mho.memristor::CrossbarLinear`: one layer y = x W^T on programmed crossbars, as an ONNX op.

Inputs (the programmed chip travels as initializers; I_pad, O_pad: multiples of the tile):
    X                   [..., I]          float32 activations
    signal_levels       [L]               ADC units per unit of r+ - r- at each DAC level
                                          -(2^(b-1) - 1) .. 2^(b-1) - 1: c (P_H(V) - P_L(V)),
                                          the DAC and the cells' nonlinear I-V as a table
    conductance         [P, I_pad, O_pad] r+ - r- of every differential pair, bit plane 0 = MSB
    noise_levels        [2, L]            (overload "noisy" only) read-noise variance per unit
                                          of the two matrices below, at each DAC level
    noise_conductance   [K, P, I_pad, O_pad]  (noisy only) K = 2: each pair's sum of its cells'
                                          conductance signs, then its sum of sign x r (see
                                          simulator/crossbar.py); K = 1: only the second,
                                          every pair's sign sum being the attribute sign_sum
Output: Y [..., O] float32 = digital shift-and-add of the ADC codes times
weight_scale * input_scale * 2^(b-1) / 2^p; the float bias is a separate, standard Add.

Attributes: weight_bits, tile_rows, tile_cols, input_bits, adc_precision_bits,
adc_range_bits, out_features (ints); weight_scale, input_scale (floats); sign_sum (float:
with K = 1 above, s+ + s- of every pair, 2 for the measured device; ignored with K = 2);
noise (string: off / legacy / physical); seed (float, as ONNX's random ops take it).

`ai.mho.memristor::CrossbarConv` (CONV_DOC below) is the same op behind an im2col.

Three implementations of each, which tests compare with each other:
- `crossbar_functions()`: model-local FunctionProtos of standard opset-20 ops, overload ""
  (noise off) and "noisy"; onnxruntime inlines them and runs the whole layer as one batched
  MatMul (plus one for the noise variance), like the torch simulator.
- `CrossbarLinear` / `CrossbarConv` below: numpy `OpRun`s for the ONNX reference evaluator,
  written separately from the bodies: float64, an explicit loop over planes and tiles.
- mho.simulator.crossbar.CrossbarLinear: the torch simulator the file was exported from.

Written by hand: no library defines crossbar ops for ONNX.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.reference.op_run import OpRun

DOMAIN = "ai.mho.memristor"
DOMAIN_VERSION = 1
OPSET = 20  # of the default domain, inside the bodies
NOISY = "noisy"  # the overload that adds read noise
PER_CHANNEL, PER_CHANNEL_NOISY = "per-channel", "per-channel-noisy"  # depthwise per channel
INT_ATTRIBUTES = ("weight_bits", "tile_rows", "tile_cols", "input_bits", "adc_precision_bits",
                  "adc_range_bits", "out_features")
FLOAT_ATTRIBUTES = ("weight_scale", "input_scale", "sign_sum", "seed")
ATTRIBUTES = (*INT_ATTRIBUTES, *FLOAT_ATTRIBUTES, "noise")
CONV_ATTRIBUTES = ("in_channels", "kernel_shape", "strides", "dilations", "pads")
CONV_DOC = """`ai.mho.memristor::CrossbarConv`: a convolution on programmed crossbars: zero padding,
im2col (rows in channel-major order: channel c, then the kernel taps in row-major order),
then CrossbarLinear at every output position. X [B, C, *S] -> Y [B, O, *S'] (1-D or 2-D).
Inputs: CrossbarLinear's, for a chip of C prod(kernel_shape) rows. Attributes:
CrossbarLinear's plus in_channels (C), kernel_shape, strides, dilations, pads (ints, ONNX
Conv's meaning and order). A grouped or block-diagonal depthwise convolution is one node per
core, each on its own channels. With the string attribute depthwise = "per-channel"
(overloads "per-channel" and "per-channel-noisy"), the node is a depthwise Conv1d on a chip
of its [C, K] tap matrix (conductance [P, K_pad, C_pad], out_features = in_channels = C):
column c is read from its own K cells only, driven by channel c's window; reads in float64."""


class _Body:
    """Appends nodes to a function body with generated output names."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []

    @property
    def outputs(self) -> set[str]:
        return {output for node in self.nodes for output in node.output}

    def __call__(self, op: str, *inputs: str, **attributes) -> str:
        name = f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), [name], **attributes))
        return name

    def attribute(self, name: str, kind: str) -> str:
        """A Constant holding the node attribute `name`: kind "int" or "float" (a scalar) or
        "ints" (a 1-D int64 tensor); one Constant per attribute, however often it is asked."""
        if f"attr_{name}" in self.outputs:
            return f"attr_{name}"
        node = helper.make_node("Constant", [], [f"attr_{name}"])
        types = {"int": onnx.AttributeProto.INT, "float": onnx.AttributeProto.FLOAT,
                 "ints": onnx.AttributeProto.INTS}
        reference = onnx.AttributeProto(name=f"value_{kind}", ref_attr_name=name,
                                        type=types[kind])
        node.attribute.append(reference)
        self.nodes.append(node)
        return node.output[0]

    def const(self, value, dtype=np.int64) -> str:
        return self("Constant", value=helper.make_tensor(
            f"c{len(self.nodes)}", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
            np.shape(value), np.asarray(value, dtype).flatten().tolist()))


def _chip_inputs(noisy: bool) -> list[str]:
    return ["signal_levels", "conductance", *(["noise_levels", "noise_conductance"] * noisy)]


def _function(op: str, body: _Body, noisy: bool, attributes, doc: str) -> onnx.FunctionProto:
    """`body` (inputs X and the chip's, output Y) as op's FunctionProto, overload by noise."""
    function = helper.make_function(
        DOMAIN, op, ["X", *_chip_inputs(noisy)], ["Y"], body.nodes,
        [helper.make_opsetid("", OPSET)], attributes=list(attributes), doc_string=doc)
    if noisy:
        function.overload = NOISY
    return function


def _crossbar_linear(noisy: bool) -> onnx.FunctionProto:
    f = _Body()
    f.nodes.append(helper.make_node("Identity", [_linear_nodes(f, "X", noisy)], ["Y"]))
    return _function("CrossbarLinear", f, noisy, ATTRIBUTES, __doc__.split("\n\n")[0])


def _linear_nodes(f: _Body, x: str, noisy: bool) -> str:
    """Appends CrossbarLinear's computation on `x` [..., I] to `f` (the chip inputs and
    attributes by their names); returns the output's name, [..., O]. (Written inline rather
    than called as a nested function: onnxruntime's inliner drops a nested call's overload.)"""
    one, two = f.const(1), f.const(2)
    zero_i, minus_one = f.const([0]), f.const([-1])
    # scalars from attributes (onnxruntime folds all of these into constants)
    input_bits = f.attribute("input_bits", "int")
    full_scale = f("Pow", two, f("Sub", input_bits, one))  # 2^(b-1) DAC steps to full scale
    limit_int = f("Sub", full_scale, one)  # 2^(b-1) - 1: largest DAC level
    limit = f("Cast", limit_int, to=TensorProto.FLOAT)
    input_scale = f.attribute("input_scale", "float")
    precision = f("Cast", f.attribute("adc_precision_bits", "int"), to=TensorProto.FLOAT)
    range_bits = f("Cast", f.attribute("adc_range_bits", "int"), to=TensorProto.FLOAT)
    two_f = f.const(2.0, np.float32)
    adc_step = f("Pow", two_f, precision)  # ADC codes per LRS unit: 2^p
    adc_limit = f("Pow", two_f, f("Sub", f("Add", precision, range_bits), f.const(1.0, np.float32)))
    tile_rows = f("Reshape", f.attribute("tile_rows", "int"), f.const([1]))
    out_features = f("Reshape", f.attribute("out_features", "int"), f.const([1]))

    # DAC: levels on the activation grid (QAT's ops: divide, clip, round half to even)
    levels = f("Round", f("Clip", f("Div", x, input_scale), f("Neg", limit), limit))
    x_shape = f("Shape", x)
    in_features = f("Shape", x, start=-1)  # [1]
    index = f("Reshape", f("Cast", f("Add", levels, limit), to=TensorProto.INT64),
              f("Concat", minus_one, in_features, axis=0))  # [N, I] table index, level + limit
    g_shape = f("Shape", "conductance")  # [P, I_pad, O_pad]
    planes = f("Slice", g_shape, zero_i, f.const([1]))
    in_padded = f("Slice", g_shape, f.const([1]), f.const([2]))
    out_padded = f("Slice", g_shape, f.const([2]), f.const([3]))
    tiles_in = f("Div", in_padded, tile_rows)
    # padding rows get level 0 (0 V): index = limit
    pads = f("Concat", zero_i, zero_i, zero_i, f("Sub", in_padded, in_features), axis=0)
    index = f("Pad", index, pads, limit_int)  # [N, I_pad]
    index = f("Transpose", f("Reshape", index, f("Concat", minus_one, tiles_in, tile_rows, axis=0)),
              perm=[1, 0, 2])  # [T_in, N, R]

    def tiled(matrix: str, stacked: str | None = None) -> str:
        """[P, I_pad, O_pad] -> [T_in, R, P * O_pad], or K stacked [K, P, I_pad, O_pad] ->
        [T_in, K R, P * O_pad]: one matmul operand per input tile (constants: folded at load).
        stacked: the name of [K] when the matrix is a stack."""
        prefix = [stacked] if stacked else []
        split = f("Reshape", matrix, f("Concat", *prefix, planes, tiles_in, tile_rows,
                                       out_padded, axis=0))  # [(K,) P, T_in, R, O_pad]
        moved = f("Transpose", split, perm=[2, 0, 3, 1, 4] if stacked else [1, 2, 0, 3])
        rows = f("Mul", stacked, tile_rows) if stacked else tile_rows
        return f("Reshape", moved, f("Concat", tiles_in, rows, f("Mul", planes, out_padded),
                                     axis=0))

    # the ADC's gain 2^p is folded into the (constant) matrices: reads come out in ADC codes
    step_squared = f("Mul", adc_step, adc_step)
    signal, matrix = f("Gather", "signal_levels", index), f("Mul", tiled("conductance"), adc_step)
    # without noise the reads are float64: products of float32 values are exact there, so a
    # read near a rounding boundary rounds as in the torch simulator and the numpy OpRun (a
    # float32 sum's rounding depends on its order); with noise, codes are random anyway
    dtype = TensorProto.FLOAT if noisy else TensorProto.DOUBLE
    if not noisy:
        signal, matrix = f("Cast", signal, to=dtype), f("Cast", matrix, to=dtype)
    current = f("MatMul", signal, matrix)  # [T_in, N, P * O_pad]
    if noisy:
        low = f("Gather", f("Gather", "noise_levels", f.const(0)), index)  # [T_in, N, R]
        slope = f("Gather", f("Gather", "noise_levels", f.const(1)), index)
        # [T_in, N, K R] @ [T_in, K R, P * O_pad]: the signs' rows (K = 2), the signed r's;
        # with K = 1 the signs' part is sign_sum x the row sum of `low`, the same for every
        # column
        matrices = f("Slice", f("Shape", "noise_conductance"), zero_i, f.const([1]))  # [K]
        transform = f("Slice", f("Concat", low, slope, axis=-1),
                      f("Neg", f("Mul", matrices, tile_rows)), f.const([2**62]), minus_one)
        rows = f("Mul", f("ReduceSum", low, minus_one), f.attribute("sign_sum", "float"))
        variance = f("Add", f("MatMul", transform,
                              f("Mul", tiled("noise_conductance", matrices), step_squared)),
                     f("Mul", rows, step_squared))  # [T_in, N, P * O_pad]
        deviation = f("Sqrt", f("Relu", variance))
        noise = helper.make_node("RandomNormalLike", [deviation], ["draw"], dtype=TensorProto.FLOAT)
        noise.attribute.append(onnx.AttributeProto(
            name="seed", ref_attr_name="seed", type=onnx.AttributeProto.FLOAT))
        f.nodes.append(noise)
        current = f("Add", current, f("Mul", deviation, "draw"))
    # ADC per column; codes are integers, so the sums below are exact
    adc_limit = f("Cast", adc_limit, to=dtype)
    codes = f("Clip", f("Round", current), f("Neg", adc_limit), adc_limit)
    codes = f("Reshape", codes, f("Concat", tiles_in, minus_one, planes, out_padded,
                                  axis=0))  # [T_in, N, P, O_pad]
    # shift-and-add: plane k (MSB first) weighs 2^(P-1-k); a [1, P] @ [P, O_pad] product per
    # row (one pass; a weighted ReduceSum over the planes is several times slower in ORT)
    shifts = f("Cast", f("Range", f("Sub", f("Squeeze", planes), one), f.const(-1), f.const(-1)),
               to=TensorProto.FLOAT)
    plane_weights = f("Cast", f("Unsqueeze", f("Pow", two_f, shifts), zero_i), to=dtype)  # [1, P]
    accumulated = f("ReduceSum", f("MatMul", plane_weights, codes), zero_i,
                    keepdims=0)  # sum of the tiles: [N, 1, O_pad]
    accumulated = f("Slice", accumulated, zero_i, out_features, minus_one)  # [N, 1, O]
    # the output factor in the reads' precision (float64: as the torch simulator's)
    factor = f("Div", f("Mul", f("Mul", f("Cast", f.attribute("weight_scale", "float"), to=dtype),
                                     f("Cast", input_scale, to=dtype)),
                        f("Cast", full_scale, to=dtype)), f("Cast", adc_step, to=dtype))
    y = f("Cast", f("Mul", accumulated, factor), to=TensorProto.FLOAT)
    out_shape = f("Concat", f("Slice", x_shape, zero_i, minus_one), out_features, axis=0)
    return f("Reshape", y, out_shape)


def _reference(name: str, kind: int) -> onnx.AttributeProto:
    """A body node's attribute `name` taken from the calling node's attribute of that name."""
    return onnx.AttributeProto(name=name, ref_attr_name=name, type=kind)


def _im2col(f: _Body) -> tuple[str, str, str, str, str]:
    """Appends the unfolding of X [B, C, *S] to `f`: (columns [B, C P, *S'], batch [1],
    spatial [rank] = S', channels [1], taps [1] = P = prod(kernel_shape))."""
    one_i = f.const([1])
    channels = f("Reshape", f.attribute("in_channels", "int"), one_i)  # [1]
    kernel_shape = f.attribute("kernel_shape", "ints")  # [rank]
    taps = f("ReduceProd", kernel_shape, keepdims=1)  # [1]: P = prod(kernel)
    # im2col as a grouped Conv whose kernel copies one tap per output channel: output channel
    # c P + j is tap j of channel c, the channel-major row order the chip was programmed in
    # (exact, and built from attributes only, so onnxruntime folds it at load)
    identity = f("EyeLike", f("ConstantOfShape", f("Concat", taps, taps, axis=0),
                              value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])))
    identity = f("Reshape", identity, f("Concat", taps, one_i, kernel_shape, axis=0))  # [P,1,*k]
    ones = f("ConstantOfShape", f("Shape", kernel_shape),
             value=helper.make_tensor("one_i", TensorProto.INT64, [1], [1]))
    unfold = f("Tile", identity, f("Concat", channels, one_i, ones, axis=0))  # [C P, 1, *k]
    conv = helper.make_node("Conv", ["X", unfold], ["columns"])
    conv.attribute.extend([  # Conv pads with zeros: DAC level 0, 0 V
        _reference("kernel_shape", onnx.AttributeProto.INTS),
        _reference("pads", onnx.AttributeProto.INTS),
        _reference("strides", onnx.AttributeProto.INTS),
        _reference("dilations", onnx.AttributeProto.INTS),
        onnx.AttributeProto(name="group", ref_attr_name="in_channels",
                            type=onnx.AttributeProto.INT),
    ])
    f.nodes.append(conv)  # [B, C P, *S']
    batch = f("Shape", "columns", end=1)
    spatial = f("Shape", "columns", start=2)  # [rank]: S'
    return "columns", batch, spatial, channels, taps


def _crossbar_conv(noisy: bool) -> onnx.FunctionProto:
    f = _Body()
    one_i, minus_one = f.const([1]), f.const([-1])
    columns, batch, spatial, channels, taps = _im2col(f)
    rows = f("Transpose", f("Reshape", columns, f("Concat", batch, f("Mul", channels, taps),
                                                  minus_one, axis=0)),
             perm=[0, 2, 1])  # [B, L, C P]
    read = _linear_nodes(f, rows, noisy)  # [B, L, O]
    out_features = f("Reshape", f.attribute("out_features", "int"), one_i)
    f.nodes.append(helper.make_node("Reshape", [
        f("Transpose", read, perm=[0, 2, 1]),
        f("Concat", batch, out_features, spatial, axis=0)], ["Y"]))  # [B, O, *S']
    return _function("CrossbarConv", f, noisy, [*ATTRIBUTES, *CONV_ATTRIBUTES], CONV_DOC)


def _crossbar_per_channel(noisy: bool) -> onnx.FunctionProto:
    """CrossbarConv's per-channel depthwise overloads: X [B, C, T] -> Y [B, C, T'] on a chip
    of the [C, K] tap matrix (conductance [P, K_pad, C_pad]), column c read from its own K
    cells driven by channel c's window. The reads are float64 (products of float32 values
    are exact there), so rounding them to ADC codes does not depend on summation order."""
    f = _Body()
    zero_i, one_i, minus_one = f.const([0]), f.const([1]), f.const([-1])
    columns, batch, _, channels, taps = _im2col(f)  # [B, C K, T'], K = taps
    double = TensorProto.DOUBLE
    one = f.const(1)
    input_bits = f.attribute("input_bits", "int")
    full_scale = f("Pow", f.const(2), f("Sub", input_bits, one))  # 2^(b-1)
    limit_int = f("Sub", full_scale, one)
    limit = f("Cast", limit_int, to=TensorProto.FLOAT)
    input_scale = f.attribute("input_scale", "float")
    precision = f("Cast", f.attribute("adc_precision_bits", "int"), to=double)
    range_bits = f("Cast", f.attribute("adc_range_bits", "int"), to=double)
    two_d = f.const(2.0, np.float64)
    adc_step = f("Pow", two_d, precision)  # 2^p codes per LRS unit
    adc_limit = f("Pow", two_d, f("Sub", f("Add", precision, range_bits),
                                   f.const(1.0, np.float64)))
    tile_rows = f("Reshape", f.attribute("tile_rows", "int"), one_i)  # [1]

    # DAC levels of every window, as table indices [B, T', C, K]
    levels = f("Round", f("Clip", f("Div", columns, input_scale), f("Neg", limit), limit))
    index = f("Cast", f("Add", levels, limit), to=TensorProto.INT64)  # [B, C K, T']
    index = f("Transpose", f("Reshape", index, f("Concat", batch, channels, taps, minus_one,
                                                 axis=0)), perm=[0, 3, 1, 2])
    g_shape = f("Shape", "conductance")  # [P, K_pad, C_pad]
    planes = f("Slice", g_shape, zero_i, one_i)
    k_padded = f("Slice", g_shape, one_i, f.const([2]))
    tiles_in = f("Div", k_padded, tile_rows)
    # taps past K (row padding of the chip) are not read: zero drive, zero variance
    pads = f("Concat", zero_i, zero_i, zero_i, zero_i, zero_i, zero_i, zero_i,
             f("Sub", k_padded, taps), axis=0)
    by_tile = f("Concat", batch, minus_one, channels, tiles_in, one_i, tile_rows, axis=0)

    def per_row(table: str, scale: str) -> str:
        """A [L] table at every window's level, in float64 times `scale`, padded to K_pad:
        [B, T', C, T_in, 1, R]."""
        values = f("Mul", f("Cast", f("Gather", table, index), to=double), scale)
        return f("Reshape", f("Pad", values, pads), by_tile)

    def per_channel(matrix: str) -> str:
        """[P, K_pad, C_pad] -> [C, T_in, R, P] float64 (the first C columns)."""
        kept = f("Slice", f("Cast", matrix, to=double), zero_i, channels, f.const([2]))
        split = f("Reshape", kept, f("Concat", planes, tiles_in, tile_rows, channels, axis=0))
        return f("Transpose", split, perm=[3, 1, 2, 0])

    # [B, T', C, T_in, 1, R] @ [C, T_in, R, P]: every channel's reads, in ADC steps
    reads = f("MatMul", per_row("signal_levels", adc_step), per_channel("conductance"))
    if noisy:
        step_squared = f("Mul", adc_step, adc_step)
        low = per_row(f("Gather", "noise_levels", f.const(0)), step_squared)
        slope = per_row(f("Gather", "noise_levels", f.const(1)), step_squared)
        # each pair's sign sum: noise_conductance[0] when it holds two matrices, else the
        # attribute sign_sum everywhere (put in front, so index -2 picks the right one)
        same_signs = f("Expand", f("Cast", f.attribute("sign_sum", "float"), to=TensorProto.FLOAT),
                       f("Concat", one_i, g_shape, axis=0))
        stacked = f("Concat", same_signs, "noise_conductance", axis=0)  # [1 + K, P, K_pad, C_pad]
        signs = f("Gather", stacked, f.const(-2))
        signed = f("Gather", "noise_conductance", f.const(-1))
        variance = f("Add", f("MatMul", low, per_channel(signs)),
                     f("MatMul", slope, per_channel(signed)))  # [B, T', C, T_in, 1, P]
        deviation = f("Sqrt", f("Relu", variance))
        noise = helper.make_node("RandomNormalLike", [deviation], ["draw"], dtype=double)
        noise.attribute.append(onnx.AttributeProto(
            name="seed", ref_attr_name="seed", type=onnx.AttributeProto.FLOAT))
        f.nodes.append(noise)
        reads = f("Add", reads, f("Mul", deviation, "draw"))
    codes = f("Clip", f("Round", reads), f("Neg", adc_limit), adc_limit)
    shifts = f("Cast", f("Range", f("Sub", f("Squeeze", planes), one), f.const(-1), f.const(-1)),
               to=double)
    plane_weights = f("Unsqueeze", f("Pow", two_d, shifts), minus_one)  # [P, 1]
    total = f("ReduceSum", f("MatMul", codes, plane_weights), f.const([3, 4, 5]),
              keepdims=0)  # [B, T', C]: planes, then tiles, shifted and added
    factor = f("Div", f("Mul", f("Mul", f("Cast", f.attribute("weight_scale", "float"), to=double),
                                     f("Cast", input_scale, to=double)),
                        f("Cast", full_scale, to=double)), adc_step)
    y = f("Cast", f("Mul", total, factor), to=TensorProto.FLOAT)
    f.nodes.append(helper.make_node("Transpose", [y], ["Y"], perm=[0, 2, 1]))  # [B, C, T']
    function = _function("CrossbarConv", f, noisy, [*ATTRIBUTES, *CONV_ATTRIBUTES, "depthwise"],
                         CONV_DOC)
    function.overload = PER_CHANNEL_NOISY if noisy else PER_CHANNEL
    return function


def crossbar_functions() -> list[onnx.FunctionProto]:
    """The bodies to attach to a model that uses CrossbarLinear / CrossbarConv nodes (every
    overload of each)."""
    return [_crossbar_linear(noisy=False), _crossbar_linear(noisy=True),
            _crossbar_conv(noisy=False), _crossbar_conv(noisy=True),
            _crossbar_per_channel(noisy=False), _crossbar_per_channel(noisy=True)]


def node_overload(node: onnx.NodeProto) -> str:
    """The function overload a crossbar node calls: by its noise inputs and, for a
    CrossbarConv, its depthwise attribute."""
    noisy = len(node.input) == 5  # noise_levels and noise_conductance given
    attributes = {a.name: a for a in node.attribute}
    if "depthwise" in attributes and attributes["depthwise"].s.decode() == "per-channel":
        return PER_CHANNEL_NOISY if noisy else PER_CHANNEL
    return NOISY if noisy else ""


def crossbar_linear_numpy(x, signal_levels, conductance, noise_levels=None,
                          noise_conductance=None, *, rng: np.random.Generator | None = None,
                          tile_rows, input_bits, adc_precision_bits, adc_range_bits,
                          out_features, weight_scale, input_scale, sign_sum=None,
                          **_ignored) -> np.ndarray:
    """The op in numpy, from its ONNX inputs and attributes (float64, an explicit loop over
    bit planes and input tiles); `rng` draws the read noise when the noise inputs are given."""
    limit = 2 ** (input_bits - 1) - 1
    # the DAC's division in float32, like the activation quantizer it mirrors
    levels = np.round(np.clip(x / np.float32(input_scale), -limit, limit)).astype(np.int64)
    index = levels.reshape(-1, x.shape[-1]) + limit  # [N, I]
    planes, _, out_padded = conductance.shape
    step, adc_limit = 2.0**adc_precision_bits, 2.0 ** (adc_precision_bits + adc_range_bits - 1)
    drive = signal_levels.astype(np.float64)[index]  # [N, I]
    total = np.zeros((index.shape[0], out_padded))
    for plane in range(planes):
        for start in range(0, x.shape[-1], tile_rows):
            rows = slice(start, min(start + tile_rows, x.shape[-1]))
            read = drive[:, rows] @ conductance[plane, rows].astype(np.float64)
            if noise_conductance is not None:
                tables = noise_levels.astype(np.float64)[:, index[:, rows]]  # [2, N, rows]
                variance = tables[1] @ noise_conductance[-1, plane, rows].astype(np.float64)
                if len(noise_conductance) == 2:  # each pair's sign sum
                    variance += tables[0] @ noise_conductance[0, plane, rows].astype(np.float64)
                else:  # one sign sum for every pair
                    variance += sign_sum * tables[0].sum(axis=1, keepdims=True)
                read += np.sqrt(np.maximum(variance, 0)) * rng.standard_normal(read.shape)
            codes = np.clip(np.round(read * step), -adc_limit, adc_limit)
            total += codes * 2.0 ** (planes - 1 - plane)
    # float64, as the torch simulator's output factor (float32 attributes widened)
    factor = np.float64(weight_scale) * np.float64(input_scale) * 2 ** (input_bits - 1) / step
    y = total[:, :out_features] * factor
    return y.reshape(*x.shape[:-1], out_features).astype(np.float32)


class CrossbarLinear(OpRun):
    """numpy reference of the op for the ONNX reference evaluator; one noise stream per node,
    seeded by its `seed` attribute."""

    op_domain = DOMAIN

    def _run(self, x, signal_levels, conductance, noise_levels=None, noise_conductance=None,
             weight_bits=None, tile_rows=None, tile_cols=None, input_bits=None,
             adc_precision_bits=None, adc_range_bits=None, out_features=None, weight_scale=None,
             input_scale=None, sign_sum=None, seed=None, noise=None):
        if noise_conductance is not None and not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(int(seed))
        return (crossbar_linear_numpy(
            x, signal_levels, conductance, noise_levels, noise_conductance,
            rng=getattr(self, "_rng", None), tile_rows=tile_rows, input_bits=input_bits,
            adc_precision_bits=adc_precision_bits, adc_range_bits=adc_range_bits,
            out_features=out_features, weight_scale=weight_scale, input_scale=input_scale,
            sign_sum=sign_sum),)


def conv_windows(x: np.ndarray, kernel_shape, strides, dilations) -> np.ndarray:
    """The receptive fields of a convolution over an already padded x [B, C, *S] (1-D or
    2-D): a strided view [B, C, *S', *kernel], every stride-th position, every dilation-th
    tap. Shared by the numpy references (here and mho.runtime.mil_numpy's conv)."""
    rank = len(kernel_shape)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel_shape, dilations, strict=True)]
    windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=tuple(range(2, 2 + rank)))
    return windows[(slice(None), slice(None), *(slice(None, None, s) for s in strides),
                    *(slice(None, None, d) for d in dilations))]


def crossbar_conv_numpy(x, *chip, in_channels, kernel_shape, strides, dilations, pads,
                        **linear_attributes) -> np.ndarray:
    """CrossbarConv in numpy: [B, C, *S] -> [B, O, *S'] by strided windows (written apart
    from the body's identity-kernel Conv), then `crossbar_linear_numpy` on the rows."""
    rank = len(kernel_shape)
    if x.shape[1] != in_channels:
        raise ValueError(f"CrossbarConv expects {in_channels} channels, got {x.shape[1]}")
    before, after = pads[:rank], pads[rank:]
    x = np.pad(x, [(0, 0), (0, 0), *zip(before, after, strict=True)])
    windows = conv_windows(x, kernel_shape, strides, dilations)  # [B, C, *S', *k]
    batch, positions = x.shape[0], windows.shape[2:2 + rank]
    order = [0, *range(2, 2 + rank), 1, *range(2 + rank, 2 + 2 * rank)]  # [B, *S', C, *k]
    rows = windows.transpose(order).reshape(batch, -1, in_channels * int(np.prod(kernel_shape)))
    y = crossbar_linear_numpy(rows, *chip, **linear_attributes)  # [B, L, O]
    return y.transpose(0, 2, 1).reshape(batch, -1, *positions)


def crossbar_per_channel_numpy(x, signal_levels, conductance, noise_levels=None,
                               noise_conductance=None, *, rng: np.random.Generator | None = None,
                               in_channels, kernel_shape, strides, dilations, pads, tile_rows,
                               input_bits, adc_precision_bits, adc_range_bits, weight_scale,
                               input_scale, sign_sum=None, **_ignored) -> np.ndarray:
    """CrossbarConv with a per-channel depthwise chip, in numpy: X [B, C, T] -> Y [B, C, T'],
    channel c's window [K] times column c's first K cells, a loop over planes and row tiles
    (float64 throughout)."""
    (kernel,) = kernel_shape
    if x.shape[1] != in_channels:
        raise ValueError(f"CrossbarConv expects {in_channels} channels, got {x.shape[1]}")
    x = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[1])])
    windows = conv_windows(x, kernel_shape, strides, dilations)  # [B, C, T', K]
    limit = 2 ** (input_bits - 1) - 1
    levels = np.round(np.clip(windows / np.float32(input_scale), -limit, limit))
    index = levels.astype(np.int64) + limit  # [B, C, T', K]
    planes = conductance.shape[0]
    step, adc_limit = 2.0**adc_precision_bits, 2.0 ** (adc_precision_bits + adc_range_bits - 1)
    drive = signal_levels.astype(np.float64)[index] * step  # [B, C, T', K], in ADC steps
    g = conductance[:, :kernel, :in_channels].astype(np.float64)  # [P, K, C]
    if noise_conductance is not None:
        tables = noise_levels.astype(np.float64)[:, index] * step**2  # [2, B, C, T', K]
        signed = noise_conductance[-1, :, :kernel, :in_channels].astype(np.float64)
        if len(noise_conductance) == 2:
            signs = noise_conductance[0, :, :kernel, :in_channels].astype(np.float64)
        else:
            signs = np.full_like(signed, sign_sum)
    total = np.zeros(index.shape[:3])  # [B, C, T']
    for plane in range(planes):
        for start in range(0, kernel, tile_rows):
            taps = slice(start, min(start + tile_rows, kernel))
            read = np.einsum("bctk,kc->bct", drive[..., taps], g[plane, taps])
            if noise_conductance is not None:
                variance = (np.einsum("bctk,kc->bct", tables[0][..., taps], signs[plane, taps])
                            + np.einsum("bctk,kc->bct", tables[1][..., taps], signed[plane, taps]))
                read += np.sqrt(np.maximum(variance, 0)) * rng.standard_normal(read.shape)
            codes = np.clip(np.round(read), -adc_limit, adc_limit)
            total += codes * 2.0 ** (planes - 1 - plane)
    factor = (np.float64(np.float32(weight_scale)) * np.float64(np.float32(input_scale))
              * 2 ** (input_bits - 1) / step)
    return (total * factor).astype(np.float32)


class CrossbarConv(CrossbarLinear):
    """numpy reference of CrossbarConv for the ONNX reference evaluator."""

    def _run(self, x, signal_levels, conductance, noise_levels=None, noise_conductance=None,
             in_channels=None, kernel_shape=None, strides=None, dilations=None, pads=None,
             depthwise=None, **attributes):
        if noise_conductance is not None and not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(int(attributes["seed"]))
        if depthwise == "per-channel":
            return (crossbar_per_channel_numpy(
                x, signal_levels, conductance, noise_levels, noise_conductance,
                rng=getattr(self, "_rng", None), in_channels=in_channels,
                kernel_shape=kernel_shape, strides=strides, dilations=dilations, pads=pads,
                **attributes),)
        return (crossbar_conv_numpy(
            x, signal_levels, conductance, noise_levels, noise_conductance,
            rng=getattr(self, "_rng", None), in_channels=in_channels,
            kernel_shape=kernel_shape, strides=strides, dilations=dilations, pads=pads,
            **attributes),)


def reference_ops() -> list[type[OpRun]]:
    """OpRun classes to pass as `new_ops` to onnx.reference.ReferenceEvaluator: the custom
    op and the standard ops whose reference implementation fails on our files."""
    from mho.exporter.ops.reference_fixes import GatherElements

    return [CrossbarLinear, CrossbarConv, GatherElements]


def crossbar_tensors(core) -> tuple[dict[str, np.ndarray], dict[str, int | float | str]]:
    """The op's initializer inputs (after X, in order) and attributes for a torch simulator
    core (mho.simulator.crossbar.CrossbarLinear): the same chip, the same lookup tables."""
    chip, config = core.chip, core.config
    r_plus, r_minus = chip.r_plus.astype(np.float64), chip.r_minus.astype(np.float64)
    tensors = {
        "signal_levels": core.signal_table.numpy(),
        "conductance": (r_plus - r_minus).astype(np.float32),
    }
    if core.noise_table is not None:
        sign_plus, sign_minus = core._conductance_sign(r_plus), core._conductance_sign(r_minus)
        tensors["noise_levels"] = core.noise_table.numpy()
        matrices = (sign_plus * r_plus + sign_minus * r_minus,)
        if core.sign_sum is None:  # the signs differ from pair to pair: their matrix too
            matrices = (sign_plus + sign_minus, *matrices)
        tensors["noise_conductance"] = np.stack(matrices).astype(np.float32)
    attributes = {
        "weight_bits": chip.weight_bits,
        "tile_rows": config.tile_rows,
        "tile_cols": config.tile_cols,
        "input_bits": config.input_bits,
        "adc_precision_bits": config.adc_precision_bits,
        "adc_range_bits": config.adc_range_bits,
        "out_features": core.out_features,
        "weight_scale": core.weight_scale,
        "input_scale": core.input_scale,
        "sign_sum": core.sign_sum or 0.0,
        "noise": config.noise,
        # ONNX random ops take a float seed: keep it within float32's exact integers
        "seed": float(core._noise_seed % 2**24),
    }
    return tensors, attributes
