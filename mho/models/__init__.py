"""Acoustic models: Conformer-CTC with relative positional encoding variants, and QAT."""

from mho.models.conformer import (
    SIZE_PRESETS,
    VOCAB_SIZE,
    ConformerCTC,
    ConformerCTCConfig,
    conformer_config,
)
from mho.models.positional import PE_VARIANTS
from mho.models.quant import QuantConfig, QuantLayer, calibrate, quantized_layers

__all__ = [
    "PE_VARIANTS",
    "SIZE_PRESETS",
    "VOCAB_SIZE",
    "ConformerCTC",
    "ConformerCTCConfig",
    "QuantConfig",
    "QuantLayer",
    "calibrate",
    "conformer_config",
    "quantized_layers",
]
