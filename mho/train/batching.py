"""Length-bucketed batches: utterances of similar length share a batch, so little of each
batch is padding; batch order is shuffled per epoch from (seed, epoch)."""

import random


def bucketed_batches(
    durations: list[float], *, max_batch_seconds: float, max_batch_size: int, seed: int,
    epoch: int,
) -> list[list[int]]:
    """Indices into ``durations`` grouped into batches whose padded size (batch size x longest
    utterance) stays within ``max_batch_seconds``; deterministic for (seed, epoch)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    # Sort by length with a little noise so batch composition varies between epochs.
    order = sorted(range(len(durations)), key=lambda i: durations[i] * rng.uniform(0.9, 1.1))
    batches, current, longest = [], [], 0.0
    for index in order:
        candidate_longest = max(longest, durations[index])
        if current and (
            candidate_longest * (len(current) + 1) > max_batch_seconds
            or len(current) >= max_batch_size
        ):
            batches.append(current)
            current, candidate_longest = [], durations[index]
        current.append(index)
        longest = candidate_longest
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches
