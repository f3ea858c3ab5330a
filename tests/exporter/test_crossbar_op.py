"""ai.mho.memristor::CrossbarLinear and CrossbarConv: the function bodies (onnxruntime), the
numpy OpRuns (ONNX reference evaluator) and the torch simulator agree on the same chip."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from torch import nn

from mho.exporter.modules import ExportCrossbarLayer
from mho.exporter.ops.crossbar import (
    DOMAIN,
    NOISY,
    crossbar_functions,
    crossbar_tensors,
    node_overload,
    reference_ops,
)
from mho.models.quant import QuantConfig, calibrate, enable_quantization
from mho.simulator import CrossbarConfig, CrossbarLinear, DeviceConfig
from mho.simulator.layers import crossbar_twin


def single_op_model(core: CrossbarLinear, leading=("N",)) -> onnx.ModelProto:
    """A model holding one CrossbarLinear node for `core`'s chip: X [..., I] -> Y [..., O]."""
    tensors, attributes = crossbar_tensors(core)
    node = helper.make_node("CrossbarLinear", ["X", *tensors], ["Y"], domain=DOMAIN,
                            **attributes)
    if "noise_levels" in tensors:
        node.overload = NOISY
    graph = helper.make_graph(
        [node], "crossbar",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [*leading, core.in_features])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [*leading, core.out_features])],
        [numpy_helper.from_array(v, k) for k, v in tensors.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)],
        functions=crossbar_functions(), ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def run_all(core: CrossbarLinear, x: torch.Tensor):
    model = single_op_model(core, leading=["B", "T"][: x.dim() - 1])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y_ort = session.run(None, {"X": x.numpy()})[0]
    y_ref = ReferenceEvaluator(model, new_ops=reference_ops()).run(None, {"X": x.numpy()})[0]
    with torch.no_grad():
        y_torch = core(x).numpy()
    return y_torch, y_ort, y_ref


@pytest.mark.parametrize(
    "weight_bits, in_features, out_features, tile, adc",
    [(8, 53, 37, (16, 8), (4, 4)), (4, 40, 19, (32, 32), (3, 5)), (8, 130, 3, (128, 128), (8, 8)),
     (2, 5, 9, (2, 4), (2, 6)), (6, 64, 64, (32, 16), (1, 7))],
)
def test_body_and_reference_match_the_simulator_without_noise(
    weight_bits, in_features, out_features, tile, adc
):
    generator = torch.Generator().manual_seed(in_features)
    limit = 2 ** (weight_bits - 1) - 1
    weight = torch.randint(-limit, limit + 1, (out_features, in_features), generator=generator)
    config = CrossbarConfig(tile_rows=tile[0], tile_cols=tile[1], noise="off",
                            adc_precision_bits=adc[0], adc_range_bits=adc[1])
    core = CrossbarLinear.from_integer(weight, weight_bits, 0.02, 0.03, config=config, seed=1)
    x = torch.randn(3, 11, in_features, generator=generator) * 2
    y_torch, y_ort, y_ref = run_all(core, x)
    assert y_ort.shape == y_ref.shape == y_torch.shape == (3, 11, out_features)
    # reads near a rounding boundary are float64 in all three (products of float32 values are
    # exact there): every ADC code and every output agrees, bit for bit
    for other in (y_ort, y_ref):
        np.testing.assert_array_equal(other, y_torch)


def test_reads_at_rounding_ties_agree_because_they_are_float64():
    """Full 128-row tiles on the measured device: some float32 reads land so close to a
    rounding boundary that the summation order decides the code. The simulator recomputes
    those in float64, like the body and the OpRun, so all three agree bit for bit; without
    the recompute (a mutation) they must not."""
    generator = torch.Generator().manual_seed(512)
    weight = torch.randint(-127, 128, (256, 512), generator=generator)
    config = CrossbarConfig(noise="off")
    core = CrossbarLinear.from_integer(weight, 8, 0.02, 0.03, config=config, seed=1)
    x = torch.randn(3, 200, 512, generator=generator) * 2
    y_torch, y_ort, y_ref = run_all(core, x)
    for other in (y_ort, y_ref):
        np.testing.assert_array_equal(other, y_torch)
    core._tie_gamma = 0.0  # round the float32 reads as they come
    with torch.no_grad():
        y_float32 = core(x).numpy()
    assert (y_float32 != y_ort).sum() > 0


