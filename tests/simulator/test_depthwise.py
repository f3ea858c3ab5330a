"""The two depthwise layouts: per-channel (each channel's K taps on its own column, read from
its own K cells) is the integer depthwise conv on an ideal chip, its read-noise variance is
the sum of its cells' variances, and on the measured device it is closer to the exact conv
than block-diagonal (whose columns also sum the other channels' zero pairs)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from mho.errors import ConfigError, MhoError
from mho.models.quant import QuantConfig, calibrate, enable_quantization
from mho.simulator import CrossbarConfig, DeviceConfig
from mho.simulator.config import LayerRule, SimulatorConfig, parse_layer_rule, with_cli_overrides
from mho.simulator.crossbar import dac_levels
from mho.simulator.layers import (
    CrossbarDepthwiseConv1d,
    CrossbarPerChannelConv1d,
    crossbar_twin,
)
from mho.simulator.mapping import chip_config, load_chip, map_to_crossbars, save_chip
from mho.simulator.naive import naive_column_variance
from tests.conftest import TILE, run, tiny_qat_model


def qat_depthwise(channels, kernel, weight_bits=8, seed=0, **conv
                  ) -> tuple[nn.Module, torch.Tensor]:
    """A calibrated QAT depthwise Conv1d (no bias) and an input batch [3, C, 29]."""
    torch.manual_seed(seed)
    module = nn.Conv1d(channels, channels, kernel, groups=channels, bias=False, **conv)
    x = torch.randn(3, channels, 29)
    x[1, :, 20:] = 0  # a shorter utterance: zero padding frames
    model = enable_quantization(nn.Sequential(module), QuantConfig(weight_bits=weight_bits))
    calibrate(model, [(x,)])
    return model[0].eval(), x


def integer_conv(layer, x: torch.Tensor) -> torch.Tensor:
    """The depthwise conv of QAT's integer input levels and integer weights, in int64."""
    levels = dac_levels(x, layer.input_scale, 8)
    weight = layer.integer_weight().long()
    columns = nn.functional.pad(levels, [p for p in _pads(layer)])
    span = layer.dilation[0] * (layer.kernel_size[0] - 1) + 1
    windows = columns.unfold(2, span, layer.stride[0])[..., :: layer.dilation[0]]  # [B,C,T',K]
    return (windows * weight[None, :, None, 0, :]).sum(-1)


def _pads(layer) -> tuple[int, int]:
    if layer.padding == "same":
        total = layer.dilation[0] * (layer.kernel_size[0] - 1)
        return total // 2, total - total // 2
    return layer.padding[0], layer.padding[0]


def pre_quantizer(twin, x: torch.Tensor) -> torch.Tensor:
    """The twin's output before its output fake quantization."""
    twin.output_quantizer = nn.Identity()
    with torch.no_grad():
        return twin(x)


@pytest.mark.parametrize("channels, kernel, bits, conv, tile", [
    (12, 7, 8, dict(padding=3), (16, 8)),
    (10, 9, 4, dict(padding="same", dilation=2), (4, 4)),  # taps over three row tiles
    (5, 3, 6, dict(stride=2), (128, 128)),
])
def test_ideal_per_channel_chip_is_the_integer_depthwise_conv(channels, kernel, bits, conv, tile):
    layer, x = qat_depthwise(channels, kernel, bits, **conv)
    config = CrossbarConfig(tile_rows=tile[0], tile_cols=tile[1], noise="off",
                            current_scale=None, adc_precision_bits=8, adc_range_bits=8)
    twin = crossbar_twin(layer, config=config, device=DeviceConfig.ideal())
    assert isinstance(twin, CrossbarPerChannelConv1d) and len(twin.cores) == 1
    exact = integer_conv(layer, x)
    assert exact.abs().max() > 100  # many ADC codes wide
    # every ADC code is exact, the float64 shift-and-add too: dividing out the scales gives
    # the integers back, up to float32's rounding of the output
    got = pre_quantizer(twin, x).double() / (layer.weight_scale * layer.input_scale)
    assert got.shape == exact.shape
    assert torch.equal(got.round().long(), exact)
    assert (got - exact).abs().max() <= exact.abs().max() * 2**-23


