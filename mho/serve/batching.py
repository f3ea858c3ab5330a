"""Dynamic batching: requests for one model gathered into one onnxruntime call.

A batch closes when it holds ``max_batch`` requests or when its first request has waited
``max_wait_ms``; it then runs in a worker thread (onnxruntime and the decoders run outside
the event loop, which keeps accepting requests meanwhile). At most ``workers`` batches run at
once over all models; while every worker is busy, requests queue and the next batch takes
them without further waiting.

Length windows: a batch is padded to its longest row, so mixing a 1.6 s clip with a 5.9 s one
makes the short one cost as much as the long one. A batch therefore only takes requests whose
lengths keep its longest / shortest within ``max_length_ratio``; the others wait for a later
batch. The oldest waiting request always leads the next batch, so none waits for ever;
``max_length_ratio=inf`` is plain first-come batching.

A request whose client went away is dropped from the queue, or, when its batch already runs,
its result is thrown away: it never fails the other rows. A batch that fails as a whole is
run again row by row, so one bad input fails only its own request.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mho.errors import MhoError


class QueueFull(MhoError):
    """The model's queue holds ``max_queue`` requests: try again shortly."""


class ShuttingDown(MhoError):
    """The server stopped taking requests."""


@dataclass
class Pending:
    waveform: np.ndarray  # 16 kHz float32 [S]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchResult:
    text: str
    batch_size: int  # rows of the onnxruntime call this request ran in
    queue_seconds: float  # from queueing to its batch's start
    inference_seconds: float  # the batch's onnxruntime call and decoding


@dataclass
class BatchObserver:
    """What the metrics see (defaults: nothing)."""

    queued: Callable[[int], None] = lambda depth: None  # queue depth after a change
    batch: Callable[[int, float], None] = lambda size, seconds: None  # each batch run
    dropped: Callable[[], None] = lambda: None  # a request whose client left before its batch


class _Window:
    """The lengths a batch spans: a request fits when the batch's longest / shortest stays
    within ``ratio`` with it."""

    def __init__(self, first: Pending, ratio: float):
        self.ratio = ratio
        self.shortest = self.longest = first.waveform.size

    def fits(self, pending: Pending) -> bool:
        size = pending.waveform.size
        # max(size, 1): an empty waveform never reaches the batcher, but must not divide by 0
        return max(self.longest, size) <= self.ratio * max(1, min(self.shortest, size))

    def add(self, pending: Pending) -> None:
        size = pending.waveform.size
        self.shortest, self.longest = min(self.shortest, size), max(self.longest, size)


