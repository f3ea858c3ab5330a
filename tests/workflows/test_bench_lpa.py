"""wav2vec2 / LPA models through ONNX (standard ops only, onnxruntime = torch at two lengths
and a padded batch, metadata) and `mho bench lpa` (keys, linear LPA scaling in time)."""

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from mho.cli import main
from mho.errors import MhoError
from mho.exporter.metadata import read_metadata
from mho.exporter.onnx import export_onnx, load_for_export
from mho.lpa.host import model_pair
from mho.models.transformer import Wav2Vec2CTC, wav2vec2_config
from mho.runtime.speech import SpeechSession
from mho.workflows.bench.lpa import LpaBenchConfig, LpaBenchResult, bench_lpa


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped 6-of-9 LPA model and its ONNX file."""
    model, metadata = load_for_export("wav2vec2-small-lpa6-mse")
    path = tmp_path_factory.mktemp("w2v") / "lpa6.onnx"
    report = export_onnx(model, path, metadata, input="waveform")
    return model, path, report


def test_lpa_model_exports_as_standard_ops_with_metadata(exported):
    _, path, report = exported
    proto = onnx.load(str(path))
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}
    assert report.nodes["CumSum"] >= 6 and report.nodes["Softmax"] >= 3  # LPA + attention
    metadata = read_metadata(path)
    assert metadata.input == "waveform" and metadata.frame_shift_ms == 20.0
    assert metadata.model_type == "wav2vec2-ctc" and metadata.feature_config == {}


def test_onnxruntime_matches_torch_on_a_padded_batch(exported):
    model, path, _ = exported
    generator = np.random.default_rng(0)
    waveforms = [0.1 * generator.standard_normal(n, dtype=np.float32) for n in (7_000, 20_000)]
    log_probs, lengths = SpeechSession.from_file(path, "ort", threads=1).run_batch(waveforms)
    for row, waveform, frames in zip(log_probs, waveforms, lengths, strict=True):
        with torch.no_grad():
            expected, count = model(torch.from_numpy(waveform)[None],
                                    torch.tensor([waveform.size]))
        assert frames == count[0]
        np.testing.assert_allclose(row[:frames], expected[0].numpy(), atol=1e-4)


def test_waveform_models_have_no_feature_input(exported):
    model, _, _ = exported
    with pytest.raises(MhoError, match="reads the waveform itself"):
        export_onnx(model, "unused.onnx", load_for_export("wav2vec2-small")[1],
                    input="features")


def test_model_pair_keeps_the_weights_and_replaces_every_attention():
    teacher = Wav2Vec2CTC(wav2vec2_config("tiny")).eval()
    attention, lpa = model_pair(teacher)
    assert attention.config.lpa_layers == () and lpa.config.lpa_layers == (0, 1, 2)
    torch.testing.assert_close(lpa.layers[1].attention.value.weight,
                               teacher.layers[1].attention.value.weight)
    torch.testing.assert_close(attention.encoder.layers[0].weight,
                               teacher.encoder.layers[0].weight)


def test_bench_on_torch_reports_every_length_and_key():
    config = LpaBenchConfig(model="wav2vec2-small", lengths=(1, 2), runtime="torch",
                            repeats=1, threads=1)
    summary = bench_lpa(config).summary()
    for key in ("speedup", "lpa_ms", "attention_ms", "layer_speedup"):
        assert set(summary[key]) == {"1", "2"}
        assert all(value > 0 for value in summary[key].values())
    assert summary["scaling_120_60"] is None  # 120 s and 60 s were not run
    for key in ("lpa_peak_mb", "attention_peak_mb", "layer_lpa_peak_mb",
                "layer_attention_peak_mb"):
        assert set(summary[key]) == {"1", "2"} and all(v >= 0 for v in summary[key].values())
    assert summary["memory_scaling_120_60"] is None


def test_memory_scaling_is_the_peak_ratio_of_the_two_lengths():
    result = LpaBenchResult(LpaBenchConfig(lengths=(60, 120)))
    result.peak_bytes["lpa"] = {60: 100 * 2**20, 120: 210 * 2**20}
    assert result.memory_scaling("lpa") == pytest.approx(2.1)
    assert result.memory_scaling("attention") is None  # not measured


def test_arena_free_session_peak_is_what_one_run_allocates(tmp_path):
    """Without onnxruntime's memory arena, the peak rise of a run that doubles a 64 MiB input
    is at least its 64 MiB output and far from the arena's power-of-two rounding of earlier
    runs: a second, shorter run after a long one still rises (the arena would reuse)."""
    from onnx import TensorProto, helper

    from mho.runtime.session import OnnxFileSession
    from mho.timing import peak_memory_rise

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double", [x], [y])
    path = tmp_path / "double.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    session = OnnxFileSession(path, threads=1, arena=False)
    mib = 2**20
    long, short = np.ones(16 * mib, np.float32), np.ones(8 * mib, np.float32)  # 64, 32 MiB
    rise_long = peak_memory_rise(lambda: session.run({"x": long}))
    rise_short = peak_memory_rise(lambda: session.run({"x": short}))
    if rise_long is None:
        pytest.skip("peak resident set is measured on Linux only")
    # output buffer plus the numpy copy of it: 1 to 2 outputs, a few MiB of slack
    assert 64 * mib <= rise_long <= 2 * 64 * mib + 8 * mib
    assert 32 * mib <= rise_short <= 2 * 32 * mib + 8 * mib


def test_bench_cli_refuses_bad_lengths():
    result = CliRunner().invoke(main, ["bench", "lpa", "--lengths", "10,x"])
    assert result.exit_code != 0 and "comma-separated seconds" in result.output


@pytest.mark.slow
def test_bench_on_onnxruntime_lpa_grows_linearly_and_wins_at_long_audio():
    """60 s and 120 s on onnxruntime: the LPA model's time ratio at most 2.2 (linear),
    faster than the attention model at 120 s (the paper's 3.27x is measured in docs)."""
    result = CliRunner().invoke(main, ["bench", "lpa", "--lengths", "60,120", "--repeats",
                                       "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["scaling_120_60"] <= 2.2 and summary["speedup"]["120"] > 2


@pytest.mark.slow
def test_qat_conformer_modules_export_for_the_bench(tmp_path):
    """The bench's single-module export of a QAT Conformer's MHSA and LPA (it failed at
    "step 3/3": the QAT weight scale's amax over all axes has no ONNX conversion); the
    files run on onnxruntime like the torch modules at a length unlike the trace's."""
    import onnxruntime

    from mho.workflows.bench.lpa import export_layer
    from tests.conftest import tiny_qat_model

    attention, lpa = model_pair(tiny_qat_model())
    x, mask = torch.randn(1, 53, 64), torch.ones(1, 53, dtype=torch.bool)
    for name, module in (("attention", attention.blocks[0].attention),
                         ("lpa", lpa.blocks[0].attention)):
        export_layer(module, tmp_path / f"{name}.onnx", 64)
        session = onnxruntime.InferenceSession(str(tmp_path / f"{name}.onnx"))
        (got,) = session.run(None, {"x": x.numpy(), "mask": mask.numpy()})
        with torch.no_grad():
            expected = module(x, mask).numpy()
        # same integer weights and grids; float32 order may move a value one 8-bit step
        assert np.mean(np.abs(got - expected) < 1e-4) > 0.99, name
