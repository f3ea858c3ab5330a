"""Conformer-CTC: log-mel features -> CTC log-probabilities over phonemes.

    features [B, T, 80] --normalization--> --ConvSubsampling (4x)--> [B, T', D]
        --N x ConformerBlock--> --ctc_head + log_softmax--> [B, T', V],  T' = ceil(T / 4)

`ConformerCTCConfig` is flat (what a user sets, what TOML and ONNX metadata record); the
model derives one config per module from it. Sizes keep the model dim, FF dim and 2 D (the
conv module's pointwise_in) at multiples of 128, so matrices fill 128 x 128 crossbar tiles.

LPA: `lpa_layers` names the blocks whose relative-position MHSA is a
`NormedPulseAccumulator` (pre-norm + Learnable Pulse Accumulator, same forward contract;
`lpa` holds PulseAccumulatorConfig overrides); the rest of each block is unchanged, so a
converted model keeps the teacher's other weights. With QAT, the LPA's projections are
quantized at the model's bits like every other Linear / Conv.

QAT: build in float, train, then `model.enable_quantization(weight_bits=4)` and fine-tune;
`model.config.quant` records it, so `ConformerCTC(model.config)` rebuilds a model that loads
the QAT state dict (observer statistics included).
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mho.errors import ConfigError
from mho.models import quant
from mho.models.attention import RelPosAttentionConfig
from mho.models.conformer_block import (
    ConformerBlock,
    ConformerBlockConfig,
    ConvModuleConfig,
    FeedForwardConfig,
)
from mho.models.frontend import (
    SUBSAMPLING,
    UTTERANCE_NORMS,
    ConvSubsampling,
    ConvSubsamplingConfig,
    FeatureNormalization,
    sequence_mask,
    subsampled_lengths,
)
from mho.models.lpa import PulseAccumulatorConfig
from mho.models.positional import PE_VARIANTS
from mho.models.quant import QuantConfig, QuantLayer
from mho.models.statistics import log_softmax

VOCAB_SIZE = 41  # 39 ARPAbet phonemes + word boundary + CTC blank (index 0)


@dataclass(frozen=True)
class ConformerCTCConfig:
    vocab_size: int = VOCAB_SIZE  # CTC outputs; index 0 is the blank
    num_features: int = 80  # log-mel bins
    dim: int = 256  # model dim D (the defaults are the "base" preset)
    num_blocks: int = 4
    num_heads: int = 4
    ff_dim: int = 1024  # feed-forward hidden dim
    conv_kernel: int = 31  # depthwise conv over 40 ms frames: 1.24 s receptive field
    frontend_channels: int = 32  # of the two subsampling Conv2d
    pe: str = "sinusoidal+linear"  # "none", "sinusoidal+linear", "learnable+linear",
    # "sinusoidal" or "learnable"; see attention.py
    learnable_max_distance: int = 32  # learnable PE: distinct distances +-32 frames (1.28 s)
    # what each utterance has subtracted from its log-mels first: "none", "level" (its mean:
    # the input level drops out) or "spectrum" (its mean per bin: the average spectrum too)
    utterance_norm: str = "none"
    dropout: float = 0.1  # after every module and the front-end
    attention_dropout: float = 0.1  # on attention weights
    quant: QuantConfig | None = None  # None: float model; set: QAT layers
    lpa_layers: tuple[int, ...] = ()  # blocks whose MHSA is a NormedPulseAccumulator
    lpa: dict[str, Any] = field(default_factory=dict)  # PulseAccumulatorConfig overrides

    subsampling = SUBSAMPLING  # feature frames per output frame (10 ms -> 40 ms); not a field

    def __post_init__(self):
        if self.pe not in PE_VARIANTS:
            raise ConfigError(f"pe must be one of {', '.join(PE_VARIANTS)}; got {self.pe!r}")
        if self.utterance_norm not in UTTERANCE_NORMS:
            raise ConfigError(f"utterance_norm must be one of {', '.join(UTTERANCE_NORMS)}; "
                              f"got {self.utterance_norm!r}")
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.conv_kernel % 2 == 0:
            raise ConfigError(f"conv_kernel must be odd, got {self.conv_kernel}")
        if isinstance(self.quant, dict):  # from `to_dict` / TOML
            object.__setattr__(self, "quant", QuantConfig(**self.quant))
        # a list when read from a checkpoint or TOML
        object.__setattr__(self, "lpa_layers", tuple(sorted(set(self.lpa_layers))))
        if any(not 0 <= i < self.num_blocks for i in self.lpa_layers):
            raise ConfigError(
                f"lpa_layers {list(self.lpa_layers)} outside 0..{self.num_blocks - 1}")
        self.lpa_config()  # validate the overrides now

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["lpa_layers"] = list(self.lpa_layers)
        return values

    def lpa_config(self) -> PulseAccumulatorConfig:
        try:
            return PulseAccumulatorConfig(self.dim, self.num_heads, **self.lpa)
        except TypeError as error:
            raise ConfigError(f"lpa settings: {error}") from None

    def frontend_config(self) -> ConvSubsamplingConfig:
        return ConvSubsamplingConfig(self.num_features, self.frontend_channels, self.dim)

    def block_config(self, lpa: bool = False) -> ConformerBlockConfig:
        """The config of a block; `lpa`: its MHSA is a NormedPulseAccumulator."""
        return ConformerBlockConfig(
            feed_forward=FeedForwardConfig(self.dim, self.ff_dim, self.dropout),
            attention=RelPosAttentionConfig(
                self.dim,
                self.num_heads,
                self.pe,
                self.learnable_max_distance,
                self.attention_dropout,
                self.dropout,
            ),
            convolution=ConvModuleConfig(self.dim, self.conv_kernel, self.dropout),
            lpa=self.lpa_config() if lpa else None,
        )


# Named sizes for a 2-core CPU budget. Parameters with the default pe; training step time
# (forward + backward) for 16 utterances x 5 s (500 frames), one thread of the shared 2-core
# dev machine: per-block elementwise work (attention softmax, dropout, depthwise conv) costs
# as much as the matmuls there, so fewer, wider blocks train faster per parameter.
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    # 0.15 M, 0.2 s: tests and smoke runs
    "tiny": dict(dim=64, num_blocks=2, num_heads=2, ff_dim=128, conv_kernel=7, frontend_channels=8),
    # 2.5 M, 1.2 s (QAT 1.8 s)
    "small": dict(dim=128, num_blocks=6, num_heads=4, ff_dim=512, conv_kernel=31),
    # 6.5 M, 1.7 s (QAT 2.5 s)
    "base": dict(dim=256, num_blocks=4, num_heads=4, ff_dim=1024, conv_kernel=31),
}


def conformer_config(size: str = "small", **overrides: Any) -> ConformerCTCConfig:
    """A preset (`SIZE_PRESETS`) with any field overridden, e.g. pe="learnable"."""
    if size not in SIZE_PRESETS:
        raise ConfigError(f"unknown size {size!r}; available: {', '.join(SIZE_PRESETS)}")
    return ConformerCTCConfig(**{**SIZE_PRESETS[size], **overrides})


class ConformerCTC(nn.Module):
    """forward(features [B, T, F], lengths [B]) -> (log_probs [B, T', V], out_lengths [B])."""

    input_kind = "features"  # what forward takes; wav2vec2-style models take "waveform"

    def __init__(self, config: ConformerCTCConfig = ConformerCTCConfig()):
        super().__init__()
        self.config = config
        self.normalization = FeatureNormalization(config.num_features, config.utterance_norm)
        self.frontend = ConvSubsampling(config.frontend_config())
        self.frontend_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(config.block_config(i in config.lpa_layers))
                                    for i in range(config.num_blocks))
        self.ctc_head = nn.Linear(config.dim, config.vocab_size)
        if config.quant is not None:
            quant.enable_quantization(self, config.quant)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for input feature lengths [B]: ceil(L / 4)."""
        return subsampled_lengths(lengths)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features: [B, T, F] log-mels; lengths: [B] valid frames (>= 1)
        -> log_probs [B, T', V], out_lengths [B]; frames past out_lengths are padding."""
        x = self.normalization(features, lengths)  # [B, T, F]
        x, lengths = self.frontend(x, lengths)  # [B, T', D]
        x = self.frontend_dropout(x)
        mask = sequence_mask(lengths, x.shape[1])  # [B, T']
        for block in self.blocks:
            x = block(x, mask)  # [B, T', D]
        return log_softmax(self.ctc_head(x)), lengths  # [B, T', V]

    def enable_quantization(
        self, weight_bits: int = 8, config: QuantConfig | None = None
    ) -> "ConformerCTC":
        """Switch to QAT in place (weights kept): every Linear / Conv gets fake-quantized
        weights and 8-bit input and output observers. Returns self."""
        if self.config.quant is not None:
            raise ConfigError(f"model is already quantized ({self.config.quant})")
        config = config or QuantConfig(weight_bits=weight_bits)
        quant.enable_quantization(self, config)
        self.config = dataclasses.replace(self.config, quant=config)
        return self

    def quantized_layers(self) -> dict[str, QuantLayer]:
        return quant.quantized_layers(self)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
