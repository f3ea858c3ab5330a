"""Every shipped model loads, is listed with its card, and transcribes shipped audio."""

import json

import pytest
import torch
from click.testing import CliRunner

from mho.cli import main
from mho.data.datasets import copy_subset, shipped_manifest
from mho.models.positional import PE_VARIANTS
from mho.models.zoo import MODEL_DIR, load_model, model_card, shipped_models

SHIPPED = shipped_models()
CONFORMERS = [name for name in SHIPPED if name.startswith("conformer-")]
LPA_FAMILY = [name for name in SHIPPED if name.startswith("wav2vec2-")]


def test_the_paper_grid_is_shipped():
    cards = [model_card(name) for name in CONFORMERS]
    assert {(c["pe"], c["weight_bits"]) for c in cards} == {
        (pe, bits) for pe in PE_VARIANTS for bits in (8, 4)
    }


def test_the_lpa_study_is_shipped():
    """The teacher and its conversions: MSE order at 2, 4 and 6 of 9 layers, naive at 6."""
    cards = {name: model_card(name) for name in LPA_FAMILY}
    assert cards["wav2vec2-small"]["lpa_layers"] == []
    for depth in (2, 4, 6):
        order = cards[f"wav2vec2-small-lpa{depth}-mse"]["lpa_order"]
        assert len(order) == depth and order != list(range(depth))
    assert cards["wav2vec2-small-lpa6-naive"]["lpa_order"] == list(range(6))


def test_the_lpa_conformers_are_shipped():
    """The baseline with half (MSE order) and all of its MHSA blocks replaced by LPAs; half
    of them within +20% relative LM WER of the baseline on both shipped sets (docs/lpa.md)."""
    base = "conformer-sinusoidal-linear-w8"
    cards = {depth: model_card(f"{base}-lpa{depth}") for depth in (3, 6)}
    assert len(cards[3]["lpa_order"]) == 3 and cards[3]["lpa_order"] != [0, 1, 2]
    assert sorted(cards[6]["lpa_order"]) == list(range(6))
    assert cards[6]["lpa_order"][:3] == cards[3]["lpa_order"]  # one MSE-order run

    def lm_wer(card, data):
        return next(r["wer"] for r in card["results"]
                    if r["data"] == data and r["decoder"] == "lm")

    for data in ("flite-slt", "festival-slt"):
        assert lm_wer(cards[3], data) <= 1.2 * lm_wer(model_card(base), data)


@pytest.mark.parametrize("base_name", ["conformer-sinusoidal-linear-w8", "conformer-none-w8"])
def test_the_diverse_fine_tune_is_shipped(base_name):
    """The baseline (and the no-PE variant) fine-tuned on every English voice with voice
    conversion: its card names its base, and it beats the base with the LM on all four
    held-out sets it was scored on (docs/diverse-training.md)."""
    base = model_card(base_name)
    tuned = model_card(f"{base_name}-diverse")
    assert tuned["fine_tuned_from"] == base["name"] and tuned["fine_tune_hours"] > 5
    lm = {card["name"]: {r["data"]: r["wer"] for r in card["results"] if r["decoder"] == "lm"}
          for card in (base, tuned)}
    assert set(lm[tuned["name"]]) == {"flite-slt", "festival-slt", "test-flite-slt",
                                      "test-festival-slt"}
    for data, wer in lm[tuned["name"]].items():
        assert wer < lm[base["name"]][data]


def lm_wers(name: str) -> dict[str, float]:
    """A shipped model's LM-decoder WER on each set its card was scored on."""
    return {r["data"]: r["wer"] for r in model_card(name)["results"] if r["decoder"] == "lm"}


@pytest.mark.parametrize("pe", ["sinusoidal-linear", "none"])
def test_the_diverse_4_bit_models_are_shipped(pe):
    """The 8-bit fine-tuned models trained on at 4 bits: a card names that base, and with
    the LM each beats the original 4-bit model of its PE variant on all four held-out sets;
    the baseline is within 10% relative of its 8-bit base on both 400-utterance sets
    (docs/diverse-training.md)."""
    base, tuned = f"conformer-{pe}-w8-diverse", f"conformer-{pe}-w4-diverse"
    card = model_card(tuned)
    assert (card["fine_tuned_from"], card["weight_bits"]) == (base, 4)
    original = lm_wers(f"conformer-{pe}-w4")
    assert set(lm_wers(tuned)) == set(original) == {"flite-slt", "festival-slt",
                                                      "test-flite-slt", "test-festival-slt"}
    for data, wer in lm_wers(tuned).items():
        assert wer < original[data]
    if pe == "sinusoidal-linear":
        for data in ("test-flite-slt", "test-festival-slt"):
            assert lm_wers(tuned)[data] <= 1.1 * lm_wers(base)[data]


