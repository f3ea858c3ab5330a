"""Relative positional encodings for self-attention, and the rel-shift that aligns them.

Scores follow Transformer-XL (Dai et al., 2019) as ESPnet implements them:

    score[i, j] = (q_i + u) . k_j  +  (q_i + v) . p(i - j)

where p(r) encodes the relative distance r = i - j (query frame minus key frame). Every
encoding here returns the table for all distances a sequence of T frames contains, ordered
T-1, T-2, ..., -(T-1): [2T-1, D]. `rel_shift` turns the [T, 2T-1] products of the queries
with that table into [T, T] scores indexed by key frame with one gather: no loop over time,
no branch on data, so it exports to ONNX with a dynamic T.

Two sources of p, both defined for any T (nothing sized by a maximum length):
- sinusoidal (Vaswani et al.): fixed sin/cos of r at geometrically spaced frequencies;
- learnable (Shaw et al., 2018): one trained vector per distance in [-max_distance,
  max_distance]; farther distances share the vector at the clip. Past a couple of seconds
  attention is driven by content, and clipping keeps every vector trained on every length.
"""

import torch
from torch import nn

from mho.errors import ConfigError

PE_VARIANTS = ("none", "sinusoidal+linear", "learnable+linear", "sinusoidal", "learnable")


def relative_distances(num_frames: int, device: torch.device | None = None) -> torch.Tensor:
    """T-1, T-2, ..., -(T-1): the row order of every relative encoding table. [2T-1]"""
    return torch.arange(num_frames - 1, -num_frames, -1, device=device)


def rel_shift(scores: torch.Tensor) -> torch.Tensor:
    """[..., T, 2T-1] scores against `relative_distances(T)` -> [..., T, T] by key frame.

    out[..., i, j] = scores[..., i, (T-1) - (i-j)]: a gather along the last axis with
    indices computed from T (ONNX GatherElements). Not ESPnet's pad-and-reshape trick:
    torch.export cannot prove that trick's reshapes valid for a symbolic T and specializes
    it to T >= 2, and on CPU the gather is also about twice as fast (forward + backward).
    """
    num_frames = scores.shape[-2]
    frames = torch.arange(num_frames, device=scores.device)
    columns = frames[None, :] - frames[:, None] + (num_frames - 1)  # [T, T]: (T-1) - (i-j)
    return scores.gather(-1, columns.expand(*scores.shape[:-1], num_frames))  # [..., T, T]


def rel_shift_by_reshape(scores: torch.Tensor) -> torch.Tensor:
    """`rel_shift` without a gather, for Core ML's Neural Engine (mho.exporter.ane_lpa):
    with a zero column appended, row i of the flattened [T, 2T] scores starts at 2T i, so
    out[i, j] = scores[i, (T-1) - i + j] sits at flat index (T-1) + (2T-1) i + j: drop the
    first T-1 entries, view as rows of 2T-1, keep the first T columns. [..., T, 2T-1] ->
    [..., T, T], the same values (never reads the zero column)."""
    *lead, num_frames, width = scores.shape
    flat = nn.functional.pad(scores, (0, 1)).reshape(*lead, num_frames * (width + 1))
    rows = flat[..., num_frames - 1: num_frames - 1 + num_frames * width]
    return rows.reshape(*lead, num_frames, width)[..., :num_frames]


class SinusoidalRelativeEncoding(nn.Module):
    """p(r) = [sin(r w_k), cos(r w_k)] for w_k = 10000^(-2k/D), k < D/2. No parameters."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ConfigError(f"sinusoidal encodings need an even dim, got {dim}")
        self.dim = dim
        frequencies = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        self.register_buffer("frequencies", frequencies, persistent=False)  # [D/2]

    def forward(self, num_frames: int) -> torch.Tensor:
        """-> [2T-1, D]"""
        distances = relative_distances(num_frames, self.frequencies.device)
        angles = distances.to(torch.float32)[:, None] * self.frequencies  # [2T-1, D/2]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # [2T-1, D]


class LearnableRelativeEncoding(nn.Module):
    """A trained vector per relative distance, clipped to +-max_distance frames."""

    def __init__(self, dim: int, max_distance: int):
        super().__init__()
        self.dim = dim
        self.max_distance = max_distance
        # Row max_distance + r holds distance r. Unit-variance rows: the same scale as the
        # sinusoids (whose entries have variance 1/2), so both variants start comparably.
        self.table = nn.Parameter(torch.randn(2 * max_distance + 1, dim))  # [2W+1, D]

    def forward(self, num_frames: int) -> torch.Tensor:
        """-> [2T-1, D]"""
        distances = relative_distances(num_frames, self.table.device)
        rows = distances.clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.table[rows]  # [2T-1, D]
