"""The batcher's length windows, driven directly with a fake model: which requests share a
batch (against a naive replay of the rule), that none is lost or starved, that every answer is
its own request's, and that ``max_length_ratio=inf`` is plain first-come batching."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mho.errors import ConfigError
from mho.serve.batching import DynamicBatcher, QueueFull
from mho.serve.config import ServeConfig


class FakeModel:
    """run_batch that records each batch's lengths (in the order they ran) and answers each
    waveform with its own length and tag (the tag is the waveform's value), so a misrouted
    answer shows. With ``gate`` set, the first batch waits until the gate opens."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, waveforms: list[np.ndarray]) -> list[str]:
        if self.gate is not None and not self.batches:
            self.batches.append([w.size for w in waveforms])
            self.gate.wait(timeout=30)
        else:
            self.batches.append([w.size for w in waveforms])
        return [answer(w) for w in waveforms]


def answer(waveform: np.ndarray) -> str:
    return f"{waveform.size}#{int(waveform[0])}"


def waveform(length: int, tag: int) -> np.ndarray:
    return np.full(length, tag, np.float32)


def make(model, *, max_batch=8, ratio=1.5, max_queue=64, workers=1, max_wait_ms=0.0):
    executor = ThreadPoolExecutor(workers)
    batcher = DynamicBatcher(model, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             max_queue=max_queue, executor=executor,
                             slots=asyncio.Semaphore(workers), max_length_ratio=ratio)
    return batcher, executor


def run_queued(lengths, **options) -> tuple[list[list[int]], list[str]]:
    """Queue requests of ``lengths`` (in this order) before the batcher starts, let it answer
    them all -> (the batches' lengths as run, the answers in request order)."""
    model = FakeModel()

    async def main():
        batcher, executor = make(model, **options)
        futures = [batcher.submit(waveform(n, i)) for i, n in enumerate(lengths)]
        batcher.start()
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
        await batcher.close()
        executor.shutdown()
        return [r.text for r in results]

    texts = asyncio.run(main())
    return model.batches, texts


def reference_batches(lengths, max_batch, ratio) -> list[list[int]]:
    """The rule replayed naively on requests that all queued before the first batch: the
    oldest request not yet run leads; the others, oldest first, join while the batch's
    longest / shortest stays within ``ratio`` and it holds fewer than ``max_batch``."""
    left = list(lengths)
    batches = []
    while left:
        batch = [left.pop(0)]
        for n in list(left):
            if len(batch) < max_batch and max(batch + [n]) <= ratio * min(batch + [n]):
                batch.append(n)
                left.remove(n)
        batches.append(sorted(batch, reverse=True))  # batches run longest row first
    return batches


def test_a_batch_takes_only_lengths_within_the_ratio_of_its_shortest():
    # by hand: 50 leads alone (120 > 1.5 * 50); 120 leads next and takes 110 and 100 (120 <=
    # 1.5 * 100) but not 300 or 290; then 300 with 290; 1000 alone
    lengths = [50, 120, 300, 110, 1000, 100, 290]
    batches, texts = run_queued(lengths, ratio=1.5)
    assert batches == [[50], [120, 110, 100], [300, 290], [1000]]
    assert texts == [f"{n}#{i}" for i, n in enumerate(lengths)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_batch,ratio", [(4, 1.5), (8, 1.2), (3, 2.0)])
def test_random_lengths_batch_as_the_rule_says_and_none_is_lost(seed, max_batch, ratio):
    lengths = np.random.default_rng(seed).integers(1_000, 100_000, size=40).tolist()
    batches, texts = run_queued(lengths, max_batch=max_batch, ratio=ratio)
    assert batches == reference_batches(lengths, max_batch, ratio)
    assert texts == [f"{n}#{i}" for i, n in enumerate(lengths)]  # each its own, none lost
    for batch in batches:
        assert len(batch) <= max_batch and max(batch) <= ratio * min(batch)


def test_ratio_inf_is_first_come_batching():
    lengths = np.random.default_rng(7).integers(1_000, 100_000, size=21).tolist()
    batches, texts = run_queued(lengths, max_batch=8, ratio=float("inf"))
    # the old design: arrival order cut into max_batch pieces
    assert batches == [sorted(lengths[i:i + 8], reverse=True) for i in range(0, 21, 8)]
    assert texts == [f"{n}#{i}" for i, n in enumerate(lengths)]


def test_the_oldest_request_is_never_passed_over():
    """A long upload among a stream of short ones misses the first batch only: it leads the
    next, ahead of the short ones that arrived after it."""
    lengths = [100, 1000] + [100] * 10
    batches, _ = run_queued(lengths, max_batch=4)
    assert batches == [[100] * 4, [1000], [100] * 4, [100] * 3]


def test_waiting_requests_count_in_the_queue_depth_and_in_max_queue():
    """Requests that missed a batch's window wait outside the arrivals queue: they still count
    toward the depth and max_queue, and close() answers them too."""
    gate = threading.Event()
    model = FakeModel(gate)

    async def main():
        batcher, executor = make(model, workers=1, max_queue=6)
        try:
            futures = [batcher.submit(waveform(n, i))
                       for i, n in enumerate([50, 1000, 1000, 1000, 1000, 1000])]
            batcher.start()
            # the first batch runs (gated); the loop holds the next leader (1000#1) until a
            # worker is free, as it held the first request taken from the queue before
            while not (model.batches and batcher._forming):
                await asyncio.sleep(0.005)
            assert len(batcher._waiting) == 4 and batcher._queue.qsize() == 0
            assert batcher.depth == 4
            futures.append(batcher.submit(waveform(1000, 6)))
            futures.append(batcher.submit(waveform(1000, 7)))
            assert batcher.depth == 6
            with pytest.raises(QueueFull):
                batcher.submit(waveform(1000, 8))
        finally:
            gate.set()
        await batcher.close()
        executor.shutdown()
        return [f.result().text for f in futures]

    texts = asyncio.run(main())
    assert texts == ["50#0"] + [f"1000#{i}" for i in range(1, 8)]
    assert model.batches == [[50], [1000] * 7]


def test_requests_arriving_while_batches_run_are_all_answered_within_windows():
    """Arrivals spread over time with two workers: every request answered with its own text,
    every batch within max_batch and the length ratio."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1_000, 100_000, size=60).tolist()
    gaps = rng.exponential(0.002, size=60)
    model = FakeModel()

    async def main():
        batcher, executor = make(model, max_batch=5, ratio=1.5, workers=2, max_wait_ms=5)
        batcher.start()
        futures = []
        for i, (n, gap) in enumerate(zip(lengths, gaps, strict=True)):
            futures.append(batcher.submit(waveform(n, i)))
            await asyncio.sleep(gap)
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
        await batcher.close()
        executor.shutdown()
        return [r.text for r in results]

    texts = asyncio.run(main())
    assert texts == [f"{n}#{i}" for i, n in enumerate(lengths)]
    assert sorted(n for batch in model.batches for n in batch) == sorted(lengths)
    for batch in model.batches:
        assert len(batch) <= 5 and max(batch) <= 1.5 * min(batch)


@pytest.mark.parametrize("ratio", [0.5, float("nan")])
def test_a_length_ratio_below_1_is_refused(ratio):
    with pytest.raises(ConfigError, match="--max-length-ratio must be at least 1"):
        ServeConfig(max_length_ratio=ratio)


@pytest.mark.parametrize(("decoder", "beam_size"), [("greedy", 64), ("lm", 0)])
def test_a_beam_size_the_search_cannot_use_is_refused(decoder, beam_size):
    with pytest.raises(ConfigError, match="--beam-size is for --decoder lm and at least 1"):
        ServeConfig(decoder=decoder, beam_size=beam_size)
    ServeConfig(decoder="lm", beam_size=64)  # accepted
