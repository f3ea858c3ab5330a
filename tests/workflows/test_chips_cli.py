"""`mho eval --memristor`: an ideal chip transcribes exactly like the QAT model; a real chip
reports runs, their spread and clipping per layer; bad settings fail in one line."""

import json

import pytest
import torch
from click.testing import CliRunner

from mho.cli import main
from mho.data.datasets import copy_subset, shipped_manifest
from mho.data.lexicon import PHONE_VOCABULARY
from mho.models.checkpoint import save_checkpoint
from mho.models.conformer import ConformerCTC, conformer_config
from mho.models.quant import calibrate

IDEAL_TOML = """
adc = [8, 8]
noise = "off"
ideal_current = true
[device]
variability = false
linear_iv = true
"""


@pytest.fixture(scope="module")
def qat_checkpoint(tmp_path_factory):
    """A tiny calibrated 8-bit QAT Conformer (untrained: its words are noise, but the same
    noise on every runtime is exactly what these checks need)."""
    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny"))
    model.enable_quantization(weight_bits=8)
    calibrate(model, [(torch.randn(2, 300, 80) * 3, torch.tensor([300, 200]))])
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, {"model_type": "conformer-ctc", "model_config": model.config.to_dict(),
                           "vocabulary": list(PHONE_VOCABULARY.tokens), "metadata": {},
                           "state_dict": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def three_utterances(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "three.jsonl"
    copy_subset(shipped_manifest("flite-slt"), path, count=3, seed=1)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_ideal_chip_transcribes_like_the_qat_model(qat_checkpoint, three_utterances, tmp_path):
    (tmp_path / "ideal.toml").write_text(IDEAL_TOML)
    digital = run("eval", qat_checkpoint, "--data", three_utterances, "--decoder", "greedy",
                  "--json")
    ideal = run("eval", qat_checkpoint, "--data", three_utterances, "--decoder", "greedy",
                "--memristor", tmp_path / "ideal.toml", "--json")
    assert digital.exit_code == 0 and ideal.exit_code == 0, digital.output + ideal.output
    digital, ideal = json.loads(digital.output), json.loads(ideal.output)
    assert ideal["wer"] == digital["wer"] and ideal["cer"] == digital["cer"]
    assert set(ideal["clipping"].values()) == {0.0}


def test_default_chips_report_runs_spread_and_clipping(qat_checkpoint, three_utterances):
    result = run("eval", qat_checkpoint, "--data", three_utterances, "--decoder", "greedy",
                 "--memristor", "--runs", 2, "--adc", "4/4", "--layer", "ctc_head=2/6",
                 "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert len(record["runs"]) == 2 and record["seeds"] == [0, 1]
    assert record["wer_std"] >= 0 and "ctc_head" in record["clipping"]
    assert all(0.0 <= f <= 1.0 for f in record["clipping"].values())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--adc", "9/9"], "precision + range <= 16"),
        (["--adc", "four"], "PRECISION/RANGE"),
        (["--layer", "*.nosuchlayer=1/7"], "matches no quantized layer"),
    ],
)
def test_bad_memristor_settings_fail_in_one_line(qat_checkpoint, three_utterances, options,
                                                 message):
    result = run("eval", qat_checkpoint, "--data", three_utterances, "--memristor", *options)
    assert result.exit_code == 1 and message in result.output
    assert result.output.strip().count("\n") == 0


def test_memristor_needs_an_mho_model(three_utterances):
    result = run("eval", "pocketsphinx", "--data", three_utterances, "--memristor")
    assert result.exit_code == 1 and "needs an mho model" in result.output


def test_save_a_chip_then_read_it_with_another_adc(qat_checkpoint, three_utterances, tmp_path):
    """`--save-chip` keeps the programmed chip; `--chip` reads it again without programming:
    with the file's own settings the result is the same run, with `--adc 8/8` it equals a
    fresh 8/8 run of the same seed."""
    chip = tmp_path / "chip.npz"
    common = ("--data", three_utterances, "--decoder", "greedy", "--json")
    saved = run("eval", qat_checkpoint, *common, "--memristor", "--seed", 4, "--save-chip", chip)
    again = run("eval", qat_checkpoint, *common, "--chip", chip)
    wide = run("eval", qat_checkpoint, *common, "--chip", chip, "--adc", "8/8")
    fresh = run("eval", qat_checkpoint, *common, "--memristor", "--seed", 4, "--adc", "8/8")
    for result in (saved, again, wide, fresh):
        assert result.exit_code == 0, result.output
    saved, again, wide, fresh = (json.loads(r.output) for r in (saved, again, wide, fresh))
    assert again["runs"] == saved["runs"] and again["seeds"] == [4]
    assert again["program_seconds"] == 0.0
    assert wide["runs"] == fresh["runs"] and wide["clipping"] == fresh["clipping"]
    assert max(wide["clipping"].values()) <= max(saved["clipping"].values())

    several = run("eval", qat_checkpoint, *common, "--chip", chip, "--runs", 2)
    assert several.exit_code == 1 and "--runs 1" in several.output


def test_every_layer_digital_is_a_digital_run_with_no_clipping(qat_checkpoint, three_utterances):
    digital = run("eval", qat_checkpoint, "--data", three_utterances, "--decoder", "greedy",
                  "--json")
    chip = run("eval", qat_checkpoint, "--data", three_utterances, "--decoder", "greedy",
               "--memristor", "--digital", "*", "--json")
    table = run("eval", qat_checkpoint, "--data", three_utterances, "--decoder", "greedy",
                "--memristor", "--digital", "*")
    assert digital.exit_code == chip.exit_code == table.exit_code == 0, table.output
    assert json.loads(chip.output)["clipping"] == {}
    assert json.loads(chip.output)["wer"] == json.loads(digital.output)["wer"]


@pytest.mark.parametrize("options", [["--runtime", "ort"], ["--batch-size", "4"]])
def test_options_chips_cannot_honour_are_refused(qat_checkpoint, three_utterances, options):
    result = run("eval", qat_checkpoint, "--data", three_utterances, "--memristor", *options)
    assert result.exit_code == 1 and "drop --runtime and --batch-size" in result.output


def test_map_reports_every_parameter_and_why(qat_checkpoint):
    result = run("map", qat_checkpoint, "--digital", "ctc_head", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    placements = {p["name"]: p for p in record["parameters"]}
    layers = {m["name"]: m for m in record["layers"]}
    assert layers["ctc_head"]["digital"] and placements["ctc_head.weight"]["reason"] == (
        "layer kept digital by the config")
    mapped = [name for name, m in layers.items() if not m["digital"]]
    assert mapped and all(placements[f"{name}.weight"]["placement"] == "crossbar"
                          for name in mapped)
    norms = [p for p in record["parameters"] if "LayerNorm has no crossbar" in p["reason"]]
    assert norms and all(p["placement"] == "digital" for p in norms)
    total = sum(p["size"] for p in record["parameters"])
    on_chip = sum(p["size"] for p in record["parameters"] if p["placement"] == "crossbar")
    assert record["crossbar_share"] == on_chip / total
