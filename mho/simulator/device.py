"""Programming simulated ReRAM cells with the Synaptogen device model, vectorized over a layer.

A layer y = x W^T with b-bit integer weights becomes b-1 binary bit planes (MSB first), each a
differential pair of crossbars (polarity 0: the + cell, set for positive weights; polarity 1:
the - cell, set for negative weights; a zero weight leaves both cells in HRS). W^T is padded
to whole tiles, so every plane holds an [I_pad, O_pad] array of cells per polarity.

Programming follows SynaptogenML's `TiledMemristorLinear.init_from_linear_quant`: fresh cells,
optional wear pulses, RESET (+2 V) of every cell, SET (-2 V) of the cells whose bit is 1, then
optional write-verify. The cell state machine is a port of `synaptogen.applyVoltage`
(PyPI synaptogen 0.2.0, MIT) with two deliberate differences:

- randomness comes from a seeded numpy Generator (synaptogen draws from an unseeded
  module-level generator), so one seed is one chip, bit for bit;
- the reset threshold `ur` is a copy of the sampled feature, as in the Julia original;
  the Python port keeps a view into `y`, so a reset voltage silently overwrites the
  sampled threshold until the first cycle-to-cycle draw (it never affects reset-then-set
  programming without wear pulses).

What reading needs per cell is its mixing state r: I(V) = (1 - r) P_L(V) + r P_H(V), with the
LLRS / HHRS polynomials of the device model (r = 0: lowest LRS, r = 1: highest HRS; measured
cells lie around 0.16 (LRS, ~4.5 kOhm) and 0.84 (HRS, ~75 kOhm)).
"""

import importlib.resources
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mho.errors import ConfigError, MhoError
from mho.io import atomic_path

K_B_T = 1.380649e-23 * 300.0  # J: thermal energy at 300 K (Johnson noise)
ELECTRON_CHARGE = 1.602176634e-19  # C (shot noise)
PULSES_PER_WEAR_CYCLE = 15  # SynaptogenML applies num_cycles_init * 15 random pulses
WEAR_VOLTAGE = 2.0  # V: wear pulses are uniform in [-WEAR_VOLTAGE, WEAR_VOLTAGE]
CELLS_PER_CHUNK = 1 << 16  # programming works on chunks of cells (bounded memory); fixed,
# because each chunk has its own random stream: changing it changes every chip

_HRS, _US, _LRS, _UR = 0, 1, 2, 3  # rows of the feature vector y (as in synaptogen)
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DeviceConfig:
    """How cells are programmed. The default is SynaptogenML's measured device."""

    variability: bool = True  # device-to-device and cycle-to-cycle spread; False: r exactly
    # 0 (set) or 1 (reset), SynaptogenML's `ideal_programming`
    linear_iv: bool = False  # replace the LLRS / HHRS polynomials by their chords through the
    # full-scale read voltage: read current exactly proportional to the input voltage
    wear_cycles: int = 0  # cycles of PULSES_PER_WEAR_CYCLE random pulses before programming,
    # one voltage per pulse and crossbar (SynaptogenML's num_cycles_init)
    reset_voltage: float = 2.0  # V, >= Umax (1.46 V): a full RESET to HRS
    set_voltage: float = -2.0  # V, below every cell's SET threshold (at most -0.4 V)
    verify_tolerance: float | None = None  # write-verify: re-program cells whose single-cell
    # read c * I(V_read) is further than this from their bit (SynaptogenML's correction)
    verify_cycles: int = 0  # write-verify budget: at most this many re-programming rounds
    var_order: int = 10  # order of the cycle-to-cycle vector autoregression (1..10)
    params_path: str | None = None  # device parameter JSON; None: synaptogen's measured defaults

    def __post_init__(self):
        if self.wear_cycles < 0:
            raise ConfigError(f"DeviceConfig.wear_cycles must be >= 0, got {self.wear_cycles}")
        if self.verify_cycles < 0:
            raise ConfigError(f"DeviceConfig.verify_cycles must be >= 0, got {self.verify_cycles}")
        if self.verify_tolerance is not None and not self.verify_tolerance > 0:
            raise ConfigError(
                f"DeviceConfig.verify_tolerance must be > 0 or None, got {self.verify_tolerance}"
            )
        if self.verify_cycles > 0 and self.verify_tolerance is None:
            raise ConfigError("DeviceConfig.verify_cycles > 0 needs a verify_tolerance")
        if not self.reset_voltage > 0 > self.set_voltage:
            raise ConfigError(
                "DeviceConfig needs reset_voltage > 0 > set_voltage, got "
                f"{self.reset_voltage} and {self.set_voltage}"
            )
        if not 1 <= self.var_order <= 10:
            raise ConfigError(f"DeviceConfig.var_order must be in 1..10, got {self.var_order}")
        if not self.variability and (self.wear_cycles or self.verify_cycles):
            raise ConfigError(
                "DeviceConfig: wear_cycles and write-verify need variability=True "
                "(ideal programming has no spread to wear or verify)"
            )

    @classmethod
    def ideal(cls) -> "DeviceConfig":
        """No variability and a linear I-V: a crossbar that computes the integer matmul."""
        return cls(variability=False, linear_iv=True)


