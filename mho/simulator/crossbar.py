"""One static-weight layer y = x W^T executed on programmed crossbars: DAC -> analog read ->
ADC per tile column -> digital shift-and-add.

Every tile of every bit plane is a differential pair of crossbars with its own ADC per column.
The column current of a pair is

    I_col = sum_i (r+_i - r-_i) (P_H(V_i) - P_L(V_i)),

an element-wise polynomial of the input followed by a matmul with the static matrix r+ - r-.
The DAC has only 2^b - 1 levels, so the polynomial becomes a lookup table, and all tiles,
planes and polarities are ONE batched matmul [T_in, N, R] @ [T_in, R, P * O_pad]; the
[batch, in, out] tensor of per-cell currents is never built (naive.py builds it, for tests).

Read noise (Johnson + shot) is independent per cell and Gaussian, with variance
h(V) |G(V)| where G(V) = I(V) / V = g_L(V) + r (g_H(V) - g_L(V)) is a polynomial (the I-V
polynomials have no constant term). A column's noise is therefore exactly Gaussian with
variance sum_i s_i [t_L(V_i) + r_i t_D(V_i)] (s_i = sign of the cell's conductance): a second
matmul, drawn independently for every row of the batch. When every pair has the same sign sum
(the measured device), the first term is a row sum and the matmul is the signal's size.

The ADC per column, the clip count and the digital shift-and-add over planes and tiles run
as one fused pass over each chunk's reads (kernels.py), which also draws the read noise
(gaussian.py: a counter-based generator, so the draws depend on neither chunks nor threads).

DAC grid: the QAT activation grid (s_x = absmax / 127, levels -127..127 at 8 bits), level k
applied as k / 128 of the full-scale read voltage (0.6 V): SynaptogenML's voltage step of
1/128, without its re-rounding of 1/127 steps onto 1/128 steps (which puts even an ideal
array ~1.4% off QAT). Full scale (level 128) is never reached; the digital output factor
s_w * s_x * 128 undoes the 1/128, and because ideal column reads are multiples of 1/128, an
ideal array with an ADC of >= 7 precision bits reproduces the QAT integer matmul exactly.
"""

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
import torch
from torch import nn

from mho.errors import ConfigError
from mho.simulator import gaussian, kernels
from mho.simulator.device import (
    ELECTRON_CHARGE,
    K_B_T,
    DeviceConfig,
    ProgrammedChip,
    check_tile,
    check_weight_bits,
    program_chip,
    unit_current,
)
from mho.timing import cpuinfo

NOISE_MODES = ("off", "legacy", "physical")
# (charge in C, bandwidth in Hz) of each noise mode. legacy: SynaptogenML's constants (Euler's
# number where the electron charge belongs, BW = 1e-8 Hz): ~41x the physical spread, what the
# paper's numbers were made with. physical: Synaptogen's own Iread (q, BW = 1e8 Hz).
NOISE_CONSTANTS = {"legacy": (math.e, 1e-8), "physical": (ELECTRON_CHARGE, 1e8)}
LEGACY_MIN_VOLTAGE = 1e-12  # V: SynaptogenML's Johnson term is |I| / (|V| + 1e-12)
# bytes / 4 of a forward chunk's read buffers, all [T_in, n, P * O_pad] buffers together
# (16 MB): rows are converted in chunks of this size into buffers allocated once per forward
# (fresh multi-MB temporaries cost more in page faults than the arithmetic), large enough for
# an efficient matmul (on the bench layer the signal matmul takes ~1.25x the floor in chunks of
# 73 rows, ~1.03x in chunks of 292), small enough to keep the peak memory near the layer's own
# input and output (`mho bench sim`, one thread, loaded machine: the forward without noise took
# 1.69-1.74x the floor with 8 MB, 1.52-1.58x with 16 MB, and 1.9x / 2.6x the digital layer's
# peak memory; 24 MB: 1.44-1.57x the floor, 3.4x the memory)
CHUNK_ELEMENTS = 2**22


@lru_cache(maxsize=1)
def variance_dtype() -> torch.dtype:
    """The element type of the forward's noise-variance matmul: bfloat16 where the CPU
    multiplies it in hardware (x86 avx512_bf16 or amx_bf16, through torch's oneDNN), float32
    elsewhere.

    The variance only scales a standard normal draw, and the forward computes it relative to
    a reference state (see CrossbarLinear's noise setup) so that bfloat16's 2^-8 rounding
    reaches the variance undiluted by cancellation: its error is at most
    (3u + 3u^2 + 2 gamma_R + 2^-21) sum_r |d_r m_r|, u = 2^-8
    (`tests/simulator/test_crossbar.py` derives and checks the bound). Measured on the bench
    layer (docs/simulator.md): 0.56x the floor instead of 1.17x in float32; without the
    instructions torch's bfloat16 matmul is 2.4x (AVX-512 without bf16) to 34x (AVX2) slower
    than float32, hence the test of the CPU flags rather than of torch's support."""
    if not torch.backends.mkldnn.is_available():
        return torch.float32
    # no /proc/cpuinfo (not Linux): no cheap, reliable test of the flags, so float32
    native = re.search(r"^flags\s*:.*\b(avx512_bf16|amx_bf16)\b", cpuinfo(), re.MULTILINE)
    return torch.bfloat16 if native else torch.float32


