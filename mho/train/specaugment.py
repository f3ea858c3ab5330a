"""SpecAugment (Park et al. 2019): random time and frequency masks on log-mel features."""

from dataclasses import dataclass

import torch

from mho.data.features import FRAMES_PER_SECOND


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
    fill: torch.Tensor,
) -> torch.Tensor:
    """Mask random bands of features [B, T, F] with ``fill``: [F], or [B, 1, F] per utterance
    (what normalizes to 0, `FeatureNormalization.neutral`: a masked band looks like average
    speech after normalization, not like a loud tone).

    Masks stay inside each utterance's length, and each utterance gets time masks in
    proportion to its own duration. Vectorized: masks are drawn as (start, width) per
    utterance and applied with one broadcast comparison.
    """
    batch, frames, bins = features.shape
    # masks drawn on the CPU (the generator's device); features may live on a GPU
    keep = torch.ones(features.shape, dtype=torch.bool)  # [B, T, F]

    def band_mask(size: int, counts: torch.Tensor, max_width: int, limit: torch.Tensor):
        """[B, size] True inside the first ``counts`` [B] of random bands below ``limit``."""
        most = int(counts.max())
        widths = (torch.rand(batch, most, generator=generator) * (max_width + 1)).long()
        room = (limit[:, None] - widths).clamp(min=1).float()  # [B, N]
        starts = (torch.rand(batch, most, generator=generator) * room).long()
        widths = widths * (torch.arange(most)[None, :] < counts[:, None])  # unused masks: 0
        position = torch.arange(size)[None, None, :]  # [1, 1, size]
        inside = (position >= starts[..., None]) & (position < (starts + widths)[..., None])
        return inside.any(dim=1)  # [B, size]

    if config.freq_masks:
        counts = torch.full((batch,), config.freq_masks)
        full = torch.full((batch,), bins)
        keep &= ~band_mask(bins, counts, config.max_freq_width, full)[:, None, :]
    seconds = lengths.float() / FRAMES_PER_SECOND  # [B]
    time_counts = (config.time_masks_per_second * seconds).long()  # [B]
    if int(time_counts.max()) > 0:
        keep &= ~band_mask(frames, time_counts, config.max_time_width, lengths)[:, :, None]
    return torch.where(keep.to(features.device), features, fill.to(features.device))
