"""Custom-domain ONNX ops of mho: schemas by convention, function bodies, numpy references."""

from mho.exporter.ops.crossbar import DOMAIN, DOMAIN_VERSION, crossbar_functions, reference_ops

__all__ = ["DOMAIN", "DOMAIN_VERSION", "crossbar_functions", "reference_ops"]