@dataclass(frozen=True)
class CrossbarConfig:
    """Geometry, converters and read noise of a layer's crossbars."""

    tile_rows: int = 128  # crossbar inputs (rows) per tile
    tile_cols: int = 128  # crossbar outputs (columns, one ADC each) per tile
    input_bits: int = 8  # DAC: levels -(2^(b-1) - 1) .. 2^(b-1) - 1 on the QAT activation grid
    read_voltage: float = 0.6  # V: full-scale DAC voltage (level 2^(b-1)), as SynaptogenML
    adc_precision_bits: int = 4  # p: ADC step 2^-p of one LRS unit
    adc_range_bits: int = 4  # r: ADC codes clamped to +-2^(p+r-1), i.e. +-2^(r-1) units
    noise: str = "legacy"  # read noise: "off", "legacy" (SynaptogenML) or "physical"
    current_scale: float | None = 8020.0  # c in A^-1: ADC input u = I * c. 8020 is
    # SynaptogenML's hardware_output_current_scaling: a programmed +1 pair of the measured
    # device at 0.6 V reads ~1.01 units. None: 1 / (P_L(V) - P_H(V)) of the chip's
    # polynomials, an ideal pair at full scale reads exactly 1 (use with DeviceConfig.ideal())
    noise_seed: int = 0  # seed of the read-noise generator

    def __post_init__(self):
        check_tile(self.tile_rows, self.tile_cols)
        p, r = self.adc_precision_bits, self.adc_range_bits
        if p < 0 or r < 0 or p + r > 16:
            raise ConfigError(
                f"ADC bits must satisfy precision >= 0, range >= 0, precision + range <= 16; "
                f"got precision {p}, range {r}"
            )
        if p + r < 1:
            raise ConfigError("ADC needs at least one bit (precision + range >= 1)")
        if not 2 <= self.input_bits <= 8:
            raise ConfigError(f"DAC input bits must be in 2..8, got {self.input_bits}")
        if not self.read_voltage > 0:
            raise ConfigError(f"read voltage must be > 0 V, got {self.read_voltage}")
        if self.noise not in NOISE_MODES:
            raise ConfigError(f"noise must be one of {', '.join(NOISE_MODES)}, got {self.noise!r}")
        if self.current_scale is not None and not self.current_scale > 0:
            raise ConfigError(f"current_scale must be > 0 or None, got {self.current_scale}")

    @property
    def input_limit(self) -> int:
        return 2 ** (self.input_bits - 1) - 1

    @property
    def voltage_step(self) -> float:
        """V per DAC level: full scale / 2^(b-1)."""
        return self.read_voltage / 2 ** (self.input_bits - 1)

    @property
    def adc_limit(self) -> int:
        return 2 ** (self.adc_precision_bits + self.adc_range_bits - 1)


def dac_levels(x: torch.Tensor, input_scale: float, input_bits: int) -> torch.Tensor:
    """Integer DAC levels of x on the activation grid: [..., I] -> [..., I] int64.

    The same ops as QAT's `integer_levels` (divide, clamp, round half to even), so the levels
    are exactly the integers QAT multiplies by its scale."""
    limit = 2 ** (input_bits - 1) - 1
    return torch.round(torch.clamp(x / input_scale, -limit, limit)).long()


def resolve_current_scale(chip: ProgrammedChip, config: CrossbarConfig) -> float:
    if config.current_scale is not None:
        return config.current_scale
    return 1.0 / unit_current(chip.llrs, chip.hhrs, config.read_voltage)


def conductance_polynomial(iv: np.ndarray) -> np.ndarray:
    """P(V) (numpy.polyval order, no constant term) -> G(V) = P(V) / V."""
    if iv[-1] != 0:
        raise ConfigError("I-V polynomials must have no constant term (I(0) = 0)")
    return iv[:-1]


def noise_gain(voltage: np.ndarray, mode: str) -> np.ndarray:
    """h(V) such that a cell's read-noise variance is h(V) |G(V)| (A^2 / S)."""
    charge, bandwidth = NOISE_CONSTANTS[mode]
    magnitude = np.abs(voltage)
    johnson = np.full_like(magnitude, 4 * K_B_T * bandwidth)  # 4 kBT BW |I / V|
    if mode == "legacy":  # SynaptogenML divides by |V| + 1e-12: no Johnson term at 0 V
        johnson *= magnitude / (magnitude + LEGACY_MIN_VOLTAGE)
    return johnson + 2 * charge * bandwidth * magnitude  # + shot: 2 q |I| BW


