"""Conformer-CTC: shapes and lengths, padding independence, config, training, export."""

import math

import pytest
import torch

from mho.errors import ConfigError
from mho.models import (
    PE_VARIANTS,
    SIZE_PRESETS,
    ConformerCTC,
    ConformerCTCConfig,
    QuantConfig,
    calibrate,
    conformer_config,
)
from mho.models.frontend import feature_statistics


def tiny_model(pe: str = "sinusoidal+linear", **overrides) -> ConformerCTC:
    torch.manual_seed(0)
    return ConformerCTC(conformer_config("tiny", pe=pe, **overrides)).eval()


@pytest.mark.parametrize("pe", PE_VARIANTS)
@pytest.mark.parametrize("lengths", [[1], [4], [5, 2, 1], [9, 17, 3], [60, 57]])
def test_output_shapes_and_lengths(pe, lengths):
    model = tiny_model(pe)
    features = torch.randn(len(lengths), max(lengths), 80)
    with torch.no_grad():
        log_probs, out_lengths = model(features, torch.tensor(lengths))
    expected_lengths = [-(-length // 4) for length in lengths]  # ceil(L / 4), 1 for L <= 4
    assert out_lengths.tolist() == expected_lengths
    assert log_probs.shape == (len(lengths), max(expected_lengths), 41)
    assert torch.isfinite(log_probs).all()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]))
    assert torch.equal(ConformerCTC.output_lengths(torch.tensor(lengths)), out_lengths)


@pytest.mark.parametrize("pe, utterance_norm", [(pe, "none") for pe in PE_VARIANTS]
                         + [("sinusoidal+linear", "level"), ("sinusoidal+linear", "spectrum")])
def test_padding_does_not_change_valid_frames(pe, utterance_norm):
    model = tiny_model(pe, utterance_norm=utterance_norm)
    torch.manual_seed(1)
    # 21 frames: both front-end convs read one frame past the end (21 -> 11 -> 6 frames)
    short, long = torch.randn(1, 21, 80), torch.randn(1, 70, 80)
    batch = torch.zeros(2, 70, 80)
    batch[0, :21], batch[1] = short[0], long[0]
    batch[0, 21:] = 100.0  # garbage in the padding must not matter either
    with torch.no_grad():
        alone, alone_lengths = model(short, torch.tensor([21]))
        batched, batched_lengths = model(batch, torch.tensor([21, 70]))
    assert batched_lengths.tolist() == [6, 18] and alone_lengths.tolist() == [6]
    torch.testing.assert_close(batched[0, :6], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        batched[1], model(long, torch.tensor([70]))[0][0], atol=1e-5, rtol=1e-5
    )


def test_padding_does_not_change_valid_frames_with_qat():
    model = tiny_model("learnable")
    model.enable_quantization(weight_bits=4)
    calibrate(model, [(torch.randn(2, 50, 80), torch.tensor([50, 31]))])
    short = torch.randn(1, 31, 80)
    batch = torch.cat([short, torch.zeros(1, 19, 80)], dim=1)
    batch = torch.cat([batch, torch.randn(1, 50, 80)])
    with torch.no_grad():
        alone, _ = model(short, torch.tensor([31]))
        batched, _ = model(batch, torch.tensor([31, 50]))
    # Summation order differs with the batch shape, so a value on a rounding boundary may
    # land one quantization step away; nearly all must agree exactly.
    close = torch.isclose(batched[0, :8], alone[0], atol=1e-5)
    assert close.float().mean() > 0.99


def test_config_validation_and_dict_round_trip():
    with pytest.raises(ConfigError, match="pe must be one of"):
        ConformerCTCConfig(pe="rotary")
    with pytest.raises(ConfigError, match="divisible"):
        ConformerCTCConfig(dim=100, num_heads=3)
    with pytest.raises(ConfigError, match="unknown size"):
        conformer_config("huge")
    config = conformer_config("small", pe="learnable", quant=QuantConfig(weight_bits=4))
    assert ConformerCTCConfig(**config.to_dict()) == config
    assert config.subsampling == 4


def test_presets_have_the_advertised_sizes_and_tile_onto_128x128_crossbars():
    assert set(SIZE_PRESETS) == {"tiny", "small", "base"}
    params = {size: ConformerCTC(conformer_config(size)).num_parameters() for size in SIZE_PRESETS}
    assert params["tiny"] < 0.5e6
    assert 2e6 <= params["small"] <= 3e6
    assert 5e6 <= params["base"] <= 8e6
    for size in ("small", "base"):
        config = conformer_config(size)
        assert config.dim % 128 == 0 and config.ff_dim % 128 == 0


def test_feature_statistics_normalize_valid_frames():
    features = torch.randn(3, 40, 80) * 4 + 7
    lengths = torch.tensor([40, 25, 10])
    features[1, 25:] = 1e4  # padding must not enter the statistics
    mean, std = feature_statistics([(features[:2], lengths[:2]), (features[2:], lengths[2:])])
    model = tiny_model()
    model.normalization.set_statistics(mean, std)
    valid = torch.cat([features[i, :n] for i, n in enumerate(lengths.tolist())])
    normalized = model.normalization(valid[None], torch.tensor([len(valid)]))[0]
    torch.testing.assert_close(normalized.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalized.std(0, unbiased=False), torch.ones(80), atol=1e-4, rtol=0)