@dataclass(frozen=True, eq=False)
class DeviceParams:
    """Synaptogen's measured parameters (as `synaptogen.load_params`, in float64)."""

    u_max: float  # V: the voltage at which a RESET reaches HRS completely
    u0: float  # V: resistance is defined as R = U0 / I(U0)
    eta: float  # curvature of the partial RESET transition
    gamma: np.ndarray  # [F, D] per-feature polynomials (descending) of the output transform
    weights: np.ndarray  # [K] weights of the device-to-device Gaussian mixture
    mu_dtd: np.ndarray  # [2F, K] means of the mixture
    chol_dtd: np.ndarray  # [2F, 2F, K] lower Cholesky factors of its covariances
    var: np.ndarray  # [F, F (p + 1)] VAR coefficients; columns: [noise, oldest .. newest]
    llrs: np.ndarray  # [7] I(V) of the lowest LRS, numpy.polyval order (highest power first)
    hhrs: np.ndarray  # [6] I(V) of the highest HRS
    g_llrs: float  # S: conductance of the LLRS at U0
    g_hhrs: float  # S: conductance of the HHRS at U0 (negative: an extrapolated bound)

    @property
    def features(self) -> int:
        return self.gamma.shape[0]


def default_params_path() -> Path:
    return Path(str(importlib.resources.files("synaptogen") / "default_params.json"))


@lru_cache(maxsize=8)
def load_device_params(path: str | None = None, var_order: int = 10) -> DeviceParams:
    """Read a Synaptogen parameter file (default: the one shipped with PyPI synaptogen)."""
    path = Path(path) if path is not None else default_params_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        gamma = np.asarray(raw["γ"], dtype=np.float64)
        orders = sorted(int(k.rsplit("_", 1)[1]) for k in raw if k.startswith("VAR_"))
        order = next(q for q in orders if q >= var_order)  # as synaptogen: next order available
        features = gamma.shape[0]
        var = np.asarray(raw[f"VAR_{order:03d}"], dtype=np.float64)[:, : (var_order + 1) * features]
        weights = np.asarray(raw["wk"], dtype=np.float64)
        k = len(weights)
        chol = np.asarray(raw["LDtD"], dtype=np.float64).reshape(2 * features, k, 2 * features)
        u0 = float(raw["U₀"])
        llrs = np.asarray(raw["LLRS"], dtype=np.float64)
        hhrs = np.asarray(raw["HHRS"], dtype=np.float64)
        return DeviceParams(
            u_max=float(raw["Umax"]),
            u0=u0,
            eta=float(raw["η"]),
            gamma=gamma,
            weights=weights,
            mu_dtd=np.asarray(raw["μDtD"], dtype=np.float64),
            chol_dtd=np.moveaxis(chol, 1, 2),  # [2F, 2F, K] as synaptogen
            var=var,
            llrs=llrs,
            hhrs=hhrs,
            g_llrs=float(np.polyval(llrs, u0) / u0),
            g_hhrs=float(np.polyval(hhrs, u0) / u0),
        )
    except (OSError, KeyError, ValueError, StopIteration) as error:
        raise MhoError(f"cannot read device parameters from {path}: {error}") from error


