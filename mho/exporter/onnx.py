"""Export an mho model (float, QAT, or mapped onto a memristor chip) to one ONNX file.

    report = export_onnx(model, "model.onnx", metadata, input="waveform")

torch.onnx.export (dynamo) traces the export twin (modules.py) with symbolic batch and time
axes; the file then gets the crossbar function bodies (every overload), each crossbar node
its overload ("noisy" with noise inputs, "per-channel"[-noisy] for a per-channel depthwise
conv), IR version 10 (onnxruntime reads up to 10 with
overloads), mho's metadata_props, and a full `onnx.checker` check and strict shape inference.
Files whose weights pass 1 GiB keep them as external data beside the .onnx file (protobuf
cannot hold 2 GB).
"""

import contextlib
import dataclasses
import io
import logging
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch

from mho.errors import MhoError
from mho.exporter.metadata import INPUTS, OnnxMetadata, write_metadata
from mho.exporter.modules import WaveformInput, export_twin
from mho.exporter.ops.crossbar import (
    DOMAIN,
    DOMAIN_VERSION,
    crossbar_functions,
    node_overload,
)
from mho.io import atomic_path, check_writable

if TYPE_CHECKING:
    from mho.simulator.config import SimulatorConfig

OPSET = 20
IR_VERSION = 10
EXTERNAL_DATA_BYTES = 2**30
MIN_FEATURE_FRAMES = 5  # the rel-shift's symbolic shapes need T' >= 2 (see positional.py)
MAX_FEATURE_FRAMES = 360_000  # one hour of 10 ms frames
# wav2vec2-style models: the shortest input an exported file accepts, 0.1 s (4 frames)
MIN_WAVEFORM_SAMPLES = 1_600


@dataclass(frozen=True)
class ExportReport:
    path: Path
    bytes: int  # the .onnx file plus any external data
    seconds: float  # tracing, conversion, checks and writing
    nodes: dict[str, int]  # top-level graph nodes per op type (custom domain as domain::op)
    external_data: bool


def _trace(model: torch.nn.Module, input: str) -> onnx.ModelProto:
    twin = export_twin(model)
    batch = torch.export.Dim("batch", min=1, max=4096)
    if model.input_kind == "waveform":  # wav2vec2 / LPA: the model itself takes samples
        samples = torch.export.Dim("samples", min=MIN_WAVEFORM_SAMPLES,
                                   max=MAX_FEATURE_FRAMES * 160)
        example = (torch.zeros(2, 16_000), torch.tensor([16_000, 12_000]))
        names, shapes = ["waveform", "samples"], ({0: batch, 1: samples}, {0: batch})
    elif input == "waveform":
        twin = WaveformInput(twin).eval()
        shift = twin.features.shift_samples
        samples = torch.export.Dim("samples", min=MIN_FEATURE_FRAMES * shift,
                                   max=MAX_FEATURE_FRAMES * shift)
        example = (torch.zeros(2, 16_000), torch.tensor([16_000, 12_000]))
        names, shapes = ["waveform", "samples"], ({0: batch, 1: samples}, {0: batch})
    else:
        frames = torch.export.Dim("frames", min=MIN_FEATURE_FRAMES, max=MAX_FEATURE_FRAMES)
        example = (torch.zeros(2, 100, 80), torch.tensor([100, 80]))
        names, shapes = ["features", "lengths"], ({0: batch, 1: frames}, {0: batch})
    with quiet_export():
        program = torch.onnx.export(
            twin, example, dynamo=True, opset_version=OPSET, input_names=names,
            output_names=["log_probs", "out_lengths"], dynamic_shapes=shapes, verbose=False)
    return program.model_proto


