"""The Conformer block (Gulati et al., 2020) and its feed-forward and convolution modules.

    x = x + 1/2 FF(x)          macaron half-step
    x = x + MHSA(x, mask)      relative positional encoding, see attention.py (or an LPA:
                               NormedPulseAccumulator, see lpa.py)
    x = x + Conv(x, mask)
    x = x + 1/2 FF(x)
    x = LayerNorm(x)

Each module normalizes its own input (pre-norm) and ends with dropout; the block adds the
residuals. All static-weight ops are nn.Linear / nn.Conv1d, so `quant.enable_quantization`
finds them; the pointwise convolutions are Linears over [B, T, D] (the same matmul).
"""

from dataclasses import dataclass

import torch
from torch import nn

from mho.errors import ConfigError
from mho.models.attention import RelPosAttentionConfig, RelPosSelfAttention
from mho.models.lpa import NormedPulseAccumulator, PulseAccumulatorConfig


@dataclass(frozen=True)
class FeedForwardConfig:
    dim: int  # model dim D
    hidden_dim: int  # usually 4 D
    dropout: float = 0.1


class FeedForward(nn.Module):
    """LayerNorm -> Linear(D, F) -> SiLU -> dropout -> Linear(F, D) -> dropout. [B,T,D]"""

    def __init__(self, cfg: FeedForwardConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.dim)
        self.linear_in = nn.Linear(cfg.dim, cfg.hidden_dim)
        self.activation = nn.SiLU()
        self.linear_out = nn.Linear(cfg.hidden_dim, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.activation(self.linear_in(self.layer_norm(x))))  # [B, T, F]
        return self.dropout(self.linear_out(x))  # [B, T, D]


@dataclass(frozen=True)
class ConvModuleConfig:
    dim: int  # model dim D
    kernel_size: int = 31  # odd: "same" padding keeps T
    dropout: float = 0.1


class ConvModule(nn.Module):
    """LayerNorm -> pointwise D->2D -> GLU -> depthwise conv over time -> LayerNorm -> SiLU ->
    pointwise D->D -> dropout. [B, T, D] -> [B, T, D]

    The norm after the depthwise conv is a LayerNorm over channels, not the original
    BatchNorm: it has no batch statistics, so padded frames cannot leak into valid ones, train
    and eval behave alike, and small batches of uneven lengths are fine. (BatchNorm's one
    advantage, folding into the depthwise weights at inference, matters little here: the
    depthwise conv is a small share of the crossbar area.)
    """

    def __init__(self, cfg: ConvModuleConfig):
        super().__init__()
        if cfg.kernel_size % 2 == 0:
            raise ConfigError(f"conv kernel_size must be odd, got {cfg.kernel_size}")
        self.layer_norm = nn.LayerNorm(cfg.dim)
        self.pointwise_in = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.glu = nn.GLU(dim=-1)
        self.depthwise = nn.Conv1d(
            cfg.dim, cfg.dim, cfg.kernel_size, padding=cfg.kernel_size // 2, groups=cfg.dim
        )
        self.depthwise_norm = nn.LayerNorm(cfg.dim)
        self.activation = nn.SiLU()
        self.pointwise_out = nn.Linear(cfg.dim, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D]; mask: [B, T] bool, True on valid frames -> [B, T, D]"""
        x = self.glu(self.pointwise_in(self.layer_norm(x)))  # [B, T, D]
        # Zero padded frames: the depthwise kernel then sees the same zeros past a sequence's
        # end as its own padding gives an utterance that is alone in the batch.
        x = x.masked_fill(~mask[..., None], 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)  # [B, T, D]
        x = self.activation(self.depthwise_norm(x))
        return self.dropout(self.pointwise_out(x))  # [B, T, D]


@dataclass(frozen=True)
class ConformerBlockConfig:
    feed_forward: FeedForwardConfig
    attention: RelPosAttentionConfig
    convolution: ConvModuleConfig
    lpa: PulseAccumulatorConfig | None = None  # set: an LPA in place of the MHSA


class ConformerBlock(nn.Module):
    """Macaron FF, MHSA, conv module, FF, final LayerNorm. [B, T, D] -> [B, T, D]"""

    def __init__(self, cfg: ConformerBlockConfig):
        super().__init__()
        self.feed_forward_1 = FeedForward(cfg.feed_forward)
        self.attention = (RelPosSelfAttention(cfg.attention) if cfg.lpa is None else
                          NormedPulseAccumulator(cfg.lpa, cfg.attention.dropout))
        self.convolution = ConvModule(cfg.convolution)
        self.feed_forward_2 = FeedForward(cfg.feed_forward)
        self.final_norm = nn.LayerNorm(cfg.attention.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D]; mask: [B, T] bool, True on valid frames -> [B, T, D]"""
        x = x + 0.5 * self.feed_forward_1(x)
        x = x + self.attention(x, mask)
        x = x + self.convolution(x, mask)
        x = x + 0.5 * self.feed_forward_2(x)
        return self.final_norm(x)
