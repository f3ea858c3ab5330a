"""Length-bucketed batches, the LR schedule, SpecAugment and the feature cache."""

import numpy as np
import pytest
import soundfile
import torch

from mho.data.feature_set import FeatureSet
from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
from mho.data.manifest import Utterance
from mho.train.batching import bucketed_batches
from mho.train.schedule import warmup_linear_decay
from mho.train.specaugment import SpecAugmentConfig, spec_augment


def test_batches_cover_everything_once_within_limits():
    durations = list(np.random.default_rng(0).uniform(1, 12, size=500))
    batches = bucketed_batches(durations, max_batch_seconds=60, max_batch_size=16, seed=3,
                               epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        longest = max(durations[i] for i in batch)
        assert len(batch) <= 16 and (len(batch) == 1 or longest * len(batch) <= 60)
    # Bucketing: a batch holds similar lengths (noise of +-10% only).
    spread = [max(durations[i] for i in b) / min(durations[i] for i in b) for b in batches]
    assert np.median(spread) < 1.3
    again = bucketed_batches(durations, max_batch_seconds=60, max_batch_size=16, seed=3, epoch=0)
    other_epoch = bucketed_batches(durations, max_batch_seconds=60, max_batch_size=16, seed=3,
                                   epoch=1)
    assert again == batches and other_epoch != batches


def test_schedule_warms_up_then_decays_linearly():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    scheduler = warmup_linear_decay(optimizer, total_steps=100, warmup_fraction=0.1)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.2) and rates[9] == pytest.approx(2.0)
    assert rates[10] == pytest.approx(2.0) and rates[-1] == pytest.approx(2.0 * (0.01 + 0.99 / 90))
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))


def test_spec_augment_masks_with_the_fill_inside_each_length():
    features = torch.randn(2, 400, 80)
    lengths = torch.tensor([400, 120])
    fill = torch.full((80,), -7.0)
    config = SpecAugmentConfig(freq_masks=2, max_freq_width=10, time_masks_per_second=2.0,
                               max_time_width=15)
    out = spec_augment(features, lengths, config, torch.Generator().manual_seed(0), fill=fill)
    masked = out != features  # [B, T, F]
    assert masked.any() and torch.all(out[masked] == -7.0)
    # Masked bins: at most 2 bands of 10 mel bins.
    fully_masked_bins = masked.all(dim=1)  # [B, F]
    assert (fully_masked_bins.sum(dim=1) <= 20).all()
    # The short utterance's time masks stay inside its 120 frames.
    masked_frames = masked[1].all(dim=1)  # [T]
    assert not masked_frames[120:].any()
    same = spec_augment(features, lengths, config, torch.Generator().manual_seed(0), fill=fill)
    assert torch.equal(out, same)


def test_feature_cache_is_reused_and_follows_the_audio(tmp_path):
    path = tmp_path / "a.flac"
    soundfile.write(path, np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1,
                    16_000)
    utterances = [Utterance("a", path, 0.5, "hello world"), Utterance("b", path, 0.5, "qzxv")]
    lexicon = Lexicon.from_cmudict()
    first = FeatureSet.cached(utterances, lexicon, PHONE_VOCABULARY, tmp_path / "cache",
                              progress=False)
    assert len(first) == 1 and first.skipped == 1  # "qzxv" is not in CMUdict
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    again = FeatureSet.cached(utterances, lexicon, PHONE_VOCABULARY, tmp_path / "cache",
                              progress=False)
    assert torch.equal(again.features[0], first.features[0]) and again.skipped == 1
    soundfile.write(path, np.zeros(16000, np.float32), 16_000)  # new audio, same ids and texts
    changed = FeatureSet.cached(utterances, lexicon, PHONE_VOCABULARY, tmp_path / "cache",
                                progress=False)
    assert changed.features[0].shape[0] == 101 and len(list((tmp_path / "cache").glob("*.pt"))) == 2