@pytest.mark.parametrize("utterance_norm", ["level", "spectrum"])
def test_utterance_norm_matches_a_naive_loop(utterance_norm):
    torch.manual_seed(2)
    model = tiny_model(utterance_norm=utterance_norm)
    model.normalization.set_statistics(torch.randn(80), torch.rand(80) + 0.5)
    features, lengths = torch.randn(3, 30, 80) * 3 - 5, torch.tensor([30, 12, 1])
    features[1, 12:] = 1e4  # padding must not enter an utterance's mean
    normalized = model.normalization(features, lengths)
    for row, length in enumerate(lengths.tolist()):
        valid = features[row, :length].double()
        offset = valid.mean() if utterance_norm == "level" else valid.mean(0)
        expected = (valid - offset - model.normalization.mean) / model.normalization.std
        # float32 against float64: values up to ~30, a few ulps (3.8e-6 at 32) apart
        torch.testing.assert_close(normalized[row, :length].double(), expected,
                                   atol=1e-5, rtol=0)


def test_utterance_norm_removes_the_level_and_the_average_spectrum():
    """A gain adds the same log-mel to every bin (10 dB: ln 10 nats), a channel a constant
    per bin: "level" ignores the first, "spectrum" both, "none" neither."""
    torch.manual_seed(3)
    features, lengths = torch.randn(3, 30, 80) * 3 - 5, torch.tensor([30, 12, 1])
    gain = torch.full((3, 1, 1), 10 * math.log(10) / 10)
    channel = torch.randn(3, 1, 80)

    def moved(utterance_norm: str, shift: torch.Tensor) -> bool:
        model = tiny_model(utterance_norm=utterance_norm)
        with torch.no_grad():
            after, before = model(features + shift, lengths)[0], model(features, lengths)[0]
        return not torch.allclose(after, before, atol=1e-4, rtol=0)

    assert moved("none", gain) and moved("none", channel)
    assert not moved("level", gain) and moved("level", channel)
    assert not moved("spectrum", gain) and not moved("spectrum", gain + channel)
    with pytest.raises(ConfigError, match="utterance_norm must be one of"):
        conformer_config("tiny", utterance_norm="cmn")


def greedy_decode(log_probs: torch.Tensor, length: int) -> list[int]:
    best = log_probs[:length].argmax(-1).tolist()
    return [
        label for i, label in enumerate(best) if label != 0 and (i == 0 or best[i - 1] != label)
    ]


def test_tiny_model_overfits_two_utterances_with_ctc():
    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny", dropout=0.0, attention_dropout=0.0))
    features = torch.randn(2, 64, 80)
    lengths = torch.tensor([64, 52])
    targets = [[5, 9, 9, 12, 3, 7], [20, 4, 33, 8, 40]]  # repeated label needs a blank between
    flat_targets = torch.tensor(sum(targets, []))
    target_lengths = torch.tensor([len(t) for t in targets])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    for step in range(150):
        log_probs, out_lengths = model(features, lengths)
        loss = ctc(log_probs.transpose(0, 1), flat_targets, out_lengths, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                log_probs, out_lengths = model(features, lengths)
            model.train()
            decoded = [
                greedy_decode(lp, n) for lp, n in zip(log_probs, out_lengths.tolist(), strict=True)
            ]
            if decoded == targets:
                break
    assert decoded == targets, f"after {step + 1} steps, loss {loss.item():.3f}: {decoded}"


@pytest.mark.parametrize("quantized", [False, True])
def test_export_with_dynamic_time_serves_two_lengths(quantized):
    model = tiny_model("sinusoidal+linear")
    if quantized:
        model.enable_quantization(weight_bits=4)
        calibrate(model, [(torch.randn(2, 40, 80), torch.tensor([40, 30]))])
    # torch.export specializes sizes of 1 (its reshape and matmul decompositions branch on
    # them), so the exported graph takes T >= 5 feature frames (T' >= 2). Shorter inputs are
    # padded to 5 frames by the caller: padding does not change the valid outputs.
    time_dim = torch.export.Dim("time", min=5, max=4096)
    batch_dim = torch.export.Dim("batch", min=1, max=64)
    features, lengths = torch.randn(2, 37, 80), torch.tensor([37, 20])
    exported = torch.export.export(
        model,
        (features, lengths),
        dynamic_shapes=({0: batch_dim, 1: time_dim}, {0: batch_dim}),
    ).module()
    for num_frames, batch_lengths in ((37, [37, 20]), (123, [123, 5, 88])):
        features = torch.randn(len(batch_lengths), num_frames, 80)
        lengths = torch.tensor(batch_lengths)
        with torch.no_grad():
            expected, expected_lengths = model(features, lengths)
        got, got_lengths = exported(features, lengths)
        assert torch.equal(got_lengths, expected_lengths)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    very_short = torch.randn(1, 2, 80)
    with torch.no_grad():
        expected, _ = model(very_short, torch.tensor([2]))  # T' = 1
    padded = torch.cat([very_short, torch.zeros(1, 3, 80)], dim=1)
    got, got_lengths = exported(padded, torch.tensor([2]))
    assert got_lengths.tolist() == [1]
    torch.testing.assert_close(got[:, :1], expected, atol=1e-4, rtol=1e-4)