def test_body_is_exact_on_an_ideal_chip():
    weight = torch.randint(-127, 128, (20, 70), generator=torch.Generator().manual_seed(0))
    config = CrossbarConfig(tile_rows=32, tile_cols=8, noise="off", current_scale=None,
                            adc_precision_bits=8, adc_range_bits=8)
    core = CrossbarLinear.from_integer(weight, 8, 0.01, 0.05, config=config,
                                       device=DeviceConfig.ideal())
    x = torch.randn(9, 70)
    y_torch, y_ort, y_ref = run_all(core, x)
    levels = torch.round(torch.clamp(x / 0.05, -127, 127))
    exact = (levels.double() @ weight.double().T * 0.01 * 0.05).numpy()
    for y in (y_torch, y_ort, y_ref):
        np.testing.assert_allclose(y, exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode, device", [("legacy", None), ("physical", None),
                                          ("legacy", DeviceConfig.ideal())])
def test_noisy_overload_matches_the_simulator_in_distribution(mode, device):
    """The measured device ships one noise matrix (one sign sum for every pair), the ideal
    device's HRS cells conduct backwards: two."""
    weight = torch.randint(-3, 4, (12, 24), generator=torch.Generator().manual_seed(2))
    # a fine ADC (2^-12 units) keeps even physical noise many codes wide, so the outputs'
    # spread is the analog noise's and not the rounding's
    config = CrossbarConfig(tile_rows=16, tile_cols=8, noise=mode, adc_precision_bits=12,
                            adc_range_bits=4)
    core = CrossbarLinear.from_integer(weight, 3, 0.1, 0.02, config=config, seed=3,
                                       device=device)
    assert len(crossbar_tensors(core)[0]["noise_conductance"]) == (1 if device is None else 2)
    x = (torch.randn(1, 24) * 1.5).repeat(4000, 1)  # one input, 4000 independent reads
    outputs = run_all(core, x)
    means = [y.mean(0) for y in outputs]
    stds = [y.std(0) for y in outputs]
    assert stds[0].min() > 0
    for mean, std in zip(means[1:], stds[1:], strict=True):
        # sample means within 5 standard errors of their difference; spreads within 4
        # standard errors of the difference of two sample stds of 4000 Gaussian draws
        # (each sqrt(1 / (2 n)) relative, so sqrt(1 / n) = 1.6% for the difference)
        assert np.all(np.abs(mean - means[0]) <= 5 * stds[0] / np.sqrt(4000) * np.sqrt(2) + 1e-6)
        np.testing.assert_allclose(std, stds[0], rtol=4 / np.sqrt(4000))


