"""One interface over runtimes: every runtime of a model is a callable waveform [S] ->
CTC log-probs [T', V], so parity checks and benchmarks never care which one runs.

    reference, others, decoder = parity_runtimes("conformer-sinusoidal-linear-w8",
                                                 ["torch", "ort", "onnx-ref"], scratch=tmp)
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mho.decoding.decoders import Decoder, load_decoder
from mho.errors import MhoError
from mho.runtime.onnx_runtime import ONNX_RUNTIMES, OnnxRecognizer, OnnxSession
from mho.runtime.torch_runtime import TorchRecognizer

LogProbs = Callable[[np.ndarray], np.ndarray]
RUNTIMES = ("torch", *ONNX_RUNTIMES, "coreml")


def torch_model_of_file(model: str, onnx_file: Path):
    """The torch model an exported file was made from, and its export metadata: the same
    chip when it is a memristor export (re-programmed from the file's config and seed: bit
    for bit the same chip)."""
    from mho.exporter.onnx import load_for_export
    from mho.simulator.config import SimulatorConfig

    metadata = OnnxSession.metadata_of(onnx_file)
    simulator = None
    if metadata.memristor is not None:
        simulator = SimulatorConfig.from_dict(metadata.memristor, where=str(onnx_file))
    return load_for_export(model, simulator, metadata.programming_seed or 0)


def parity_runtimes(
    model: str,
    runtimes: list[str],
    *,
    onnx_file: Path | None = None,
    coreml_file: Path | None = None,
    simulator=None,  # SimulatorConfig: export a memristor model (no onnx_file)
    seed: int = 0,
    chip: Path | None = None,
    decoder: str = "greedy",
    scratch: Path,
    progress: bool = False,
    threads: int | None = None,
) -> tuple[LogProbs, dict[str, LogProbs], Decoder]:
    """torch's log-probs callable, the other runtimes' by name, and the decoder. Files not
    given are exported into `scratch` first (model.onnx, model.mlpackage), from the very
    torch model that is the reference (the same chip)."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or "torch" not in runtimes or len(runtimes) < 2:
        raise MhoError(f"--runtimes: torch (the reference) and at least one of "
                       f"{', '.join(RUNTIMES[1:])}; got {','.join(runtimes)}")
    from mho.exporter.onnx import export_onnx, load_for_export

    onnx_runtimes = [r for r in runtimes if r in ONNX_RUNTIMES]
    if "coreml" in runtimes and (simulator is not None or chip is not None):
        from mho.exporter.coreml import MEMRISTOR_UNSUPPORTED

        raise MhoError(MEMRISTOR_UNSUPPORTED)
    if onnx_file is not None:
        if simulator is not None or chip is not None:
            raise MhoError("--onnx files carry their own chip and settings; drop the "
                           "memristor options")
        torch_model, metadata = torch_model_of_file(model, onnx_file)
    else:
        torch_model, metadata = load_for_export(model, simulator, seed, chip, progress=progress)
        if onnx_runtimes:
            onnx_file = scratch / "model.onnx"
            export_onnx(torch_model, onnx_file, metadata, input="waveform")
    search = load_decoder(decoder, tokens=metadata.vocabulary)  # phones, or a HF model's
    reference = TorchRecognizer(model, torch_model, search, decoder)
    others = {
        runtime: OnnxRecognizer(model, OnnxSession(onnx_file, runtime, threads), search,
                                decoder).log_probs
        for runtime in onnx_runtimes
    }
    if "coreml" in runtimes:
        from mho.exporter.coreml import export_coreml
        from mho.runtime.coreml_runtime import CoreMLSession

        if coreml_file is None:
            coreml_file = scratch / "model.mlpackage"
            export_coreml(torch_model, coreml_file, metadata)
        others["coreml"] = CoreMLSession(coreml_file)
    return lambda waveform: reference.log_probs(waveform).numpy(), others, search
