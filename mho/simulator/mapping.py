"""Map a whole QAT model onto simulated crossbars: one seed = one chip, bit for bit.

    simulated, report = map_to_crossbars(model, SimulatorConfig(), seed=3)
    simulated(features, lengths)                 # the model, every static-weight op analog
    save_chip(report, "chip.npz")                # the programmed state of every layer
    simulated, report = load_chip(model, "chip.npz")   # the same chip again, no programming

Every layer from `quantized_layers(model)` is replaced (in a deep copy) by its crossbar twin
(layers.py), or kept as the QAT layer where a rule says `digital` (the paper's oracle). Layer
`name` is programmed with derive_seed(seed, name) and reads noise from
derive_seed(seed, name, "noise"): a layer's chip does not depend on which other layers are
mapped, so a digital rule elsewhere leaves it unchanged.

A chip file holds every core's ProgrammedChip, the SimulatorConfig and a fingerprint of the
model's integer weights; loading it for another model is an error, not a silent mismatch.
"""

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from torch import nn
from tqdm import tqdm

from mho.errors import ConfigError, MhoError
from mho.io import atomic_path
from mho.models.quant import quantized_layers
from mho.simulator.config import LayerSettings, SimulatorConfig
from mho.simulator.device import DeviceConfig, ProgrammedChip
from mho.simulator.layers import derive_seed, twin_class

# 2: the config records the depthwise layout. Format 1 files predate the setting and hold
# block-diagonal depthwise chips: they load as such.
CHIP_FORMAT = 2
READABLE_CHIP_FORMATS = (1, 2)
_CHIP_ARRAYS = ("r_plus", "r_minus", "llrs", "hhrs")
_CHIP_META = (
    "in_features", "out_features", "weight_bits", "tile_rows", "tile_cols", "seed",
    "unverified_cells",
)


@dataclass(frozen=True)
class LayerMapping:
    """How one quantized layer was mapped."""

    name: str  # module name, e.g. "blocks.0.attention.linear_pos"
    kind: str  # "linear", "conv1d", "depthwise_conv1d" or "conv2d"
    digital: bool  # kept as the QAT layer (no crossbar)
    adc: tuple[int, int] | None  # (precision, range) bits; None when digital
    weight_bits: int  # as programmed (after any weight_bits rule)
    weights: int  # weights of the layer
    tiles: int  # crossbar tiles per bit plane and polarity (0 when digital)
    cells: int  # all cells: tiles x rows x columns x planes x 2 polarities
    seconds: float  # programming time
    chips: tuple[ProgrammedChip, ...] = field(default=(), repr=False, compare=False)
    layout: str | None = None  # depthwise layout of a depthwise conv on crossbars, else None


@dataclass(frozen=True)
class MappingReport:
    seed: int  # the chip's programming seed
    config: SimulatorConfig
    fingerprint: str  # of the model's integer weights (see `weight_fingerprint`)
    layers: tuple[LayerMapping, ...]

    @property
    def crossbar_layers(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.layers if not m.digital)

    @property
    def digital_layers(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.layers if m.digital)

    @property
    def cells(self) -> int:
        return sum(m.cells for m in self.layers)

    @property
    def seconds(self) -> float:
        return sum(m.seconds for m in self.layers)

    def table(self) -> str:
        """A plain-text table, one line per layer (for the CLI to print)."""
        lines = [f"{'layer':<40} {'kind':<17} {'mode':<8} {'adc':>5} {'bits':>4} {'tiles':>6}"]
        for m in self.layers:
            adc = "-" if m.adc is None else f"{m.adc[0]}/{m.adc[1]}"
            mode = "digital" if m.digital else "crossbar"
            lines.append(
                f"{m.name:<40} {m.kind:<17} {mode:<8} {adc:>5} {m.weight_bits:>4} {m.tiles:>6}"
            )
        lines.append(
            f"seed {self.seed}: {len(self.crossbar_layers)} crossbar / "
            f"{len(self.digital_layers)} digital layers, {self.cells:,} cells, "
            f"programmed in {self.seconds:.1f} s"
        )
        return "\n".join(lines)


