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
