"""LPA inside the Conformer: a converted block's module against the plain equations, selective
initialization, QAT at the model's bits, checkpoints, the diagnostic and conversion on
feature archives; slow: dynamic-length ONNX export and the combined LPA + memristor file."""

import numpy as np
import onnx
import pytest
import torch

from mho.data.datasets import shipped_manifest
from mho.errors import MhoError
from mho.lpa.convert import ConversionConfig, Converter
from mho.lpa.diagnostic import diagnose, mse_order
from mho.lpa.fitting import FitConfig
from mho.lpa.host import ConformerHost, host_of, model_pair
from mho.models.checkpoint import save_checkpoint
from mho.models.conformer import ConformerCTC, ConformerCTCConfig, conformer_config
from mho.models.lpa import NormedPulseAccumulator
from mho.models.quant import QuantLayer, calibrate
from mho.models.zoo import MODEL_TYPE, load_model, pack_model
from tests.conftest import TILE, inputs, tiny_qat_model
from tests.models.test_lpa import reference_forward

HOST = ConformerHost()


def gates_apart(module: NormedPulseAccumulator) -> NormedPulseAccumulator:
    """Non-trivial gates: extents and thresholds away from their zero initialization."""
    torch.manual_seed(3)
    with torch.no_grad():
        module.lpa.extent.weight.normal_(0, 0.5)
        module.lpa.threshold.normal_(0, 0.5)
    return module


def converted(model: ConformerCTC, layer: int) -> ConformerCTC:
    """`model` with block `layer`'s MHSA replaced by a selectively initialized LPA."""
    lpa = gates_apart(HOST.new_lpa(model, layer, {}))
    HOST.install(model, layer, lpa, {})
    return model


def test_converted_block_in_hard_mode_equals_the_plain_equations():
    """The block's module (pre-norm + LPA, eval mode: hard gates, whole-frame windows) on a
    padded batch against LayerNorm written out + the LPA's plain equations."""
    torch.manual_seed(0)
    model = converted(ConformerCTC(conformer_config("tiny")), 1).eval()
    module = model.blocks[1].attention
    assert isinstance(module, NormedPulseAccumulator) and model.config.lpa_layers == (1,)
    x = torch.randn(2, 21, 64)
    mask = torch.arange(21)[None] < torch.tensor([[21], [13]])
    norm = module.layer_norm
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    normalized = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    with torch.no_grad():
        expected = reference_forward(module.lpa, normalized, mask)
        got = module(x, mask)
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-4)


def test_selective_initialization_copies_norm_value_and_output_and_quantizes_the_rest():
    teacher = tiny_qat_model()  # 4-bit QAT, calibrated
    attention = teacher.blocks[0].attention
    lpa = HOST.new_lpa(teacher, 0, {})
    for name in ("layer_norm", "value", "out_proj"):
        own, source = getattr(lpa, name).state_dict(), getattr(attention, name).state_dict()
        assert own.keys() == source.keys()  # observers included
        for key in own:
            torch.testing.assert_close(own[key], source[key], rtol=0, atol=0)
    layers = {n: m for n, m in lpa.named_modules() if isinstance(m, QuantLayer)}
    assert set(layers) == {"lpa.value", "lpa.out_proj", "lpa.mixing", "lpa.extent_conv",
                           "lpa.extent"}
    assert all(m.weight_bits == 4 for m in layers.values())
    assert all(m.integer_weight().abs().max() <= 7 for m in layers.values())
    # the teacher is untouched
    assert type(teacher.blocks[0].attention).__name__ == "RelPosSelfAttention"


