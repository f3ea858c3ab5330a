"""The shipped baseline end to end through ONNX: `mho export onnx`, `mho eval FILE.onnx` on
both runtimes, `mho transcribe` at another sample rate, `mho check`, and clear errors."""

import json

import numpy as np
import onnx
import pytest
import soundfile
from click.testing import CliRunner
from scipy.signal import resample_poly

from mho.cli import main
from mho.data.datasets import resolve_dataset
from mho.models.zoo import model_card, shipped_models

BASELINE = "conformer-sinusoidal-linear-w8"


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "baseline.onnx"
    result = run("export", "onnx", BASELINE, "-o", path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["bytes"] < 8e6  # int8 weights: about a quarter of fp32
    return path


def test_eval_on_onnxruntime_reproduces_the_models_card(baseline_file):
    result = run("eval", baseline_file, "--data", "festival-slt", "--runtime", "ort",
                 "--batch-size", "8", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    expected = next(r["wer"] for r in model_card(BASELINE)["results"]
                    if r["data"] == "festival-slt" and r["decoder"] == "lm")
    assert record["runtime"] == "ort" and record["utterances"] == 50
    # the export's float rounding moves a few 8-bit roundings: WER within a point
    assert abs(record["wer"] - expected) < 1.0


def test_transcribe_resamples_any_rate_and_matches_the_text(baseline_file, tmp_path):
    _, utterances = resolve_dataset("festival-slt")
    utt = next(u for u in utterances if u.text == "set a fast pace")
    waveform, rate = soundfile.read(utt.audio, dtype="float32")
    path_48k = tmp_path / "pace-48k.wav"  # recorder-style rate: resampled to 16 kHz on load
    soundfile.write(path_48k, resample_poly(waveform, 3, 1).astype(np.float32), rate * 3)
    for runtime in ("ort", "onnx-ref"):
        result = run("transcribe", baseline_file, utt.audio, "--runtime", runtime)
        assert result.exit_code == 0, result.output
        assert result.output.strip().split("\t") == [str(utt.audio), "set a fast pace"]
    result = run("transcribe", BASELINE, path_48k)  # torch
    assert result.exit_code == 0 and result.output.strip().endswith("set a fast pace")


def test_check_passes_for_the_export_on_all_runtimes(baseline_file):
    # 12 utterances are 116 words, one word 0.86 WER points: the default tolerance (2 points,
    # sized for the 50-utterance sets: delta +0.45 on this CPU) is two words here, and which
    # 8-bit roundings flip depends on the CPU's kernels (3 words on an AVX-512 EPYC)
    result = run("check", BASELINE, "--onnx", baseline_file, "--data", "flite-slt",
                 "--limit", "12", "--max-wer-delta", "4.5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    entries = {e["runtime"]: e for e in report["runtimes"]}
    assert set(entries) == {"torch", "ort", "onnx-ref"} and report["utterances"] == 12
    for runtime in ("ort", "onnx-ref"):
        entry = entries[runtime]
        assert entry["passed"] and entry["frames_agree"] > 0.95
        assert entry["transcript_cer"] <= 5.0


def test_check_fails_when_the_file_is_another_model(baseline_file):
    result = run("check", "conformer-none-w4", "--onnx", baseline_file, "--data", "flite-slt",
                 "--limit", "4", "--runtimes", "torch,ort")
    assert result.exit_code == 1
    assert "NO:" in result.output


@pytest.mark.parametrize("args, message", [
    (["transcribe", BASELINE, "missing.flac"], "no such audio file"),
    (["eval", "missing.onnx", "--data", "flite-slt"], "no such ONNX file"),
    (["eval", BASELINE, "--data", "flite-slt", "--runtime", "ort"], "runs exported .onnx"),
    (["check", BASELINE, "--data", "flite-slt", "--runtimes", "ort"], "torch (the reference)"),
    (["check", BASELINE, "--data", "flite-slt", "--runs", "2"], "read with noise"),
    (["export", "onnx", BASELINE, "-o", "x.pt"], "should end in .onnx"),
    (["export", "onnx", BASELINE, "-o", "x.onnx", "--adc", "4/4"], "need --memristor"),
    (["export", "onnx", "nope", "-o", "x.onnx"], "unknown model"),
])
def test_bad_requests_fail_in_one_line(args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_a_file_without_mho_metadata_is_refused(baseline_file, tmp_path):
    proto = onnx.load(str(baseline_file))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    result = run("transcribe", bare, resolve_dataset("flite-slt")[1][0].audio)
    assert result.exit_code == 1 and "not an mho ONNX export" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("name", shipped_models())
def test_every_shipped_model_exports_and_passes_check_on_all_runtimes(name):
    result = run("check", name, "--data", "flite-slt", "--json")  # exports, then compares
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_the_baseline_on_a_chip_passes_check_with_noise_off():
    # a usable chip: with every layer on crossbars the model is near random (~90% WER even at
    # ADC 8/8: the depthwise convolutions' zero pairs, docs/simulator.md) and near-random
    # outputs make transcript agreement meaningless; depthwise convolutions stay digital
    result = run("check", BASELINE, "--data", "flite-slt", "--memristor", "--noise", "off",
                 "--adc", "8/8", "--digital", "*.depthwise", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_the_baseline_on_a_noisy_chip_passes_check_on_wer_over_runs():
    result = run("check", BASELINE, "--data", "flite-slt", "--memristor", "--noise", "legacy",
                 "--adc", "8/8", "--digital", "*.depthwise", "--seed", "3", "--limit", "16",
                 "--runs", "2", "--runtimes", "torch,ort", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    torch_entry, ort_entry = report["runtimes"]
    assert report["runs"] == 2 and len(torch_entry["wers"]) == len(ort_entry["wers"]) == 2
    assert ort_entry["passed"] and abs(ort_entry["wer_delta"]) <= ort_entry["allowed"]