@contextlib.contextmanager
def quiet_export():
    """torch.onnx.export without its progress prints and warnings (the CLI's output stays
    ours), its errors as one-line MhoErrors (its own error types carry pages of report)."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        except Exception as error:
            raise MhoError(f"ONNX export failed: {str(error).splitlines()[0]}") from error


def _finish(proto: onnx.ModelProto) -> None:
    """Custom-domain functions, overloads, versions: what the dynamo exporter leaves out."""
    uses_crossbars = False
    for node in proto.graph.node:
        if node.domain == DOMAIN:
            uses_crossbars = True
            node.overload = node_overload(node)
    if uses_crossbars:
        proto.functions.extend(crossbar_functions())
        imports = {o.domain: o for o in proto.opset_import}
        if DOMAIN not in imports:
            proto.opset_import.append(onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    proto.ir_version = IR_VERSION
    proto.producer_name = "mho"


def node_counts(proto: onnx.ModelProto) -> dict[str, int]:
    counts = Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type
                     for n in proto.graph.node)
    return dict(counts.most_common())


def check_model(path: Path) -> None:
    """Full checker and strict shape inference (from the path: works with external data)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred",
                                               check_type=True, strict_mode=True)
    except Exception as error:
        raise MhoError(f"exported file fails the ONNX checks: {error}") from error
    finally:
        Path(str(path) + ".inferred").unlink(missing_ok=True)


def export_onnx(
    model: torch.nn.Module, path: str | Path, metadata: OnnxMetadata, *, input: str = "waveform"
) -> ExportReport:
    """Write the speech model `model` (eval mode; float, QAT or from
    mho.simulator.map_to_crossbars) to `path`; `input`: "waveform" (16 kHz samples, the
    log-mel front-end inside the graph) or "features" (log-mels + lengths)."""
    if input not in INPUTS:
        raise MhoError(f"input must be one of {', '.join(INPUTS)}, got {input!r}")
    if getattr(model, "input_kind", None) not in INPUTS:
        raise MhoError(f"export_onnx exports speech models (input_kind 'waveform' or "
                       f"'features', see mho.runtime.speech.SpeechModel); export any other "
                       f"{type(model).__name__} with export_module")
    check_writable(path)
    if model.input_kind == "waveform" and input != "waveform":
        raise MhoError("this model reads the waveform itself (wav2vec2-style): it has no "
                       "log-mel input to export; use --input waveform")
    started = time.perf_counter()
    proto = _trace(model, input)
    _finish(proto)
    write_metadata(proto, dataclasses.replace(metadata, input=input))
    return _save(proto, Path(path), started)


def export_module(
    model: torch.nn.Module,
    path: str | Path,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> ExportReport:
    """Write any module (float, quantized with mho.quantize, or mapped with
    map_to_crossbars) to `path`: crossbar layers become ai.mho.memristor nodes with their
    function bodies, everything else standard ONNX. ``example_inputs`` are traced;
    ``dynamic_axes`` names the axes that vary, e.g. {"x": {0: "batch"}} (one name shared by
    several inputs is one size)."""
    if len(example_inputs) != len(input_names):
        raise MhoError(f"{len(example_inputs)} example inputs for {len(input_names)} names")
    unknown = set(dynamic_axes or {}) - set(input_names)
    if unknown:
        raise MhoError(f"dynamic_axes names unknown inputs: {', '.join(sorted(unknown))}")
    check_writable(path)
    started = time.perf_counter()
    dims: dict[str, torch.export.Dim] = {}
    shapes = tuple({axis: dims.setdefault(dim, torch.export.Dim(dim))
                    for axis, dim in (dynamic_axes or {}).get(name, {}).items()} or None
                   for name in input_names)
    with quiet_export():
        program = torch.onnx.export(
            export_twin(model), tuple(example_inputs), dynamo=True, opset_version=OPSET,
            input_names=list(input_names), output_names=list(output_names),
            dynamic_shapes=shapes if dims else None, verbose=False)
    proto = program.model_proto
    _finish(proto)
    return _save(proto, Path(path), started)


def _save(proto: onnx.ModelProto, path: Path, started: float) -> ExportReport:
    """Write atomically (weights past 1 GiB as external data beside the file), then run the
    full checks on what was written."""
    weight_bytes = sum(t.ByteSize() for t in proto.graph.initializer)
    external = weight_bytes > EXTERNAL_DATA_BYTES
    data_path = path.with_name(path.name + ".data")
    with atomic_path(path) as partial:
        if external:
            # the data file sits beside the model under its final name, written first
            onnx.save(proto, str(partial), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=data_path.name, size_threshold=1024)
        else:
            onnx.save(proto, str(partial))
            data_path.unlink(missing_ok=True)
        check_model(partial)
    size = path.stat().st_size + (data_path.stat().st_size if external else 0)
    return ExportReport(path, size, time.perf_counter() - started, node_counts(proto), external)


def load_for_export(
    name: str,
    simulator: "SimulatorConfig | None" = None,
    seed: int = 0,
    chip: Path | None = None,
    progress: bool = False,
) -> tuple[torch.nn.Module, OnnxMetadata]:
    """Model `name` (shipped or checkpoint) as it will be exported, and its metadata: digital
    when `simulator` and `chip` are None, else on the chip programmed with `seed` (or the
    saved `chip`, read with `simulator` when given, else with its own settings)."""
    from mho.models.zoo import checkpoint_path, load_model
    from mho.simulator.mapping import load_chip, map_to_crossbars

    path = checkpoint_path(name)
    if path is None:
        from mho.models.zoo import shipped_models

        raise MhoError(f"unknown model {name!r}; available: {', '.join(shipped_models())}, a "
                       f"checkpoint path, a Hugging Face model directory or an exported file")
    model, payload = load_model(path)
    quant = getattr(model.config, "quant", None)
    memristor, programming_seed = None, None
    if simulator is not None or chip is not None:
        if quant is None:
            raise MhoError(f"{name} is a float model: memristor export needs a QAT model")
        if chip is not None:
            model, report = load_chip(model, chip, simulator, progress=progress)
        else:
            model, report = map_to_crossbars(model, simulator, seed, progress=progress)
        memristor, programming_seed = report.config.to_dict(), report.seed
    metadata = speech_metadata(model, name=name, vocabulary=payload["vocabulary"],
                               model_type=payload["model_type"], memristor=memristor,
                               programming_seed=programming_seed)
    return model, metadata


def speech_metadata(
    model: torch.nn.Module,
    *,
    name: str,
    vocabulary: list[str],
    model_type: str | None = None,
    memristor: dict | None = None,
    programming_seed: int | None = None,
) -> OnnxMetadata:
    """What a runtime needs to use a speech model (mho.runtime.speech.SpeechModel) and a
    reader to know what it is: the metadata its exports carry. ``model_type`` defaults to
    the model's class name."""
    from mho.data.features import FeatureConfig

    kind = getattr(model, "input_kind", None)
    if kind not in INPUTS:
        raise MhoError(f"{type(model).__name__} does not keep the speech model contract: it "
                       f"needs input_kind 'waveform' or 'features' (mho.runtime.speech."
                       f"SpeechModel)")
    config = getattr(model, "config", None)
    quant = getattr(config, "quant", None)
    if kind == "waveform":  # no log-mel features: one output frame per hop
        from mho.data.audio import SAMPLE_RATE

        hop = getattr(config, "hop_samples", None)
        if hop is None:
            raise MhoError(f"{type(model).__name__}: a waveform model's config needs "
                           f"hop_samples (input samples per output frame)")
        sample_rate, feature_config = SAMPLE_RATE, {}
        frame_shift_ms, subsampling = 1000 * hop / SAMPLE_RATE, 1
    else:
        features = FeatureConfig()
        sample_rate, feature_config = features.sample_rate, dataclasses.asdict(features)
        frame_shift_ms = features.shift_ms
        subsampling = getattr(config, "subsampling", 1)
    return OnnxMetadata(
        model_type=model_type or type(model).__name__,
        model_name=name,
        input=kind,
        vocabulary=list(vocabulary),
        sample_rate=sample_rate,
        feature_config=feature_config,
        frame_shift_ms=frame_shift_ms,
        subsampling=subsampling,
        weight_bits=None if quant is None else quant.weight_bits,
        activation_bits=None if quant is None else quant.activation_bits,
        memristor=memristor,
        programming_seed=programming_seed,
    )


def export_model_onnx(
    name: str,
    path: str | Path,
    *,
    input: str = "waveform",
    simulator: "SimulatorConfig | None" = None,
    seed: int = 0,
    chip: Path | None = None,
    progress: bool = False,
) -> tuple[ExportReport, OnnxMetadata]:
    """`mho export onnx`: model ``name`` (shipped, checkpoint or Hugging Face directory),
    digital or on a chip (``simulator`` settings and ``seed``, or a saved ``chip``), to one
    ONNX file. The output path and input kind are checked before the model loads."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise MhoError(f"the output file should end in .onnx: {path}")
    if input not in INPUTS:
        raise MhoError(f"input must be one of {', '.join(INPUTS)}, got {input!r}")
    check_writable(path)
    model, metadata = load_for_export(name, simulator, seed, chip, progress=progress)
    return export_onnx(model, path, metadata, input=input), metadata
