"""Relative positional attention against a naive O(T^2) reference written from the formula

    score[i, j] = ((q_i + u) . k_j + (q_i + v) . p(i - j)) / sqrt(d_k)

with p(r) computed per distance from its definition (no tables, no rel-shift)."""

import fnmatch
import math

import pytest
import torch

from mho.models import PE_VARIANTS, ConformerCTC, conformer_config
from mho.models.attention import RelPosAttentionConfig, RelPosSelfAttention
from mho.models.positional import (
    LearnableRelativeEncoding,
    SinusoidalRelativeEncoding,
    rel_shift,
    relative_distances,
)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 8, 25])
def test_rel_shift_picks_the_distance_of_each_query_key_pair(num_frames):
    scores = torch.randn(2, 3, num_frames, 2 * num_frames - 1)
    shifted = rel_shift(scores)
    assert shifted.shape == (2, 3, num_frames, num_frames)
    distances = relative_distances(num_frames).tolist()
    for i in range(num_frames):
        for j in range(num_frames):
            column = distances.index(i - j)
            assert torch.equal(shifted[..., i, j], scores[..., i, column])


def sinusoid(distance: int, dim: int) -> torch.Tensor:
    """Vaswani et al.'s encoding of one position, written out per channel pair."""
    angles = [distance / 10000 ** (2 * k / dim) for k in range(dim // 2)]
    return torch.tensor([math.sin(a) for a in angles] + [math.cos(a) for a in angles])


def test_sinusoidal_table_rows_are_the_encodings_of_their_distances():
    table = SinusoidalRelativeEncoding(8)(5)  # [9, 8]
    for row, distance in enumerate(range(4, -5, -1)):
        torch.testing.assert_close(table[row], sinusoid(distance, 8))


def test_learnable_encoding_works_past_its_window_and_clips():
    encoding = LearnableRelativeEncoding(dim=4, max_distance=3)
    table = encoding(50)  # [99, 4]: far longer than the 7 trained distances
    distances = relative_distances(50)
    for row, distance in enumerate(distances.tolist()):
        expected = encoding.table[max(-3, min(3, distance)) + 3]
        assert torch.equal(table[row], expected)


def naive_attention(module: RelPosSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Attention of one unpadded sequence [T, D] with explicit loops over (i, j)."""
    cfg = module.cfg
    num_frames, num_heads, head_dim = x.shape[0], cfg.num_heads, cfg.head_dim
    h = module.layer_norm(x)
    q, k, v = (proj(h).reshape(num_frames, num_heads, head_dim) for proj in
               (module.query, module.key, module.value))  # fmt: skip

    def encoding(distance: int, head: int) -> torch.Tensor:
        if cfg.pe.startswith("sinusoidal"):
            dim = cfg.dim if cfg.pe.endswith("+linear") else head_dim
            p = sinusoid(distance, dim)
        else:
            clipped = max(-cfg.learnable_max_distance, min(cfg.learnable_max_distance, distance))
            p = module.pos_encoding.table[clipped + cfg.learnable_max_distance]
        if cfg.pe.endswith("+linear"):
            p = module.linear_pos(p)
        if p.shape[0] == cfg.dim:  # per-head slices of a D-wide encoding
            p = p.reshape(num_heads, head_dim)[head]
        return p

    out = torch.zeros(num_frames, num_heads, head_dim)
    for head in range(num_heads):
        scores = torch.zeros(num_frames, num_frames)
        for i in range(num_frames):
            for j in range(num_frames):
                if cfg.pe == "none":
                    scores[i, j] = q[i, head] @ k[j, head]
                else:
                    u, w = module.pos_bias_u[head], module.pos_bias_v[head]
                    content = (q[i, head] + u) @ k[j, head]
                    position = (q[i, head] + w) @ encoding(i - j, head)
                    scores[i, j] = content + position
        weights = torch.softmax(scores / math.sqrt(head_dim), dim=-1)
        out[:, head] = weights @ v[:, head]
    return module.out_proj(out.reshape(num_frames, cfg.dim))


@pytest.mark.parametrize("pe", PE_VARIANTS)
@pytest.mark.parametrize("num_frames", [1, 4, 11])
def test_attention_matches_naive_reference(pe, num_frames):
    torch.manual_seed(0)
    cfg = RelPosAttentionConfig(dim=16, num_heads=2, pe=pe, learnable_max_distance=3)
    module = RelPosSelfAttention(cfg).eval()
    x = torch.randn(1, num_frames, 16)
    with torch.no_grad():
        ours = module(x, torch.ones(1, num_frames, dtype=torch.bool))[0]
        reference = naive_attention(module, x[0])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_position_term_breaks_permutation_symmetry_and_none_does_not():
    """Without PE, attention is equivariant to permuting frames; with it, it is not."""
    torch.manual_seed(0)
    x = torch.randn(1, 6, 16)
    mask = torch.ones(1, 6, dtype=torch.bool)
    permutation = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        for pe in PE_VARIANTS:
            module = RelPosSelfAttention(RelPosAttentionConfig(16, 2, pe=pe)).eval()
            permuted_out = module(x[:, permutation], mask)
            equivariant = torch.allclose(permuted_out, module(x, mask)[:, permutation], atol=1e-6)
            assert equivariant == (pe == "none"), pe


@pytest.mark.parametrize("pe", PE_VARIANTS)
def test_linear_pos_exists_exactly_for_linear_variants_and_globs_find_it(pe):
    model = ConformerCTC(conformer_config("tiny", pe=pe))
    names = [name for name, _ in model.named_modules()]
    found = fnmatch.filter(names, "*.linear_pos")
    if pe.endswith("+linear"):
        assert found == [f"blocks.{i}.attention.linear_pos" for i in range(2)]
        assert model.blocks[0].attention.linear_pos.bias is None
    else:
        assert found == []
    has_biases = hasattr(model.blocks[0].attention, "pos_bias_u")
    assert has_biases == (pe != "none")
