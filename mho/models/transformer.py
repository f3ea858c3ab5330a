"""wav2vec2-style CTC model: the host for the Learnable Pulse Accumulator.

    waveform [B, S] --utterance normalization--> --WaveformEncoder (7 convs, 320x)-->
        [B, T, C] --LayerNorm + Linear--> [B, T, D] --+ conv positional embedding-->
        --N x EncoderLayer (pre-LN: attention or LPA, then FF)--> --LayerNorm + ctc_head-->
        log_probs [B, T, V],   T = frames of 20 ms

As in wav2vec2 (Baevski et al. 2020) with the "layer" norm variant everywhere (LayerNorm
over channels in every conv, pre-LN transformer): per-frame norms keep a frame's output
independent of what else is in the batch, and pre-LN trains from scratch without the
warm-up tricks post-LN needs. During training, spans of encoder frames are replaced by a
learned vector (wav2vec2's time masking, the SpecAugment of waveform models).

`lpa_layers` names the layers whose attention is a `PulseAccumulator`; the rest of each
layer (norms, FF) is unchanged, so a converted model loads the teacher's weights.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mho.errors import ConfigError
from mho.models.lpa import PulseAccumulator, PulseAccumulatorConfig

VOCAB_SIZE = 41
SAMPLE_RATE = 16_000  # Hz
# (kernel, stride) of the waveform convs, wav2vec2's: 400-sample (25 ms) receptive field,
# 320-sample (20 ms) hop.
CONV_LAYERS = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))
HOP_SAMPLES = 320  # product of the strides
RECEPTIVE_FIELD_SAMPLES = 400  # the shortest waveform that yields one frame


@dataclass(frozen=True)
class Wav2Vec2CTCConfig:
    vocab_size: int = VOCAB_SIZE  # CTC outputs; index 0 is the blank
    conv_channels: int = 128  # of every waveform conv (its cost leads at short lengths)
    dim: int = 192  # transformer dim D
    num_layers: int = 9
    num_heads: int = 4
    ff_dim: int = 768
    pos_conv_kernel: int = 65  # conv positional embedding: 65 frames = 1.3 s
    pos_conv_groups: int = 16
    dropout: float = 0.1
    attention_dropout: float = 0.1
    mask_time_prob: float = 0.05  # training: fraction of frames starting a masked span
    mask_time_length: int = 10  # frames per masked span (200 ms)
    lpa_layers: tuple[int, ...] = ()  # layers whose attention is a PulseAccumulator
    lpa: dict[str, Any] = field(default_factory=dict)  # PulseAccumulatorConfig overrides

    def __post_init__(self):
        if self.dim % self.num_heads or self.dim % self.pos_conv_groups:
            raise ConfigError(f"dim {self.dim} must divide by num_heads and pos_conv_groups")
        if self.pos_conv_kernel % 2 == 0:
            raise ConfigError(f"pos_conv_kernel must be odd, got {self.pos_conv_kernel}")
        object.__setattr__(self, "lpa_layers", tuple(sorted(set(self.lpa_layers))))
        if any(not 0 <= i < self.num_layers for i in self.lpa_layers):
            raise ConfigError(
                f"lpa_layers {list(self.lpa_layers)} outside 0..{self.num_layers - 1}")
        self.lpa_config()  # validate the overrides now

    def lpa_config(self) -> PulseAccumulatorConfig:
        try:
            return PulseAccumulatorConfig(self.dim, self.num_heads, **self.lpa)
        except TypeError as error:
            raise ConfigError(f"lpa settings: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lpa_layers": list(self.lpa_layers)}


SIZE_PRESETS: dict[str, dict[str, Any]] = {
    # tests and smoke runs
    "tiny": dict(conv_channels=32, dim=32, num_layers=3, num_heads=2, ff_dim=64,
                 pos_conv_kernel=7, pos_conv_groups=4),
    # the shipped teacher: 4.6 M parameters, 9 layers (two thirds = 6)
    "small": {},
}


def wav2vec2_config(size: str = "small", **overrides: Any) -> Wav2Vec2CTCConfig:
    if size not in SIZE_PRESETS:
        raise ConfigError(f"unknown size {size!r}; available: {', '.join(SIZE_PRESETS)}")
    return Wav2Vec2CTCConfig(**{**SIZE_PRESETS[size], **overrides})


def output_lengths(samples: torch.Tensor) -> torch.Tensor:
    """Frames out of the waveform encoder for [B] sample counts (0 below 400 samples)."""
    for kernel, stride in CONV_LAYERS:
        samples = torch.div(samples - kernel, stride, rounding_mode="floor") + 1
    return samples.clamp(min=0)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, T] conv activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class WaveformEncoder(nn.Module):
    """[B, S] -> [B, T, C]: conv / LayerNorm / GELU, seven times."""

    def __init__(self, channels: int):
        super().__init__()
        layers, previous = [], 1
        for kernel, stride in CONV_LAYERS:
            layers += [nn.Conv1d(previous, channels, kernel, stride, bias=False),
                       ChannelNorm(channels), nn.GELU()]
            previous = channels
        self.layers = nn.Sequential(*layers)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.layers(waveform[:, None, :]).transpose(1, 2)  # [B, T, C]


class SelfAttention(nn.Module):
    """Multi-head self-attention. forward(x [B, T, D], mask [B, T] bool) -> [B, T, D]."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.value, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, num_frames, dim = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, d]
            return y.reshape(batch, num_frames, self.num_heads, -1).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
            attn_mask=mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0,
        )  # [B, H, T, d]
        return self.out_proj(context.transpose(1, 2).reshape(batch, num_frames, dim))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    """x + attention(LN(x)), then x + FF(LN(x)); attention may be a PulseAccumulator."""

    def __init__(self, config: Wav2Vec2CTCConfig, lpa: bool):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.dim)
        self.attention = (PulseAccumulator(config.lpa_config()) if lpa else
                          SelfAttention(config.dim, config.num_heads, config.attention_dropout))
        self.ff_norm = nn.LayerNorm(config.dim)
        self.feed_forward = FeedForward(config.dim, config.ff_dim, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), mask))  # [B, T, D]
        return x + self.dropout(self.feed_forward(self.ff_norm(x)))


