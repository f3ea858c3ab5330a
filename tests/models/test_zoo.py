"""Packed (shipped) checkpoints reproduce the trained QAT model and are small."""

import pytest
import torch

from mho.data.lexicon import PHONE_VOCABULARY
from mho.models.checkpoint import save_checkpoint
from mho.models.conformer import ConformerCTC, conformer_config
from mho.models.quant import calibrate
from mho.models.zoo import load_model, pack_model


@pytest.mark.parametrize("weight_bits", [8, 4])
def test_packed_qat_model_matches_to_float_rounding(tmp_path, weight_bits):
    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny", pe="learnable+linear"))
    model.enable_quantization(weight_bits=weight_bits)
    features, lengths = torch.randn(3, 120, 80), torch.tensor([120, 90, 41])
    calibrate(model, [(features, lengths)])
    payload = {
        "model_type": "conformer-ctc", "model_config": model.config.to_dict(),
        "vocabulary": list(PHONE_VOCABULARY.tokens), "state_dict": model.state_dict(),
        "metadata": {"train_hours": 0.0, "train_seconds": 1.0, "history": []},
    }
    save_checkpoint(tmp_path / "trained.pt", payload)
    size = pack_model(model.eval(), payload, tmp_path / "packed.pt")
    assert size < 0.5 * (tmp_path / "trained.pt").stat().st_size

    packed, _ = load_model(tmp_path / "packed.pt")
    for name, layer in packed.quantized_layers().items():
        original = model.quantized_layers()[name]
        assert torch.equal(layer.integer_weight(), original.integer_weight()), name
    with torch.no_grad():
        expected, _ = model(features, lengths)
        got, _ = packed(features, lengths)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_conversion_record_follows_training_after_a_conversion(tmp_path):
    """A model trained on after its LPA conversion keeps the conversion's record (its
    init's); a conversion's own record wins; a model without one has none."""
    from mho.models.zoo import conversion_record

    record = {"lpa_order": [0, 1, 5], "lpa_order_kind": "mse", "conversion_seconds": 60.0}
    save_checkpoint(tmp_path / "depth-3.pt", {"metadata": {"train_hours": 1.0, **record}})
    tuned = {"config": {"init": str(tmp_path / "depth-3.pt")}, "metadata": {"train_hours": 2.0}}
    assert conversion_record(tuned) == record
    own = {**tuned, "metadata": {"lpa_order": [2], "lpa_order_kind": "naive"}}
    assert conversion_record(own) == {"lpa_order": [2], "lpa_order_kind": "naive"}
    assert conversion_record({"metadata": {"train_hours": 1.0}}) == {}


def test_models_table_marks_what_a_card_lacks():
    """One column per set any card was scored on; a set a card was not scored on, and a
    model without LPA layers, read "-"."""
    from mho.models.zoo import models_table

    def card(name, results, lpa_layers):
        return {"name": name, "pe": "none", "weight_bits": 8, "params": 2.4e6,
                "train_hours": 1.0, "train_minutes": 2.0, "history": [{"dev_wer": 12.5}],
                "architecture": {"num_blocks": 6}, "lpa_layers": lpa_layers,
                "results": [{"data": d, "decoder": k, "wer": w} for d, k, w in results]}

    columns, rows = models_table([
        card("a", [("x", "greedy", 40.0), ("x", "lm", 20.0)], []),
        card("b", [("x", "greedy", 41.0), ("x", "lm", 21.0), ("y", "greedy", 50.0),
                   ("y", "lm", 30.0)], [0, 5]),
    ])
    assert columns[-2:] == ["x greedy / LM", "y greedy / LM"]
    assert rows[0][3:] == ["-", "2.40 M", "1.0", "2", "12.50", "40.00 / 20.00", "-"]
    assert rows[1][3] == "2 of 6" and rows[1][-1] == "50.00 / 30.00"
