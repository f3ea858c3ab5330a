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


# What each utterance may have subtracted from its log-mels (see FeatureNormalization)
UTTERANCE_NORMS = ("none", "level", "spectrum")


class FeatureNormalization(nn.Module):
    """(features - mean) / std per mel bin, with fixed statistics stored in the state dict.

    Identity until `set_statistics` is called (typically with `feature_statistics` of the
    training set); part of the model so an exported model takes raw log-mels.

    ``utterance_norm`` (`UTTERANCE_NORMS`): first subtract each utterance's own mean over its
    valid frames, over all bins ("level") or per bin ("spectrum"). A gain of g dB adds
    g ln(10) / 10 to every log-mel above the floor, and a channel or voice with another
    average spectrum adds a constant per bin: "level" removes the first, "spectrum" both.
    """

    def __init__(self, num_features: int, utterance_norm: str = "none"):
        super().__init__()
        self.utterance_norm = utterance_norm
        self.register_buffer("mean", torch.zeros(num_features))  # [F]
        self.register_buffer("std", torch.ones(num_features))  # [F]

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-5))  # a constant bin must not blow up

    def utterance_offsets(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """What `utterance_norm` subtracts: [B, T, F], [B] -> [B, 1, F] ("spectrum"),
        [B, 1, 1] ("level"). Each frame is weighted by 1 / length before the sum, so partial
        sums stay as small as the features: an FP16 program (Core ML) sums thousands of
        frames without losing the mean to rounding."""
        valid = sequence_mask(lengths.to(features.device), features.shape[1])  # [B, T]
        weights = valid.to(features) / lengths[:, None].to(features)  # [B, T]
        means = (features * weights[..., None]).sum(dim=1, keepdim=True)  # [B, 1, F]
        return means.mean(dim=2, keepdim=True) if self.utterance_norm == "level" else means

    def centre(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Features less their utterance offsets; as they are with utterance_norm "none"."""
        if self.utterance_norm == "none":
            return features
        return features - self.utterance_offsets(features, lengths)  # [B, T, F]

    def neutral(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The raw log-mel that normalizes to 0 in each bin: [F], or [B, 1, F] with an
        utterance_norm (SpecAugment fills its masks with it: average speech, not a tone)."""
        if self.utterance_norm == "none":
            return self.mean
        return self.utterance_offsets(features, lengths) + self.mean.to(features.device)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features [B, T, F], lengths [B] valid frames -> normalized [B, T, F]."""
        return (self.centre(features, lengths) - self.mean) / self.std


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