class Wav2Vec2CTC(nn.Module):
    """forward(waveform [B, S], lengths [B] samples) -> (log_probs [B, T, V], frames [B])."""

    input_kind = "waveform"  # what forward takes; Conformer-CTC takes "features"

    def __init__(self, config: Wav2Vec2CTCConfig = Wav2Vec2CTCConfig()):
        super().__init__()
        self.config = config
        self.encoder = WaveformEncoder(config.conv_channels)
        self.projection_norm = nn.LayerNorm(config.conv_channels)
        self.projection = nn.Linear(config.conv_channels, config.dim)
        self.masked_frame = nn.Parameter(torch.rand(config.dim))
        self.pos_conv = nn.Conv1d(config.dim, config.dim, config.pos_conv_kernel,
                                  padding=config.pos_conv_kernel // 2,
                                  groups=config.pos_conv_groups)
        self.layers = nn.ModuleList(EncoderLayer(config, i in config.lpa_layers)
                                    for i in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.dim)
        self.ctc_head = nn.Linear(config.dim, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    output_lengths = staticmethod(output_lengths)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """waveform: [B, S] 16 kHz; lengths: [B] valid samples (>= 400) -> log_probs
        [B, T, V], frames [B]; frames past `frames` are padding."""
        samples = torch.arange(waveform.shape[1], device=waveform.device)[None, :]
        valid = (samples < lengths[:, None]).to(waveform.dtype)  # [B, S]
        mean = (waveform * valid).sum(1, keepdim=True) / lengths[:, None]
        centred = (waveform - mean) * valid
        std = ((centred**2).sum(1, keepdim=True) / lengths[:, None]).sqrt()
        x = self.encoder(centred / (std + 1e-5))  # [B, T, C]
        frames = output_lengths(lengths)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None]  # [B, T]
        x = self.projection(self.projection_norm(x))  # [B, T, D]
        if self.training and self.config.mask_time_prob > 0:
            x = torch.where(self._time_mask(mask)[..., None], self.masked_frame, x)
        x = x * mask[..., None]  # padding zeroed: the positional conv sees zeros either way
        x = x + F.gelu(self.pos_conv(x.transpose(1, 2))).transpose(1, 2)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, mask)  # [B, T, D]
        return torch.log_softmax(self.ctc_head(self.final_norm(x)), dim=-1), frames

    def _time_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: spans of `mask_time_length` frames starting at random frames."""
        starts = torch.rand(mask.shape, device=mask.device) < self.config.mask_time_prob
        span = self.config.mask_time_length
        covered = F.max_pool1d(starts[:, None].float(), span, stride=1, padding=0)
        covered = F.pad(covered, (span - 1, 0))[:, 0] > 0  # a start masks itself and later
        return covered & mask

    def attention_modules(self) -> dict[int, nn.Module]:
        return {i: layer.attention for i, layer in enumerate(self.layers)}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
