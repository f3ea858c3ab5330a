"""LinearMultiheadAttention computes what torch's nn.MultiheadAttention computes (the
independent reference), so swapping it in before quantization changes nothing in float."""

import pytest
import torch
from torch import nn

from mho.errors import ConfigError
from mho.models.mha import LinearMultiheadAttention
from mho.models.quant import QuantConfig, quantize, quantized_layers

# float32 sums of 16-wide dot products in another order: a few ulps of values near 1
ATOL = 1e-6


def inputs(batch_first: bool, kdim: int | None, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    length, source, batch = 5, 7, 3

    def tensor(frames, width):
        shape = (batch, frames, width) if batch_first else (frames, batch, width)
        return torch.randn(*shape, generator=generator)

    return tensor(length, 16), tensor(source, kdim or 16), tensor(source, kdim or 16)


def masks():
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, -3:] = True
    causal = torch.ones(5, 7, dtype=torch.bool).triu(1)
    float_mask = torch.randn(5, 7)
    return [{}, {"key_padding_mask": padding}, {"attn_mask": causal},
            {"attn_mask": float_mask, "key_padding_mask": padding},
            {"attn_mask": causal.repeat(3 * 4, 1, 1)},  # per batch and head
            {"average_attn_weights": False}, {"need_weights": False}]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kdim", [None, 12])
@pytest.mark.parametrize("bias", [True, False])
def test_same_outputs_and_weights_as_torch(batch_first, kdim, bias):
    torch.manual_seed(1)
    reference = nn.MultiheadAttention(16, 4, bias=bias, kdim=kdim, vdim=kdim,
                                      batch_first=batch_first).eval()
    twin = LinearMultiheadAttention.from_torch(reference).eval()
    query, key, value = inputs(batch_first, kdim)
    with torch.no_grad():
        for kwargs in masks():
            expected, expected_weights = reference(query, key, value, **kwargs)
            got, weights = twin(query, key, value, **kwargs)
            torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
            if expected_weights is None:
                assert weights is None
            else:
                torch.testing.assert_close(weights, expected_weights, atol=ATOL, rtol=0)


def test_unbatched_inputs_and_is_causal():
    torch.manual_seed(2)
    reference = nn.MultiheadAttention(16, 2).eval()
    twin = LinearMultiheadAttention.from_torch(reference).eval()
    x = torch.randn(6, 16)
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        torch.testing.assert_close(twin(x, x, x)[0], reference(x, x, x)[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(twin(x, x, x, attn_mask=causal, is_causal=True)[0],
                                   reference(x, x, x, attn_mask=causal, is_causal=True)[0],
                                   atol=ATOL, rtol=0)


def test_a_transformer_layer_gives_the_same_output_with_the_twin():
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 9, 16)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 6:] = True
    with torch.no_grad():
        expected = layer(x, src_key_padding_mask=padding)
        layer.self_attn = LinearMultiheadAttention.from_torch(layer.self_attn)
        got = layer(x, src_key_padding_mask=padding)
    valid = ~padding  # torch's fast path leaves padded rows undefined (zeros)
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=0)


def test_quantize_splits_attention_so_its_in_projection_is_quantized():
    torch.manual_seed(4)
    model = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True), num_layers=2)
    quantize(model, QuantConfig(weight_bits=8))
    names = set(quantized_layers(model))
    for layer in range(2):
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            assert f"layers.{layer}.self_attn.{projection}" in names
    assert not [n for n, _ in model.named_parameters() if "in_proj" in n]
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(model)


def test_unsupported_attention_options_are_refused():
    with pytest.raises(ConfigError, match="add_bias_kv"):
        LinearMultiheadAttention.from_torch(nn.MultiheadAttention(16, 4, add_bias_kv=True))
