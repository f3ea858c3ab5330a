"""Whole-model mapping: an ideal chip reproduces the QAT model, one seed is one chip, rules pick
per-layer ADCs or keep layers digital, clipping is counted per layer, chips save and reload."""

import dataclasses

import pytest
import torch

from mho.errors import ConfigError, MhoError
from mho.models import ConformerCTC, conformer_config, quantized_layers
from mho.models.quant import QuantLinear
from mho.simulator import DeviceConfig
from mho.simulator.config import (
    LayerRule,
    SimulatorConfig,
    load_simulator_config,
    parse_adc,
    parse_layer_rule,
    with_cli_overrides,
)
from mho.simulator.layers import CrossbarLayer, CrossbarPerChannelConv1d
from mho.simulator.mapping import load_chip, map_to_crossbars, save_chip
from mho.simulator.stats import clip_fractions, clip_stats, reset_clip_stats
from tests.conftest import TILE, inputs, run, tiny_qat_model


@pytest.fixture(scope="module")
def model() -> ConformerCTC:
    return tiny_qat_model()


@pytest.fixture(scope="module")
def qat_log_probs(model) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs())[0]


def measured(**kwargs) -> SimulatorConfig:
    """The measured device with legacy noise at ADC (4, 4), the paper's baseline."""
    return SimulatorConfig(tile=TILE, **kwargs)


def test_ideal_chip_reproduces_the_qat_model(model, qat_log_probs):
    simulated, report = map_to_crossbars(model, SimulatorConfig.ideal(), seed=0)
    log_probs = run(simulated)
    # exact integer matmuls; only float rounding (then an output grid step at worst) differs
    torch.testing.assert_close(log_probs, qat_log_probs, rtol=0, atol=1e-5)
    names = set(quantized_layers(model))
    assert set(report.crossbar_layers) == names and not report.digital_layers
    mapped = dict(simulated.named_modules())
    assert all(isinstance(mapped[n], CrossbarLayer) for n in names)
    assert isinstance(mapped["blocks.0.convolution.depthwise"], CrossbarPerChannelConv1d)
    linears = [m for m in quantized_layers(model).values() if m.kind == "linear"]
    assert all(isinstance(m, QuantLinear) for m in linears)  # the QAT model is untouched


def test_measured_device_changes_outputs_a_little_and_one_seed_is_one_chip(
    model, qat_log_probs, tmp_path
):
    first, report = map_to_crossbars(model, measured(), seed=7)
    again, _ = map_to_crossbars(model, measured(), seed=7)
    other, _ = map_to_crossbars(model, measured(), seed=8)
    a, b, c = run(first), run(again), run(other)
    error = float((a - qat_log_probs).norm() / qat_log_probs.norm())
    print(f"relative L2 error of log-probs, measured device at ADC (4, 4): {error:.4f}")
    assert 1e-4 < error < 0.2
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # a saved chip reloads bit for bit: the same outputs as a fresh mapping with that seed
    save_chip(report, tmp_path / "chip.npz")
    reloaded, reloaded_report = load_chip(model, tmp_path / "chip.npz")
    assert torch.equal(run(reloaded), a)
    assert reloaded_report.config == report.config and reloaded_report.seed == 7
    chip = report.layers[0].chips[0]
    again_chip = reloaded_report.layers[0].chips[0]
    assert (chip.r_plus == again_chip.r_plus).all() and chip.device == again_chip.device


def test_a_chip_of_another_model_and_float_models_are_refused(model, tmp_path):
    _, report = map_to_crossbars(model, SimulatorConfig.ideal(), seed=0)
    save_chip(report, tmp_path / "chip.npz")
    with pytest.raises(MhoError, match="another model"):
        load_chip(tiny_qat_model(seed=5), tmp_path / "chip.npz")
    float_model = ConformerCTC(conformer_config("tiny"))
    with pytest.raises(MhoError, match="quantize it first"):
        map_to_crossbars(float_model, SimulatorConfig(), seed=0)


def test_digital_rules_keep_layers_exact(model, qat_log_probs):
    everything, report = map_to_crossbars(
        model, measured(layers=(LayerRule("*", digital=True),)), seed=0
    )
    assert torch.equal(run(everything), qat_log_probs) and not report.crossbar_layers
    config = measured(layers=(LayerRule("*.linear_pos", digital=True),))
    simulated, report = map_to_crossbars(model, config, seed=0)
    assert report.digital_layers == (
        "blocks.0.attention.linear_pos", "blocks.1.attention.linear_pos"
    )
    kept = simulated.get_submodule("blocks.1.attention.linear_pos")
    original = model.get_submodule("blocks.1.attention.linear_pos")
    x = torch.randn(9, 64)
    assert isinstance(kept, QuantLinear) and torch.equal(kept(x), original(x))
    # a layer's chip depends only on (seed, its name): the oracle leaves the others unchanged
    full, _ = map_to_crossbars(model, measured(), seed=0)
    name = "blocks.0.attention.query"
    for mine, theirs in zip(
        simulated.get_submodule(name).chips, full.get_submodule(name).chips, strict=True
    ):
        assert (mine.r_plus == theirs.r_plus).all()


def adc_of(simulated, name: str) -> tuple[int, int]:
    config = simulated.get_submodule(name).cores[0].config
    return config.adc_precision_bits, config.adc_range_bits