def unit_current(llrs: np.ndarray, hhrs: np.ndarray, voltage: float) -> float:
    """A: P_L(V) - P_H(V), the current of one ideal differential pair (r+ = 0, r- = 1)."""
    return float(np.polyval(llrs, voltage) - np.polyval(hhrs, voltage))


def bit_planes(weight: np.ndarray, weight_bits: int) -> np.ndarray:
    """[O, I] integer weights -> [P, 2, I, O] bool cell targets of W^T, P = weight_bits - 1.

    Plane 0 is the most significant bit (worth 2^(P-1)); polarity 0 holds the bits of positive
    weights, polarity 1 those of negative weights.
    """
    check_weight_bits(weight_bits)
    weight = np.asarray(weight)
    if weight.ndim != 2 or not np.issubdtype(weight.dtype, np.integer):
        raise ConfigError(f"weights must be a 2-d integer array, got {weight.dtype} {weight.shape}")
    limit = 2 ** (weight_bits - 1) - 1
    if weight.size and np.abs(weight).max() > limit:
        raise ConfigError(f"{weight_bits}-bit weights must lie in +-{limit}")
    magnitude = np.abs(weight.T).astype(np.int64)  # [I, O]
    shifts = np.arange(weight_bits - 2, -1, -1)  # MSB first
    bits = (magnitude[None] >> shifts[:, None, None]) & 1  # [P, I, O]
    positive = weight.T[None] > 0
    return np.stack((bits.astype(bool) & positive, bits.astype(bool) & ~positive), axis=1)


def check_weight_bits(weight_bits: int) -> None:
    if not 2 <= weight_bits <= 8:
        raise ConfigError(f"weight bits must be in 2..8, got {weight_bits}")


def check_tile(tile_rows: int, tile_cols: int) -> None:
    if tile_rows < 1 or tile_cols < 1:
        raise ConfigError(f"tile size must be at least 1 x 1, got {tile_rows} x {tile_cols}")