def weight_fingerprint(model: nn.Module) -> str:
    """sha256 (hex, 16 digits) of every quantized layer's name, kind, bits and integer weights:
    what a chip stores. Scales and biases are digital and stay out of it."""
    digest = hashlib.sha256()
    for name, layer in quantized_layers(model).items():
        weight = layer.integer_weight().cpu().numpy().astype(np.int32)
        digest.update(f"{name}|{layer.kind}|{layer.weight_bits}|{weight.shape}|".encode())
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def _quantized_or_fail(model: nn.Module) -> dict:
    layers = quantized_layers(model)
    if not layers:
        raise MhoError(
            "model has no quantized layers: quantize it first (QAT: "
            "mho.quantize(model), then calibrate or fine-tune) before mapping it"
        )
    return layers


def map_to_crossbars(
    model: nn.Module, config: SimulatorConfig, seed: int, progress: bool = False
) -> tuple[nn.Module, MappingReport]:
    """A deep copy of the QAT `model` (eval mode) with every quantized layer replaced by its
    crossbar twin, or kept digital, per `config`; and what was mapped. `progress`: a tqdm bar
    over layers on stderr."""
    return _map(model, config, seed, chips=None, progress=progress)


def _map(
    model: nn.Module,
    config: SimulatorConfig,
    seed: int,
    chips: dict[str, list[ProgrammedChip]] | None,
    progress: bool,
) -> tuple[nn.Module, MappingReport]:
    settings = config.resolve(_quantized_or_fail(model))
    fingerprint = weight_fingerprint(model)
    simulated = copy.deepcopy(model).eval()
    mappings = []
    layers = quantized_layers(simulated)
    for name, layer in tqdm(
        layers.items(), desc="programming", unit="layer", disable=not progress, leave=False
    ):
        started = time.perf_counter()
        twin = _map_layer(name, layer, settings[name], config, seed, chips)
        if twin is not None:
            parent_name, _, child_name = name.rpartition(".")
            setattr(simulated.get_submodule(parent_name), child_name, twin)
        layer_chips = () if twin is None else twin.chips
        tiles = 0 if twin is None else twin.tiles
        planes = layer_chips[0].planes if layer_chips else 0
        mappings.append(
            LayerMapping(
                name=name,
                kind=layer.kind,
                digital=twin is None,
                adc=None if twin is None else settings[name].adc,
                weight_bits=layer.weight_bits,
                weights=layer.weight.numel(),
                tiles=tiles,
                cells=tiles * config.tile[0] * config.tile[1] * planes * 2,
                seconds=time.perf_counter() - started,
                chips=layer_chips,
                layout=getattr(twin, "layout", None),
            )
        )
    return simulated, MappingReport(seed, config, fingerprint, tuple(mappings))


def _map_layer(name, layer, settings: LayerSettings, config, seed, chips):
    """The twin of one (copied) QAT layer, or None to keep it digital."""
    if settings.weight_bits is not None:  # re-quantize the float QAT weights (copy only)
        layer.quant_config = replace(layer.quant_config, weight_bits=settings.weight_bits)
    if settings.digital:
        return None
    try:
        twin = twin_class(layer.kind, settings.depthwise)
        crossbar_config = config.crossbar_config(
            settings.adc, layer.input_observer.bits, derive_seed(seed, name, "noise")
        )
        if chips is None:
            return twin.from_quant(
                layer, config=crossbar_config, device=config.device, seed=derive_seed(seed, name)
            )
        return twin.from_chips(layer, chips[name], crossbar_config)
    except ConfigError as error:
        raise ConfigError(f"{name}: {error}") from None


def save_chip(report: MappingReport, path: str | Path) -> None:
    """Write every programmed layer of a mapping (and its config and model fingerprint) to one
    .npz file, atomically."""
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for i, mapping in enumerate(report.layers):
        if mapping.digital:
            continue
        metas = []
        for j, chip in enumerate(mapping.chips):
            for key in _CHIP_ARRAYS:
                arrays[f"l{i}_c{j}_{key}"] = getattr(chip, key)
            meta = {key: getattr(chip, key) for key in _CHIP_META}
            metas.append(meta | {"device": asdict(chip.device), "arrays": f"l{i}_c{j}"})
        layers.append({"name": mapping.name, "chips": metas, "layout": mapping.layout})
    meta = {
        "format": CHIP_FORMAT,
        "seed": report.seed,
        "fingerprint": report.fingerprint,
        "config": report.config.to_dict(),
        "layers": layers,
    }
    with atomic_path(path) as partial, open(partial, "wb") as file:
        np.savez(file, meta=np.array(json.dumps(meta)), **arrays)


