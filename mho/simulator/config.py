"""Whole-model simulator settings: chip-wide defaults plus per-layer rules, from TOML or CLI.

    adc = [4, 4]                    # (precision bits p, range bits r) of every ADC
    noise = "legacy"
    [device]                        # mho.simulator.DeviceConfig
    wear_cycles = 0
    [[layers]]                      # rules in order; a later rule overrides an earlier one
    pattern = "*.linear_pos"        # fnmatch glob on names from `quantized_layers`
    adc = [1, 7]
    [[layers]]
    pattern = "blocks.0.*"
    digital = true                  # the paper's "oracle": computed digitally, exactly QAT
    [[layers]]
    pattern = "*.depthwise"
    depthwise = "block-diagonal"    # depthwise conv layout (default "per-channel")

CLI shorthands: `--adc 4/4`, `--depthwise LAYOUT`, `--layer "*.linear_pos=1/7"` (or
`=digital`, `=per-channel`, `=block-diagonal`), `--digital PATTERN`.
A rule must match at least one layer (a typo would otherwise silently change nothing).
"""

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mho.config import from_dict, read_toml, to_dict
from mho.errors import ConfigError
from mho.simulator.crossbar import CrossbarConfig
from mho.simulator.device import DeviceConfig, check_weight_bits

LAYERS_NAMED_IN_ERRORS = 6  # how many existing layer names an unknown-pattern error lists
# How a depthwise Conv1d sits on crossbars (mho.simulator.layers): "per-channel" puts each
# channel's K taps on its own column and only those K cells feed it (the paper's and
# SynaptogenML's mapping: per-channel K x 1 arrays, or row-gated tiles); "block-diagonal"
# packs channels onto full tiles, where every column also sums the zero pairs of the other
# channels' rows (fewer tiles, more leakage and read noise).
DEPTHWISE_LAYOUTS = ("per-channel", "block-diagonal")


def _check_depthwise(layout: str, where: str) -> str:
    if layout not in DEPTHWISE_LAYOUTS:
        raise ConfigError(
            f"{where}: depthwise layout must be one of {', '.join(DEPTHWISE_LAYOUTS)}, "
            f"got {layout!r}"
        )
    return layout


def _check_adc(adc: tuple[int, ...], where: str) -> tuple[int, int]:
    if len(adc) != 2:
        raise ConfigError(f"{where}: adc must be [precision, range], got {list(adc)}")
    precision, range_bits = int(adc[0]), int(adc[1])
    # CrossbarConfig owns the rules for what an ADC can be; ask it now, not at mapping time
    CrossbarConfig(adc_precision_bits=precision, adc_range_bits=range_bits)
    return precision, range_bits


@dataclass(frozen=True)
class LayerRule:
    """Settings for the quantized layers whose names match `pattern`; None leaves a setting
    as earlier rules (or the defaults) made it."""

    pattern: str  # fnmatch glob on module names, e.g. "*.linear_pos", "blocks.0.*"
    adc: tuple[int, int] | None = None  # (precision, range) bits of these layers' ADCs
    digital: bool | None = None  # True: keep the QAT layer (the oracle); False: crossbar again
    weight_bits: int | None = None  # re-quantize the (float) QAT weights to this many bits
    depthwise: str | None = None  # layout of depthwise convolutions (DEPTHWISE_LAYOUTS)

    def __post_init__(self):
        if not self.pattern:
            raise ConfigError("layer rule needs a non-empty pattern")
        if self.depthwise is not None:
            _check_depthwise(self.depthwise, f"rule {self.pattern!r}")
        if self.adc is not None:
            object.__setattr__(self, "adc", _check_adc(tuple(self.adc), f"rule {self.pattern!r}"))
        if self.weight_bits is not None:
            check_weight_bits(self.weight_bits)
        if (self.adc, self.digital, self.weight_bits, self.depthwise) == (None,) * 4:
            raise ConfigError(
                f"rule {self.pattern!r} sets nothing (adc, digital, weight_bits, depthwise)"
            )


@dataclass(frozen=True)
class LayerSettings:
    """What the rules resolve to for one layer."""

    adc: tuple[int, int]  # (precision, range) bits
    digital: bool
    weight_bits: int | None  # None: the layer's own QAT weight bits
    depthwise: str = "per-channel"  # layout if the layer is a depthwise conv (else unused)