class DynamicBatcher:
    """The queue and batching loop of one model; ``run_batch`` (waveforms -> texts) runs in
    ``executor``, ``slots`` bounds the batches running at once (shared by all models).
    ``max_length_ratio`` (>= 1) bounds the longest / shortest waveform of one batch."""

    def __init__(self, run_batch: Callable[[list[np.ndarray]], list[str]], *, max_batch: int,
                 max_wait_ms: float, max_queue: int, executor: ThreadPoolExecutor,
                 slots: asyncio.Semaphore, observer: BatchObserver | None = None,
                 max_length_ratio: float = float("inf")):
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.max_length_ratio = max_length_ratio
        self._executor = executor
        self._slots = slots
        self._observer = observer or BatchObserver()
        # new arrivals, then (taken from the queue, oldest first) those that did not fit the
        # length window of an earlier batch: every request in _waiting is older than any in
        # _queue, so the head of _waiting is the oldest request not yet run
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._waiting: list[Pending] = []
        self._running: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._closing = False
        self._forming = False  # a batch is being gathered (taken from the queue, not running)
        self.in_flight = 0  # accepted requests not yet answered (or dropped)

    def _answered(self, future: asyncio.Future) -> None:
        self.in_flight -= 1

    @property
    def depth(self) -> int:
        """Accepted requests not yet in a batch."""
        return self._queue.qsize() + len(self._waiting)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop())

    def submit(self, waveform: np.ndarray) -> asyncio.Future:
        """Queue one request; its future gets a BatchResult (or the batch's error). Raises
        QueueFull or ShuttingDown instead of queueing."""
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self.depth >= self.max_queue:
            raise QueueFull(f"the queue holds {self.max_queue} requests; retry shortly")
        pending = Pending(waveform, asyncio.get_running_loop().create_future())
        self.in_flight += 1
        pending.future.add_done_callback(self._answered)
        self._queue.put_nowait(pending)
        self._observer.queued(self.depth)
        return pending.future

    async def close(self) -> None:
        """Take no new requests, finish the queued and running ones, then stop."""
        self._closing = True
        while self.depth or self._forming or self._running:
            await asyncio.sleep(0.01)
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass

    def _live(self, pending: Pending) -> bool:
        """False (and counted as dropped) when the request's client already left."""
        if pending.future.done():  # cancelled: its client disconnected
            self._observer.dropped()
            return False
        return True

    def _take(self) -> Pending | None:
        """The next arrival whose client still waits (None: the queue is empty)."""
        while True:
            try:
                pending = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
            if self._live(pending):
                return pending

    async def _leader(self) -> Pending:
        """The oldest request not yet run: it leads the next batch, so a request that kept
        missing length windows is not passed over for ever."""
        while self._waiting:
            pending = self._waiting.pop(0)
            if self._live(pending):
                return pending
        while True:
            pending = await self._queue.get()
            if self._live(pending):
                return pending

    async def _loop(self) -> None:
        while True:
            first = await self._leader()
            self._forming = True
            # wait for a free worker holding only this request, so an idle model never
            # keeps a worker from the others; requests arriving meanwhile join below
            await self._slots.acquire()
            try:
                batch = await self._fill(first)
            except BaseException:
                self._slots.release()
                raise
            self._observer.queued(self.depth)
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            self._forming = False

    def _offer(self, batch: list[Pending], window: _Window, pending: Pending) -> None:
        """Put ``pending`` in the batch when it fits the length window, else make it wait
        (at the end of _waiting: it is younger than everything there)."""
        if window.fits(pending):
            window.add(pending)
            batch.append(pending)
        else:
            self._waiting.append(pending)

    def _from_waiting(self, batch: list[Pending], window: _Window) -> None:
        """Move the waiting requests that fit into the batch, oldest first, up to max_batch;
        the rest keep their places."""
        kept = []
        for pending in self._waiting:
            if pending.future.done():
                self._observer.dropped()
            elif len(batch) < self.max_batch and window.fits(pending):
                window.add(pending)
                batch.append(pending)
            else:
                kept.append(pending)
        self._waiting = kept

    async def _fill(self, first: Pending) -> list[Pending]:
        """``first`` and the requests that fit its length window, up to max_batch: waiting
        ones first, then queued ones, then arrivals until ``first`` has waited max_wait (not
        at all when it already has, e.g. while the workers were busy)."""
        batch, window = [first], _Window(first, self.max_length_ratio)
        self._from_waiting(batch, window)
        deadline = first.queued_at + self.max_wait
        while len(batch) < self.max_batch:
            pending = self._take()
            if pending is not None:
                self._offer(batch, window, pending)
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                pending = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            if self._live(pending):
                self._offer(batch, window, pending)
        return batch

    async def _run(self, batch: list[Pending]) -> None:
        try:
            # rows longest first: the same requests always make the same padded tensor,
            # whatever order they arrived in
            batch.sort(key=lambda p: -p.waveform.size)
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            waveforms = [p.waveform for p in batch]
            try:
                texts: list[str | BaseException] = list(
                    await loop.run_in_executor(self._executor, self._run_batch, waveforms))
            except Exception:
                texts = []
                for waveform in waveforms:  # alone, so only a bad row fails
                    try:
                        texts.extend(await loop.run_in_executor(
                            self._executor, self._run_batch, [waveform]))
                    except Exception as error:
                        texts.append(error)
            seconds = time.perf_counter() - started
            self._observer.batch(len(batch), seconds)
            for pending, text in zip(batch, texts, strict=True):
                if pending.future.done():  # the client left while its batch ran
                    continue
                if isinstance(text, BaseException):
                    pending.future.set_exception(text)
                else:
                    pending.future.set_result(BatchResult(
                        text, len(batch), started - pending.queued_at, seconds))
        except Exception as error:  # a bug here must not leave clients waiting forever
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        finally:
            self._slots.release()
