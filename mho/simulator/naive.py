"""A deliberately slow reference: explicit per-cell currents, as SynaptogenML computes them.

For every tile, plane and polarity it builds the [N, R, C] tensor of cell currents
I = (1 - r) P_L(V) + r P_H(V), adds per-cell Gaussian read noise with Synaptogen's /
SynaptogenML's formula (sigma^2 = 4 kBT BW |I / V| + 2 q |I| BW), sums the rows, subtracts
the - crossbar from the + crossbar and converts with the ADC. Everything in float64.
Only for tests and benchmarks: it shares no arithmetic with the fast path in crossbar.py
beyond the programmed chip and the DAC levels.

Unlike SynaptogenML, noise is drawn independently for every row of the batch (SynaptogenML
reuses one draw for all rows), so both implementations agree in distribution.
"""

import torch

from mho.simulator.crossbar import (
    LEGACY_MIN_VOLTAGE,
    NOISE_CONSTANTS,
    CrossbarConfig,
    dac_levels,
    resolve_current_scale,
)
from mho.simulator.device import K_B_T, ProgrammedChip

SYNAPTOGEN_MIN_VOLTAGE = 1e-12  # V: synaptogen's Iread reads at 1e-12 V instead of 0


def _polyval(coefficients, x: torch.Tensor) -> torch.Tensor:
    """numpy.polyval order (highest power first), Horner."""
    result = torch.zeros_like(x)
    for coefficient in coefficients:
        result = result * x + float(coefficient)
    return result


def _cell_sigma(current: torch.Tensor, voltage: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-cell read-noise standard deviation in A; current [N, R, C], voltage [N, R, 1]."""
    charge, bandwidth = NOISE_CONSTANTS[mode]
    if mode == "legacy":  # SynaptogenML's MemristorArray.compute_noise
        johnson = 4 * K_B_T * bandwidth * current.abs() / (voltage.abs() + LEGACY_MIN_VOLTAGE)
    else:  # synaptogen.Iread (current already evaluated at 1e-12 V where V = 0)
        johnson = 4 * K_B_T * bandwidth * (current / voltage).abs()
    shot = 2 * charge * current.abs() * bandwidth
    return torch.sqrt(johnson + shot)


def _cell_currents(chip: ProgrammedChip, levels: torch.Tensor, config: CrossbarConfig):
    """Every crossbar's per-cell currents: yields (plane, input tile, column slice, polarity
    sign, currents [N, R, C] in A, voltages [N, R, 1] in V) for levels [N, I]."""
    rows = levels.shape[0]
    tiles_in, tiles_out = chip.tiles
    tile_rows, tile_cols = chip.tile_rows, chip.tile_cols
    voltage = torch.zeros(rows, chip.r_plus.shape[1], dtype=torch.float64)
    voltage[:, : chip.in_features] = levels.double() * config.voltage_step
    if config.noise == "physical":  # synaptogen never reads at exactly 0 V
        voltage = torch.where(voltage == 0, SYNAPTOGEN_MIN_VOLTAGE, voltage)
    r_cells = (torch.from_numpy(chip.r_plus).double(), torch.from_numpy(chip.r_minus).double())
    for plane in range(chip.planes):
        for t in range(tiles_in):
            row_slice = slice(t * tile_rows, (t + 1) * tile_rows)
            v = voltage[:, row_slice, None]  # [N, R, 1]
            low, high = _polyval(chip.llrs, v), _polyval(chip.hhrs, v)  # [N, R, 1]
            for j in range(tiles_out):
                col_slice = slice(j * tile_cols, (j + 1) * tile_cols)
                for sign, r_all in ((1.0, r_cells[0]), (-1.0, r_cells[1])):
                    r = r_all[plane, row_slice, col_slice]  # [R, C]
                    yield plane, t, col_slice, sign, (1 - r) * low + r * high, v  # [N, R, C]


def naive_column_currents(
    chip: ProgrammedChip,
    levels: torch.Tensor,
    config: CrossbarConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """levels: [N, I] int64 DAC levels -> [T_in, N, P, O_pad] float64 reads u = I * c."""
    out = torch.zeros(chip.tiles[0], levels.shape[0], chip.planes, chip.r_plus.shape[2],
                      dtype=torch.float64)
    c = resolve_current_scale(chip, config)
    for plane, t, columns, sign, current, v in _cell_currents(chip, levels, config):
        if config.noise != "off":
            noise = torch.randn(current.shape, generator=generator, dtype=torch.float64)
            current = current + _cell_sigma(current, v, config.noise) * noise
        # Kirchhoff: the column sums its rows; the pair subtracts its - crossbar
        out[t, :, plane, columns] += sign * c * current.sum(dim=1)
    return out


def naive_column_variance(
    chip: ProgrammedChip, levels: torch.Tensor, config: CrossbarConfig
) -> torch.Tensor:
    """The reads' read-noise variance, the sum of every cell's sigma^2 (times c^2):
    levels [N, I] -> [T_in, N, P, O_pad] float64."""
    out = torch.zeros(chip.tiles[0], levels.shape[0], chip.planes, chip.r_plus.shape[2],
                      dtype=torch.float64)
    c = resolve_current_scale(chip, config)
    for plane, t, columns, _, current, v in _cell_currents(chip, levels, config):
        out[t, :, plane, columns] += c**2 * _cell_sigma(current, v, config.noise).pow(2).sum(1)
    return out


def naive_forward(
    chip: ProgrammedChip,
    x: torch.Tensor,
    weight_scale: float,
    input_scale: float,
    bias: torch.Tensor | None,
    config: CrossbarConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [N, I] -> (y [N, O] float64, clipped conversions per tile [T_in, T_out] int64)."""
    levels = dac_levels(x, input_scale, config.input_bits)
    reads = naive_column_currents(chip, levels, config, generator)  # [T_in, N, P, O_pad]
    tiles_in, tiles_out = chip.tiles
    p, limit = config.adc_precision_bits, config.adc_limit
    y = torch.zeros(x.shape[0], chip.out_features, dtype=torch.float64)
    clipped = torch.zeros(tiles_in, tiles_out, dtype=torch.int64)
    for t in range(tiles_in):
        for plane in range(chip.planes):
            for j in range(tiles_out):
                stop = min((j + 1) * chip.tile_cols, chip.out_features)
                cols = slice(j * chip.tile_cols, stop)
                code = torch.round(reads[t, :, plane, cols] * 2**p)  # [N, C]
                clipped[t, j] += int((code.abs() > limit).sum())
                value = code.clamp(-limit, limit) / 2**p  # one ADC per column
                y[:, cols] += value * 2 ** (chip.planes - 1 - plane)  # shift and add
    y = y * (weight_scale * input_scale * 2 ** (config.input_bits - 1))
    if bias is not None:
        y = y + bias.double()
    return y, clipped