def test_later_rules_override_earlier_ones_on_the_matched_layers_only(model):
    config = SimulatorConfig.ideal(
        adc=(4, 4),
        layers=(
            LayerRule("blocks.*", adc=(3, 5)),
            LayerRule("blocks.1.*", adc=(2, 6)),
            LayerRule("*.linear_pos", adc=(1, 7), weight_bits=2),
        ),
    )
    simulated, report = map_to_crossbars(model, config, seed=0)
    assert adc_of(simulated, "frontend.conv1") == (4, 4)
    assert adc_of(simulated, "ctc_head") == (4, 4)
    assert adc_of(simulated, "blocks.0.attention.query") == (3, 5)
    assert adc_of(simulated, "blocks.1.convolution.depthwise") == (2, 6)
    assert adc_of(simulated, "blocks.0.attention.linear_pos") == (1, 7)
    bits = {m.name: m.weight_bits for m in report.layers}
    assert bits["blocks.1.attention.linear_pos"] == 2 and bits["ctc_head"] == 4
    assert simulated.get_submodule("blocks.1.attention.linear_pos").chips[0].planes == 1


def test_clipping_is_counted_per_layer_and_a_narrowed_adc_clips_more(model):
    narrowed = "blocks.0.feed_forward_1.linear_in"
    config = SimulatorConfig.ideal(
        adc=(4, 4), tile=TILE, layers=(LayerRule(narrowed, adc=(4, 1)),)
    )
    simulated, _ = map_to_crossbars(model, config, seed=0)
    run(simulated)
    fractions = clip_fractions(simulated)
    assert set(fractions) == set(quantized_layers(model))
    others = [f for name, f in fractions.items() if name != narrowed]
    assert fractions[narrowed] > 0.01 and fractions[narrowed] > 5 * max(others)
    stats = clip_stats(simulated)[narrowed]
    assert stats.conversions > 0 and stats.worst_tile_fraction >= stats.fraction
    assert stats.tile_fractions[0].shape == simulated.get_submodule(narrowed).chips[0].tiles
    reset_clip_stats(simulated)
    assert all(s.conversions == 0 for s in clip_stats(simulated).values())
    run(simulated)  # counts restart: the same input clips the same share again
    assert clip_fractions(simulated) == fractions


def test_unknown_patterns_and_impossible_adcs_are_config_errors(model):
    with pytest.raises(ConfigError, match=r"'\*\.linear_position'.*frontend\.conv1"):
        config = SimulatorConfig(layers=(LayerRule("*.linear_position", adc=(1, 7)),))
        map_to_crossbars(model, config, seed=0)
    with pytest.raises(ConfigError, match="precision"):
        SimulatorConfig(adc=(10, 8))
    with pytest.raises(ConfigError, match="precision"):
        parse_layer_rule("*.linear_pos=9/8")
    with pytest.raises(ConfigError, match="PRECISION/RANGE"):
        parse_layer_rule("*.linear_pos=-1/7")


def test_toml_config_and_cli_shorthands(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text(
        'adc = [4, 4]\nnoise = "physical"\n[device]\nwear_cycles = 2\n'
        '[[layers]]\npattern = "*.linear_pos"\nadc = [1, 7]\n'
        '[[layers]]\npattern = "blocks.0.*"\ndigital = true\n'
    )
    config = load_simulator_config(path)
    assert config.noise == "physical" and config.device == DeviceConfig(wear_cycles=2)
    assert config.layers == (
        LayerRule("*.linear_pos", adc=(1, 7)), LayerRule("blocks.0.*", digital=True)
    )
    assert SimulatorConfig.from_dict(config.to_dict()) == config
    ideal = SimulatorConfig.ideal()
    assert SimulatorConfig.from_dict(ideal.to_dict()) == ideal
    path.write_text('adc = [4, 4]\n[[layers]]\npattern = "*.linear_pos"\nadcc = [1, 7]\n')
    with pytest.raises(ConfigError, match="adcc"):
        load_simulator_config(path)
    path.write_text('[device]\nwear_cycle = 2\n')
    with pytest.raises(ConfigError, match="wear_cycle"):
        load_simulator_config(path)

    assert parse_adc("3/5") == (3, 5)
    with pytest.raises(ConfigError, match="PRECISION/RANGE"):
        parse_adc("4-4")
    cli = with_cli_overrides(
        config, adc="8/8", layers=["ctc_head=2/6", "frontend.*=digital"], digital=["*.query"]
    )
    assert cli.adc == (8, 8)
    assert cli.layers[2:] == (
        LayerRule("ctc_head", adc=(2, 6)),
        LayerRule("frontend.*", digital=True),
        LayerRule("*.query", digital=True),
    )
    assert dataclasses.replace(cli, layers=()) == dataclasses.replace(config, adc=(8, 8), layers=())


def test_a_saved_chip_is_read_with_other_adc_noise_and_digital_layers(model, tmp_path):
    """Programming depends on the device and seed only, so reading a saved chip with other
    converter settings equals programming afresh with those settings and the same seed."""
    pattern = "*.attention.linear_pos"
    _, report = map_to_crossbars(model, measured(), seed=3)
    save_chip(report, tmp_path / "chip.npz")
    wider = measured(adc=(8, 8), noise="off", layers=(LayerRule(pattern, digital=True),))
    reread, reread_report = load_chip(model, tmp_path / "chip.npz", wider)
    fresh, _ = map_to_crossbars(model, wider, seed=3)
    assert torch.equal(run(reread), run(fresh))
    assert reread_report.seed == 3 and reread_report.config == wider
    assert all(name.endswith("linear_pos") for name in reread_report.digital_layers)

    # the other way round: a layer the chip does not hold cannot be put back on crossbars
    _, partial = map_to_crossbars(model, measured(layers=(LayerRule(pattern, digital=True),)), 3)
    save_chip(partial, tmp_path / "partial.npz")
    with pytest.raises(MhoError, match="kept digital when the chip was programmed"):
        load_chip(model, tmp_path / "partial.npz", measured())
    with pytest.raises(MhoError, match="tiles"):
        load_chip(model, tmp_path / "chip.npz", SimulatorConfig(tile=(128, 128)))
