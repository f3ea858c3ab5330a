"""Crossbar twins of QAT convolutions and linears: exact on an ideal chip (output fake
quantization included), respecting padding / stride / dilation / groups, with the depthwise
kernel packed block-diagonally onto the fewest tiles."""

import pytest
import torch
from torch import nn

from mho.errors import ConfigError
from mho.models.quant import QuantConfig, calibrate, enable_quantization
from mho.simulator import CrossbarConfig, DeviceConfig
from mho.simulator.layers import (
    CrossbarConv1d,
    CrossbarConv2d,
    CrossbarDepthwiseConv1d,
    CrossbarQuantLinear,
    crossbar_twin,
)

IDEAL = DeviceConfig.ideal()


def ideal_config(**kwargs) -> CrossbarConfig:
    settings = dict(noise="off", current_scale=None, adc_precision_bits=8, adc_range_bits=8)
    return CrossbarConfig(**(settings | kwargs))


def qat(module: nn.Module, x: torch.Tensor, weight_bits: int = 8) -> nn.Module:
    """The QAT twin of `module`, calibrated on x, in eval mode."""
    model = enable_quantization(nn.Sequential(module), QuantConfig(weight_bits=weight_bits))
    calibrate(model, [(x,)])
    return model[0].eval()


def assert_matches_qat(layer, twin, x):
    """Same output grid points; a float-rounding difference right at a rounding boundary may
    flip one output by one step, which must stay rare."""
    with torch.no_grad():
        expected, got = layer(x), twin(x)
    assert got.shape == expected.shape
    step = layer.output_scale
    steps = ((got - expected).abs() / step).round()
    assert steps.max() <= 1
    assert (steps > 0).float().mean() < 1e-3
    return expected, got


@pytest.mark.parametrize(
    "channels, kernel, padding, stride, dilation, tile",
    [(12, 7, 3, 1, 1, (16, 8)), (5, 3, "same", 1, 2, (128, 128)), (9, 4, 0, 2, 1, (10, 4))],
)
def test_ideal_depthwise_conv_is_the_qat_conv(channels, kernel, padding, stride, dilation, tile):
    torch.manual_seed(0)
    conv = nn.Conv1d(
        channels, channels, kernel, padding=padding, stride=stride, dilation=dilation,
        groups=channels,
    )
    x = torch.randn(3, channels, 23)
    x[1, :, 15:] = 0  # a shorter utterance in the batch: zeroed padding frames
    layer = qat(conv, x, weight_bits=4)
    assert layer.kind == "depthwise_conv1d"
    twin = CrossbarDepthwiseConv1d.from_quant(
        layer, config=ideal_config(tile_rows=tile[0], tile_cols=tile[1]), device=IDEAL
    )
    assert_matches_qat(layer, twin, x)
    # one core per tile_cols channels, each exactly one column of tiles
    assert len(twin.cores) == -(-channels // tile[1])
    for core, chip in zip(twin.cores, twin.chips, strict=True):
        assert chip.tiles[1] == 1
        assert chip.tiles[0] == -(-core.out_features * kernel // tile[0])


def test_depthwise_packing_is_block_diagonal_channel_major():
    conv = nn.Conv1d(3, 3, 2, groups=3, bias=False)
    layer = qat(conv, torch.randn(1, 3, 5))
    (matrix,) = CrossbarDepthwiseConv1d.weight_matrices(layer, CrossbarConfig())
    taps = layer.integer_weight()[:, 0]  # [3, 2]
    expected = torch.zeros(3, 6, dtype=taps.dtype)
    for c in range(3):
        expected[c, 2 * c : 2 * c + 2] = taps[c]
    assert torch.equal(matrix, expected)


@pytest.mark.parametrize(
    "in_channels, out_channels, kernel, stride, padding, groups",
    [(1, 8, 3, 2, 1, 1), (4, 6, (3, 2), (2, 1), (1, 0), 2), (3, 5, 3, 1, "same", 1)],
)
def test_ideal_conv2d_is_the_qat_conv(in_channels, out_channels, kernel, stride, padding, groups):
    torch.manual_seed(1)
    conv = nn.Conv2d(
        in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups
    )
    x = torch.randn(2, in_channels, 13, 10)
    layer = qat(conv, x)
    twin = CrossbarConv2d.from_quant(layer, config=ideal_config(tile_rows=16), device=IDEAL)
    assert len(twin.cores) == groups
    assert_matches_qat(layer, twin, x)


def test_ideal_conv1d_and_linear_are_their_qat_layers():
    torch.manual_seed(2)
    x = torch.randn(2, 6, 17)
    conv = qat(nn.Conv1d(6, 4, 5, padding=2, stride=2), x)
    assert conv.kind == "conv1d"
    assert isinstance(crossbar_twin(conv, config=ideal_config(), device=IDEAL), CrossbarConv1d)
    assert_matches_qat(conv, crossbar_twin(conv, config=ideal_config(), device=IDEAL), x)
    h = torch.randn(4, 9, 40)
    linear = qat(nn.Linear(40, 30), h, weight_bits=4)
    twin = CrossbarQuantLinear.from_quant(linear, config=ideal_config(tile_rows=16), device=IDEAL)
    expected, got = assert_matches_qat(linear, twin, h)
    assert torch.equal(got, got.div(linear.output_scale).round().mul(linear.output_scale))


def test_uncalibrated_layers_and_wrong_kinds_are_config_errors():
    layer = enable_quantization(nn.Sequential(nn.Linear(4, 3)), QuantConfig())[0]
    with pytest.raises(ConfigError, match="calibrate"):
        CrossbarQuantLinear.from_quant(layer, device=IDEAL)
    with pytest.raises(ConfigError, match="maps depthwise_conv1d"):
        CrossbarDepthwiseConv1d.from_quant(layer, device=IDEAL)
