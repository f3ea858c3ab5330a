"""mho: speech recognizers on memristor crossbars and mobile accelerators.

The public API, for any PyTorch model built from Linear and Conv layers (docs/python-api.md):

    import mho
    mho.quantize(model, mho.QuantConfig(weight_bits=8))       # QAT twins of every layer
    mho.calibrate(model, batches)                             # activation ranges
    chip, report = mho.map_to_crossbars(model, mho.SimulatorConfig(), seed=0)
    mho.parameter_placements(model, report)                   # what the chip holds, and why
    mho.export_module(chip, "chip.onnx", (x,), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}})
    ort = mho.open_session("chip.onnx")                       # or "onnx-ref", .mlpackage
    mho.compare_sessions(mho.open_session(chip, input_names=["x"], output_names=["y"]),
                         ort, [{"x": x.numpy()}])

Speech models (mho's own, checkpoints, Hugging Face wav2vec2 CTC) add waveform sessions,
decoders, evaluation and cross-runtime checks down to WER: `SpeechSession`, `Recognizer`,
`load_recognizer`, `evaluate_models`, `check_model`.

Names are imported on first use, so `import mho` stays light.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # quantization (mho.models.quant)
    "QuantConfig": "mho.models.quant",
    "quantize": "mho.models.quant",
    "calibrate": "mho.models.quant",
    "quantized_layers": "mho.models.quant",
    # models and checkpoints
    "load_model": "mho.models.zoo",
    "shipped_models": "mho.models.zoo",
    # memristor simulation
    "SimulatorConfig": "mho.simulator.config",
    "map_to_crossbars": "mho.simulator.mapping",
    "save_chip": "mho.simulator.mapping",
    "load_chip": "mho.simulator.mapping",
    "MappingReport": "mho.simulator.mapping",
    "parameter_placements": "mho.simulator.coverage",
    # export
    "export_module": "mho.exporter.onnx",
    "export_onnx": "mho.exporter.onnx",
    "load_for_export": "mho.exporter.onnx",
    "speech_metadata": "mho.exporter.onnx",
    "export_coreml": "mho.exporter.coreml",
    # runtimes
    "Session": "mho.runtime.session",
    "open_session": "mho.runtime.session",
    "SpeechModel": "mho.runtime.speech",
    "SpeechSession": "mho.runtime.speech",
    "Recognizer": "mho.runtime.speech",
    "load_recognizer": "mho.runtime.recognizer",
    "load_decoder": "mho.decoding.decoders",
    "error_rates": "mho.decoding.scoring",
    # workflows
    "compare_sessions": "mho.workflows.compare",
    "check_model": "mho.workflows.check",
    "evaluate": "mho.workflows.evaluate",
    "evaluate_models": "mho.workflows.evaluate",
    "evaluate_on_chips": "mho.workflows.chips",
    # errors
    "MhoError": "mho.errors",
    "ConfigError": "mho.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mho' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