def test_checkpoint_and_packed_round_trip(tmp_path):
    model = converted(tiny_qat_model(), 1)
    model.train()
    calibrate(model, [inputs(5)])  # the LPA's new layers get their activation scales
    model.eval()
    payload = {"model_type": MODEL_TYPE, "model_config": model.config.to_dict(),
               "vocabulary": ["<b>"] * 41, "state_dict": model.state_dict(),
               "metadata": {"summary": {}}}
    save_checkpoint(tmp_path / "lpa.pt", payload)
    loaded, stored = load_model(tmp_path / "lpa.pt")
    assert loaded.config == model.config and loaded.config.lpa_layers == (1,)
    assert ConformerCTCConfig(**stored["model_config"]) == model.config
    with torch.no_grad():
        expected = model(*inputs())[0]
        torch.testing.assert_close(loaded(*inputs())[0], expected, rtol=0, atol=0)
        pack_model(loaded, stored, tmp_path / "packed.pt")
        packed, _ = load_model(tmp_path / "packed.pt")
        # packed: int8 weights + scale, exactly QAT's weights; the scale re-derived from
        # them is the same float up to rounding, so outputs agree to float32 rounding
        torch.testing.assert_close(packed(*inputs())[0], expected, atol=1e-4, rtol=1e-4)


def test_config_refuses_blocks_out_of_range_and_bad_settings():
    with pytest.raises(MhoError, match="lpa_layers"):
        conformer_config("tiny", lpa_layers=[2])
    with pytest.raises(MhoError, match="lpa settings"):
        conformer_config("tiny", lpa={"pulses": 3})


def test_model_pair_replaces_every_mhsa():
    torch.manual_seed(0)
    teacher = ConformerCTC(conformer_config("tiny")).eval()
    attention, lpa = model_pair(teacher)
    assert lpa.config.lpa_layers == (0, 1) and attention.config.lpa_layers == ()
    torch.testing.assert_close(lpa.blocks[1].attention.value.weight,
                               teacher.blocks[1].attention.value.weight)
    torch.testing.assert_close(lpa.blocks[1].convolution.depthwise.weight,
                               teacher.blocks[1].convolution.depthwise.weight)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """Eight real utterances as a feature archive."""
    data = HOST.load_data(shipped_manifest("flite-slt"), count=8)
    path = tmp_path_factory.mktemp("f") / "set.pt"
    data.save_archive(path)
    return HOST.load_data(path)


def test_diagnostic_and_conversion_on_a_conformer(features, tmp_path):
    """Sweep both blocks, convert one in MSE order on a feature archive; depth-1.pt loads as
    a Conformer with the LPA, and a finished run resumes as a no-op."""
    teacher = tiny_qat_model()
    payload = {"model_type": MODEL_TYPE, "model_config": teacher.config.to_dict(),
               "vocabulary": ["<b>"] * 41, "state_dict": teacher.state_dict(), "metadata": {}}
    fit = FitConfig(steps=3, max_batch_seconds=20.0, max_batch_size=4)
    fits = diagnose(teacher, features, features, fit, torch.device("cpu"))
    assert sorted(mse_order(fits)) == [0, 1] and all(0 <= f.mse < 2 for f in fits)
    config = ConversionConfig(fit=fit, coadapt_steps=2, finetune_steps=2)
    order = mse_order(fits)[:1]
    state = Converter(payload, teacher, order, features, config, tmp_path,
                      torch.device("cpu")).run()
    assert state.done == 1
    model, stored = load_model(tmp_path / "depth-1.pt")
    assert isinstance(model, ConformerCTC) and model.config.lpa_layers == tuple(order)
    assert stored["model_type"] == MODEL_TYPE and stored["metadata"]["lpa_order"] == order
    assert isinstance(host_of(model), ConformerHost)
    again = Converter(payload, tiny_qat_model(), order, features, config, tmp_path,
                      torch.device("cpu"))
    assert again.run(resume=True).done == 1


# ---- export (slow: each export traces the model) ------------------------------------------

@pytest.fixture(scope="module")
def lpa_qat_model():
    """The tiny 4-bit Conformer with both blocks' MHSA replaced, calibrated."""
    model = converted(converted(tiny_qat_model(), 0), 1)
    calibrate(model, [inputs(5)])
    return model.eval()


