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

The config also describes Hugging Face's wav2vec2 variants (`mho.models.hf` converts them):
wav2vec2-base's "group" conv norm and post-LN layers, conv biases, other conv stacks, even
positional kernels and the feature extractor's utterance normalization. The defaults are
the model above, so its checkpoints load unchanged.

`lpa_layers` names the layers whose attention is a `PulseAccumulator`; the rest of each
layer (norms, FF) is unchanged, so a converted model loads the teacher's weights.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from mho.errors import ConfigError
from mho.models.lpa import PulseAccumulator, PulseAccumulatorConfig
from mho.models.statistics import log_softmax, masked_moments

VOCAB_SIZE = 41
SAMPLE_RATE = 16_000  # Hz
# Kernels and strides of the waveform convs, wav2vec2's: 400-sample (25 ms) receptive field,
# 320-sample (20 ms) hop.
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


@dataclass(frozen=True)
class Wav2Vec2CTCConfig:
    vocab_size: int = VOCAB_SIZE  # CTC outputs; index 0 is the blank
    conv_channels: int = 128  # of every waveform conv (its cost leads at short lengths)
    conv_kernels: tuple[int, ...] = CONV_KERNELS  # waveform convs, first to last
    conv_strides: tuple[int, ...] = CONV_STRIDES
    conv_bias: bool = False
    # "layer": LayerNorm over channels after every conv; "group": a norm over time per
    # channel (GroupNorm, one group per channel) after the first conv only (wav2vec2-base)
    conv_norm: Literal["layer", "group"] = "layer"
    # Utterance normalization of the waveform in forward: "mho" (x - mean) / (std + 1e-5);
    # "hf" (x - mean) / sqrt(var + 1e-7), Hugging Face's feature extractor (do_normalize);
    # "none": the waveform as given.
    input_norm: Literal["mho", "hf", "none"] = "mho"
    dim: int = 192  # transformer dim D
    num_layers: int = 9
    num_heads: int = 4
    ff_dim: int = 768
    # conv positional embedding: 65 frames = 1.3 s (an even kernel's one extra output frame
    # is dropped, as in wav2vec2)
    pos_conv_kernel: int = 65
    pos_conv_groups: int = 16
    # pre-LN layers, final_norm after them; False: post-LN layers (x = LN(x + f(x))) with
    # final_norm before them (wav2vec2-base; Hugging Face's do_stable_layer_norm=False)
    pre_norm: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.1
    mask_time_prob: float = 0.05  # training: fraction of frames starting a masked span
    mask_time_length: int = 10  # frames per masked span (200 ms)
    lpa_layers: tuple[int, ...] = ()  # layers whose attention is a PulseAccumulator
    lpa: dict[str, Any] = field(default_factory=dict)  # PulseAccumulatorConfig overrides

    def __post_init__(self):
        if self.dim % self.num_heads or self.dim % self.pos_conv_groups:
            raise ConfigError(f"dim {self.dim} must divide by num_heads and pos_conv_groups")
        for name in ("conv_kernels", "conv_strides"):  # lists when read from a checkpoint
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.conv_kernels or len(self.conv_kernels) != len(self.conv_strides):
            raise ConfigError(f"conv_kernels {list(self.conv_kernels)} and conv_strides "
                              f"{list(self.conv_strides)} must be as long, and not empty")
        if self.conv_norm not in ("layer", "group") or self.input_norm not in ("mho", "hf", "none"):
            raise ConfigError(f"unknown conv_norm {self.conv_norm!r} or input_norm "
                              f"{self.input_norm!r}")
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

    @property
    def hop_samples(self) -> int:
        """Waveform samples per encoder frame: the product of the strides."""
        return math.prod(self.conv_strides)

    @property
    def receptive_field_samples(self) -> int:
        """The shortest waveform that yields one frame."""
        field, hop = 1, 1
        for kernel, stride in zip(self.conv_kernels, self.conv_strides, strict=True):
            field, hop = field + (kernel - 1) * hop, hop * stride
        return field

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


HOP_SAMPLES = Wav2Vec2CTCConfig().hop_samples  # 320 (20 ms)
RECEPTIVE_FIELD_SAMPLES = Wav2Vec2CTCConfig().receptive_field_samples  # 400 (25 ms)


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


def output_lengths(samples: torch.Tensor, config: Wav2Vec2CTCConfig | None = None
                   ) -> torch.Tensor:
    """Frames out of the waveform encoder of `config` (default: the default convs) for [B]
    sample counts (0 below the receptive field).

    A stack of unpadded convs yields frame j exactly when j * hop + receptive field <= n,
    so the count is floor((n - field) / hop) + 1: one subtraction and one floor division,
    which a Core ML program keeps in integers (per-layer floors went through FP16 there and
    lost a frame past 65,504 samples)."""
    config = config or Wav2Vec2CTCConfig()
    hop, field = config.hop_samples, config.receptive_field_samples
    samples = (samples - (field - hop)) // hop
    return samples.maximum(torch.zeros_like(samples))  # not clamp: Core ML clips floats


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, T] conv activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class TimeNorm(nn.GroupNorm):
    """GroupNorm with one group per channel of a [B, C, T] conv activation: statistics over
    time, taken over each utterance's valid frames only, so padding changes nothing."""

    def __init__(self, channels: int):
        super().__init__(channels, channels)

    def forward(self, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        valid = (torch.arange(x.shape[2], device=x.device) < frames[:, None])[:, None]  # [B,1,T]
        mean, _, var = masked_moments(x, valid.to(x.dtype), dim=2)  # [B, C, 1]
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None] + self.bias[:, None]


