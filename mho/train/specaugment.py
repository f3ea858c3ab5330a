"""SpecAugment (Park et al. 2019): random time and frequency masks on log-mel features."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpecAugmentConfig:
    freq_masks: int = 2  # masks per utterance
    max_freq_width: int = 15  # mel bins per mask
    time_masks_per_second: float = 1.0  # masks scale with the utterance's duration
    max_time_width: int = 20  # frames (10 ms) per mask


def spec_augment(
    features: torch.Tensor,
    lengths: torch.Tensor,
    config: SpecAugmentConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Zero random bands of features [B, T, F] (masks stay inside each utterance's length).

    Vectorized: masks are drawn as (start, width) per utterance and applied with one
    broadcast comparison, so the cost does not depend on the number of masks.
    """
    batch, frames, bins = features.shape
    keep = torch.ones_like(features, dtype=torch.bool)  # [B, T, F]

    def band_mask(size: int, count: int, max_width: int, limit: torch.Tensor) -> torch.Tensor:
        """[B, size] True inside any of ``count`` random bands below ``limit`` [B]."""
        widths = (torch.rand(batch, count, generator=generator) * (max_width + 1)).long()
        room = (limit[:, None] - widths).clamp(min=1).float()  # [B, N]
        starts = (torch.rand(batch, count, generator=generator) * room).long()
        position = torch.arange(size)[None, None, :]  # [1, 1, size]
        inside = (position >= starts[..., None]) & (position < (starts + widths)[..., None])
        return inside.any(dim=1)  # [B, size]

    if config.freq_masks:
        full = torch.full((batch,), bins)
        keep &= ~band_mask(bins, config.freq_masks, config.max_freq_width, full)[:, None, :]
    time_masks = int(config.time_masks_per_second * frames / 100)  # 100 frames per second
    if time_masks:
        keep &= ~band_mask(frames, time_masks, config.max_time_width, lengths)[:, :, None]
    return features * keep
