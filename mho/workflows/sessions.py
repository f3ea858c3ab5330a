"""The sessions a parity check compares: a model on torch (the reference) and on the other
runtimes, exported from the very same torch model (the same chip) when no file is given.

    reference, others, decoder = parity_sessions("conformer-sinusoidal-linear-w8",
                                                 ["torch", "ort", "onnx-ref"], scratch=tmp)
"""

from pathlib import Path

from mho.decoding.decoders import Decoder, load_decoder
from mho.errors import MhoError
from mho.exporter.metadata import read_metadata
from mho.runtime.session import COREML_RUNTIMES, ONNX_RUNTIMES, RUNTIMES
from mho.runtime.speech import SpeechSession


def torch_model_of_file(model: str, onnx_file: Path):
    """The torch model an exported file was made from, and its export metadata: the same
    chip when it is a memristor export (re-programmed from the file's config and seed: bit
    for bit the same chip)."""
    from mho.exporter.onnx import load_for_export
    from mho.simulator.config import SimulatorConfig

    if not Path(onnx_file).is_file():
        raise MhoError(f"no such ONNX file: {onnx_file}")
    metadata = read_metadata(onnx_file)
    simulator = None
    if metadata.memristor is not None:
        simulator = SimulatorConfig.from_dict(metadata.memristor, where=str(onnx_file))
    return load_for_export(model, simulator, metadata.programming_seed or 0)


def parity_sessions(
    model: str,
    runtimes: list[str],
    *,
    onnx_file: Path | None = None,
    coreml_file: Path | None = None,
    simulator=None,  # SimulatorConfig: export a memristor model (no onnx_file)
    seed: int = 0,
    chip: Path | None = None,
    decoder: str = "greedy",
    lm: Path | None = None,
    scratch: Path,
    progress: bool = False,
    threads: int | None = None,
) -> tuple[SpeechSession, dict[str, SpeechSession], Decoder]:
    """The torch session, the other runtimes' sessions by name, and the decoder (of the
    model's own vocabulary). Files not given are exported into `scratch` first (model.onnx,
    model.mlpackage), from the very torch model that is the reference (the same chip)."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or "torch" not in runtimes or len(runtimes) < 2:
        raise MhoError(f"--runtimes: torch (the reference) and at least one of "
                       f"{', '.join(RUNTIMES[1:])}; got {','.join(runtimes)}")
    from mho.exporter.onnx import export_onnx, load_for_export

    onnx_runtimes = [r for r in runtimes if r in ONNX_RUNTIMES]
    coreml_runtimes = [r for r in runtimes if r in COREML_RUNTIMES]
    if coreml_runtimes and (simulator is not None or chip is not None):
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
    search = load_decoder(decoder, lm, tokens=metadata.vocabulary)
    reference = SpeechSession.from_model(torch_model, metadata, threads=threads)
    others = {runtime: SpeechSession.from_file(onnx_file, runtime, threads=threads)
              for runtime in onnx_runtimes}
    if coreml_runtimes:
        from mho.exporter.coreml import export_coreml

        if coreml_file is None:
            coreml_file = scratch / "model.mlpackage"
            export_coreml(torch_model, coreml_file, metadata)
        for runtime in coreml_runtimes:  # one package, on each Core ML runtime asked for
            others[runtime] = SpeechSession.from_file(coreml_file, runtime)
    return reference, others, search