@dataclass(frozen=True)
class ClipStats:
    """Clipped ADC conversions since the last reset, per tile [T_in, T_out]."""

    clipped: torch.Tensor  # [T_in, T_out] int64
    conversions: torch.Tensor  # [T_in, T_out] int64

    @property
    def fraction(self) -> float:
        total = int(self.conversions.sum())
        return int(self.clipped.sum()) / total if total else 0.0

    @property
    def tile_fraction(self) -> torch.Tensor:
        """[T_in, T_out] float64: clipped fraction of each tile's conversions."""
        return self.clipped.double() / self.conversions.clamp(min=1).double()


class CrossbarLinear(nn.Module):
    """y = x W^T + b of one layer, executed on a programmed chip; x: [..., I] -> y: [..., O]."""

    def __init__(
        self,
        chip: ProgrammedChip,
        weight_scale: float,
        input_scale: float,
        bias: torch.Tensor | None = None,
        config: CrossbarConfig = CrossbarConfig(),
    ):
        super().__init__()
        if (chip.tile_rows, chip.tile_cols) != (config.tile_rows, config.tile_cols):
            raise ConfigError(
                f"chip tiles are {chip.tile_rows} x {chip.tile_cols}, config says "
                f"{config.tile_rows} x {config.tile_cols}"
            )
        self.chip = chip
        self.config = config
        # float32 values, as QAT's scale tensors and an exported file's attributes hold them
        self.weight_scale = float(np.float32(weight_scale))
        self.input_scale = float(np.float32(input_scale))
        self.in_features, self.out_features = chip.in_features, chip.out_features
        self.planes = chip.planes
        self.tiles_in, self.tiles_out = chip.tiles
        self.current_scale = resolve_current_scale(chip, config)
        tile_rows, out_pad = config.tile_rows, chip.r_plus.shape[2]

        # input transforms as lookup tables over the DAC levels (float64, then float32)
        levels = np.arange(-config.input_limit, config.input_limit + 1)  # [L]
        voltage = levels * config.voltage_step
        c = self.current_scale
        signal = c * (np.polyval(chip.hhrs, voltage) - np.polyval(chip.llrs, voltage))
        self.register_buffer("signal_table", torch.tensor(signal, dtype=torch.float32))  # [L]
        # the same tables in ADC steps (x 2^p, variances x 4^p: exact powers of two), so the
        # forward's reads come out of the matmul ready to round
        steps = 2.0**config.adc_precision_bits
        self.register_buffer("_signal_steps", self.signal_table * steps, persistent=False)

        def to_tiles(matrix: np.ndarray) -> torch.Tensor:
            """[P, I_pad, O_pad] -> [T_in, R, P * O_pad]: one matmul operand per input tile."""
            tiled = matrix.reshape(self.planes, self.tiles_in, tile_rows, out_pad)
            tiled = tiled.transpose(1, 2, 0, 3).reshape(self.tiles_in, tile_rows, -1)
            return torch.tensor(np.ascontiguousarray(tiled), dtype=torch.float32)

        r_plus, r_minus = chip.r_plus.astype(np.float64), chip.r_minus.astype(np.float64)
        self.register_buffer("signal_matrix", to_tiles(r_plus - r_minus))  # [T_in, R, P*O_pad]
        # what bounds the float32 matmul's error of a read (kernels.convert): gamma_R and each
        # column's sum |g_r| and ||g||_2. Reads within the bound of a rounding boundary are
        # recomputed in float64 (gamma 0: never).
        self._tie_gamma = tile_rows * 2.0**-24 / (1 - tile_rows * 2.0**-24)
        columns = self.signal_matrix.double()  # [T_in, R, P*O_pad]
        # float32, rounded up: the fused pass tests the bound in float32
        margin = kernels.COLUMN_FACTOR_MARGIN
        self._column_abs_sums = (columns.abs().sum(1) * margin).float().numpy()  # [T_in, P*O_pad]
        self._column_norms = (columns.square().sum(1).sqrt() * margin).float().numpy()
        # [T_in, P*O_pad, R]: each column's conductances contiguous for those recomputes
        self._signal_columns = self.signal_matrix.transpose(1, 2).contiguous().numpy()

        if config.noise != "off":
            g_low = conductance_polynomial(chip.llrs)
            g_high = conductance_polynomial(chip.hhrs)
            gain = c * c * noise_gain(voltage, config.noise)  # variance in output units^2
            low = gain * np.polyval(g_low, voltage)
            diff = gain * (np.polyval(g_high, voltage) - np.polyval(g_low, voltage))
            self.register_buffer(
                "noise_table", torch.tensor(np.stack((low, diff)), dtype=torch.float32)
            )  # [2, L]
            sign_plus, sign_minus = self._conductance_sign(r_plus), self._conductance_sign(r_minus)
            signs = sign_plus + sign_minus  # [P, I_pad, O_pad], each -2, 0 or 2
            signed_r = to_tiles(sign_plus * r_plus + sign_minus * r_minus)  # [T_in, R, P*O_pad]
            # sign_sum: s+ + s- of every pair when it is one number for the whole layer (the
            # measured device: 2, all cells conduct forward). The signs' half of the variance
            # is then the same for every column of a tile row: a row sum instead of a second
            # matmul of the same size.
            self.sign_sum = float(signs.flat[0]) if (signs == signs.flat[0]).all() else None
            self.register_buffer(
                "noise_matrix",
                signed_r if self.sign_sum is not None
                else torch.cat((to_tiles(signs), signed_r), dim=1),
            )  # [T_in, R or 2R, P*O_pad]
            # The forward's variance, in ADC steps^2, relative to a reference state r0 (a
            # median cell: an HRS cell, at least half of all cells are): a cell's variance
            # s (t_L + r t_D) is s (t_L + r0 t_D) + s (r - r0) t_D, the same number. Computed
            # from r instead, the matmul's part is up to ~6x the variance with the opposite
            # sign (t_D < 0 < t_L), and its rounding errors are magnified as much; relative to
            # an HRS cell the zero pairs, most cells, add almost nothing to it (0.84 x the
            # variance at most on the bench layer), so a bfloat16 matmul (variance_dtype)
            # moves the standard deviation by 2.1e-3 at most there.
            # (the median of every 64th cell: any r0 gives the same variance, this one only
            # has to be a typical HRS cell, and the median of all cells cost 2x the setup)
            reference = float(np.median(np.concatenate((chip.r_plus.ravel()[::64],
                                                        chip.r_minus.ravel()[::64]))))
            self._variance_reference = reference
            table = self.noise_table.double() * steps**2  # [2, L]
            low = table[0] + reference * table[1]  # [L]
            shifted = to_tiles(sign_plus * (r_plus - reference)
                               + sign_minus * (r_minus - reference))  # [T_in, R, P*O_pad]
            dtype = variance_dtype()
            if self.sign_sum is not None:  # rows: sign_sum x the row sum of `low`
                self.register_buffer("_variance_low", low.float(), persistent=False)  # [L]
                matrix = shifted
            else:  # both parts in the matmul, [low | t_D] levels against [signs ; shifted]
                self._variance_low = None
                matrix = torch.cat((to_tiles(signs), shifted), dim=1)
            self.register_buffer("_variance_levels", torch.stack((low, table[1])).to(dtype),
                                 persistent=False)  # [2, L]
            self.register_buffer("_variance_matrix", matrix.to(dtype),
                                 persistent=False)  # [T_in, R or 2R, P*O_pad]
        else:
            self.noise_table = None
            self.noise_matrix = self.sign_sum = None
            self._variance_low = self._variance_levels = self._variance_matrix = None

        # plane 0 is the MSB: 2^(P-1); float64 sums of the integer codes stay exact
        self._plane_weights = 2.0 ** np.arange(self.planes - 1, -1, -1)  # [P]
        self.output_factor = (
            self.weight_scale
            * self.input_scale
            * 2 ** (config.input_bits - 1)  # undoes the DAC's 1/2^(b-1) of full scale
            / 2**config.adc_precision_bits  # ADC codes are in steps of 2^-p units
        )
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        valid = np.zeros(out_pad, dtype=np.int64)
        valid[: self.out_features] = 1
        self.register_buffer("valid_columns", torch.tensor(valid), persistent=False)  # [O_pad]
        self.register_buffer(
            "clipped",
            torch.zeros(self.tiles_in, self.tiles_out, dtype=torch.int64),
            persistent=False,
        )
        self.register_buffer("conversions", torch.zeros_like(self.clipped), persistent=False)
        self._noise_seed = config.noise_seed
        self._noise_forwards = 0  # noisy forwards since the last (re)seed: each its own draws
        self._generators: dict[torch.device, torch.Generator] = {}  # column_currents' streams

    def _conductance_sign(self, r: np.ndarray) -> np.ndarray:
        """+1 where a cell's conductance G(V) = g_L + r (g_H - g_L) is >= 0 over the DAC range,
        -1 where it is negative (e.g. an ideal HHRS cell, r = 1). |G| is then s * G, linear in
        r, so the noise variance stays a matmul. Cells whose sign changes within the range
        (r in a band ~0.889..0.911 for the measured device, ~1e-5 of HRS cells) take the sign
        at the band's middle; their |G| is below ~3% of an LRS cell's, so the error is
        negligible."""
        voltage = np.arange(-self.config.input_limit, self.config.input_limit + 1)
        voltage = voltage * self.config.voltage_step
        g_low = np.polyval(conductance_polynomial(self.chip.llrs), voltage)
        g_high = np.polyval(conductance_polynomial(self.chip.hhrs), voltage)
        slope = g_high - g_low
        with np.errstate(divide="ignore", invalid="ignore"):
            zero_crossing = np.where(slope != 0, -g_low / slope, np.nan)  # r where G(V) = 0
        if np.isnan(zero_crossing).all():
            return np.sign(g_low[0]) * np.ones_like(r) if g_low[0] else np.ones_like(r)
        middle = 0.5 * (np.nanmin(zero_crossing) + np.nanmax(zero_crossing))
        # sign of G just below / above the crossing, from the mean slope
        below = 1.0 if np.nanmean(slope) < 0 else -1.0
        return np.where(r <= middle, below, -below)

    @classmethod
    def from_integer(
        cls,
        weight: torch.Tensor,
        weight_bits: int,
        weight_scale: float,
        input_scale: float,
        bias: torch.Tensor | None = None,
        *,
        config: CrossbarConfig = CrossbarConfig(),
        device: DeviceConfig | None = None,  # None: the measured device, DeviceConfig()
        seed: int = 0,
    ) -> "CrossbarLinear":
        """Program [O, I] integer weights (|w| <= 2^(b-1) - 1) and wrap the chip.

        weight_scale, input_scale: QAT's s_w and activation grid s_x (absmax / 127)."""
        check_weight_bits(weight_bits)
        chip = program_chip(
            weight.detach().cpu().numpy(),
            weight_bits,
            device or DeviceConfig(),
            tile_rows=config.tile_rows,
            tile_cols=config.tile_cols,
            read_voltage=config.read_voltage,
            current_scale=config.current_scale,
            seed=seed,
        )
        return cls(chip, weight_scale, input_scale, bias, config)

    @classmethod
    def from_quant_linear(
        cls,
        layer,
        *,
        config: CrossbarConfig = CrossbarConfig(),
        device: DeviceConfig | None = None,  # None: the measured device, DeviceConfig()
        seed: int = 0,
    ) -> "CrossbarLinear":
        """From a QAT layer (mho.models.quant.QuantLinear or anything with its attributes)."""
        if layer.kind != "linear":
            raise ConfigError(f"CrossbarLinear maps linear layers, got a {layer.kind}")
        bias = None if layer.bias is None else layer.bias.detach()
        return cls.from_integer(
            layer.integer_weight(),
            layer.weight_bits,
            layer.weight_scale,
            layer.input_scale,
            bias,
            config=config,
            device=device,
            seed=seed,
        )

    def reseed(self, seed: int) -> None:
        """Restart the read-noise stream (on every device) from `seed`."""
        self._generators.clear()
        self._noise_seed = seed
        self._noise_forwards = 0

    def _next_noise_key(self) -> np.uint64:
        """The draw key of the next noisy forward: the seed's stream number k for the k-th
        forward since the last (re)seed, so a seed replays the same sequence of outputs."""
        key = gaussian.stream_key(self._noise_seed, self._noise_forwards)
        self._noise_forwards += 1
        return key

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device).manual_seed(self._noise_seed)
        return self._generators[device]

    def _dac_lookup(self, chunk: torch.Tensor, row_levels: torch.Tensor,
                    index: torch.Tensor) -> None:
        """[n, I] float inputs -> row_levels [T_in, n, R] float32, the signal table in ADC
        steps at each input's DAC level (dac_levels; level 0 pads the last tile), and, unless
        it is empty, index [T_in, n, R] int64 the table indices."""
        if chunk.dtype in (torch.float32, torch.float64):
            scale = chunk.new_tensor(self.input_scale).numpy()[()]  # a number of x's type
            invalid = kernels.dac_lookup(chunk.contiguous().numpy(), scale,
                                         self.config.input_limit, self._signal_steps.numpy(),
                                         row_levels.numpy(), index.numpy())
        else:  # other float types, through torch (NaN has no DAC level: checked first)
            invalid = int(torch.isnan(chunk).sum())
            if not invalid:
                full = self._table_index(dac_levels(chunk, self.input_scale,
                                                    self.config.input_bits))
                row_levels.copy_(self._signal_steps[full])
                if index.numel():
                    index.copy_(full)
        if invalid:
            raise ConfigError(f"the crossbar input has {invalid} NaN value(s)")

    def _table_index(self, levels: torch.Tensor) -> torch.Tensor:
        """[N, I] DAC levels -> [T_in, N, R] lookup-table indices; level 0 (0 V) pads rows."""
        rows, tile_rows = levels.shape[0], self.config.tile_rows
        pad = self.tiles_in * tile_rows - self.in_features
        index = nn.functional.pad(
            levels + self.config.input_limit, (0, pad), value=self.config.input_limit
        )  # [N, I_pad]
        # contiguous, so the table lookups are too: the matmuls run ~7% faster on them
        return index.view(rows, self.tiles_in, tile_rows).transpose(0, 1).contiguous()

    def _variance_parts(
        self, index: torch.Tensor, levels: torch.Tensor, low: torch.Tensor | None,
        matrix: torch.Tensor, out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read-noise variance of every column as two parts that add up to it: [T_in, N, R]
        indices -> ([T_in, N, P*O_pad] a matmul in `matrix`'s dtype, [T_in, N] float32 shared
        by every column of a row).

        levels: [2, L] the (low, slope) tables; matrix: [T_in, R or 2R, P*O_pad] the cells'
        factors (noise_matrix, or the forward's _variance_matrix relative to its reference
        state); low: [L] float32 the low table when every pair has the sign sum `sign_sum`
        (its part is then a row sum), else None (both parts in the matmul)."""
        if low is not None:  # the signs' matrix is sign_sum everywhere
            rows = low[index].sum(-1) * self.sign_sum  # [T_in, N]
            transform = levels[1][index]  # [T_in, N, R]
        else:
            rows = index.new_zeros(index.shape[:2], dtype=torch.float32)
            transform = torch.cat((levels[0][index], levels[1][index]), -1)  # [T_in, N, 2R]
        return torch.bmm(transform, matrix, out=out), rows

    def _forward_variance(
        self, index: torch.Tensor, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward's read-noise variance in ADC steps^2, relative to the reference state,
        as `_variance_parts`, its matmul in variance_dtype()."""
        return self._variance_parts(index, self._variance_levels, self._variance_low,
                                    self._variance_matrix, out)

    def _variance(self, index: torch.Tensor) -> torch.Tensor:
        """[T_in, N, R] indices -> [T_in, N, P*O_pad] read-noise variance of every column, in
        output units^2 (the parts added, float rounding below 0 clamped)."""
        low = self.noise_table[0] if self.sign_sum is not None else None
        columns, rows = self._variance_parts(index, self.noise_table, low, self.noise_matrix)
        return (columns + rows[..., None]).clamp_(min=0)

    def column_variance(self, levels: torch.Tensor) -> torch.Tensor:
        """Exact read-noise variance of the pre-ADC reads: [N, I] -> [T_in, N, P, O_pad]."""
        shape = (self.tiles_in, levels.shape[0], self.planes, -1)
        if self.noise_matrix is None:
            return torch.zeros(*shape[:-1], self.signal_matrix.shape[-1] // self.planes)
        return self._variance(self._table_index(levels)).view(shape)

    def column_currents(
        self, levels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pre-ADC column reads u = I * c of every tile, plane and column, with read noise per
        config from `generator` (default: the module's stream).

        levels: [N, I] int64 DAC levels -> [T_in, N, P, O_pad] float32 (padded columns
        included)."""
        index = self._table_index(levels)  # [T_in, N, R]
        current = torch.bmm(self.signal_table[index], self.signal_matrix)  # [T_in, N, P*O_pad]
        if self.noise_matrix is not None:
            deviation = self._variance(index).sqrt_()
            generator = generator or self._generator(levels.device)
            draws = torch.randn(current.shape, generator=generator)
            current += deviation * draws
        return current.view(self.tiles_in, levels.shape[0], self.planes, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., I] float (CPU) -> y: [..., O] float32.

        Rows go through in chunks: DAC, the crossbar matmul (and the noise variance's) into
        buffers reused by every chunk, then the ADC and shift-and-add in one fused pass
        (kernels.py)."""
        if x.shape[-1] != self.in_features:
            raise ConfigError(f"expected {self.in_features} input features, got {x.shape[-1]}")
        if x.device.type != "cpu":
            raise ConfigError(f"the crossbar simulator runs on the CPU, got a {x.device} tensor")
        flat = x.reshape(-1, self.in_features)  # [N, I]
        y = flat.new_empty(flat.shape[0], self.out_features, dtype=torch.float32)  # [N, O]
        noisy = self.noise_matrix is not None
        width = self.signal_matrix.shape[-1]  # P * O_pad
        out_padded = width // self.planes
        # reads (+ variance, in its own dtype; the fused pass draws the noise): 4 bytes per
        # element of a float32 CHUNK_ELEMENTS in all
        variance_type = self._variance_matrix.dtype if noisy else None
        element = 4 + (variance_type.itemsize if noisy else 0)
        rows = max(1, min(flat.shape[0], 4 * CHUNK_ELEMENTS // (element * self.tiles_in * width)))
        storage = torch.empty(self.tiles_in * rows * width)
        if noisy:
            variance_storage = torch.empty(self.tiles_in * rows * width, dtype=variance_type)
        # the fused passes run on as many threads as torch's matmuls (numba's own setting,
        # at most the cores it started with)
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        limit = np.float32(self.config.adc_limit)
        clipped = np.zeros((self.tiles_in, out_padded), dtype=np.int64)  # [T_in, O_pad]
        key = self._next_noise_key() if noisy else None
        tile_rows = self.config.tile_rows
        levels_storage = torch.empty(self.tiles_in * rows * tile_rows)
        index_storage = torch.empty(self.tiles_in * rows * tile_rows if noisy else 0,
                                    dtype=torch.int64)
        for start in range(0, flat.shape[0], rows):
            chunk = flat[start : start + rows]
            n = chunk.shape[0]
            # [T_in, n, P*O_pad] views of the buffers, contiguous
            size = self.tiles_in * n * width
            row_shape = (self.tiles_in, n, tile_rows)
            row_levels = levels_storage[: self.tiles_in * n * tile_rows].view(row_shape)
            index = index_storage[: self.tiles_in * n * tile_rows].view(row_shape if noisy
                                                                         else (0, 0, 0))
            self._dac_lookup(chunk, row_levels, index)
            reads = torch.bmm(row_levels, self.signal_matrix,
                              out=storage[:size].view(self.tiles_in, n, width))
            totals = np.zeros((n, out_padded))  # [n, O_pad] float64
            codes_shape = (self.tiles_in, n, self.planes, out_padded)
            if noisy:
                variance, row_variance = self._forward_variance(
                    index, variance_storage[:size].view(self.tiles_in, n, width))
                if variance.dtype == torch.bfloat16:  # numpy has none: its bits, widened there
                    variance = variance.view(torch.uint16)
                kernels.convert_noisy(
                    reads.view(codes_shape).numpy(), variance.view(codes_shape).numpy(),
                    row_variance.numpy(), key, start, limit, self._plane_weights, totals,
                    clipped)
            else:
                kernels.convert(reads.view(codes_shape).numpy(), limit, self._plane_weights,
                                totals, clipped, row_levels.numpy(), self._signal_columns,
                                self._tie_gamma, self._column_abs_sums, self._column_norms)
            y[start : start + n] = torch.from_numpy(totals[:, : self.out_features]
                                                    * self.output_factor)  # [n, O]
        self._count_conversions(torch.from_numpy(clipped), flat.shape[0])
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def _count_conversions(self, clipped: torch.Tensor, rows: int) -> None:
        """Adds a forward's clipped conversions per column [T_in, O_pad] (padding columns
        left out) to the per-tile statistics."""
        clipped = clipped * self.valid_columns
        self.clipped += clipped.view(self.tiles_in, self.tiles_out, -1).sum(-1)  # [T_in, T_out]
        valid = self.valid_columns.view(self.tiles_out, -1).sum(-1)  # [T_out]
        self.conversions += rows * self.planes * valid

    def clip_stats(self) -> ClipStats:
        return ClipStats(self.clipped.clone(), self.conversions.clone())

    def reset_clip_stats(self) -> None:
        self.clipped.zero_()
        self.conversions.zero_()

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"in={self.in_features}, out={self.out_features}, weight_bits={self.chip.weight_bits}, "
            f"tile={c.tile_rows}x{c.tile_cols}, adc=({c.adc_precision_bits}, "
            f"{c.adc_range_bits}), noise={c.noise}"
        )


class DigitalLinear(nn.Module):
    """The oracle: the layer kept digital, exactly QAT's x_q W_q^T + b; [..., I] -> [..., O]."""

    def __init__(
        self,
        weight: torch.Tensor,
        weight_bits: int,
        weight_scale: float,
        input_scale: float,
        bias: torch.Tensor | None = None,
        input_bits: int = 8,
    ):
        super().__init__()
        check_weight_bits(weight_bits)
        self.weight_scale, self.input_scale = float(weight_scale), float(input_scale)
        self.input_bits = input_bits
        # integers times the scale: the same float32 product as QAT's fake-quantized weight
        self.register_buffer("weight", weight.detach().float() * self.weight_scale)  # [O, I]
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_quant_linear(cls, layer) -> "DigitalLinear":
        bias = None if layer.bias is None else layer.bias.detach()
        return cls(
            layer.integer_weight(), layer.weight_bits, layer.weight_scale, layer.input_scale, bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_q = dac_levels(x, self.input_scale, self.input_bits).float() * self.input_scale
        return nn.functional.linear(x_q, self.weight, self.bias)


class PerChannelCrossbar(CrossbarLinear):
    """A depthwise layer with each channel's taps on its own column: the chip is programmed
    from the [C, K] tap matrix (column c holds channel c's K taps in rows 0 .. K - 1) and
    column c reads only its own K cells, driven by channel c's window. Physically: one K x 1
    array per channel (SynaptogenML's mapping of a depthwise Conv1d), or tiles holding
    floor(R / K) channels on a diagonal whose rows are gated so that a read drives one
    channel's rows only. Unlike CrossbarLinear, different columns see different inputs, so
    the read is not a matmul: a fused per-channel kernel (kernels.py) sums each column's K
    products in float64.

    windows: [..., C, K] float -> y: [..., C] float32. Taps beyond `tile_rows` are read and
    converted in further row tiles, added digitally like any split column.
    """

    def __init__(
        self,
        chip: ProgrammedChip,
        weight_scale: float,
        input_scale: float,
        bias: torch.Tensor | None = None,
        config: CrossbarConfig = CrossbarConfig(),
    ):
        super().__init__(chip, weight_scale, input_scale, bias, config)
        steps = 2.0**config.adc_precision_bits
        # float32 conductances as the ONNX file ships them, widened: products with the float32
        # tables are then exact in float64, so every implementation reads the same values
        g = (chip.r_plus.astype(np.float64) - chip.r_minus.astype(np.float64)).astype(np.float32)
        self._drive = self.signal_table.double().numpy() * steps  # [L], in ADC steps
        # [C_pad, P, K_pad]: one channel's planes and taps contiguous
        self._taps = np.ascontiguousarray(g.astype(np.float64).transpose(2, 0, 1))
        if config.noise != "off":
            r_plus, r_minus = chip.r_plus.astype(np.float64), chip.r_minus.astype(np.float64)
            sign_plus, sign_minus = self._conductance_sign(r_plus), self._conductance_sign(r_minus)
            table = self.noise_table.double().numpy() * steps**2  # [2, L], in ADC steps^2
            self._noise_low, self._noise_slope = table[0].copy(), table[1].copy()
            signed = (sign_plus * r_plus + sign_minus * r_minus).astype(np.float32)
            self._signs = np.ascontiguousarray((sign_plus + sign_minus).transpose(2, 0, 1))
            self._signed_taps = np.ascontiguousarray(
                signed.astype(np.float64).transpose(2, 0, 1))  # [C_pad, P, K_pad]
        # row tiles hold taps: a column's conversions per output are ceil(K / R) x P
        self.kernel, self.channels = chip.in_features, chip.out_features

    def _levels(self, windows: torch.Tensor) -> np.ndarray:
        """[N, C, K] float windows -> [N, C, K] int64 table indices (DAC level + limit)."""
        levels = dac_levels(windows, self.input_scale, self.config.input_bits)
        return (levels + self.config.input_limit).numpy()

    def column_variance(self, levels: torch.Tensor) -> torch.Tensor:
        """Exact read-noise variance of the pre-ADC reads (output units^2, float64):
        levels [N, C, K] -> [T_in, N, P, C_pad]; each column sums its own channel's cells."""
        out = torch.zeros(self.tiles_in, levels.shape[0], self.planes, self._taps.shape[0],
                          dtype=torch.float64)
        if self.noise_table is None:
            return out
        index = levels + self.config.input_limit  # [N, C, K]
        table = self.noise_table.double()
        signs = torch.from_numpy(self._signs)[: self.channels]  # [C, P, K_pad]
        signed = torch.from_numpy(self._signed_taps)[: self.channels]
        rows = self.config.tile_rows
        for t in range(self.tiles_in):
            k = slice(t * rows, min((t + 1) * rows, self.kernel))
            low, slope = table[0][index[..., k]], table[1][index[..., k]]  # [N, C, k]
            variance = (torch.einsum("nck,cpk->npc", low, signs[..., k])
                        + torch.einsum("nck,cpk->npc", slope, signed[..., k]))
            out[t, :, :, : self.channels] = variance
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., C, K] windows (CPU) -> y: [..., C] float32."""
        if tuple(x.shape[-2:]) != (self.channels, self.kernel):
            raise ConfigError(
                f"expected [..., {self.channels}, {self.kernel}] windows, got {list(x.shape)}"
            )
        if x.device.type != "cpu":
            raise ConfigError(f"the crossbar simulator runs on the CPU, got a {x.device} tensor")
        flat = x.reshape(-1, self.channels, self.kernel)  # [N, C, K]
        padded = self._taps.shape[0]
        y = torch.empty(flat.shape[0], self.channels, dtype=torch.float32)
        noisy = self.noise_table is not None
        rows = max(1, min(flat.shape[0], CHUNK_ELEMENTS // (self.tiles_in * self.planes * padded)))
        limit = float(self.config.adc_limit)
        clipped = np.zeros((self.tiles_in, padded), dtype=np.int64)  # [T_in, C_pad]
        tile_rows = self.config.tile_rows
        key = self._next_noise_key() if noisy else None
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        for start in range(0, flat.shape[0], rows):
            index = self._levels(flat[start : start + rows])
            n = index.shape[0]
            totals = np.zeros((n, padded))  # [n, C_pad] float64
            if noisy:
                kernels.convert_per_channel_noisy(
                    index, self._drive, self._taps, tile_rows, limit, self._plane_weights,
                    totals, clipped, self._noise_low, self._noise_slope, self._signs,
                    self._signed_taps, key, start)
            else:
                kernels.convert_per_channel(index, self._drive, self._taps, tile_rows, limit,
                                            self._plane_weights, totals, clipped)
            y[start : start + n] = torch.from_numpy(totals[:, : self.channels]
                                                    * self.output_factor)
        self._count_conversions(torch.from_numpy(clipped), flat.shape[0])
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1])