class _Cells:
    """A chunk of M Synaptogen cells, state in [features or 1, M] arrays (numpy port of
    `synaptogen.CellArray`; every operation is vectorized over the cells)."""

    def __init__(self, params: DeviceParams, count: int, rng: np.random.Generator):
        self.p = params
        self.rng = rng
        f = params.features
        # the draws in synaptogen's order: the VAR noise, the mixture component's uniform,
        # then the device-to-device normals
        noise = rng.standard_normal((f, count))  # [F, M]
        uniform = rng.random(count)  # [M]
        z = rng.standard_normal((2 * f, count))  # [2F, M]
        cumulative = np.cumsum(params.weights) / params.weights.sum()
        # the VAR's first sample x (its history is zeros: only the noise columns count) and
        # each cell's mixture component, CtC mu and sigma and features y, in one pass
        self.x, self.mu_sigma, self.y = _fresh_cells(
            params.var[:, :f], noise, uniform, z, cumulative, params.mu_dtd, params.chol_dtd,
            params.gamma)
        self._noise = noise
        self.xhat = None  # [F(p+1), M] noise, then history: built at the first CtC draw
        self.r = self._r_of_resistance(self.y[_HRS])
        self.ur = self.y[_UR].copy()  # a copy: see the module docstring
        # zeros where synaptogen leaves np.empty: a fresh cell hit by a partial RESET before
        # its first SET reads these (in practice synaptogen's fresh pages are zeros too)
        self.reset_coefs = np.zeros((2, count))
        self.in_hrs = np.zeros(count, dtype=bool)
        self.in_lrs = np.zeros(count, dtype=bool)

    def _r_of_resistance(self, resistance: np.ndarray) -> np.ndarray:
        p = self.p
        return (p.g_llrs - 1.0 / resistance) / (p.g_llrs - p.g_hhrs)

    def current(self, r: np.ndarray, voltage: np.ndarray | float) -> np.ndarray:
        return (1 - r) * np.polyval(self.p.llrs, voltage) + r * np.polyval(self.p.hhrs, voltage)

    def _draw_cycle(self, mask: np.ndarray) -> None:
        """Next cycle-to-cycle sample for the masked cells (shift their VAR history)."""
        f = self.p.features
        if self.xhat is None:  # the history after the first sample: noise, zeros, x
            self.xhat = np.zeros((self.p.var.shape[1], self.x.shape[1]))
            self.xhat[:f], self.xhat[-f:] = self._noise, self.x
        self.xhat[:f] = self.rng.standard_normal((f, self.xhat.shape[1]))
        x = self.p.var @ self.xhat
        self.xhat[f:-f, mask] = self.xhat[2 * f :, mask]
        self.xhat[-f:, mask] = x[:, mask]
        self.x = self.xhat[-f:]

    def apply_voltage(self, u: np.ndarray) -> None:
        """One pulse of u volts per cell ([M]); port of `synaptogen.applyVoltage`."""
        p = self.p
        set_mask = ~self.in_lrs & (u <= self.y[_US])
        reset_mask = ~self.in_hrs & (u > self.ur)
        full_reset = reset_mask & (u >= p.u_max)
        partial_reset = reset_mask & (u < p.u_max)
        draw = self.in_lrs & reset_mask  # leaving LRS starts a new cycle
        coefs_mask = draw & ~full_reset

        if set_mask.any():
            self.r[set_mask] = self._r_of_resistance(self.y[_LRS, set_mask])
            self.in_lrs |= set_mask
            self.in_hrs &= ~set_mask
            self.ur[set_mask] = self.y[_UR, set_mask]
        if draw.any():
            self._draw_cycle(draw)
            self.y = _transform(self.x, self.mu_sigma, self.p.gamma)  # of the new sample
        if coefs_mask.any():
            x1 = self.ur[coefs_mask]
            y1 = self.current(self.r[coefs_mask], x1)
            y2 = self.current(self._r_of_resistance(self.y[_HRS, coefs_mask]), p.u_max)
            self.reset_coefs[0, coefs_mask] = (y1 - y2) / np.abs(p.u_max - x1) ** p.eta
            self.reset_coefs[1, coefs_mask] = y2
        if reset_mask.any():
            self.in_lrs &= ~reset_mask
            self.ur[reset_mask] = u[reset_mask]
        if partial_reset.any():
            a, c = self.reset_coefs[:, partial_reset]
            v = u[partial_reset]
            transition = a * np.abs(p.u_max - v) ** p.eta + c
            low, high = np.polyval(p.llrs, v), np.polyval(p.hhrs, v)
            self.r[partial_reset] = (transition - low) / (high - low)
        if full_reset.any():
            self.in_hrs |= full_reset
            self.r[full_reset] = self._r_of_resistance(self.y[_HRS, full_reset])


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _fresh_cells(var, noise, uniform, z, cumulative, mu_dtd, chol_dtd, gamma
                 ):  # pragma: no cover (compiled)
    """The first state of M fresh cells from their draws, in one pass over the cells.

    var: [F, F] the VAR's noise coefficients; noise: [F, M]; uniform: [M]; z: [2F, M]
    cumulative: [K] the mixture's cumulative weights; mu_dtd: [2F, K]; chol_dtd: [2F, 2F, K]
    gamma: [F, D] -> x [F, M] (the VAR sample), mu_sigma [2F, M], y [F, M] (HRS as 10^y)

    The same float64 arithmetic, rounding for rounding, as the numpy it replaces (so a seed
    still names the same chip; a test pins cells): the two matrix products are FMA chains
    over k in order, as the BLAS computes them here (contract), and the feature transform
    y = mu + sigma (Horner of x) rounds after every operation, as numpy's ufuncs do (its
    own function, without contract). Fused, the pass runs ~5x faster than those numpy
    passes, which spend most of their time on masks, copies and temporaries."""
    features, cells = noise.shape
    components = cumulative.shape[0]
    x = np.empty((features, cells))
    mu_sigma = np.empty((2 * features, cells))
    for m in range(cells):
        for i in range(features):
            total = 0.0
            for k in range(features):
                total += var[i, k] * noise[k, m]
            x[i, m] = total
        c = 0  # np.searchsorted(cumulative, uniform) (side "left"), kept in range
        while c < components - 1 and cumulative[c] < uniform[m]:
            c += 1
        for i in range(2 * features):
            total = 0.0
            for j in range(2 * features):
                total += chol_dtd[i, j, c] * z[j, m]
            mu_sigma[i, m] = mu_dtd[i, c] + total
    return x, mu_sigma, _transform(x, mu_sigma, gamma)