class WaveformEncoder(nn.Module):
    """[B, S], lengths [B] -> [B, T, C]: conv / norm / GELU per conv of the config (the norm
    is nn.Identity after all but the first conv in the "group" variant)."""

    def __init__(self, config: Wav2Vec2CTCConfig):
        super().__init__()
        layers, previous, channels = [], 1, config.conv_channels
        convs = zip(config.conv_kernels, config.conv_strides, strict=True)
        for i, (kernel, stride) in enumerate(convs):
            norm = (ChannelNorm(channels) if config.conv_norm == "layer" else
                    TimeNorm(channels) if i == 0 else nn.Identity())
            layers += [nn.Conv1d(previous, channels, kernel, stride, bias=config.conv_bias),
                       norm, nn.GELU()]
            previous = channels
        self.layers = nn.Sequential(*layers)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, frames = waveform[:, None, :], lengths  # [B, 1, S], [B]
        for conv, norm, activation in zip(*[iter(self.layers)] * 3, strict=True):
            x = conv(x)
            frames = (frames - (conv.kernel_size[0] - conv.stride[0])) // conv.stride[0]
            x = activation(norm(x, frames) if isinstance(norm, TimeNorm) else norm(x))
        return x.transpose(1, 2)  # [B, T, C]


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
    """x + attention(LN(x)), then x + FF(LN(x)); post-LN: x = LN(x + attention(x)), then
    LN(x + FF(x)). The attention may be a PulseAccumulator."""

    def __init__(self, config: Wav2Vec2CTCConfig, lpa: bool):
        super().__init__()
        self.pre_norm = config.pre_norm
        self.attention_norm = nn.LayerNorm(config.dim)
        self.attention = (PulseAccumulator(config.lpa_config()) if lpa else
                          SelfAttention(config.dim, config.num_heads, config.attention_dropout))
        self.ff_norm = nn.LayerNorm(config.dim)
        self.feed_forward = FeedForward(config.dim, config.ff_dim, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.attention_norm(x), mask))  # [B, T, D]
            return x + self.dropout(self.feed_forward(self.ff_norm(x)))
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        return self.ff_norm(x + self.dropout(self.feed_forward(x)))


class Wav2Vec2CTC(nn.Module):
    """forward(waveform [B, S], lengths [B] samples) -> (log_probs [B, T, V], frames [B])."""

    input_kind = "waveform"  # what forward takes; ConformerCTC takes "features"

    def __init__(self, config: Wav2Vec2CTCConfig = Wav2Vec2CTCConfig()):
        super().__init__()
        self.config = config
        self.encoder = WaveformEncoder(config)
        self.projection_norm = nn.LayerNorm(config.conv_channels)
        self.projection = nn.Linear(config.conv_channels, config.dim)
        self.masked_frame = nn.Parameter(torch.rand(config.dim))
        self.pos_conv = nn.Conv1d(config.dim, config.dim, config.pos_conv_kernel,
                                  padding=config.pos_conv_kernel // 2,
                                  groups=config.pos_conv_groups)
        self.layers = nn.ModuleList(EncoderLayer(config, i in config.lpa_layers)
                                    for i in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.dim)  # post-LN: before the layers
        self.ctc_head = nn.Linear(config.dim, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def output_lengths(self, samples: torch.Tensor) -> torch.Tensor:
        return output_lengths(samples, self.config)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """waveform: [B, S] 16 kHz; lengths: [B] valid samples (>= the receptive field, 400)
        -> log_probs [B, T, V], frames [B]; frames past `frames` are padding."""
        x = self.encoder(self._normalize(waveform, lengths), lengths)  # [B, T, C]
        frames = self.output_lengths(lengths)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None]  # [B, T]
        x = self.projection(self.projection_norm(x))  # [B, T, D]
        if self.training and self.config.mask_time_prob > 0:
            x = torch.where(self._time_mask(mask)[..., None], self.masked_frame, x)
        x = x * mask[..., None]  # padding zeroed: the positional conv sees zeros either way
        position = self.pos_conv(x.transpose(1, 2))[..., : x.shape[1]]  # even kernel: T + 1
        x = x + F.gelu(position).transpose(1, 2)
        x = self.dropout(x if self.config.pre_norm else self.final_norm(x))
        for layer in self.layers:
            x = layer(x, mask)  # [B, T, D]
        if self.config.pre_norm:
            x = self.final_norm(x)
        return log_softmax(self.ctc_head(x)), frames

    def _normalize(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero mean, unit variance over each utterance's valid samples; padding zeroed."""
        samples = torch.arange(waveform.shape[1], device=waveform.device)[None, :]
        valid = (samples < lengths[:, None]).to(waveform.dtype)  # [B, S]
        if self.config.input_norm == "none":
            return waveform * valid
        mean, centred, var = masked_moments(waveform, valid, dim=1)  # [B, 1], [B, S], [B, 1]
        if self.config.input_norm == "hf":
            return centred / (var + 1e-7).sqrt()
        return centred / (var.sqrt() + 1e-5)

    def _time_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: spans of `mask_time_length` frames starting at random frames."""
        starts = torch.rand(mask.shape, device=mask.device) < self.config.mask_time_prob
        span = self.config.mask_time_length
        covered = F.max_pool1d(starts[:, None].float(), span, stride=1, padding=0)
        covered = F.pad(covered, (span - 1, 0))[:, 0] > 0  # a start masks itself and later
        return covered & mask

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