def _read_chip_file(path: str | Path, arrays: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            loaded = {k: data[k] for k in data.files if k != "meta"} if arrays else {}
    except (OSError, KeyError, ValueError) as error:
        raise MhoError(f"cannot read a chip from {path}: {error}") from error
    if meta.get("format") not in READABLE_CHIP_FORMATS:
        raise MhoError(f"{path}: unsupported chip format {meta.get('format')}")
    if meta["format"] == 1:  # before the depthwise layout setting: block-diagonal chips
        meta["config"] = {"depthwise": "block-diagonal"} | meta["config"]
    return meta, loaded


def chip_config(path: str | Path) -> SimulatorConfig:
    """The settings a saved chip was programmed and read with."""
    meta, _ = _read_chip_file(path, arrays=False)
    return SimulatorConfig.from_dict(meta["config"], where=str(path))


def load_chip(
    model: nn.Module,
    path: str | Path,
    config: SimulatorConfig | None = None,
    progress: bool = False,
) -> tuple[nn.Module, MappingReport]:
    """The simulated `model` on the chip saved at `path` (no programming). With the file's own
    config: the same outputs, bit for bit, as the mapping that made the file. With `config`:
    the same conductances read with other settings (ADC per layer, read noise, layers moved
    to digital), so one chip can be swept; its tiles and weight bits must be the chip's, and
    a layer it puts on crossbars must be on the chip. MhoError if the chip was made for
    another model."""
    meta, arrays = _read_chip_file(path)
    _quantized_or_fail(model)
    fingerprint = weight_fingerprint(model)
    if meta["fingerprint"] != fingerprint:
        raise MhoError(
            f"{path} was programmed for another model (weights fingerprint "
            f"{meta['fingerprint']}, this model's is {fingerprint})"
        )
    chips = {}
    for layer in meta["layers"]:
        chips[layer["name"]] = [
            ProgrammedChip(
                **{key: arrays[f"{c['arrays']}_{key}"] for key in _CHIP_ARRAYS},
                **{key: c[key] for key in _CHIP_META},
                device=DeviceConfig(**c["device"]),
            )
            for c in layer["chips"]
        ]
    saved = SimulatorConfig.from_dict(meta["config"], where=str(path))
    return _read_chips(model, chips, saved, int(meta["seed"]), config, str(path), progress)


def reread(
    model: nn.Module, report: MappingReport, config: SimulatorConfig, progress: bool = False
) -> tuple[nn.Module, MappingReport]:
    """The chip of an earlier mapping of `model` (its `report`) read with `config`, without
    programming: what `load_chip` does with a saved file. Programming depends only on the
    device and the seed, so this equals map_to_crossbars(model, config, report.seed) when
    the config keeps the chip's tiles, weight bits and depthwise layouts and puts on
    crossbars only layers the chip holds (MhoError otherwise)."""
    if report.fingerprint != weight_fingerprint(model):
        raise MhoError("the chip was programmed for another model")
    chips = {m.name: list(m.chips) for m in report.layers if not m.digital}
    return _read_chips(model, chips, report.config, report.seed, config, "the chip", progress)


def _read_chips(model, chips, saved: SimulatorConfig, seed: int,
                config: SimulatorConfig | None, where: str, progress: bool):
    """`model` on programmed `chips` {layer: its chips} (made with `saved` and `seed`), read
    with `config` (None: `saved`)."""
    names = quantized_layers(model)
    saved_settings = saved.resolve(names)
    if {name for name, s in saved_settings.items() if not s.digital} != set(chips):
        raise MhoError(f"{where}: its layers do not match its own config (corrupt file?)")
    if config is None:
        return _map(model, saved, seed, chips=chips, progress=progress)
    if config.tile != saved.tile:
        raise MhoError(f"{where} has {saved.tile[0]} x {saved.tile[1]} tiles; the config asks "
                       f"for {config.tile[0]} x {config.tile[1]}")
    used = {}
    for name, settings in config.resolve(names).items():
        if settings.digital:
            continue
        if name not in chips:
            raise MhoError(f"{where}: {name} was kept digital when the chip was programmed")
        if settings.weight_bits != saved_settings[name].weight_bits:
            raise MhoError(f"{where}: {name} was programmed at other weight bits")
        if names[name].kind == "depthwise_conv1d" and (
            settings.depthwise != saved_settings[name].depthwise
        ):
            raise MhoError(f"{where}: {name} was programmed in the "
                           f"{saved_settings[name].depthwise} depthwise layout, the config asks "
                           f"for {settings.depthwise}")
        used[name] = chips[name]
    return _map(model, config, seed, chips=used, progress=progress)