def test_the_4_bit_card_lists_both_fine_tuning_runs():
    """Its runs: the 8-bit fine-tuning (from the shipped baseline), then the 4-bit one, each
    with the same 5.9 h, and as many epochs and minutes as its base's card and its own
    history record; `mho models runs` prints them."""
    base, tuned = (model_card("conformer-sinusoidal-linear-w8-diverse"),
                   model_card("conformer-sinusoidal-linear-w4-diverse"))
    runs = tuned["training_runs"]
    assert runs[0] == base["training_runs"][-1]
    assert [(r["init"], r["weight_bits"], r["epochs"]) for r in runs] == [
        ("conformer-sinusoidal-linear-w8", 8, 3), (base["name"], 4, 6)]
    # the history rounds seconds to 0.1
    assert runs[1]["wall_minutes"] * 60 == pytest.approx(tuned["history"][-1]["train_seconds"],
                                                         abs=0.05)
    for run in runs:
        assert run["data_hours"] == pytest.approx(tuned["fine_tune_hours"])
    result = CliRunner().invoke(main, ["models", "runs", tuned["name"]])
    assert result.exit_code == 0, result.output
    assert "conformer-sinusoidal-linear-w8-diverse" in result.output and " 33 " in result.output


def test_the_diverse_lpa_conformer_is_shipped():
    """The fine-tuned baseline with half of its MHSA blocks replaced (MSE order), within +20%
    relative LM WER of it on all four held-out sets (docs/lpa.md)."""
    base = "conformer-sinusoidal-linear-w8-diverse"
    card = model_card(f"{base}-lpa3")
    assert card["lpa_order_kind"] == "mse" and sorted(card["lpa_order"]) == card["lpa_layers"]
    assert len(card["lpa_layers"]) == 3
    assert set(lm_wers(card["name"])) == set(lm_wers(base)) == {
        "flite-slt", "festival-slt", "test-flite-slt", "test-festival-slt"}
    for data, wer in lm_wers(card["name"]).items():
        assert wer <= 1.2 * lm_wers(base)[data]


def test_models_json_lists_name_pe_bits_params():
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [m["name"] for m in listed] == SHIPPED
    for entry in listed:
        if entry["name"] in CONFORMERS:
            assert entry["pe"] in PE_VARIANTS and entry["weight_bits"] in (4, 8)
        else:  # float models (int8 storage), wav2vec2's conv positional embedding
            assert entry["pe"] == "conv" and entry["weight_bits"] is None
        assert 2e6 < entry["params"] < 10e6


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_small_and_stored_as_integers(name):
    model, payload = load_model(MODEL_DIR / f"{name}.pt")
    assert payload["integer_weights"]  # QAT integers, or int8 matrices of float models
    assert all(w.dtype == torch.int8 for w in payload["integer_weights"].values())
    assert (model.num_parameters() * 1.2) > model_card(name)["bytes"]  # ~1 byte per weight


def test_two_thirds_lpa_model_reproduces_its_card_within_2x_the_teacher():
    """6 of 9 attention layers replaced (MSE order): `mho eval` on the held-out festival
    voice reproduces the card's LM WER, which is at most twice the teacher's."""
    name = "wav2vec2-small-lpa6-mse"
    result = CliRunner().invoke(main, ["eval", name, "--data", "festival-slt", "--json"])
    assert result.exit_code == 0, result.output
    wer = json.loads(result.output)["wer"]

    def card_wer(model):
        return next(r["wer"] for r in model_card(model)["results"]
                    if r["data"] == "festival-slt" and r["decoder"] == "lm")

    assert wer == pytest.approx(card_wer(name), abs=0.3)
    assert wer <= 2 * card_wer("wav2vec2-small")


def test_the_baseline_reproduces_its_card_on_shipped_audio():
    """`mho eval` of the paper's baseline (sinusoidal+linear, 8-bit) on a shipped held-out
    voice gives the WER its card recorded when it was packed: the same weights, decoder
    and audio must give the same transcripts."""
    baseline = "conformer-sinusoidal-linear-w8"
    result = CliRunner().invoke(main, ["eval", baseline, "--data", "festival-slt", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    card = {(r["data"], r["decoder"]): r["wer"] for r in model_card(baseline)["results"]}
    assert record["utterances"] == 50 and record["runtime"] == "torch"
    assert record["wer"] == pytest.approx(card[("festival-slt", "lm")], abs=0.3)
    assert record["wer"] < 50  # a trained model, far from noise (WER near 100)


def test_a_shipped_model_transcribes_a_sentence_exactly(tmp_path):
    """"set a fast pace" (shipped festival-slt, held-out voice), checked word for word."""
    subset = tmp_path / "one.jsonl"
    (utterance,) = copy_subset(shipped_manifest("festival-slt"), subset, count=1, seed=6)
    result = CliRunner().invoke(main, ["eval", "conformer-learnable-linear-w8", "--data",
                                       str(subset), "--json"])
    assert result.exit_code == 0, result.output
    assert utterance.text == "set a fast pace"
    assert json.loads(result.output)["wer"] == 0.0
