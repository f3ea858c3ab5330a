"""Multi-head self-attention with relative positional encoding (Transformer-XL / ESPnet).

The `pe` variants (the paper's Table 3 rows):
- "none": plain scaled dot-product attention, no positional term, no u / v biases.
- "sinusoidal+linear" (baseline) and "learnable+linear": the [2T-1, D] encodings go through
  a bias-free `linear_pos` (D -> D, split into heads): the layer the paper maps onto
  memristors and whose output range needs a wider ADC.
- "sinusoidal": no linear; every head gets the same d_k-dimensional sinusoids (splitting a
  D-dimensional set across heads would leave the last heads with only near-constant,
  low-frequency channels).
- "learnable": no linear; a D-dimensional table split into heads, i.e. each head learns its
  own d_k-dimensional vector per distance.
All but "none" add the learnable biases u (content) and v (position) to the query.
"""

from dataclasses import dataclass

import torch
from torch import nn

from mho.errors import ConfigError
from mho.models.positional import (
    PE_VARIANTS,
    LearnableRelativeEncoding,
    SinusoidalRelativeEncoding,
    rel_shift,
)


@dataclass(frozen=True)
class RelPosAttentionConfig:
    dim: int  # model dim D, split into heads
    num_heads: int
    pe: str = "sinusoidal+linear"  # one of PE_VARIANTS
    learnable_max_distance: int = 32  # frames (40 ms each) of distinct learnable distances
    attention_dropout: float = 0.1  # on the attention weights
    dropout: float = 0.1  # on the module output

    def __post_init__(self):
        if self.pe not in PE_VARIANTS:
            raise ConfigError(f"pe must be one of {PE_VARIANTS}, got {self.pe!r}")
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


class RelPosSelfAttention(nn.Module):
    """LayerNorm -> relative-position MHSA -> dropout. [B, T, D] -> [B, T, D] (no residual)."""

    # [..., T, 2T-1] -> [..., T, T]; the Core ML export swaps in rel_shift_by_reshape
    rel_shift = staticmethod(rel_shift)

    def __init__(self, cfg: RelPosAttentionConfig):
        super().__init__()
        self.cfg = cfg
        self.layer_norm = nn.LayerNorm(cfg.dim)
        # Separate projections (not one fused D -> 3D): each gets its own quantization scales.
        self.query = nn.Linear(cfg.dim, cfg.dim)
        self.key = nn.Linear(cfg.dim, cfg.dim)
        self.value = nn.Linear(cfg.dim, cfg.dim)
        self.out_proj = nn.Linear(cfg.dim, cfg.dim)
        self.attention_dropout = nn.Dropout(cfg.attention_dropout)
        self.dropout = nn.Dropout(cfg.dropout)

        source, _, transform = cfg.pe.partition("+")
        self.uses_linear_pos = transform == "linear"
        # Without linear_pos, sinusoids are shared by all heads (d_k wide); see module doc.
        shared_by_heads = source == "sinusoidal" and not self.uses_linear_pos
        encoding_dim = cfg.head_dim if shared_by_heads else cfg.dim
        self.encoding_heads = 1 if shared_by_heads else cfg.num_heads  # a constant when traced
        if source == "sinusoidal":
            self.pos_encoding = SinusoidalRelativeEncoding(encoding_dim)
        elif source == "learnable":
            self.pos_encoding = LearnableRelativeEncoding(encoding_dim, cfg.learnable_max_distance)
        else:
            self.pos_encoding = None
        if self.uses_linear_pos:
            self.linear_pos = nn.Linear(cfg.dim, cfg.dim, bias=False)
        if self.pos_encoding is not None:
            # Transformer-XL's u and v, one d_k vector per head; ESPnet's init.
            self.pos_bias_u = nn.Parameter(torch.empty(cfg.num_heads, cfg.head_dim))
            self.pos_bias_v = nn.Parameter(torch.empty(cfg.num_heads, cfg.head_dim))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)

    def relative_encodings(self, num_frames: int) -> torch.Tensor:
        """Per-head encodings of distances T-1 .. -(T-1): [H or 1, 2T-1, d_k]."""
        encodings = self.pos_encoding(num_frames)  # [2T-1, D or d_k]
        if self.uses_linear_pos:
            encodings = self.linear_pos(encodings)  # [2T-1, D]
        return encodings.reshape(2 * num_frames - 1, self.encoding_heads,
                                 self.cfg.head_dim).transpose(0, 1)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, num_frames, _ = x.shape
        x = x.reshape(batch, num_frames, self.cfg.num_heads, self.cfg.head_dim)
        return x.transpose(1, 2)  # [B, H, T, d_k]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D]; mask: [B, T] bool, True on valid frames -> [B, T, D]"""
        batch, num_frames, _ = x.shape
        x = self.layer_norm(x)  # [B, T, D]
        query = self.split_heads(self.query(x))  # [B, H, T, d_k]
        key = self.split_heads(self.key(x))  # [B, H, T, d_k]
        value = self.split_heads(self.value(x))  # [B, H, T, d_k]

        if self.pos_encoding is None:
            scores = query @ key.transpose(-2, -1)  # [B, H, T, T]
        else:
            query_u = query + self.pos_bias_u[:, None, :]  # [B, H, T, d_k]
            query_v = query + self.pos_bias_v[:, None, :]
            content = query_u @ key.transpose(-2, -1)  # [B, H, T, T]
            encodings = self.relative_encodings(num_frames)  # [H|1, 2T-1, d_k]
            position = self.rel_shift(query_v @ encodings.transpose(-2, -1))  # [B, H, T, T]
            scores = content + position
        scores = scores * self.cfg.head_dim**-0.5
        # Padded keys get no weight. Every row keeps >= 1 valid key (lengths >= 1), so the
        # softmax never sees a row of -inf only.
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = self.attention_dropout(torch.softmax(scores, dim=-1))  # [B, H, T, T]
        context = (weights @ value).transpose(1, 2).reshape(batch, num_frames, self.cfg.dim)
        return self.dropout(self.out_proj(context))  # [B, T, D]