@dataclass(frozen=True)
class SimulatorConfig:
    adc: tuple[int, int] = (4, 4)  # default (precision, range) bits, the paper's baseline
    noise: str = "legacy"  # read noise: "off", "legacy" (SynaptogenML, the paper) or "physical"
    tile: tuple[int, int] = (128, 128)  # crossbar rows x columns
    read_voltage: float = 0.6  # V: full-scale DAC voltage
    current_scale: float | None = 8020.0  # A^-1, see CrossbarConfig; None: ideal unit current
    device: DeviceConfig = field(default_factory=DeviceConfig)  # programming (variability,
    # wear cycles, write-verify); the default is the measured Synaptogen device
    layers: tuple[LayerRule, ...] = ()  # per-layer overrides, in order
    depthwise: str = "per-channel"  # default layout of depthwise convolutions

    def __post_init__(self):
        object.__setattr__(self, "adc", _check_adc(tuple(self.adc), "SimulatorConfig"))
        _check_depthwise(self.depthwise, "SimulatorConfig")
        if len(self.tile) != 2:
            raise ConfigError(f"tile must be [rows, columns], got {list(self.tile)}")
        object.__setattr__(self, "tile", (int(self.tile[0]), int(self.tile[1])))
        object.__setattr__(self, "layers", tuple(self.layers))
        self.crossbar_config(self.adc)  # validates tile, noise, voltage and scale

    @classmethod
    def ideal(cls, **overrides: Any) -> "SimulatorConfig":
        """A chip that computes QAT's integer matmuls exactly: ideal cells, no noise, the exact
        unit current and an ADC of (8, 8), wide enough for a whole 128-row tile."""
        settings = dict(
            adc=(8, 8), noise="off", current_scale=None, device=DeviceConfig.ideal()
        )
        return cls(**(settings | overrides))

    def crossbar_config(
        self, adc: tuple[int, int], input_bits: int = 8, noise_seed: int = 0
    ) -> CrossbarConfig:
        return CrossbarConfig(
            tile_rows=self.tile[0],
            tile_cols=self.tile[1],
            input_bits=input_bits,
            read_voltage=self.read_voltage,
            adc_precision_bits=adc[0],
            adc_range_bits=adc[1],
            noise=self.noise,
            current_scale=self.current_scale,
            noise_seed=noise_seed,
        )

    def resolve(self, names: Iterable[str]) -> dict[str, LayerSettings]:
        """Settings of every layer name, rules applied in order. A rule that matches no name
        is a ConfigError naming a few layers that exist."""
        names = list(names)
        resolved = {n: LayerSettings(self.adc, False, None, self.depthwise) for n in names}
        for rule in self.layers:
            matched = fnmatch.filter(names, rule.pattern)
            if not matched:
                shown = ", ".join(names[:LAYERS_NAMED_IN_ERRORS])
                hidden = len(names) - LAYERS_NAMED_IN_ERRORS
                more = f" (and {hidden} more)" if hidden > 0 else ""
                raise ConfigError(
                    f"layer pattern {rule.pattern!r} matches no quantized layer; "
                    f"layers are e.g. {shown}{more}"
                )
            for name in matched:
                settings = resolved[name]
                resolved[name] = LayerSettings(
                    adc=rule.adc if rule.adc is not None else settings.adc,
                    digital=rule.digital if rule.digital is not None else settings.digital,
                    weight_bits=(
                        rule.weight_bits if rule.weight_bits is not None else settings.weight_bits
                    ),
                    depthwise=rule.depthwise or settings.depthwise,
                )
        return resolved

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `from_dict(SimulatorConfig, ...)` reads back (also chip files)."""
        data = to_dict(self)
        # TOML has no null: drop the unset fields of rules (they mean "leave as is")
        data["layers"] = [
            {k: v for k, v in rule.items() if v is not None} for rule in data["layers"]
        ]
        data["device"] = {k: v for k, v in data["device"].items() if v is not None}
        if data["current_scale"] is None:
            data.pop("current_scale")
            data["ideal_current"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> "SimulatorConfig":
        data = dict(data)
        if data.pop("ideal_current", False):  # TOML cannot say current_scale = None
            data["current_scale"] = None
        return from_dict(cls, data, where=where)


def load_simulator_config(path: str | Path) -> SimulatorConfig:
    """A SimulatorConfig from TOML; unknown keys and wrong types are ConfigErrors.
    `ideal_current = true` stands for current_scale = None (TOML has no null)."""
    return SimulatorConfig.from_dict(read_toml(path), where=Path(path).name)


def parse_adc(text: str) -> tuple[int, int]:
    """ "4/4" -> (4, 4): precision / range bits."""
    precision, slash, range_bits = text.strip().partition("/")
    if not slash or not precision.strip().isdigit() or not range_bits.strip().isdigit():
        raise ConfigError(f"ADC setting must look like PRECISION/RANGE (e.g. 4/4), got {text!r}")
    return _check_adc((int(precision), int(range_bits)), f"ADC {text!r}")


def parse_layer_rule(text: str) -> LayerRule:
    """ "*.linear_pos=1/7" -> LayerRule(adc=(1, 7)); "blocks.0.*=digital" -> digital;
    "*.depthwise=block-diagonal" (or per-channel) -> that depthwise layout."""
    pattern, equals, value = text.rpartition("=")
    if not equals or not pattern:
        raise ConfigError(
            f"layer rule must look like PATTERN=P/R, PATTERN=digital or PATTERN=LAYOUT "
            f"({', '.join(DEPTHWISE_LAYOUTS)}), got {text!r}"
        )
    value = value.strip().lower()
    if value == "digital":
        return LayerRule(pattern, digital=True)
    if value in DEPTHWISE_LAYOUTS:
        return LayerRule(pattern, depthwise=value)
    return LayerRule(pattern, adc=parse_adc(value))


def with_cli_overrides(
    config: SimulatorConfig,
    adc: str | None = None,
    layers: Sequence[str] = (),
    digital: Sequence[str] = (),
    depthwise: str | None = None,
) -> SimulatorConfig:
    """`--adc P/R` replaces the default ADC, `--depthwise LAYOUT` the default depthwise
    layout; `--layer` and `--digital` rules go after the file's rules (so they win), `--layer`
    ones first, in the order given."""
    rules = [parse_layer_rule(t) for t in layers] + [LayerRule(p, digital=True) for p in digital]
    return replace(
        config,
        adc=parse_adc(adc) if adc is not None else config.adc,
        layers=config.layers + tuple(rules),
        depthwise=(
            _check_depthwise(depthwise, "--depthwise") if depthwise is not None
            else config.depthwise
        ),
    )
