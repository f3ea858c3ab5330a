"""Every shipped model loads, is listed with its card, and transcribes shipped audio."""

import json

import pytest
from click.testing import CliRunner

from mho.cli import main
from mho.data.datasets import copy_subset, shipped_manifest
from mho.models.positional import PE_VARIANTS
from mho.models.zoo import MODEL_DIR, load_model, model_card, shipped_models

SHIPPED = shipped_models()


def test_the_paper_grid_is_shipped():
    cards = [model_card(name) for name in SHIPPED]
    assert {(c["pe"], c["weight_bits"]) for c in cards} == {
        (pe, bits) for pe in PE_VARIANTS for bits in (8, 4)
    }


def test_models_json_lists_name_pe_bits_params():
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [m["name"] for m in listed] == SHIPPED
    for entry in listed:
        assert entry["pe"] in PE_VARIANTS and entry["weight_bits"] in (4, 8)
        assert 2e6 < entry["params"] < 10e6


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_small_and_quantized(name):
    model, payload = load_model(MODEL_DIR / f"{name}.pt")
    assert model.config.quant is not None and payload["integer_weights"]
    assert (model.num_parameters() * 1.2) > model_card(name)["bytes"]  # ~1 byte per weight


def test_eval_runs_a_shipped_model_on_shipped_audio(tmp_path):
    baseline = next(n for n in SHIPPED if "sinusoidal-linear-w8" in n)
    subset = tmp_path / "five.jsonl"
    copy_subset(shipped_manifest("festival-slt"), subset, count=5, seed=0)
    result = CliRunner().invoke(main, ["eval", baseline, "--data", str(subset), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["utterances"] == 5 and record["runtime"] == "torch"
    assert record["wer"] < 60  # a trained model, not noise: WER near 100 means broken