@numba.njit(cache=True, nogil=True)
def _transform(x, mu_sigma, gamma):  # pragma: no cover (compiled)
    """y = mu + sigma x Horner(gamma, x) per feature, y[HRS] = 10^y: [F, M]."""
    features, cells = x.shape
    y = np.empty((features, cells))
    for i in range(features):
        for m in range(cells):
            transformed = 0.0
            for d in range(gamma.shape[1]):
                transformed = transformed * x[i, m] + gamma[i, d]
            y[i, m] = mu_sigma[i, m] + mu_sigma[features + i, m] * transformed
    for m in range(cells):
        y[_HRS, m] = 10.0 ** y[_HRS, m]
    return y


@dataclass(frozen=True, eq=False)
class ProgrammedChip:
    """The programmed state of one layer: everything a read needs.

    r_plus / r_minus: [P, I_pad, O_pad] float32 mixing states of the + and - cells of every
    bit plane (MSB first) over the padded W^T; I_pad, O_pad are multiples of the tile.
    """

    r_plus: np.ndarray  # [P, I_pad, O_pad] float32
    r_minus: np.ndarray  # [P, I_pad, O_pad] float32
    llrs: np.ndarray  # I-V polynomial of r = 0, numpy.polyval order, no constant term
    hhrs: np.ndarray  # I-V polynomial of r = 1
    in_features: int
    out_features: int
    weight_bits: int
    tile_rows: int
    tile_cols: int
    seed: int
    device: DeviceConfig
    unverified_cells: int = 0  # cells still outside the verify tolerance after the budget

    @property
    def planes(self) -> int:
        return self.weight_bits - 1

    @property
    def tiles(self) -> tuple[int, int]:
        """(T_in, T_out): tiles along the input and the output dimension."""
        return self.r_plus.shape[1] // self.tile_rows, self.r_plus.shape[2] // self.tile_cols

    def pair_reads(self, voltage: float, current_scale: float) -> np.ndarray:
        """[P, I_pad, O_pad]: noiseless read of each differential pair at `voltage`, times
        `current_scale` (A^-1): c (r+ - r-) (P_H(V) - P_L(V))."""
        delta = np.polyval(self.hhrs, voltage) - np.polyval(self.llrs, voltage)
        return current_scale * (self.r_plus.astype(np.float64) - self.r_minus) * delta

    def save(self, path: str | Path) -> None:
        """Write the chip to an .npz file, atomically; `load` gives it back bit for bit."""
        meta = {
            "format": _FORMAT_VERSION,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "weight_bits": self.weight_bits,
            "tile_rows": self.tile_rows,
            "tile_cols": self.tile_cols,
            "seed": self.seed,
            "unverified_cells": self.unverified_cells,
            "device": asdict(self.device),
        }
        with atomic_path(path) as partial, open(partial, "wb") as file:
            np.savez(  # to an open file: np.savez would append ".npz" to a name
                file,
                r_plus=self.r_plus,
                r_minus=self.r_minus,
                llrs=self.llrs,
                hhrs=self.hhrs,
                meta=np.array(json.dumps(meta)),
            )

    @classmethod
    def load(cls, path: str | Path) -> "ProgrammedChip":
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in ("r_plus", "r_minus", "llrs", "hhrs")}
        except (OSError, KeyError, ValueError) as error:
            raise MhoError(f"cannot read a programmed chip from {path}: {error}") from error
        if meta.get("format") != _FORMAT_VERSION:
            raise MhoError(f"{path}: unsupported chip format {meta.get('format')}")
        meta.pop("format")
        device = DeviceConfig(**meta.pop("device"))
        return cls(**arrays, device=device, **meta)


