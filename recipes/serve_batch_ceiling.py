"""What batching can gain on this CPU, without the server: onnxruntime (one intra-op thread)
on an exported waveform-input file.

1. Equal-length clips (32 shipped utterances of at least 3.0 s, cut to 3.0 s): ms per
   utterance at batch 1, 2, 4, 8, 16. No padding, so the best per-utterance time over these
   sizes against batch 1 bounds what any batching policy can gain.
2. The shipped utterances in test-set order, in three ways: one at a time; first-come
   padded batches of 8 (``max_length_ratio`` inf); the batches the server's length windows
   form (``max_length_ratio`` 1.5, max batch 8) when all are queued at once. Also each
   utterance transcribed alone with the LM decoder (what a server request runs besides
   onnxruntime, which batching does not shorten).

    python recipes/serve_batch_ceiling.py base.onnx [--repeats 3]

Prints JSON: CPU milliseconds of this process (one thread), each the median over repeats,
every way taking its turn in each.
"""

import argparse
import asyncio
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mho.data.audio import load_audio
from mho.data.datasets import resolve_dataset
from mho.runtime.recognizer import load_recognizer
from mho.runtime.speech import SpeechSession
from mho.serve.batching import DynamicBatcher

SETS = ("flite-slt", "festival-slt")
CLIP = 48_000  # 3.0 s at 16 kHz


def utterances() -> list[np.ndarray]:
    waveforms = []
    for spec in SETS:
        for utterance in resolve_dataset(spec)[1]:
            waveforms.append(load_audio(utterance.audio, resample=True))
    return waveforms


def window_batches(lengths: list[int], max_batch: int, ratio: float) -> list[list[int]]:
    """The indices of each batch the server's batcher forms when every request is queued
    before its first batch (its own code, with a run_batch that only records)."""
    batches: list[list[int]] = []

    def record(waveforms):
        batches.append([int(w[0]) for w in waveforms])  # each waveform carries its index
        return [""] * len(waveforms)

    async def run():
        executor = ThreadPoolExecutor(1)
        batcher = DynamicBatcher(record, max_batch=max_batch, max_wait_ms=0, max_queue=10**6,
                                 executor=executor, slots=asyncio.Semaphore(1),
                                 max_length_ratio=ratio)
        futures = [batcher.submit(np.full(n, i, np.float32)) for i, n in enumerate(lengths)]
        batcher.start()
        await asyncio.gather(*futures)
        await batcher.close()
        executor.shutdown()

    asyncio.run(run())
    return batches


def seconds(session: SpeechSession, batches: list[list[np.ndarray]]) -> float:
    """CPU seconds of this process to run ``batches`` (one intra-op thread: the CPU time is
    the work; wall time on a shared machine also holds the other jobs' turns)."""
    started = time.process_time()
    for batch in batches:
        session.run_batch(batch)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    recognizer = load_recognizer(args.model, decoder="lm", threads=1)
    session: SpeechSession = recognizer.session
    waveforms = utterances()
    clips = [w[:CLIP] for w in waveforms if w.size >= CLIP][:32]
    session.run_batch(clips[:16])  # warm-up: first-call allocations at the largest shape
    lengths = [w.size for w in waveforms]

    # every way of running, in turn within each repeat: a shared machine's slow phases then
    # hit all of them alike, and the medians compare like with like
    ways = {f"equal_{size}": [clips[i:i + size] for i in range(0, len(clips), size)]
            for size in (1, 2, 4, 8, 16)}
    groupings = {
        "one_at_a_time": [[i] for i in range(len(waveforms))],
        "first_come_8": window_batches(lengths, 8, float("inf")),
        "length_windows_1.5_8": window_batches(lengths, 8, 1.5),
    }
    for name, groups in groupings.items():
        ways[name] = [[waveforms[i] for i in group] for group in groups]
    runs: dict[str, list[float]] = {name: [] for name in [*ways, "with_lm_decoding"]}
    for _ in range(args.repeats):
        for name, batches in ways.items():
            runs[name].append(seconds(session, batches))
        started = time.process_time()
        for waveform in waveforms:
            recognizer.transcribe(waveform)
        runs["with_lm_decoding"].append(time.process_time() - started)
    ms = {name: 1000 * statistics.median(values) for name, values in runs.items()}

    equal = {size: round(ms[f"equal_{size}"] / len(clips), 1) for size in (1, 2, 4, 8, 16)}
    mixed = {}
    for name in groupings:
        padded = sum(len(b) * max(w.size for w in b) for b in ways[name])
        mixed[name] = {"ms": round(ms[name]), "batches": len(ways[name]),
                       "padded_over_real_samples": round(padded / sum(lengths), 3)}
    mixed["one_at_a_time_with_lm_decoding"] = {"ms": round(ms["with_lm_decoding"])}
    print(json.dumps({
        "model": args.model, "threads": 1, "repeats": args.repeats, "measure": "CPU ms",
        "equal_length_3s": {"clips": len(clips), "ms_per_utterance": equal,
                            "best_gain_over_batch_1": round(equal[1] / min(equal.values()), 2)},
        "shipped_utterances": {"count": len(waveforms),
                               "audio_seconds": round(sum(lengths) / 16_000, 1), **mixed},
    }, indent=2))


if __name__ == "__main__":
    main()
