"""Exported files: checker-clean, dynamic batch and time, the same outputs as torch on two
runtimes, mho metadata required, standard ops outside ai.mho.memristor."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from mho.data.features import FeatureConfig, LogMel
from mho.errors import MhoError
from mho.exporter.metadata import OnnxMetadata, read_metadata
from mho.exporter.onnx import export_onnx
from mho.exporter.ops import DOMAIN
from mho.models import ConformerCTC, conformer_config
from mho.runtime.speech import SpeechSession
from mho.simulator.config import SimulatorConfig
from mho.simulator.mapping import map_to_crossbars
from tests.conftest import TILE, tiny_qat_model

# two shapes unlike the tracing example (batch 2, 100 frames): the axes must be symbolic
SHAPES = [(1, 37), (3, 161)]


def metadata_for(model, **overrides) -> OnnxMetadata:
    quant = model.config.quant
    fields = dict(
        model_type="conformer-ctc", model_name="tiny", input="features",
        vocabulary=[f"t{i}" for i in range(model.config.vocab_size)], sample_rate=16000,
        feature_config=dataclasses.asdict(FeatureConfig()), frame_shift_ms=10.0, subsampling=4,
        weight_bits=quant and quant.weight_bits, activation_bits=quant and quant.activation_bits,
        memristor=None, programming_seed=None)
    return OnnxMetadata(**(fields | overrides))


def batch(batch_size: int, frames: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed + frames)
    features = torch.randn(batch_size, frames, 80, generator=generator)
    lengths = torch.linspace(frames, max(5, frames // 2), batch_size).long()
    for row, length in enumerate(lengths):
        features[row, length:] = 0
    return features, lengths


def outputs(model, path, runtime: str, features, lengths):
    """(torch, runtime) log-probs [B, T', V] and out lengths."""
    session = SpeechSession.from_file(path, runtime).session
    got = session.run({"features": features.numpy(), "lengths": lengths.numpy()})
    got, got_lengths = got["log_probs"], got["out_lengths"]
    with torch.no_grad():
        expected, expected_lengths = model(features, lengths)
    np.testing.assert_array_equal(got_lengths, expected_lengths.numpy())
    return expected.numpy(), got


def standard_or_crossbar_only(proto: onnx.ModelProto) -> None:
    domains = {node.domain for node in proto.graph.node}
    assert domains <= {"", DOMAIN}
    for function in proto.functions:  # bodies: standard ops only
        assert {node.domain for node in function.node} == {""}


@pytest.fixture(scope="module")
def float_file(tmp_path_factory):
    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny", pe="learnable+linear")).eval()
    path = tmp_path_factory.mktemp("float") / "tiny.onnx"
    report = export_onnx(model, path, metadata_for(model), input="features")
    return model, path, report


@pytest.mark.parametrize("runtime", ["ort", "onnx-ref"])
def test_float_export_matches_torch_at_two_lengths_and_batch_sizes(float_file, runtime):
    model, path, report = float_file
    assert report.bytes == path.stat().st_size and not report.external_data
    for batch_size, frames in SHAPES:
        expected, got = outputs(model, path, runtime, *batch(batch_size, frames))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("runtime", ["ort", "onnx-ref"])
def test_utterance_norm_exports_in_standard_ops(tmp_path, runtime):
    """Each utterance's mean per bin (masked by its length) traces into the graph: the file
    gives torch's outputs at two lengths and batch sizes, padding included."""
    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny", utterance_norm="spectrum")).eval()
    model.normalization.set_statistics(torch.randn(80), torch.rand(80) + 0.5)
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path, metadata_for(model), input="features")
    standard_or_crossbar_only(onnx.load(str(path)))
    for batch_size, frames in SHAPES:
        features, lengths = batch(batch_size, frames)
        expected, got = outputs(model, path, runtime, features * 3 - 5, lengths)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_export_carries_metadata_and_files_without_it_are_refused(float_file, tmp_path):
    model, path, report = float_file
    proto = onnx.load(str(path))
    standard_or_crossbar_only(proto)
    assert not proto.functions  # nothing custom in a digital model
    assert report.nodes["LayerNormalization"] > 0 and sum(report.nodes.values()) == len(
        proto.graph.node)
    assert read_metadata(path) == metadata_for(model)
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(MhoError, match="not an mho ONNX export.*mho_version"):
        SpeechSession.from_file(bare, "ort")
    with pytest.raises(MhoError, match="cannot read ONNX file"):
        read_metadata(tmp_path / "missing.onnx")


