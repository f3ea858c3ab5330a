"""`nn.MultiheadAttention` with its projections as `nn.Linear` layers, so they can be quantized
and mapped onto crossbars.

torch's module keeps the query, key and value projections in one raw parameter
(`in_proj_weight`, three quarters of its weights) that it multiplies functionally: no Linear
layer exists for quantization or crossbar mapping to replace. `LinearMultiheadAttention`
computes the same function (same arguments, same outputs, same masks) from four Linear
layers; `from_torch` copies a module's weights into it. `mho.quantize` swaps every
MultiheadAttention of a model for this twin first.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from mho.errors import ConfigError


class LinearMultiheadAttention(nn.Module):
    """Scaled dot-product attention over ``num_heads`` heads with q/k/v/out ``nn.Linear``
    projections; the forward signature and results of ``nn.MultiheadAttention``."""

    # Read by nn.TransformerEncoderLayer's fast-path checks: no packed in-projection here,
    # so the layer takes its regular path, which calls this module's forward.
    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0,
                 bias: bool = True, kdim: int | None = None, vdim: int | None = None,
                 batch_first: bool = False):
        super().__init__()
        if embed_dim % num_heads:
            raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim = embed_dim // num_heads
        self.batch_first = batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> "LinearMultiheadAttention":
        """The same function as ``module``, its weights copied (training mode kept)."""
        if module.bias_k is not None or module.add_zero_attn:
            raise ConfigError("MultiheadAttention with add_bias_kv or add_zero_attn has no "
                              "Linear twin")
        twin = cls(module.embed_dim, module.num_heads, dropout=module.dropout,
                   bias=module.in_proj_bias is not None, kdim=module.kdim, vdim=module.vdim,
                   batch_first=module.batch_first)
        with torch.no_grad():
            if module._qkv_same_embed_dim:
                weights = module.in_proj_weight.chunk(3)
            else:
                weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
            biases = (module.in_proj_bias.chunk(3) if module.in_proj_bias is not None
                      else (None,) * 3)
            for projection, weight, bias in zip((twin.q_proj, twin.k_proj, twin.v_proj),
                                                weights, biases, strict=True):
                projection.weight.copy_(weight)
                if bias is not None:
                    projection.bias.copy_(bias)
            twin.out_proj.weight.copy_(module.out_proj.weight)
            if module.out_proj.bias is not None:
                twin.out_proj.bias.copy_(module.out_proj.bias)
        return twin.to(module.out_proj.weight.device).train(module.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query [L, N, E] (batch_first: [N, L, E]; unbatched: [L, E]), key and value
        [S, N, E_k / E_v] likewise; key_padding_mask [N, S] (True or -inf: ignored);
        attn_mask [L, S] or [N * heads, L, S] (True or -inf: not allowed). Returns the
        output shaped like query and, with need_weights, the weights [N, L, S] (per head
        [N, heads, L, S] unless average_attn_weights)."""
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query[:, None], key[:, None], value[:, None]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask[None]
        elif self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        length, batch, _ = query.shape  # now [L, N, E]
        source = key.shape[0]

        def heads(x: torch.Tensor, frames: int) -> torch.Tensor:  # [T, N, E] -> [N, H, T, d]
            return x.reshape(frames, batch, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

        q = heads(self.q_proj(query), length)
        k = heads(self.k_proj(key), source)
        v = heads(self.v_proj(value), source)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # [N, H, L, S]
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, source, dtype=torch.bool,
                                   device=scores.device).triu(1)
        if attn_mask is not None:
            if attn_mask.dim() == 3:
                attn_mask = attn_mask.reshape(batch, self.num_heads, length, source)
            scores = _masked(scores, attn_mask)
        if key_padding_mask is not None:
            scores = _masked(scores, key_padding_mask[:, None, None, :])
        weights = scores.softmax(dim=-1)
        attended = F.dropout(weights, self.dropout, self.training) @ v  # [N, H, L, d]
        output = self.out_proj(attended.permute(2, 0, 1, 3).reshape(length, batch,
                                                                    self.embed_dim))
        if unbatched:
            output = output[:, 0]
        elif self.batch_first:
            output = output.transpose(0, 1)
        if not need_weights:
            return output, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return output, (weights[0] if unbatched else weights)


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bool masks forbid where True; float masks are added (as torch's attention does)."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask
