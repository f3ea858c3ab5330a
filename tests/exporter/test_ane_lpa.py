"""The Neural Engine LPA (mho.exporter.ane_lpa) against the torch module in hard mode: the
same outputs for several lengths, in a padded batch, with content windows that vary per frame
and reach past both ends."""

import copy

import pytest
import torch

from mho.exporter.ane_lpa import AnePulseAccumulator, ane_twin
from mho.models.lpa import PulseAccumulator, PulseAccumulatorConfig


def lpa(max_extent: int) -> PulseAccumulator:
    torch.manual_seed(max_extent)
    module = PulseAccumulator(PulseAccumulatorConfig(dim=32, num_heads=4, max_extent=max_extent,
                                                     chunk=8)).eval()
    with torch.no_grad():  # extents spread over 0 .. max_extent, different per frame
        module.extent.weight.normal_(0, 1.0)
        module.extent.bias.normal_(0, 1.0)
    return module


@pytest.mark.parametrize("max_extent", [3, 8])
@pytest.mark.parametrize("lengths", [(1,), (5,), (23, 17), (40, 9, 33)])
def test_ane_content_windows_equal_the_torch_module(max_extent, lengths):
    reference = lpa(max_extent)
    twin = ane_twin(copy.deepcopy(reference))
    assert isinstance(twin, AnePulseAccumulator)
    generator = torch.Generator().manual_seed(sum(lengths))
    x = torch.randn(len(lengths), max(lengths), 32, generator=generator)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        expected, got = reference(x, mask), twin(x, mask)
    # float32 sums in another order (prefix-sum differences vs direct window sums) of O(1)
    # values over at most 2 M + 1 frames: a few float32 ulps of the window mean
    for row, length in enumerate(lengths):
        torch.testing.assert_close(got[row, :length], expected[row, :length],
                                   atol=1e-5, rtol=1e-5)


def test_ane_twin_replaces_nested_modules_and_keeps_training_mode():
    model = torch.nn.Sequential(lpa(4), torch.nn.Linear(32, 32))
    ane_twin(model)
    assert isinstance(model[0], AnePulseAccumulator)
    model.train()
    x, mask = torch.randn(2, 10, 32), torch.ones(2, 10, dtype=torch.bool)
    reference = copy.deepcopy(model[0])
    reference.__class__ = PulseAccumulator
    torch.manual_seed(0)
    got = model[0](x, mask)
    torch.manual_seed(0)
    torch.testing.assert_close(got, reference(x, mask))


@pytest.mark.parametrize("num_frames", [1, 2, 7, 30])
def test_rel_shift_by_reshape_equals_the_gather(num_frames):
    from mho.models.positional import rel_shift, rel_shift_by_reshape

    scores = torch.randn(2, 3, num_frames, 2 * num_frames - 1)
    assert torch.equal(rel_shift_by_reshape(scores), rel_shift(scores))


def test_ane_twin_conformer_equals_the_model():
    from mho.models import ConformerCTC, conformer_config

    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny", pe="sinusoidal+linear")).eval()
    twin = ane_twin(copy.deepcopy(model))
    features, lengths = torch.randn(2, 37, 80), torch.tensor([37, 21])
    with torch.no_grad():
        (expected, frames), (got, got_frames) = model(features, lengths), twin(features, lengths)
    assert torch.equal(frames, got_frames)
    torch.testing.assert_close(got, expected)  # the same values moved: equal up to fusion


def test_ane_twin_lpa_conformer_equals_the_model():
    """An LPA Conformer (block 0 a NormedPulseAccumulator, block 1 attention): the
    nested PulseAccumulators become ANE twins, the attention's rel-shift the reshape, and the
    whole model gives the same log-probs in a padded batch."""
    from mho.models import ConformerCTC, conformer_config
    from mho.models.attention import RelPosSelfAttention
    from mho.models.positional import rel_shift_by_reshape

    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny", pe="sinusoidal+linear", lpa_layers=(0,),
                                          lpa={"max_extent": 6})).eval()
    with torch.no_grad():  # extents spread over 0 .. max_extent, different per frame
        model.blocks[0].attention.lpa.extent.weight.normal_(0, 1.0)
        model.blocks[0].attention.lpa.extent.bias.normal_(0, 1.0)
    twin = ane_twin(copy.deepcopy(model))
    assert [type(m) for m in twin.modules() if isinstance(m, PulseAccumulator)] == \
        [AnePulseAccumulator]
    assert all(m.rel_shift is rel_shift_by_reshape for m in twin.modules()
               if isinstance(m, RelPosSelfAttention))
    features, lengths = torch.randn(2, 61, 80), torch.tensor([61, 33])
    with torch.no_grad():
        (expected, frames), (got, got_frames) = model(features, lengths), twin(features, lengths)
    assert torch.equal(frames, got_frames)
    for row, count in enumerate(frames.tolist()):
        # window sums in another order (see above), carried through the later blocks
        torch.testing.assert_close(got[row, :count], expected[row, :count],
                                   atol=1e-5, rtol=1e-5)