def test_waveform_input_runs_the_log_mel_front_end_in_the_graph(float_file, tmp_path):
    model, _, _ = float_file
    path = tmp_path / "waveform.onnx"
    export_onnx(model, path, metadata_for(model), input="waveform")
    assert read_metadata(path).input == "waveform"
    waveforms = [np.sin(np.arange(n) * 0.05).astype(np.float32) * 0.3 for n in (4000, 9120)]
    got, lengths = SpeechSession.from_file(path, "ort").run_batch(waveforms)
    for row, waveform in enumerate(waveforms):
        with torch.no_grad():
            features = LogMel()(torch.from_numpy(waveform)[None])
            expected, _ = model(features, torch.tensor([features.shape[1]]))
        assert lengths[row] == expected.shape[1]
        np.testing.assert_allclose(got[row, : lengths[row]], expected[0].numpy(), atol=1e-3)


@pytest.fixture(scope="module")
def qat_model():
    return tiny_qat_model()


@pytest.mark.parametrize("runtime", ["ort", "onnx-ref"])
def test_memristor_export_on_an_ideal_chip_matches_the_torch_simulator(
    qat_model, tmp_path_factory, runtime
):
    simulated, report = map_to_crossbars(qat_model, SimulatorConfig.ideal(tile=TILE), seed=0)
    path = tmp_path_factory.mktemp("ideal") / f"{runtime}.onnx"
    export = export_onnx(simulated, path, metadata_for(
        qat_model, memristor=report.config.to_dict(), programming_seed=0), input="features")
    layers = [m for m in simulated.modules() if hasattr(m, "cores")]
    conv_cores = sum(len(m.cores) for m in layers if m.kind != "linear")
    linear_cores = sum(len(m.cores) for m in layers if m.kind == "linear")
    assert conv_cores and linear_cores  # the tiny model has both kinds: both ops are tested
    assert export.nodes[f"{DOMAIN}::CrossbarConv"] == conv_cores
    assert export.nodes[f"{DOMAIN}::CrossbarLinear"] == linear_cores
    proto = onnx.load(str(path))
    standard_or_crossbar_only(proto)
    assert {(f.name, f.overload) for f in proto.functions} == {
        (op, overload) for op in ("CrossbarLinear", "CrossbarConv") for overload in ("", "noisy")
    } | {("CrossbarConv", "per-channel"), ("CrossbarConv", "per-channel-noisy")}
    depthwise = [n for n in proto.graph.node if n.op_type == "CrossbarConv"
                 and any(a.name == "depthwise" for a in n.attribute)]
    assert depthwise and all(n.overload == "per-channel" for n in depthwise)
    for batch_size, frames in SHAPES:
        expected, got = outputs(simulated, path, runtime, *batch(batch_size, frames))
        # an ideal chip reads exact integers and the three implementations of the crossbar
        # ops agree bit for bit (float64 reads): what is left is float32 rounding in the
        # digital layers, a few ulps of log-probs that are tens in size (measured: 5e-7)
        assert np.abs(got - expected).max() < 1e-5
        assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_read_noise_exports_as_the_noisy_overload_with_seeded_draws(qat_model, tmp_path):
    config = SimulatorConfig(tile=TILE, noise="legacy")
    simulated, report = map_to_crossbars(qat_model, config, seed=1)
    path = tmp_path / "noisy.onnx"
    export_onnx(simulated, path, metadata_for(qat_model, memristor=report.config.to_dict(),
                                              programming_seed=1), input="features")
    proto = onnx.load(str(path))
    crossbars = [n for n in proto.graph.node if n.domain == DOMAIN]
    assert crossbars and all(len(n.input) == 5 for n in crossbars)
    assert {n.overload for n in crossbars} == {"noisy", "per-channel-noisy"}
    seeds = {a.f for n in crossbars for a in n.attribute if a.name == "seed"}
    assert len(seeds) == len(crossbars)  # every layer and core draws its own stream
    noisy = next(f for f in proto.functions
                 if f.overload == "noisy" and f.name == "CrossbarLinear")
    assert "RandomNormalLike" in {node.op_type for node in noisy.node}
    features, lengths = batch(2, 60)
    session = SpeechSession.from_file(path, "ort").session
    feeds = {"features": features.numpy(), "lengths": lengths.numpy()}
    first, second = session.run(feeds)["log_probs"], session.run(feeds)["log_probs"]
    assert not np.array_equal(first, second)  # fresh noise on every run...
    again = SpeechSession.from_file(path, "ort").session.run(feeds)["log_probs"]
    np.testing.assert_array_equal(first, again)  # ...reproducible from the file's seeds
    with torch.no_grad():
        expected = simulated(features, lengths)[0].numpy()
    assert (first.argmax(-1) == expected.argmax(-1)).mean() > 0.8


def test_bad_export_requests_are_clear_errors(float_file, tmp_path):
    model, _, _ = float_file
    with pytest.raises(MhoError, match="input must be one of"):
        export_onnx(model, tmp_path / "x.onnx", metadata_for(model), input="mfcc")
    with pytest.raises(MhoError, match="run it on ort or onnx-ref"):
        SpeechSession.from_file(tmp_path / "x.onnx", "tensorrt")
    with pytest.raises(MhoError, match="no such ONNX file"):
        SpeechSession.from_file(tmp_path / "x.onnx", "ort")
