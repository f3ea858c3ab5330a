"""`mho serve`: an OpenAI-compatible transcription server over exported ONNX files, with
dynamic batching, Prometheus metrics, a web page and a load bench.

    from mho.serve import ServeConfig, serve
    serve(ServeConfig(port=8000, max_batch=8), ["model.onnx", "bundle/"])

Layer: above mho.runtime, beside mho.workflows (neither imports the other).
"""

from mho.serve.config import ServeConfig

__all__ = ["ServeConfig"]
