"""Learnable Pulse Accumulator studies: the MSE diagnostic and progressive conversion."""

from mho.lpa.convert import ConversionConfig, Converter
from mho.lpa.study import layer_order, model_cards, run_conversion, run_sweep

__all__ = ["ConversionConfig", "Converter", "layer_order", "model_cards", "run_conversion",
           "run_sweep"]
