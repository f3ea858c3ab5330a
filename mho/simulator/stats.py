"""ADC clipping statistics of a mapped model: which layers (and tiles) saturate their ADCs.

Every CrossbarLinear core counts its clipped conversions per tile since its last reset; these
helpers gather them by layer name. Typical use:

    reset_clip_stats(simulated)
    simulated(features, lengths)           # one or more runs
    clip_fractions(simulated)              # {"blocks.0.attention.linear_pos": 0.41, ...}
"""

from dataclasses import dataclass

import torch
from torch import nn

from mho.simulator.crossbar import ClipStats
from mho.simulator.layers import CrossbarLayer


def crossbar_layers(model: nn.Module) -> dict[str, CrossbarLayer]:
    """Every crossbar twin in `model` by module name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, CrossbarLayer)}


@dataclass(frozen=True)
class LayerClipStats:
    """Clipping of one layer since the last reset: one ClipStats (per tile) per core."""

    cores: tuple[ClipStats, ...]

    @property
    def clipped(self) -> int:
        return sum(int(c.clipped.sum()) for c in self.cores)

    @property
    def conversions(self) -> int:
        return sum(int(c.conversions.sum()) for c in self.cores)

    @property
    def fraction(self) -> float:
        """Clipped share of all ADC conversions of the layer (0 when nothing ran)."""
        return self.clipped / self.conversions if self.conversions else 0.0

    @property
    def tile_fractions(self) -> tuple[torch.Tensor, ...]:
        """Per core, [T_in, T_out] float64: clipped share of each tile's conversions."""
        return tuple(c.tile_fraction for c in self.cores)

    @property
    def worst_tile_fraction(self) -> float:
        return max((float(f.max()) for f in self.tile_fractions if f.numel()), default=0.0)


def clip_stats(model: nn.Module) -> dict[str, LayerClipStats]:
    """Clipping of every crossbar layer since the last `reset_clip_stats`."""
    return {name: LayerClipStats(m.clip_stats()) for name, m in crossbar_layers(model).items()}


def clip_fractions(model: nn.Module) -> dict[str, float]:
    """{layer name: clipped fraction of its ADC conversions} since the last reset."""
    return {name: stats.fraction for name, stats in clip_stats(model).items()}


def reset_clip_stats(model: nn.Module) -> None:
    """Zero the counters of every crossbar layer (do this before each run you measure)."""
    for layer in crossbar_layers(model).values():
        layer.reset_clip_stats()