def _resolve_current_scale(
    llrs: np.ndarray, hhrs: np.ndarray, read_voltage: float, current_scale: float | None
) -> float:
    """c in A^-1; None: 1 / (P_L(V) - P_H(V)), so an ideal pair at full scale reads exactly 1."""
    if current_scale is not None:
        return current_scale
    return 1.0 / unit_current(llrs, hhrs, read_voltage)


def program_chip(
    weight: np.ndarray,
    weight_bits: int,
    device: DeviceConfig = DeviceConfig(),
    *,
    tile_rows: int = 128,
    tile_cols: int = 128,
    read_voltage: float = 0.6,
    current_scale: float | None = 8020.0,
    seed: int = 0,
    threads: int | None = None,
) -> ProgrammedChip:
    """Program the bit planes of [O, I] integer weights onto crossbar tiles.

    `read_voltage` and `current_scale` only matter for write-verify, which reads single cells
    at the full-scale voltage in the crossbar's output units (see `CrossbarConfig`).
    `threads` programs chunks of cells in parallel (None: torch's intra-op thread count, so
    one setting governs all of mho's parallel work). Same arguments and seed: the same chip,
    bit for bit, whatever the thread count.
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    check_tile(tile_rows, tile_cols)
    targets = bit_planes(weight, weight_bits)  # [P, 2, I, O]
    planes, _, in_features, out_features = targets.shape
    in_pad = -(-in_features // tile_rows) * tile_rows
    out_pad = -(-out_features // tile_cols) * tile_cols
    padded = np.zeros((planes, 2, in_pad, out_pad), dtype=bool)  # padding cells stay in HRS
    padded[:, :, :in_features, :out_features] = targets

    params = load_device_params(device.params_path, device.var_order)
    llrs, hhrs = params.llrs, params.hhrs
    if device.linear_iv:  # chords through the full-scale read voltage
        llrs = np.array([np.polyval(llrs, read_voltage) / read_voltage, 0.0])
        hhrs = np.array([np.polyval(hhrs, read_voltage) / read_voltage, 0.0])

    flat_bits = padded.reshape(-1)
    if not device.variability:
        r = (1.0 - flat_bits).astype(np.float32)  # SynaptogenML's ideal_programming
        unverified = 0
    else:
        c = _resolve_current_scale(llrs, hhrs, read_voltage, current_scale)
        r, unverified = _program_cells(
            flat_bits, padded.shape, params, device, (tile_rows, tile_cols), c, read_voltage, seed,
            threads or torch.get_num_threads(),
        )
    r = r.reshape(planes, 2, in_pad, out_pad)
    return ProgrammedChip(
        r_plus=np.ascontiguousarray(r[:, 0]),
        r_minus=np.ascontiguousarray(r[:, 1]),
        llrs=llrs,
        hhrs=hhrs,
        in_features=in_features,
        out_features=out_features,
        weight_bits=weight_bits,
        tile_rows=tile_rows,
        tile_cols=tile_cols,
        seed=seed,
        device=device,
        unverified_cells=unverified,
    )


def _program_cells(
    bits: np.ndarray,
    shape: tuple[int, int, int, int],
    params: DeviceParams,
    device: DeviceConfig,
    tile: tuple[int, int],
    current_scale: float,
    read_voltage: float,
    seed: int,
    threads: int,
) -> tuple[np.ndarray, int]:
    """Flat bits of [P, 2, I_pad, O_pad] cells -> (flat float32 r, cells failing verify).

    Each chunk of cells has its own random stream and its own slice of the output, so chunks
    run on `threads` threads in any order with the same result (numpy releases the GIL in
    its random draws and array arithmetic, which are most of the work)."""
    planes, polarities, in_pad, out_pad = shape
    tiles_in, tiles_out = in_pad // tile[0], out_pad // tile[1]
    count = bits.size
    chunks = -(-count // CELLS_PER_CHUNK)
    # one stream for the wear voltages, one per chunk of cells: reproducible and independent
    wear_stream, *chunk_streams = np.random.SeedSequence(seed).spawn(1 + chunks)
    pulses = device.wear_cycles * PULSES_PER_WEAR_CYCLE
    crossbars = planes * polarities * tiles_in * tiles_out
    wear = np.random.default_rng(wear_stream).uniform(
        -WEAR_VOLTAGE, WEAR_VOLTAGE, size=(pulses, crossbars)
    )  # [pulses, crossbars]: SynaptogenML applies one voltage to a whole crossbar

    r = np.empty(count, dtype=np.float32)

    def program(chunk: int) -> int:
        start, stop = chunk * CELLS_PER_CHUNK, min(count, (chunk + 1) * CELLS_PER_CHUNK)
        target = bits[start:stop]  # [M]
        cells = _Cells(params, stop - start, np.random.default_rng(chunk_streams[chunk]))
        if pulses:
            flat = np.arange(start, stop)
            col, row = flat % out_pad, (flat // out_pad) % in_pad
            plane_polarity = flat // (in_pad * out_pad)
            crossbar = (plane_polarity * tiles_in + row // tile[0]) * tiles_out + col // tile[1]
            for pulse in range(pulses):
                cells.apply_voltage(wear[pulse, crossbar])
        cells.apply_voltage(np.full(stop - start, device.reset_voltage))  # RESET all
        cells.apply_voltage(target * device.set_voltage)  # SET where the bit is 1
        failing = 0
        if device.verify_tolerance is not None:
            failing = _write_verify(cells, target, device, current_scale, read_voltage)
        r[start:stop] = cells.r
        return failing

    # one BLAS thread: the chunks' matmuls are tiny ([F, F(p+1)] @ [F(p+1), M]), and BLAS
    # threads on top of ours spin on the same cores (measured: twice the CPU time, no gain)
    with threadpool_limits(limits=1, user_api="blas"):
        if threads == 1 or chunks == 1:
            unverified = sum(map(program, range(chunks)))
        else:
            with ThreadPoolExecutor(min(threads, chunks)) as pool:
                unverified = sum(pool.map(program, range(chunks)))
    return r, unverified


def _write_verify(
    cells: _Cells,
    target: np.ndarray,
    device: DeviceConfig,
    current_scale: float,
    read_voltage: float,
) -> int:
    """SynaptogenML's cycle correction: read every cell at the full-scale voltage (noiseless),
    re-program those further than the tolerance from their bit; returns the failures left."""
    bit = target.astype(np.float64)

    def failing() -> np.ndarray:
        read = current_scale * cells.current(cells.r, read_voltage)
        return np.abs(read - bit) > device.verify_tolerance

    fail = failing()
    for _ in range(device.verify_cycles):
        if not fail.any():  # all-zero pulses change nothing and draw nothing: stop early
            break
        redo = fail.astype(np.float64)
        # a 1 is RESET then SET again, a 0 is SET then RESET again (SynaptogenML's order)
        cells.apply_voltage(redo * bit * device.reset_voltage)
        cells.apply_voltage(redo * bit * device.set_voltage)
        cells.apply_voltage(redo * (1 - bit) * device.set_voltage)
        cells.apply_voltage(redo * (1 - bit) * device.reset_voltage)
        fail = failing()
    return int(fail.sum())
