"""The fast crossbar layer: exact on an ideal chip, equal to the per-cell reference in value
(noise off) and in distribution (noise on), reproducible, with counted ADC clipping."""

import numpy as np
import pytest
import torch
from torch import nn

from mho.errors import ConfigError
from mho.models.quant import QuantConfig, enable_quantization
from mho.simulator import (
    CrossbarConfig,
    CrossbarLinear,
    DeviceConfig,
    DigitalLinear,
    ProgrammedChip,
    dac_levels,
)
from mho.simulator.naive import naive_column_currents, naive_column_variance, naive_forward

IDEAL = DeviceConfig.ideal()


def ideal_config(**kwargs) -> CrossbarConfig:
    """No noise, exact unit current, an ADC wide enough for a whole tile: (8, 8) covers
    +-128 units, more than 128 rows at 127/128 of full scale."""
    settings = dict(noise="off", current_scale=None, adc_precision_bits=8, adc_range_bits=8)
    return CrossbarConfig(**(settings | kwargs))


def random_layer(out_features: int, in_features: int, weight_bits: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    limit = 2 ** (weight_bits - 1) - 1
    weight = torch.randint(
        -limit, limit + 1, (out_features, in_features), generator=generator, dtype=torch.int32
    )
    bias = torch.randn(out_features, generator=generator)
    x = torch.randn(7, in_features, generator=generator)
    return weight, bias, x


@pytest.mark.parametrize(
    "weight_bits, in_features, out_features, tile",
    [(8, 53, 37, (16, 8)), (4, 40, 19, (32, 32)), (8, 130, 3, (128, 128)), (2, 5, 9, (2, 4))],
)
def test_ideal_chip_reproduces_the_integer_matmul(weight_bits, in_features, out_features, tile):
    weight, bias, x = random_layer(out_features, in_features, weight_bits)
    x = x.view(7, 1, in_features).expand(7, 2, in_features)  # any leading shape
    weight_scale, input_scale = 0.0123, float(x.abs().max()) / 127
    config = ideal_config(tile_rows=tile[0], tile_cols=tile[1])
    layer = CrossbarLinear.from_integer(
        weight, weight_bits, weight_scale, input_scale, bias, config=config, device=IDEAL
    )
    y = layer(x)
    levels = dac_levels(x, input_scale, 8).double()
    expected = ((levels @ weight.double().T) * (input_scale * weight_scale)).float() + bias
    assert y.shape == (7, 2, out_features)
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    assert layer.clip_stats().fraction == 0.0


def test_ideal_chip_from_a_qat_layer_matches_its_matmul_and_digital_is_exact():
    torch.manual_seed(0)
    model = enable_quantization(nn.Sequential(nn.Linear(70, 30)), QuantConfig(weight_bits=4))
    layer = model[0]
    x = torch.randn(16, 70) * 2
    layer.train()(x)  # the first batch sets the activation absmax
    layer.eval()
    with torch.no_grad():
        expected = nn.functional.linear(
            layer.input_observer(x), layer.fake_quantized_weight(), layer.bias
        )  # the QAT output before the output observer
        crossbar = CrossbarLinear.from_quant_linear(
            layer, config=ideal_config(tile_rows=32, tile_cols=16), device=IDEAL
        )
        torch.testing.assert_close(crossbar(x), expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(DigitalLinear.from_quant_linear(layer)(x), expected)


def test_fast_path_equals_the_per_cell_reference_without_noise():
    weight, bias, x = random_layer(11, 21, 8, seed=1)
    config = CrossbarConfig(tile_rows=8, tile_cols=4, noise="off")  # measured device, (4, 4)
    weight_scale, input_scale = 0.01, float(x.abs().max()) / 127
    layer = CrossbarLinear.from_integer(
        weight, 8, weight_scale, input_scale, bias, config=config, seed=2
    )
    levels = dac_levels(x, input_scale, 8)
    fast = layer.column_currents(levels).double()  # [T_in, N, P, O_pad]
    naive = naive_column_currents(layer.chip, levels, config)
    # float32 tables and matmul vs float64 per-cell sums: float32 rounding of a few units
    torch.testing.assert_close(fast, naive, rtol=0, atol=1e-5)

    # after the ADC, codes can only differ where a read sits on a rounding boundary
    scaled = naive * 2**config.adc_precision_bits
    differ = torch.round(fast * 2**config.adc_precision_bits) != torch.round(scaled)
    assert (torch.abs(scaled.frac().abs() - 0.5)[differ] < 1e-4).all()
    y_naive, clipped_naive = naive_forward(layer.chip, x, weight_scale, input_scale, bias, config)
    layer.reset_clip_stats()
    y_fast = layer(x)
    # the forward re-reads in float64 every read within float32 error of a rounding boundary,
    # so its codes are the float64 reference's: one code of the least significant plane moves
    # an output by `lsb`, and the outputs differ by float32 arithmetic alone (far below it)
    lsb = weight_scale * input_scale * 128 / 2**config.adc_precision_bits
    assert (y_fast.double() - y_naive).abs().max() < 0.01 * lsb
    assert torch.equal(layer.clip_stats().clipped, clipped_naive)


@pytest.mark.parametrize("mode", ["legacy", "physical"])
def test_read_noise_matches_the_per_cell_reference_in_distribution(mode):
    weight, _, _ = random_layer(10, 12, 3, seed=3)
    config = CrossbarConfig(tile_rows=8, tile_cols=4, noise=mode)
    layer = CrossbarLinear.from_integer(weight, 3, 0.01, 0.01, config=config, seed=4)
    inputs = torch.tensor(
        [
            [-127, -40, 0, 3, 64, 127, 90, -5, 12, -100, 33, 7],
            [5, 0, 0, 127, -127, 1, -1, 60, -60, 20, 0, 110],
        ]
    )
    draws = 6000
    levels = inputs.repeat(draws, 1)  # every row draws its own noise: 6000 draws per input
    shape = (layer.tiles_in, draws, 2, layer.planes, -1)  # [T_in, draw, input, P, O_pad]
    fast = layer.column_currents(levels).double().view(shape)
    naive = naive_column_currents(layer.chip, levels, config, torch.Generator().manual_seed(5))
    naive = naive.view(shape)
    noiseless = naive_column_currents(
        layer.chip, inputs, CrossbarConfig(tile_rows=8, tile_cols=4, noise="off")
    ).unsqueeze(1)  # [T_in, 1, input, P, O_pad]
    variance = layer.column_variance(inputs).double().unsqueeze(1)  # exact, from the matmul
    assert (variance > 0).all()

    # Gaussian noise: sample mean SE = sqrt(var / n), sample variance SE = var sqrt(2 / (n-1));
    # 5 SE over ~100 columns leaves a false alarm at ~1e-4
    for sample in (fast, naive):
        mean_error = (sample.mean(1, keepdim=True) - noiseless) / (variance / draws).sqrt()
        assert mean_error.abs().max() < 5
        ratio = sample.var(1, keepdim=True) / variance
        assert (ratio - 1).abs().max() < 5 * np.sqrt(2 / (draws - 1))


@pytest.mark.parametrize("mode", ["legacy", "physical"])
@pytest.mark.parametrize("device", ["measured", "ideal"])
def test_column_variance_is_the_sum_of_every_cells_variance(device, mode):
    """The measured device's cells all conduct forward (one sign: the signs' half of the
    variance is a row sum); the ideal device's HRS cells do not (two matmuls). Both equal
    the per-cell sum of sigma^2."""
    weight, _, x = random_layer(10, 21, 4, seed=7)
    config = CrossbarConfig(tile_rows=8, tile_cols=4, noise=mode)
    layer = CrossbarLinear.from_integer(weight, 4, 0.01, 0.01, config=config, seed=8,
                                        device=IDEAL if device == "ideal" else None)
    assert (layer.sign_sum is None) == (device == "ideal")
    levels = dac_levels(x, float(x.abs().max()) / 127, 8)
    naive = naive_column_variance(layer.chip, levels, config)
    fast = layer.column_variance(levels).double()
    assert naive.max() > 0
    torch.testing.assert_close(fast, naive, rtol=1e-4, atol=1e-6 * float(naive.max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("device", ["measured", "ideal"])
def test_forward_variance_is_within_its_derived_bound_of_the_per_cell_sum(monkeypatch, device,
                                                                           dtype):
    """The forward's variance (crossbar.variance_dtype: bfloat16 where the CPU has it)
    against the per-cell float64 sum, within a bound derived from the arithmetic.

    Relative to the reference state r0 (the median cell), a read's variance is
    rows + sum_r d_r m_r, d_r = t_D(level_r), m_r = s+ (r+ - r0) + s- (r- - r0). In a matmul
    of unit roundoff u (2^-8 in bfloat16, 2^-24 in float32) d_r and m_r are rounded (from
    float32 values: u + 2^-24 each), their product is exact in float32, R of them summed in
    float32 (gamma_R), and the sum rounded to u: |error| <= (3u + 3u^2 + 2 gamma_R + 2^-21)
    x A, A = sum_r |d_r m_r|. The row part is float32 (tables rounded once, R terms summed:
    (2 gamma_R + 2^-21) x sum_r |s_r low_r|), or, where the signs differ per pair, a part of
    the matmul (then in A). On the measured device A <= V: the zero pairs add almost nothing
    relative to r0, so the standard deviation moves by at most ~(3u / 2) of itself."""
    from mho.simulator import crossbar

    monkeypatch.setattr(crossbar, "variance_dtype", lambda: dtype)
    weight, _, _ = random_layer(40, 300, 8, seed=11)
    config = CrossbarConfig(noise="legacy")
    layer = CrossbarLinear.from_integer(weight, 8, 0.01, 0.01, config=config, seed=12,
                                        device=IDEAL if device == "ideal" else None)
    assert layer._variance_matrix.dtype == dtype
    levels = torch.randint(-127, 128, (60, 300), generator=torch.Generator().manual_seed(13))
    levels[:5] = 0  # rows at 0 V: no legacy noise at all
    steps2 = 4.0**config.adc_precision_bits
    exact = naive_column_variance(layer.chip, levels, config) * steps2  # [T_in, N, P, O_pad]
    index = layer._table_index(levels)  # [T_in, N, R]
    columns, rows = layer._forward_variance(index)
    shape = exact.shape
    # as the fused pass adds them: float32 column part (widened) + float32 row part
    fast = (columns.float() + rows[..., None]).double().view(shape)

    chip = layer.chip
    r_plus, r_minus = chip.r_plus.astype(np.float64), chip.r_minus.astype(np.float64)
    reference = layer._variance_reference  # any r0 gives the same variance; this bounds it
    assert 0.5 < reference <= 1  # an HRS cell: of the measured device, or 1 on the ideal one
    sign_plus, sign_minus = layer._conductance_sign(r_plus), layer._conductance_sign(r_minus)

    def tiles(matrix):  # [P, I_pad, O_pad] -> [T_in, R, P, O_pad]
        return torch.from_numpy(matrix.reshape(layer.planes, layer.tiles_in, 128, -1)
                                .transpose(1, 2, 0, 3))

    m = tiles(np.abs(sign_plus * (r_plus - reference) + sign_minus * (r_minus - reference)))
    s = tiles(np.abs(sign_plus + sign_minus))
    table = layer.noise_table.double() * steps2  # [2, L]
    d, low = table[1][index].abs(), (table[0] + reference * table[1])[index].abs()
    a = torch.einsum("tnr,trpo->tnpo", d, m)  # sum_r |d_r m_r|
    row_abs = torch.einsum("tnr,trpo->tnpo", low, s)  # sum_r |s_r low_r|
    u = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-24
    gamma = 128 * 2.0**-24 / (1 - 128 * 2.0**-24)
    matmul = 3 * u + 3 * u * u + 2 * gamma + 2.0**-21
    if layer.sign_sum is not None:
        bound = matmul * a + (2 * gamma + 2.0**-21) * row_abs
    else:
        bound = matmul * (a + row_abs)
    assert exact.max() > 0 and (exact[:, :5] == 0).all()
    assert ((fast - exact).abs() <= bound).all()
    if device == "measured":
        assert (a <= exact).all()  # so |error| / V <= matmul + (2 gamma + 2^-21) row / V
        if dtype == torch.bfloat16:  # the rounding is there, and within the bound
            assert (fast - exact).abs().max() > 2.0**-16 * exact.max()


def test_noisy_forward_matches_the_per_cell_reference_in_distribution():
    """The fused ADC pass with read noise against per-cell noise, rounding and
    shift-and-add in float64: the same mean and variance of every output."""
    weight, bias, _ = random_layer(10, 12, 3, seed=3)
    config = CrossbarConfig(tile_rows=8, tile_cols=4, noise="legacy")
    layer = CrossbarLinear.from_integer(weight, 3, 0.01, 0.01, bias, config=config, seed=4)
    inputs = torch.tensor([[-1.27, -0.4, 0, 0.03, 0.64, 1.27, 0.9, -0.05, 0.12, -1, 0.33, 0.07],
                           [0.05, 0, 0, 1.27, -1.27, 0.01, -0.01, 0.6, -0.6, 0.2, 0, 1.1]])
    draws = 3000
    x = inputs.repeat(draws, 1)  # [2 draws, I]: every row reads with its own noise
    fast = layer(x).double().view(draws, 2, -1)
    naive, _ = naive_forward(layer.chip, x, 0.01, 0.01, bias, config,
                             torch.Generator().manual_seed(9))
    naive = naive.view(draws, 2, -1)

    def moments(sample):  # mean, variance and their standard errors over the draws
        mean, variance = sample.mean(0), sample.var(0)
        fourth = ((sample - mean) ** 4).mean(0)
        return mean, variance, variance / draws, (fourth - variance**2) / draws

    (m1, v1, se_m1, se_v1), (m2, v2, se_m2, se_v2) = moments(fast), moments(naive)
    assert (v2 > 0).all()  # noise moves every output
    # 5 standard errors of the difference over 20 outputs: a false alarm at ~1e-5
    assert ((m1 - m2).abs() / (se_m1 + se_m2).sqrt()).max() < 5
    assert ((v1 - v2).abs() / (se_v1 + se_v2).sqrt()).max() < 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_fused_dac_lookup_is_dac_levels_and_the_table_lookup(dtype):
    """The forward's one-pass DAC and lookup against torch's ops (dac_levels, then the
    padded, tiled table lookup), on exact ties k + 1/2, values beyond the range, infinities
    and signed zeros; NaN inputs are a clear error rather than an out-of-range index."""
    weight, _, _ = random_layer(6, 300, 8, seed=2)
    scale = 0.03125  # a power of two: x / scale is exact, and so are the ties below
    layer = CrossbarLinear.from_integer(weight, 8, 0.01, scale,
                                        config=CrossbarConfig(noise="legacy"), seed=1)
    x = torch.randn(40, 300, generator=torch.Generator().manual_seed(3)) * 60 * scale
    ties = (torch.arange(-130, 130) + 0.5) * scale  # [260]
    x[:, :260] = torch.where(torch.rand(40, 260) < 0.5, ties, x[:, :260])
    x[0, :6] = torch.tensor([float("inf"), -float("inf"), 0.0, -0.0, 1e9, -1e9])
    x = x.to(dtype)
    expected = layer._table_index(dac_levels(x, layer.input_scale, 8))  # [T_in, N, R]
    row_levels = torch.empty(expected.shape)
    index = torch.empty(expected.shape, dtype=torch.int64)
    layer._dac_lookup(x, row_levels, index)
    assert torch.equal(index, expected)
    assert torch.equal(row_levels, layer._signal_steps[expected])
    x[3, 7] = float("nan")
    with pytest.raises(ConfigError, match="1 NaN"):
        layer._dac_lookup(x, row_levels, index)


def test_forward_refuses_tensors_off_the_cpu():
    weight, _, x = random_layer(3, 5, 4)
    layer = CrossbarLinear.from_integer(weight, 4, 0.01, 0.01,
                                        config=CrossbarConfig(tile_rows=8, tile_cols=4))
    with pytest.raises(ConfigError, match="runs on the CPU"):
        layer(x.to("meta"))


def test_legacy_noise_is_about_41_times_the_physical_shot_noise():
    weight = torch.ones(1, 1, dtype=torch.int32)
    spreads = {}
    for mode in ("legacy", "physical"):
        config = CrossbarConfig(tile_rows=1, tile_cols=1, noise=mode)
        layer = CrossbarLinear.from_integer(weight, 2, 1.0, 1.0, config=config, device=IDEAL)
        spreads[mode] = float(layer.column_variance(torch.tensor([[127]])).sum().sqrt())
    # legacy: Euler's number for q and BW = 1e-8 (shot dominates); physical adds Johnson
    # noise on top of sqrt(1.602e-19 * 1e8 / (e * 1e-8)) = 1 / 41.2 of the legacy shot noise
    assert 25 < spreads["legacy"] / spreads["physical"] < 41.2


def test_same_seeds_reproduce_outputs_and_the_saved_chip_reproduces_them_bit_for_bit(tmp_path):
    weight, bias, x = random_layer(9, 30, 8, seed=6)
    config = CrossbarConfig(tile_rows=16, tile_cols=8, noise="legacy", noise_seed=3)
    build = dict(weight_bits=8, weight_scale=0.02, input_scale=float(x.abs().max()) / 127)
    first = CrossbarLinear.from_integer(weight, bias=bias, config=config, seed=1, **build)
    second = CrossbarLinear.from_integer(weight, bias=bias, config=config, seed=1, **build)
    other = CrossbarLinear.from_integer(weight, bias=bias, config=config, seed=2, **build)
    y = first(x)
    assert torch.equal(y, second(x))
    assert not torch.equal(y, other(x))
    assert not torch.equal(first(x), y)  # read noise moves on between forwards
    first.reseed(3)
    assert torch.equal(first(x), y)

    first.chip.save(tmp_path / "chip.npz")
    loaded = ProgrammedChip.load(tmp_path / "chip.npz")
    restored = CrossbarLinear(loaded, build["weight_scale"], build["input_scale"], bias, config)
    assert torch.equal(restored(x), y)


def test_adc_clipping_is_counted_per_tile():
    # 2-bit all-ones weights on an ideal chip; ADC (p, r) = (2, 2) saturates at +-2 units
    weight = torch.ones(6, 20, dtype=torch.int32)  # [O, I]: tiles of 8 x 4 -> 3 x 2 tiles
    config = ideal_config(tile_rows=8, tile_cols=4, adc_precision_bits=2, adc_range_bits=2)
    layer = CrossbarLinear.from_integer(weight, 2, 1.0, 1.0, config=config, device=IDEAL)
    x = torch.stack((torch.full((20,), 64.0), torch.zeros(20)))  # level 64: half full scale
    y = layer(x)
    # input tiles hold 8, 8 and 4 real rows: 4, 4 and 2 units; the first two clip to 2
    assert torch.equal(y[0], torch.full((6,), (2 + 2 + 2) * 128.0))
    stats = layer.clip_stats()
    assert stats.clipped.tolist() == [[4, 2], [4, 2], [0, 0]]  # row 1 only, real columns only
    assert stats.conversions.tolist() == [[8, 4], [8, 4], [8, 4]]  # 2 rows x 1 plane x cols
    assert stats.fraction == pytest.approx(12 / 36)
    torch.testing.assert_close(
        stats.tile_fraction, torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]], dtype=torch.float64)
    )
    _, clipped = naive_forward(layer.chip, x, 1.0, 1.0, None, config)
    assert torch.equal(clipped, stats.clipped)
    layer.reset_clip_stats()
    assert layer.clip_stats().fraction == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"adc_precision_bits": -1}, "precision >= 0"),
        ({"adc_range_bits": -1}, "range >= 0"),
        ({"adc_precision_bits": 9, "adc_range_bits": 8}, "precision \\+ range <= 16"),
        ({"tile_rows": 0}, "tile size"),
        ({"tile_cols": 0}, "tile size"),
        ({"input_bits": 9}, "DAC input bits"),
        ({"noise": "loud"}, "noise must be one of"),
        ({"current_scale": 0.0}, "current_scale"),
    ],
)
def test_bad_crossbar_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CrossbarConfig(**kwargs)


@pytest.mark.parametrize("bits", [1, 9])
def test_weight_bits_outside_two_to_eight_are_config_errors(bits):
    with pytest.raises(ConfigError, match="weight bits must be in 2..8"):
        CrossbarLinear.from_integer(torch.zeros(2, 2, dtype=torch.int32), bits, 1.0, 1.0)


def test_wrong_input_width_and_mismatched_tiles_are_config_errors():
    layer = CrossbarLinear.from_integer(
        torch.ones(2, 3, dtype=torch.int32),
        2,
        1.0,
        1.0,
        config=ideal_config(tile_rows=4, tile_cols=4),
        device=IDEAL,
    )
    with pytest.raises(ConfigError, match="expected 3 input features"):
        layer(torch.zeros(1, 4))
    with pytest.raises(ConfigError, match="chip tiles are 4 x 4"):
        CrossbarLinear(layer.chip, 1.0, 1.0, config=ideal_config())
