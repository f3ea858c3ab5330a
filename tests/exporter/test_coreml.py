"""Core ML export and its numpy evaluation: the converted ML program against torch (FP32 to
float rounding, FP16 to FP16 rounding), enumerated lengths with padding, metadata, the FP16
traps the evaluator caught (int16 shapes, FP16 sample counts, log(softmax)), and errors."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mho.cli import main
from mho.errors import MhoError
from mho.exporter.coreml import export_coreml
from mho.exporter.metadata import OnnxMetadata
from mho.models.transformer import Wav2Vec2CTC, wav2vec2_config
from mho.runtime.coreml_runtime import CoreMLSession
from mho.runtime.mil_numpy import _conv
from mho.runtime.speech import SpeechSession

SECONDS = (0.5, 6)  # enumerated lengths: the second one is over 65,504 samples


def tiny_lpa_model() -> Wav2Vec2CTC:
    torch.manual_seed(0)
    model = Wav2Vec2CTC(wav2vec2_config("tiny", lpa_layers=(1,))).eval()
    with torch.no_grad():  # content windows that vary per frame
        model.layers[1].attention.extent.weight.normal_(0, 0.5)
    return model


def metadata(model) -> OnnxMetadata:
    return OnnxMetadata(
        model_type="wav2vec2-ctc", model_name="tiny", input="waveform",
        vocabulary=[f"t{i}" for i in range(model.config.vocab_size)], sample_rate=16_000,
        feature_config={}, frame_shift_ms=20.0, subsampling=1, weight_bits=None,
        activation_bits=None, memristor=None, programming_seed=None)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    model = tiny_lpa_model()
    folder = tmp_path_factory.mktemp("coreml")
    reports = {precision: export_coreml(model, folder / f"{precision}.mlpackage", metadata(model),
                                        lengths=SECONDS, precision=precision)
               for precision in ("fp32", "fp16")}
    return model, reports


def torch_log_probs(model, waveform: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        log_probs, frames = model(torch.from_numpy(waveform)[None], torch.tensor([waveform.size]))
    return log_probs[0, : int(frames[0])].numpy()


def speech_like(samples: int, seed: int) -> np.ndarray:
    """A loud, offset signal: long utterances of it overflow FP16 sums and counts."""
    generator = np.random.default_rng(seed)
    t = np.arange(samples) / 16_000
    tone = 0.6 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.05 * generator.standard_normal(samples) + 0.2).astype(np.float32)


@pytest.mark.parametrize("samples", [6_000, 8_000, 37_000])  # padded to 0.5 s / exact / 2.5 s
def test_fp32_program_matches_torch(packages, samples):
    model, reports = packages
    session = SpeechSession.from_file(reports["fp32"].path, "coreml")
    waveform = speech_like(samples, seed=samples)
    expected = torch_log_probs(model, waveform)
    got = session.log_probs([waveform])[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_fp16_program_matches_torch_to_fp16_rounding(packages):
    """A 2.3 s utterance (> 32,767 samples, loud and offset): exact frame count, log-probs
    within FP16 rounding, the same best token on nearly every frame."""
    model, reports = packages
    waveform = speech_like(37_000, seed=1)
    expected = torch_log_probs(model, waveform)
    got = SpeechSession.from_file(reports["fp16"].path).log_probs([waveform])[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 0.02
    assert np.abs(got - expected).max() < 0.5  # no log(softmax) floor at -103
    assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.97


def test_fp16_frame_counts_are_exact(packages):
    """Sample counts stay integers in the FP16 program (an FP16 "+ 1" once rounded them
    past 2048 and lost a frame)."""
    from mho.models.transformer import output_lengths

    _, reports = packages
    session = SpeechSession.from_file(reports["fp16"].path)
    for samples in range(80_000, 96_000, 373):
        frames = session.log_probs([np.zeros(samples, dtype=np.float32)])[0].shape[0]
        assert frames == int(output_lengths(torch.tensor([samples]))[0]), samples


def test_package_metadata_lengths_and_ops(packages):
    model, reports = packages
    report = reports["fp16"]
    session = CoreMLSession(report.path)
    assert session.metadata.vocabulary == metadata(model).vocabulary
    assert session.lengths == [8_000, 96_000] == report.lengths
    assert report.ops["cumsum"] >= 1 and "cumsum" in report.off_neural_engine  # the LPA's
    assert "shape" in session.op_counts()
    with pytest.raises(MhoError, match="longer than the package's longest input"):
        SpeechSession(session, session.metadata).log_probs([np.zeros(96_001, np.float32)])


def test_a_package_without_mho_metadata_is_refused(packages, tmp_path):
    import shutil

    from mho.exporter.coreml import import_coremltools

    ct = import_coremltools()
    _, reports = packages
    spec = ct.utils.load_spec(str(reports["fp32"].path))
    spec.description.metadata.userDefined.clear()
    copy = tmp_path / "bare.mlpackage"
    shutil.copytree(reports["fp32"].path, copy)
    (copy / "Data/com.apple.CoreML/model.mlmodel").write_bytes(spec.SerializeToString())
    with pytest.raises(MhoError, match="not an mho export"):
        CoreMLSession(copy)


@pytest.mark.parametrize("stride, padding, groups, dilation", [
    (1, 0, 1, 1), (2, 3, 1, 1), (1, 2, 4, 1), (1, 2, 8, 2), (3, 1, 2, 1)])
def test_conv_kernel_against_torch(stride, padding, groups, dilation):
    generator = torch.Generator().manual_seed(stride + 10 * groups)
    x = torch.randn(2, 8, 37, generator=generator)
    weight = torch.randn(16, 8 // groups, 5, generator=generator)
    bias = torch.randn(16, generator=generator)
    expected = torch.nn.functional.conv1d(x, weight, bias, stride, padding, dilation, groups)
    got = _conv(x.numpy(), weight.numpy(), bias.numpy(), strides=[stride], pad_type="custom",
                pad=[padding, padding], dilations=[dilation], groups=groups)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_conv2d_kernel_same_padding_against_torch():
    x, weight = torch.randn(1, 3, 11, 9), torch.randn(4, 3, 3, 3)
    expected = torch.nn.functional.conv2d(x, weight, stride=2, padding=1)
    got = _conv(x.numpy(), weight.numpy(), strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1])
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_cli_refuses_memristor_and_bad_paths(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", "coreml", "wav2vec2-small", "-o",
                                  str(tmp_path / "x.mlpackage"), "--memristor"])
    assert result.exit_code != 0 and "not supported" in result.output
    result = runner.invoke(main, ["export", "coreml", "wav2vec2-small", "-o",
                                  str(tmp_path / "x.onnx")])
    assert result.exit_code != 0 and ".mlpackage" in result.output
    result = runner.invoke(main, ["eval", str(tmp_path / "missing.mlpackage"), "--data",
                                  "flite-slt"])
    assert result.exit_code != 0 and "no such Core ML package" in result.output


@pytest.mark.slow
def test_shipped_lpa_model_check_on_coreml_fp16():
    """`mho check` of the shipped 6-of-9 LPA model on Core ML FP16 (numpy) on the shipped
    festival-slt set: 99% of frames keep their best token and the LM WER moves by under a
    point (transcript CER was 1.6%: the 1% target is not met, see docs/lpa.md)."""
    result = CliRunner().invoke(main, ["check", "wav2vec2-small-lpa6-mse", "--data",
                                       "festival-slt", "--runtimes", "torch,coreml",
                                       "--decoder", "lm", "--json"])
    assert result.exit_code == 0, result.output
    coreml = json.loads(result.output)["runtimes"][1]
    assert coreml["runtime"] == "coreml" and coreml["frames_agree"] > 0.99
    assert abs(coreml["wer_delta"]) < 1.0
