"""QAT layers: the integer view the memristor mapping reads must be exactly what QAT computes."""

import pytest
import torch
from torch import nn

from mho.errors import ConfigError
from mho.models import ConformerCTC, QuantConfig, calibrate, conformer_config, quantized_layers
from mho.models.quant import (
    ActivationObserver,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    enable_quantization,
    fake_quantize,
    quantize,
)


def quantized_linear(weight_bits: int, in_features=48, out_features=24) -> QuantLinear:
    torch.manual_seed(0)
    model = enable_quantization(
        nn.Sequential(nn.Linear(in_features, out_features)), QuantConfig(weight_bits=weight_bits)
    )
    return model[0]


@pytest.mark.parametrize("weight_bits", [8, 4])
def test_integer_weight_times_scale_is_exactly_the_fake_quantized_weight(weight_bits):
    layer = quantized_linear(weight_bits)
    integers = layer.integer_weight()
    assert integers.dtype == torch.int32 and integers.shape == layer.weight.shape
    limit = 2 ** (weight_bits - 1) - 1
    assert integers.abs().max() == limit  # the largest weight sits on the top level
    assert torch.equal(integers.float() * layer.weight_scale, layer.fake_quantized_weight())
    assert layer.weight_scale == pytest.approx(float(layer.weight.detach().abs().max()) / limit)


def test_four_bit_weights_take_at_most_fifteen_values():
    layer = quantized_linear(4, in_features=256, out_features=256)
    values = layer.fake_quantized_weight().unique()
    assert len(values) <= 15
    levels = layer.integer_weight().unique()
    assert levels.min() >= -7 and levels.max() <= 7  # never -8: symmetric


def test_observer_output_lies_on_the_grid_and_absmax_tracks_batches():
    observer = ActivationObserver(bits=8, momentum=0.25).train()
    torch.manual_seed(0)
    x = (torch.rand(5000) * 2 - 1) * 3
    y = observer(x)
    assert float(observer.absmax) == float(x.abs().max())  # the first batch sets it
    levels = y / observer.scale
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert levels.abs().max() <= 127 + 1e-4
    assert len(levels.round().unique()) == 255  # uniform input fills every level

    first = float(observer.absmax)
    observer(torch.full((4,), 10.0))
    assert float(observer.absmax) == pytest.approx(0.75 * first + 0.25 * 10.0)

    observer.eval()
    frozen = float(observer.absmax)
    y = observer(torch.full((4,), 1000.0))
    assert float(observer.absmax) == frozen  # eval never moves the grid
    assert torch.allclose(y, torch.full((4,), frozen))  # clipped to the top level


def test_straight_through_gradient_passes_inside_range_and_stops_when_clipped():
    x = torch.tensor([-3.0, -0.37, 0.0, 0.52, 1.9, 2.5], requires_grad=True)
    scale = torch.tensor(2.0 / 127)  # range +-2
    fake_quantize(x, scale, 127).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_gradient_reaches_float_weights_through_a_quantized_layer():
    layer = quantized_linear(4).train()
    layer(torch.randn(8, 48)).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("weight_bits", [8, 4])
def test_linear_equals_integer_matmul_with_scales_and_float_bias(weight_bits):
    """The contract of the memristor mapping: y = Q_out((x_int @ w_int^T) s_x s_w + bias)."""
    layer = quantized_linear(weight_bits).eval()  # eval: the forward must not move the scales
    calibrate(layer, [(torch.randn(64, 48),)])
    x = torch.randn(16, 48) * 1.5  # partly beyond the calibrated range: input clipping too
    x_int = torch.clamp(torch.round(x / layer.input_scale), -127, 127)
    accumulated = x_int.double() @ layer.integer_weight().double().T  # exact integer sums
    y = accumulated * layer.input_scale * layer.weight_scale + layer.bias.double()
    y_int = torch.clamp(torch.round(y / layer.output_scale), -127, 127)
    with torch.no_grad():
        ours = layer(x)
    torch.testing.assert_close(ours.double(), y_int * layer.output_scale, atol=1e-5, rtol=0)


def test_enable_quantization_swaps_every_matrix_op_and_keeps_the_weights():
    model = ConformerCTC(conformer_config("tiny", pe="sinusoidal+linear"))
    float_linears = {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    model.enable_quantization(weight_bits=4)
    layers = quantized_layers(model)
    assert model.config.quant == QuantConfig(weight_bits=4)
    assert all(layers[name].weight is weight for name, weight in float_linears.items())
    unquantized = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d) and name not in layers
    ]
    assert unquantized == []
    kinds = {name: layer.kind for name, layer in layers.items()}
    assert kinds["frontend.conv1"] == kinds["frontend.conv2"] == "conv2d"
    assert kinds["blocks.0.convolution.depthwise"] == "depthwise_conv1d"
    assert kinds["blocks.1.attention.linear_pos"] == "linear"
    assert kinds["ctc_head"] == "linear"
    assert isinstance(layers["blocks.0.convolution.depthwise"], QuantConv1d)
    assert isinstance(layers["frontend.conv1"], QuantConv2d)
    # per model: 2 conv2d + frontend linear + ctc head; per block: 4 FF, 5 attention, 3 conv
    assert len(layers) == 4 + 2 * 12
    with pytest.raises(Exception, match="already quantized"):
        model.enable_quantization(weight_bits=8)


def test_qat_model_stays_close_to_float_and_reloads_from_its_config():
    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny", pe="learnable+linear")).eval()
    features, lengths = torch.randn(3, 60, 80), torch.tensor([60, 41, 9])
    with torch.no_grad():
        float_log_probs, _ = model(features, lengths)
    model.enable_quantization(weight_bits=8)
    calibrate(model, [(features, lengths)])
    assert not model.training
    with torch.no_grad():
        qat_log_probs, _ = model(features, lengths)
    relative_error = (qat_log_probs - float_log_probs).norm() / float_log_probs.norm()
    assert 0 < relative_error < 0.05

    rebuilt = ConformerCTC(model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(features, lengths)[0], qat_log_probs)


def test_activation_scales_are_exposed_per_layer_after_calibration():
    model = ConformerCTC(conformer_config("tiny")).enable_quantization(weight_bits=8)
    calibrate(model, [(torch.randn(2, 40, 80), torch.tensor([40, 33]))])
    for name, layer in quantized_layers(model).items():
        assert layer.input_scale > 1e-6 and layer.output_scale > 1e-6, name
        assert isinstance(layer.weight_scale, float)


def test_calibrate_takes_tensor_batches_and_refuses_other_things():
    torch.manual_seed(0)
    model = quantize(nn.Sequential(nn.Linear(4, 3)))
    calibrate(model, [torch.ones(2, 4) * 2.0])  # a plain tensor batch: model(batch)
    assert model[0].input_observer.scale == pytest.approx(2.0 / 127)
    with pytest.raises(ConfigError, match="batch 0 is a str"):
        calibrate(model, ["not a batch"])
    with pytest.raises(ConfigError, match="quantize it first"):
        calibrate(nn.Linear(4, 3), [torch.ones(1, 4)])