@pytest.mark.parametrize("mode, kernel, tile", [
    ("legacy", 7, (16, 8)), ("physical", 8, (4, 8)), ("legacy", 8, (4, 8))])
def test_per_channel_variance_is_the_sum_of_its_own_cells_variances(mode, kernel, tile):
    """Measured device: column c's read-noise variance is the naive per-cell sum over the
    chip's column c driven by channel c's window (padding rows of a legacy read at 0 V add
    exactly nothing; with kernel 8 on 4-row tiles there are none)."""
    channels = 6
    layer, x = qat_depthwise(channels, kernel, 8, padding=kernel // 2)
    config = CrossbarConfig(tile_rows=tile[0], tile_cols=tile[1], noise=mode)
    twin = crossbar_twin(layer, config=config, seed=4)
    core = twin.cores[0]
    windows = nn.functional.pad(x, (kernel // 2, kernel // 2)).unfold(2, kernel, 1)
    levels = dac_levels(windows.transpose(1, 2).reshape(-1, channels, kernel), core.input_scale,
                        8)  # [N, C, K]
    fast = core.column_variance(levels)  # [T_in, N, P, C_pad]
    assert fast.max() > 0
    for c in range(channels):
        naive = naive_column_variance(core.chip, levels[:, c], core.config)[..., c]
        torch.testing.assert_close(fast[..., c], naive, rtol=1e-4, atol=1e-6 * float(naive.max()))


def test_per_channel_noisy_forward_has_the_predicted_spread():
    """4000 noisy reads of one input: each output's sample variance is the sum over tiles and
    planes of (plane weight x factor)^2 x column variance (a fine ADC: rounding negligible),
    within 5 standard errors (sqrt(2 / n) relative for a Gaussian)."""
    channels, kernel, draws = 4, 7, 4000
    layer, x = qat_depthwise(channels, kernel, 4)
    config = CrossbarConfig(tile_rows=4, tile_cols=8, noise="legacy", adc_precision_bits=12,
                            adc_range_bits=4)
    core = crossbar_twin(layer, config=config, seed=1).cores[0]
    window = (x[0, :, :kernel] * 2)[None].repeat(draws, 1, 1)  # [n, C, K]
    with torch.no_grad():
        y = core(window).double()  # [n, C]
    variance = core.column_variance(dac_levels(window[:1], core.input_scale, 8))[:, 0]
    weights = torch.tensor(core._plane_weights)[None, :, None]  # [1, P, 1]
    predicted = (variance * weights**2).sum((0, 1))[:channels] * (
        core.output_factor * 2**12) ** 2
    ratio = y.var(0) / predicted
    assert (ratio - 1).abs().max() < 5 * np.sqrt(2 / (draws - 1))


def test_block_diagonal_reads_more_noise_and_error_than_per_channel():
    """The same weights on the measured device: a block-diagonal column also sums the zero
    pairs of the other channels' rows, live inputs times HRS leakage, so its reads are further
    from the exact conv (noise off) and noisier (every channel's variance larger)."""
    channels, kernel = 16, 7
    layer, x = qat_depthwise(channels, kernel, 8, padding=3)
    exact = integer_conv(layer, x).double() * layer.weight_scale * layer.input_scale
    errors, variances = {}, {}
    for layout in ("per-channel", "block-diagonal"):
        config = CrossbarConfig(noise="off", adc_precision_bits=8, adc_range_bits=8)
        twin = crossbar_twin(layer, config=config, seed=5, depthwise=layout)
        errors[layout] = float((pre_quantizer(twin, x).double() - exact).pow(2).mean().sqrt())
        noisy = crossbar_twin(layer, config=CrossbarConfig(), seed=5, depthwise=layout)
        windows = nn.functional.pad(x, (3, 3)).unfold(2, kernel, 1).transpose(1, 2)
        levels = dac_levels(windows.reshape(-1, channels, kernel), layer.input_scale, 8)
        core = noisy.cores[0]
        if layout == "per-channel":
            variance = core.column_variance(levels)
        else:  # channel-major rows: [N, C K]
            variance = core.column_variance(levels.reshape(levels.shape[0], -1))
        variances[layout] = variance.sum((0, 2))[:, :channels]  # [N, C]: tiles and planes
    assert errors["block-diagonal"] > 2 * errors["per-channel"]
    live = levels.abs().sum(-1) > 0  # windows with some input: both read noise
    ratio = variances["block-diagonal"][live] / variances["per-channel"][live]
    assert (ratio > 1).all() and ratio.median() > 2


def test_layout_is_a_per_layer_setting_saved_with_the_chip(tmp_path):
    model = tiny_qat_model()
    rule = LayerRule("blocks.1.convolution.depthwise", depthwise="block-diagonal")
    config = SimulatorConfig(tile=TILE, layers=(rule,))
    simulated, report = map_to_crossbars(model, config, seed=2)
    mapped = dict(simulated.named_modules())
    assert type(mapped["blocks.0.convolution.depthwise"]) is CrossbarPerChannelConv1d
    assert type(mapped["blocks.1.convolution.depthwise"]) is CrossbarDepthwiseConv1d
    layouts = {m.name: m.layout for m in report.layers if m.kind == "depthwise_conv1d"}
    assert layouts == {"blocks.0.convolution.depthwise": "per-channel",
                       "blocks.1.convolution.depthwise": "block-diagonal"}
    save_chip(report, tmp_path / "chip.npz")
    assert chip_config(tmp_path / "chip.npz") == config
    loaded, loaded_report = load_chip(model, tmp_path / "chip.npz")
    assert [m.layout for m in loaded_report.layers] == [m.layout for m in report.layers]
    assert torch.equal(run(loaded), run(simulated))
    # reading the chip in another layout would need another chip
    with pytest.raises(MhoError, match="programmed in the per-channel depthwise layout"):
        load_chip(model, tmp_path / "chip.npz",
                  SimulatorConfig(tile=TILE, depthwise="block-diagonal"))


def test_old_chip_files_load_as_block_diagonal(tmp_path):
    """Format 1 files predate the setting: their depthwise chips are block-diagonal."""
    model = tiny_qat_model()
    config = SimulatorConfig(tile=TILE, depthwise="block-diagonal", noise="off")
    simulated, report = map_to_crossbars(model, config, seed=1)
    save_chip(report, tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["format"] = 1
    del meta["config"]["depthwise"]
    for layer in meta["layers"]:
        del layer["layout"]
    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps(meta)), **arrays)
    assert chip_config(tmp_path / "old.npz").depthwise == "block-diagonal"
    loaded, _ = load_chip(model, tmp_path / "old.npz")
    assert torch.equal(run(loaded), run(simulated))


def test_layout_settings_from_toml_and_cli():
    assert parse_layer_rule("*.depthwise=block-diagonal") == LayerRule(
        "*.depthwise", depthwise="block-diagonal")
    assert with_cli_overrides(SimulatorConfig(), depthwise="block-diagonal").depthwise == (
        "block-diagonal")
    config = SimulatorConfig.from_dict(
        {"depthwise": "block-diagonal", "layers": [{"pattern": "x", "depthwise": "per-channel"}]})
    assert SimulatorConfig.from_dict(config.to_dict()) == config
    assert SimulatorConfig().depthwise == "per-channel"
    with pytest.raises(ConfigError, match="depthwise layout must be one of"):
        SimulatorConfig(depthwise="diagonal")
    with pytest.raises(ConfigError, match="depthwise layout must be one of"):
        with_cli_overrides(SimulatorConfig(), depthwise="diagonal")
    with pytest.raises(ConfigError, match="PATTERN=LAYOUT"):
        parse_layer_rule("*.depthwise")
