"""Learnable Pulse Accumulator (LPA): an O(n) drop-in for a self-attention module.

Attention lets every frame weigh every other frame (a [T, T] matrix). The LPA instead
cuts the sequence with learned *gates* g_p(t) in [0, 1] ("pulses"), accumulates one
value summary per pulse, and lets each frame read a content-weighted mix of the
summaries it lies in. Per head h (values v_t = W_v x_t split into heads):

    S_p     = sum_t g_p(t) v_t / sum_t g_p(t)                         (pulse summary)
    y_t     = W_o concat_h sum_p w_p(t) r_p(t)                        (output)
    w(t)    = softmax_p(W_w x_t)                                      (which pulses t reads)

with three gate families (the paper's; our equations, see docs/lpa.md):

- content pulses: a rectangular window around t, [t - a_p(t), t + 1 + b_p(t)), whose
  extents come from content: a, b = max_extent * sigmoid(W_e dwconv(x)). Its summary is a
  difference of prefix sums of v read at the (fractional) edges, so the gate is exactly 1
  inside, the edge frame's fraction at the ends; r_p(t) = S_p(t). Hard mode rounds edges.
- periodic windows: g_p(t) = sigmoid(tau (cos(2 pi t / T_p + phi_p) - b_p)) over the whole
  sequence; one global summary per pulse; r_p(t) = g_p(t) S_p.
- position basis: within chunks of K frames, g_p(t) = sigmoid(tau (1 - ((t mod K - mu_p) /
  sigma_p)^2)), a smooth bump of learned centre and width; one summary per chunk and
  pulse; r_p(t) = g_p(t) S_{chunk(t), p}.

tau is the gate temperature (raised during conversion). In training mode gates are soft;
in eval mode (inference, export) every gate is exactly 0 or 1 and content edges are whole
frames: the hard mode. Cost: O(T P d) time and memory, only standard ops (CumSum, GatherElements,
Cos, Sigmoid, MatMul, Pad/Reshape) and no data-dependent control flow, so it exports to
ONNX and CoreML as is.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from mho.errors import ConfigError
from mho.models.statistics import masked_moments

EPSILON = 1e-4  # keeps empty windows (all gates ~0) finite; far below one frame's weight


@dataclass(frozen=True)
class PulseAccumulatorConfig:
    dim: int  # model dim D, split into heads
    num_heads: int
    content_pulses: int = 4  # per head: content-dependent rectangular windows
    periodic_pulses: int = 2  # per head: global summaries under periodic gates
    basis_pulses: int = 2  # per head: chunk-local summaries under positional bumps
    max_extent: int = 32  # frames a content window reaches on each side at most
    chunk: int = 16  # frames per chunk of the position basis
    extent_kernel: int = 5  # depthwise conv over content before the extent projection
    dropout: float = 0.0  # on the module output

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.num_pulses < 1 or min(self.content_pulses, self.periodic_pulses,
                                      self.basis_pulses) < 0:
            raise ConfigError("pulse counts must be >= 0 and at least one pulse in all")
        if self.max_extent < 1 or self.chunk < 1 or self.extent_kernel % 2 == 0:
            raise ConfigError("max_extent and chunk must be >= 1, extent_kernel odd")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_pulses(self) -> int:
        return self.content_pulses + self.periodic_pulses + self.basis_pulses


class PulseAccumulator(nn.Module):
    """forward(x [B, T, D], mask [B, T] bool) -> [B, T, D]: same contract as attention.

    `temperature` (a buffer, so checkpoints keep it) sharpens the soft periodic and basis
    gates of training mode; eval mode uses hard gates."""

    def __init__(self, cfg: PulseAccumulatorConfig):
        super().__init__()
        self.cfg = cfg
        heads, head_dim = cfg.num_heads, cfg.head_dim
        self.value = nn.Linear(cfg.dim, cfg.dim)
        self.out_proj = nn.Linear(cfg.dim, cfg.dim)
        self.mixing = nn.Linear(cfg.dim, heads * cfg.num_pulses)  # w(t): pulse logits
        self.extent_conv = nn.Conv1d(cfg.dim, cfg.dim, cfg.extent_kernel,
                                     padding=cfg.extent_kernel // 2, groups=cfg.dim)
        self.extent = nn.Linear(cfg.dim, heads * cfg.content_pulses * 2)
        nn.init.zeros_(self.extent.weight)  # start with windows of half the maximum
        # Periodic gates: periods spread log-uniformly over 4 .. 256 frames.
        periods = torch.logspace(math.log10(4), math.log10(256), max(cfg.periodic_pulses, 1))
        self.log_period = nn.Parameter(periods[: cfg.periodic_pulses].log().repeat(heads, 1))
        self.phase = nn.Parameter(torch.zeros(heads, cfg.periodic_pulses))
        self.threshold = nn.Parameter(torch.zeros(heads, cfg.periodic_pulses))
        # Basis bumps: centres spread over the chunk, widths of a quarter chunk.
        centres = (torch.arange(cfg.basis_pulses) + 0.5) * cfg.chunk / max(cfg.basis_pulses, 1)
        self.basis_centre = nn.Parameter(centres.repeat(heads, 1))
        self.basis_log_width = nn.Parameter(
            torch.full((heads, cfg.basis_pulses), math.log(cfg.chunk / 4)))
        self.dropout = nn.Dropout(cfg.dropout)
        self.register_buffer("temperature", torch.tensor(1.0))
        self._head_dim = head_dim

    def initialize_from_attention(self, attention: nn.Module) -> None:
        """Selective initialization: keep the attention's value and output projections."""
        self.value.load_state_dict(attention.value.state_dict())
        self.out_proj.load_state_dict(attention.out_proj.state_dict())

    def _gate(self, argument: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return (argument > 0).to(argument.dtype)
        return torch.sigmoid(self.temperature * argument)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D]; mask: [B, T] bool, True on valid frames -> [B, T, D]"""
        batch, num_frames, _ = x.shape
        heads, head_dim = self.cfg.num_heads, self._head_dim
        valid = mask.to(x.dtype)  # [B, T]
        value = self.value(x) * valid[..., None]  # [B, T, D], padding zeroed
        value = value.reshape(batch, num_frames, heads, head_dim).transpose(1, 2)  # [B,H,T,d]
        logits = self.mixing(x).reshape(batch, num_frames, heads, self.cfg.num_pulses)
        weights = torch.softmax(logits, dim=-1).transpose(1, 2)  # [B, H, T, P]
        content, periodic, basis = weights.split(
            [self.cfg.content_pulses, self.cfg.periodic_pulses, self.cfg.basis_pulses], dim=-1)
        # Each family adds sum_p w_p(t) r_p(t) for its pulses, contracted as it is made, so
        # no [B, H, T, P, d] tensor of reads is ever built.
        mixed = value.new_zeros(batch, heads, num_frames, head_dim)  # [B, H, T, d]
        positions = torch.arange(num_frames, device=x.device, dtype=x.dtype)  # [T]
        if self.cfg.content_pulses:
            mixed = mixed + self._content_mix(x, value, valid, content)
        if self.cfg.periodic_pulses:
            mixed = mixed + self._periodic_mix(value, valid, positions, periodic)
        if self.cfg.basis_pulses:
            mixed = mixed + self._basis_mix(value, valid, basis)
        mixed = mixed.transpose(1, 2).reshape(batch, num_frames, self.cfg.dim)
        return self.dropout(self.out_proj(mixed))  # [B, T, D]

    def _content_mix(self, x, value, valid, weights) -> torch.Tensor:
        """Weighted means of v over [t - a, t + 1 + b), from prefix-sum differences
        -> [B, H, T, d]; weights: [B, H, T, Pc]."""
        batch, heads, num_frames, head_dim = value.shape
        pulses = self.cfg.content_pulses
        context = self.extent_conv((x * valid[..., None]).transpose(1, 2)).transpose(1, 2)
        extents = self.cfg.max_extent * torch.sigmoid(self.extent(context))  # [B, T, H*Pc*2]
        extents = extents.reshape(batch, num_frames, heads, pulses, 2).permute(0, 2, 1, 3, 4)
        if self.training:  # fractional edges, read by interpolating the prefix sums
            t = torch.arange(num_frames, device=x.device, dtype=x.dtype)[:, None]  # [T, 1]
            read = _interpolate
        else:  # hard mode: whole frames, in integers (FP16 counts frames exactly to 2048 only)
            extents = extents.round().long()
            t = torch.arange(num_frames, device=x.device)[:, None]
            read = _read_rows
        start = (t - extents[..., 0]).clamp(min=0)  # [B, H, T, Pc]
        end = (t + 1 + extents[..., 1]).clamp(max=num_frames)
        # Prefix sums of values centred on their utterance mean: a window sum is a difference
        # of two prefix sums, and without the mean those grow with T, so FP16 differences of
        # them (Core ML) would lose the window to cancellation.
        mean, centred, _ = masked_moments(value, valid[:, None, :, None], dim=2)  # [B,H,1,d]
        zero = value.new_zeros(batch, heads, 1, head_dim)
        sums = torch.cat([zero, centred.cumsum(dim=2)], dim=2)  # [B, H, T+1, d]
        counts = torch.cat([valid.new_zeros(batch, 1), valid.cumsum(dim=1)], dim=1)  # [B, T+1]
        counts = counts[:, None, :, None].expand(batch, heads, num_frames + 1, 1)
        prefix = torch.cat([sums, counts], dim=-1)  # [B, H, T+1, d+1]
        window = read(prefix, end) - read(prefix, start)  # [B, H, T, Pc, d+1]
        window_count = window[..., head_dim]  # [B, H, T, Pc] valid frames in each window
        coefficients = weights / (window_count + EPSILON)  # [B, H, T, Pc]
        # a broadcast product + sum: runtimes do T tiny [1, Pc] @ [Pc, d] matmuls slowly;
        # the mean comes back with the weight each pulse gives a non-empty window
        centred_mix = (coefficients[..., None] * window[..., :head_dim]).sum(dim=3)
        filled = (coefficients * window_count).sum(dim=3, keepdim=True)  # [B, H, T, 1]
        return centred_mix + filled * mean

    def _periodic_mix(self, value, valid, positions, weights) -> torch.Tensor:
        """Global summaries under periodic gates -> [B, H, T, d]; weights: [B, H, T, Pp]."""
        angle = 2 * math.pi * positions[None, :, None] / self.log_period.exp()[:, None, :]
        gates = self._gate(torch.cos(angle + self.phase[:, None, :])
                           - self.threshold[:, None, :])  # [H, T, Pp]
        gates = gates[None] * valid[:, None, :, None]  # [B, H, T, Pp]
        summaries = gates.transpose(2, 3) @ value  # [B, H, Pp, d]
        summaries = summaries / (gates.sum(dim=2)[..., None] + EPSILON)
        return (weights * gates) @ summaries  # [B, H, T, d]

    def _basis_mix(self, value, valid, weights) -> torch.Tensor:
        """Chunk-local summaries under positional bumps -> [B, H, T, d]; weights:
        [B, H, T, Pb]."""
        batch, heads, num_frames, head_dim = value.shape
        chunk = self.cfg.chunk
        padding = (chunk - num_frames % chunk) % chunk
        chunks = (num_frames + padding) // chunk
        offset = torch.arange(chunk, device=value.device, dtype=value.dtype)  # [K]
        distance = (offset[None, :, None] - self.basis_centre[:, None, :]) \
            / self.basis_log_width.exp()[:, None, :]  # [H, K, Pb]
        gates = self._gate(1 - distance**2)[None, :, None]  # [1, H, 1, K, Pb]
        value = _pad_frames(value, padding).reshape(batch, heads, chunks, chunk, head_dim)
        valid = _pad_frames(valid, padding, dim=1).reshape(batch, 1, chunks, chunk, 1)
        summed = gates * valid  # [B, H, C, K, Pb]
        summaries = summed.transpose(3, 4) @ value  # [B, H, C, Pb, d]
        summaries = summaries / (summed.sum(dim=3)[..., None] + EPSILON)
        weights = _pad_frames(weights, padding).reshape(batch, heads, chunks, chunk, -1)
        mixed = (weights * gates) @ summaries  # [B, H, C, K, d]
        return mixed.reshape(batch, heads, chunks * chunk, head_dim)[:, :, :num_frames]


def _pad_frames(x: torch.Tensor, padding: int, dim: int = 2) -> torch.Tensor:
    """x with `padding` zero frames appended along `dim`: a concatenation, because Core ML
    cannot pad a 2-D or larger tensor by an amount known only at run time."""
    zeros = x.new_zeros(*x.shape[:dim], padding, *x.shape[dim + 1:])
    return torch.cat([x, zeros], dim=dim)


def _read_rows(prefix: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """prefix [B, H, L, C] at whole positions [B, H, T, P] (floats in 0..L-1) -> [B, H, T, P,
    C]: one Gather of rows from the flattened prefix, not a GatherElements whose index is
    broadcast over C (4x less index traffic, and the fastest gather runtimes have)."""
    batch, heads, length, channels = prefix.shape
    rows = torch.arange(batch * heads, device=prefix.device).reshape(batch, heads, 1, 1)
    index = position.long() + rows * length  # [B, H, T, P]
    rows_read = prefix.reshape(-1, channels).index_select(0, index.reshape(-1))  # ONNX Gather
    return rows_read.reshape(*position.shape, channels)


def _interpolate(prefix: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """prefix [B, H, L, C] at fractional positions [B, H, T, P] in [0, L-1], linearly
    -> [B, H, T, P, C]: the integral of a piecewise-constant signal up to `position`."""
    below = position.floor().clamp(max=prefix.shape[2] - 2)  # [B, H, T, P]
    fraction = (position - below)[..., None]  # [B, H, T, P, 1]
    lower = _read_rows(prefix, below)
    return lower + fraction * (_read_rows(prefix, below + 1) - lower)


class NormedPulseAccumulator(nn.Module):
    """LayerNorm -> PulseAccumulator -> dropout, [B, T, D] -> [B, T, D] (no residual): the
    drop-in for a Conformer block's relative-position MHSA module, which normalizes its own
    input (pre-norm) and ends with dropout; same `forward(x, mask)` contract.

    `value` and `out_proj` are the LPA's, so selective initialization and the export code
    see the same names as on an attention module."""

    def __init__(self, cfg: PulseAccumulatorConfig, dropout: float = 0.1):
        super().__init__()
        self.cfg = cfg
        self.layer_norm = nn.LayerNorm(cfg.dim)
        self.lpa = PulseAccumulator(cfg)
        self.dropout = nn.Dropout(dropout)

    @property
    def value(self) -> nn.Module:
        return self.lpa.value

    @property
    def out_proj(self) -> nn.Module:
        return self.lpa.out_proj

    def initialize_from_attention(self, attention: nn.Module) -> None:
        """Selective initialization from a RelPosSelfAttention: its pre-norm, value and
        output projections (with their QAT observers when both are quantized)."""
        self.layer_norm.load_state_dict(attention.layer_norm.state_dict())
        self.lpa.initialize_from_attention(attention)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D]; mask: [B, T] bool, True on valid frames -> [B, T, D]"""
        return self.dropout(self.lpa(self.layer_norm(x), mask))
