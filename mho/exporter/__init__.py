"""Export to portable formats: ONNX (standard ops + the ai.mho.memristor domain) and Core ML.

`export_module` writes any module; `export_onnx` a speech model with its front end and the
metadata runtimes read; `export_coreml` an ML program (mho.exporter.coreml, needs the
`coreml` extra)."""

from mho.exporter.metadata import OnnxMetadata, read_metadata
from mho.exporter.onnx import (
    ExportReport,
    export_model_onnx,
    export_module,
    export_onnx,
    load_for_export,
    speech_metadata,
)

__all__ = [
    "ExportReport",
    "OnnxMetadata",
    "export_model_onnx",
    "export_module",
    "export_onnx",
    "load_for_export",
    "read_metadata",
    "speech_metadata",
]