@pytest.mark.slow
def test_dynamic_length_export_matches_torch_at_two_lengths(lpa_qat_model, tmp_path):
    from mho.exporter.onnx import export_onnx
    from tests.exporter.test_export import SHAPES, batch, metadata_for, outputs

    path = tmp_path / "lpa.onnx"
    report = export_onnx(lpa_qat_model, path, metadata_for(lpa_qat_model), input="features")
    assert report.nodes["CumSum"] >= 2  # one per LPA at least
    for batch_size, frames in SHAPES:
        expected, got = outputs(lpa_qat_model, path, "ort", *batch(batch_size, frames))
        # the same integer weights and activation grids; float32 summation order differs,
        # which may move a value across a rounding edge of the 8-bit grid: compare the
        # best tokens and log-probs where both agree on every frame's best token
        assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.99
        np.testing.assert_allclose(got, expected, atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["ort", "onnx-ref"])
def test_combined_file_lpa_standard_ops_and_memristor_nodes(lpa_qat_model, tmp_path, runtime):
    """--memristor on the converted model: every static layer (the LPA's projections too)
    a crossbar node, the LPA's prefix sums standard CumSum; checker passes; onnxruntime and
    the reference evaluator reproduce the torch simulator on an ideal chip."""
    from mho.exporter.onnx import export_onnx
    from mho.exporter.ops.crossbar import DOMAIN
    from mho.simulator.config import SimulatorConfig
    from mho.simulator.mapping import map_to_crossbars
    from tests.exporter.test_export import (
        SHAPES,
        batch,
        metadata_for,
        outputs,
        standard_or_crossbar_only,
    )

    simulated, report = map_to_crossbars(lpa_qat_model, SimulatorConfig.ideal(tile=TILE), seed=0)
    mapped = {layer.name for layer in report.layers}
    assert {f"blocks.{b}.attention.lpa.{n}" for b in (0, 1)
            for n in ("value", "out_proj", "mixing", "extent_conv", "extent")} <= mapped
    assert not any("linear_pos" in name or "query" in name for name in mapped)
    path = tmp_path / "combined.onnx"
    export = export_onnx(simulated, path, metadata_for(
        lpa_qat_model, memristor=report.config.to_dict(), programming_seed=0), input="features")
    assert export.nodes["CumSum"] >= 2 and export.nodes[f"{DOMAIN}::CrossbarLinear"] >= 10
    onnx.checker.check_model(str(path), full_check=True)
    standard_or_crossbar_only(onnx.load(str(path)))
    for batch_size, frames in SHAPES:
        expected, got = outputs(simulated, path, runtime, *batch(batch_size, frames))
        # ideal chip: exact integer reads; float32 rounding in the digital ops only (the
        # bound of the attention model's test)
        assert np.abs(got - expected).max() < 1e-5


def test_report_rows_take_conformer_cards():
    """A shipped Conformer card (packed before LPAs, no lpa keys) starts both orders."""
    from mho.lpa.report import conversion_rows

    result = [{"data": "flite-slt", "decoder": "lm", "wer": 27.0}]
    other = [{"data": "test-flite-slt", "decoder": "lm", "wer": 28.0}]  # the base's only
    cards = [{"name": "base", "architecture": {"num_blocks": 6}, "results": result + other},
             {"name": "mse1", "family": MODEL_TYPE, "lpa_layers": [2], "lpa_order": [2],
              "results": result},
             # MSE-ranked layers that happen to be 0, 1: the recorded order kind decides
             {"name": "mse2", "family": MODEL_TYPE, "lpa_layers": [0, 1], "lpa_order": [0, 1],
              "lpa_order_kind": "mse", "results": result},
             {"name": "naive1", "family": MODEL_TYPE, "lpa_layers": [0], "lpa_order": [0],
              "results": result}]
    rows = conversion_rows(cards)
    assert [(r["order"], r["depth"], r["name"]) for r in rows] == [
        ("mse", 0, "base"), ("mse", 1, "mse1"), ("mse", 2, "mse2"), ("naive", 0, "base"),
        ("naive", 1, "naive1")]
    assert all(set(r["wer"]) == {"flite-slt lm"} for r in rows)
    with pytest.raises(MhoError, match="LPA host"):
        conversion_rows([{"name": "x", "architecture": {"num_layers": 9}}])
