"""Timers and thread settings for benchmarks and model runs.

Benchmarks compare sides measured in one run: ``interleaved_medians_ms`` times them in
turns so that a shared machine's slow spells weigh on every side alike.
``torch_threads`` sets torch's intra-op threads for a block and restores them after, so a
library call never leaves the caller's process changed.
"""

import ctypes
import gc
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def cpuinfo() -> str:
    """The text of /proc/cpuinfo (CPU model, flags), or "" where there is none (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine_description(device: torch.device | str = "cpu") -> str:
    """What a timing was measured on: a CUDA device's name, or the CPU's model name (from
    /proc/cpuinfo where there is one) and its logical CPU count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine() or "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo(), re.MULTILINE)
    if found:
        model = found.group(1).strip()
    return f"{model}, {os.cpu_count() or 1} logical CPUs"


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch using ``threads`` intra-op threads (None: leave as is)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median ms of `repeats` timed runs after a warm-up (first-touch page faults and lazy
    initialization are not the steady state)."""
    return interleaved_medians_ms({"run": run}, repeats)["run"]


def interleaved_medians_ms(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each run, timed in turns (a, b, c, a, b, c, ...) after one warm-up each, so
    that a shared machine's slow spells weigh on every run alike and their ratios hold."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def peak_memory_rise(run: Callable[[], object]) -> int | None:
    """Bytes the peak resident set rises by while ``run`` runs; None off Linux."""
    status, clear_refs = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    if not sys.platform.startswith("linux") or not clear_refs.exists():
        return None

    def read_kb(key: str) -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith(key))
        return int(line.split()[1])

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    clear_refs.write_text("5")  # resets VmHWM to the current VmRSS
    before = read_kb("VmRSS:")
    result = run()
    rise = (read_kb("VmHWM:") - before) * 1024
    del result
    return rise