def conv_layer_model(export_layer, rank: int) -> onnx.ModelProto:
    """A crossbar convolution's cores as CrossbarConv nodes, each on its own channels, plus
    the float bias: X [B, C, *S] -> Y [B, O, *S'] before the output quantizer."""
    nodes, initializers, outputs = [], [], []
    split = helper.make_tensor("split", TensorProto.INT64, [len(export_layer.channels)],
                               export_layer.channels)
    parts = [f"x{i}" for i in range(len(export_layer.cores))]
    nodes.append(helper.make_node("Split", ["X", "split"], parts, axis=1))
    initializers.append(split)
    for i, (core, part) in enumerate(zip(export_layer.cores, parts, strict=True)):
        chip = [f"{name}_{i}" for name in core.names]
        initializers += [numpy_helper.from_array(getattr(core, name).numpy(), f"{name}_{i}")
                         for name in core.names]
        node = helper.make_node("CrossbarConv", [part, *chip], [f"y{i}"], domain=DOMAIN,
                                **core.attributes)
        node.overload = node_overload(node)
        nodes.append(node)
        initializers.append(numpy_helper.from_array(core.bias.numpy(), f"bias_{i}"))
        nodes.append(helper.make_node("Add", [f"y{i}", f"bias_{i}"], [f"b{i}"]))
        outputs.append(f"b{i}")
    nodes.append(helper.make_node("Concat", outputs, ["Y"], axis=1))
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [*"BCHW"][:rank])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [*"BOHW"][:rank])], initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)],
        functions=crossbar_functions(), ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("conv, shape, layout", [
    (nn.Conv2d(2, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), (2, 2, 13, 9),
     None),
    (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (1, 4, 10, 7), None),  # two cores
    (nn.Conv1d(5, 7, 3, stride=2, padding=1), (2, 5, 17), None),
    (nn.Conv1d(6, 7, 1), (3, 6, 8), None),  # pointwise
    (nn.Conv1d(12, 12, 7, padding="same", groups=12), (2, 12, 23), "block-diagonal"),  # 2 cores
    (nn.Conv1d(5, 5, 3, dilation=2, stride=2, groups=5), (1, 5, 16), "block-diagonal"),
    (nn.Conv1d(12, 12, 7, padding="same", groups=12), (2, 12, 23), "per-channel"),
    (nn.Conv1d(5, 5, 3, dilation=2, stride=2, groups=5), (1, 5, 16), "per-channel"),
])
def test_conv_body_and_reference_match_the_simulator(conv, shape, layout):
    torch.manual_seed(shape[1])
    x = torch.randn(*shape)
    layer = enable_quantization(nn.Sequential(conv), QuantConfig(weight_bits=6))
    calibrate(layer, [(x,)])
    config = CrossbarConfig(tile_rows=16, tile_cols=8, noise="off", adc_precision_bits=4,
                            adc_range_bits=6)
    twin = crossbar_twin(layer[0].eval(), config=config, seed=2,
                         depthwise=layout or "per-channel")
    export_layer = ExportCrossbarLayer(twin, "conv")
    twin.output_quantizer = nn.Identity()  # compare what the nodes compute: reads + bias
    with torch.no_grad():
        y_torch = twin(x).numpy()
    model = conv_layer_model(export_layer, x.dim())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y_ort = session.run(None, {"X": x.numpy()})[0]
    y_ref = ReferenceEvaluator(model, new_ops=reference_ops()).run(None, {"X": x.numpy()})[0]
    code = max(c.weight_scale * c.input_scale for c in twin.cores) * 128 / 2**4 * 2**4
    for other in (y_ort, y_ref):
        np.testing.assert_array_equal(other, y_torch)  # float64 reads: the same codes
    assert np.abs(y_torch).max() > 10 * code  # the layer's outputs are many codes wide


def per_channel_setup(noise: str, tile=(4, 8), adc=(4, 6)):
    """A per-channel depthwise twin on the measured device (taps over two row tiles), its
    CrossbarConv model and an input."""
    torch.manual_seed(7)
    conv = nn.Conv1d(12, 12, 7, padding="same", dilation=2, groups=12)
    x = torch.randn(2, 12, 23) * 1.5
    layer = enable_quantization(nn.Sequential(conv), QuantConfig(weight_bits=6))
    calibrate(layer, [(x,)])
    config = CrossbarConfig(tile_rows=tile[0], tile_cols=tile[1], noise=noise,
                            adc_precision_bits=adc[0], adc_range_bits=adc[1])
    twin = crossbar_twin(layer[0].eval(), config=config, seed=2)
    export_layer = ExportCrossbarLayer(twin, "conv")
    twin.output_quantizer = nn.Identity()
    return twin, conv_layer_model(export_layer, 3), x


