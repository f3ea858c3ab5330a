"""Feature normalization and the convolutional front-end: 10 ms log-mel frames -> 40 ms frames.

Two Conv2d (kernel 3, stride 2, padding 1) over (time, mel), each followed by ReLU, then a
Linear from channels x mel/4 to the model dim. With padding 1, a stride-2 layer turns L
frames into ceil(L / 2), so the output has ceil(T / 4) frames: never zero, even for T = 1.

Padded frames are zeroed before each conv. The conv sees zeros beyond a sequence's end
either way, from its own padding when the utterance is alone or from the zeroed frames in a
batch, so the valid outputs do not depend on what else is in the batch.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

SUBSAMPLING = 4  # input frames per output frame: 10 ms -> 40 ms


def sequence_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B] lengths -> [B, T] bool, True on valid frames."""
    return torch.arange(num_frames, device=lengths.device)[None, :] < lengths[:, None]


def halved_length(lengths: torch.Tensor) -> torch.Tensor:
    """Frames out of a kernel 3 / stride 2 / padding 1 conv: floor((L + 2 - 3) / 2) + 1."""
    return (lengths - (-1)) // 2  # = (L - 1) // 2 + 1 in ops Core ML keeps in integers


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Output frames of the front-end for input lengths [B]: ceil(L / 4), >= 1 for L >= 1."""
    return halved_length(halved_length(lengths))


class FeatureNormalization(nn.Module):
    """(features - mean) / std per mel bin, with fixed statistics stored in the state dict.

    Identity until `set_statistics` is called (typically with `feature_statistics` of the
    training set); part of the model so an exported model takes raw log-mels.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))  # [F]
        self.register_buffer("std", torch.ones(num_features))  # [F]

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-5))  # a constant bin must not blow up

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std  # [B, T, F]


@torch.no_grad()
def feature_statistics(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per bin over the valid frames of (features [B, T, F], lengths [B])
    batches, accumulated in float64 -> ([F], [F]) float32."""
    count, total, total_square = 0, 0.0, 0.0
    for features, lengths in batches:
        mask = sequence_mask(lengths, features.shape[1])  # [B, T]
        valid = features[mask].double()  # [N, F]
        count += valid.shape[0]
        total = total + valid.sum(0)
        total_square = total_square + valid.square().sum(0)
    mean = total / count
    variance = (total_square / count - mean.square()).clamp(min=0)
    return mean.float(), variance.sqrt().float()


@dataclass(frozen=True)
class ConvSubsamplingConfig:
    num_features: int = 80  # log-mel bins in
    channels: int = 32  # of both Conv2d; small: the second conv's cost grows as channels^2
    out_dim: int = 256  # model dim

    @property
    def linear_in_features(self) -> int:
        frequencies = (self.num_features - 1) // 2 + 1  # after conv 1
        frequencies = (frequencies - 1) // 2 + 1  # after conv 2
        return self.channels * frequencies


class ConvSubsampling(nn.Module):
    """[B, T, F] log-mels + lengths [B] -> [B, ceil(T/4), D] + lengths [B]."""

    def __init__(self, cfg: ConvSubsamplingConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(1, cfg.channels, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(cfg.channels, cfg.channels, kernel_size=3, stride=2, padding=1)
        self.activation = nn.ReLU()
        self.linear = nn.Linear(cfg.linear_in_features, cfg.out_dim)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.masked_fill(~sequence_mask(lengths, features.shape[1])[..., None], 0.0)
        x = x[:, None]  # [B, 1, T, F]
        for conv in (self.conv1, self.conv2):
            x = self.activation(conv(x))  # [B, C, T/2, F/2]
            lengths = halved_length(lengths)
            x = x.masked_fill(~sequence_mask(lengths, x.shape[2])[:, None, :, None], 0.0)
        batch, _, num_frames, _ = x.shape  # [B, C, T', F']
        x = x.transpose(1, 2).reshape(batch, num_frames, -1)  # [B, T', C F']
        return self.linear(x), lengths  # [B, T', D]