def run_model(model: onnx.ModelProto, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y_ort = session.run(None, {"X": x.numpy()})[0]
    y_ref = ReferenceEvaluator(model, new_ops=reference_ops()).run(None, {"X": x.numpy()})[0]
    return y_ort, y_ref


def test_per_channel_conv_body_and_reference_equal_the_simulator():
    """Noise off on the measured device: all three read in float64, where the products are
    exact, so every ADC code and every output agrees bit for bit (no tie can flip)."""
    twin, model, x = per_channel_setup("off")
    (node,) = [n for n in model.graph.node if n.op_type == "CrossbarConv"]
    assert node.overload == "per-channel"
    with torch.no_grad():
        y_torch = twin(x).numpy()
    code = twin.cores[0].output_factor
    assert np.abs(y_torch).max() > 50 * code  # many ADC codes wide
    for other in run_model(model, x):
        np.testing.assert_array_equal(other, y_torch)


@pytest.mark.parametrize("mutation", ["dense overload", "one cell"])
def test_the_per_channel_comparison_catches_a_mutation(mutation):
    """The three-way comparison is not vacuous: ignoring the layout (the im2col body reading
    the [C, K] chip as a matrix) or changing one cell's conductance must break it."""
    twin, model, x = per_channel_setup("off")
    (node,) = [n for n in model.graph.node if n.op_type == "CrossbarConv"]
    if mutation == "dense overload":
        node.overload = ""
        del node.attribute[[a.name for a in node.attribute].index("depthwise")]
    else:
        (tensor,) = [t for t in model.graph.initializer if t.name == node.input[2]]
        conductance = numpy_helper.to_array(tensor).copy()  # [P, K_pad, C_pad]
        conductance[0, 3, 5] = -conductance[0, 3, 5] or 1.0  # MSB plane, tap 3, channel 5
        tensor.CopyFrom(numpy_helper.from_array(conductance, tensor.name))
    with torch.no_grad():
        y_torch = twin(x).numpy()
    if mutation == "one cell":
        mutated = run_model(model, x)
    else:  # the numpy reference refuses the [C, K] chip as a matrix (a shape error)
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        mutated = session.run(None, {"X": x.numpy()})
    for other in mutated:
        assert other.shape == y_torch.shape and not np.array_equal(other, y_torch)


@pytest.mark.parametrize("mode", ["legacy", "physical"])
def test_per_channel_noisy_overload_matches_the_simulator_in_distribution(mode):
    torch.manual_seed(3)
    conv = nn.Conv1d(6, 6, 5, groups=6)
    x = torch.randn(1, 6, 5) * 1.5
    layer = enable_quantization(nn.Sequential(conv), QuantConfig(weight_bits=3))
    calibrate(layer, [(x,)])
    config = CrossbarConfig(tile_rows=4, tile_cols=8, noise=mode, adc_precision_bits=12,
                            adc_range_bits=4)
    twin = crossbar_twin(layer[0].eval(), config=config, seed=3)
    model = conv_layer_model(ExportCrossbarLayer(twin, "conv"), 3)
    (node,) = [n for n in model.graph.node if n.op_type == "CrossbarConv"]
    assert node.overload == "per-channel-noisy"
    twin.output_quantizer = nn.Identity()
    draws = 4000
    x = x.repeat(draws, 1, 1)  # one window per channel, 4000 independent reads
    with torch.no_grad():
        y_torch = twin(x).numpy()[..., 0]
    outputs = [y_torch, *(y[..., 0] for y in run_model(model, x))]
    means, stds = [y.mean(0) for y in outputs], [y.std(0) for y in outputs]
    assert stds[0].min() > 0
    for mean, std in zip(means[1:], stds[1:], strict=True):
        # sample means within 5 standard errors of the difference; spreads within 4 standard
        # errors of the difference of two sample stds (sqrt(1 / draws) relative)
        assert np.all(np.abs(mean - means[0]) <= 5 * stds[0] / np.sqrt(draws) * np.sqrt(2))
        np.testing.assert_allclose(std, stds[0], rtol=4 / np.sqrt(draws))
