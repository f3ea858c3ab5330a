"""`mho bench serve`: a load test of `mho serve` from concurrent HTTP clients.

Each side is a real server process (`python -m mho serve`) on 127.0.0.1; clients replay the
shipped test sets (verbose_json, so each answer says the size of the batch it ran in) for a
bounded number of requests per round. Reported per side: throughput (audio seconds
transcribed per wall second), latency percentiles, the batch-size histogram, errors (non-200
answers) and lost requests (no answer at all), and the server's resident memory before and
after. With ``compare`` a second server with ``max_batch=1`` runs beside the first and the
rounds alternate between them, so slow phases of a shared machine hit both sides alike;
the speed-up is the ratio of their median round throughputs. Every transcript is checked
against the recognizer's own (`mho transcribe` on the same file, one utterance at a time).

The soak (``soak_seconds``) keeps ``concurrency`` clients busy for that long with a mix of
good uploads and bad ones (corrupt, empty, unknown model, too long) and reports the server's
memory at the start and end, and how many good answers were right.
"""

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mho.errors import MhoError


@dataclass(frozen=True)
class ServeBenchConfig:
    model: str = "conformer-sinusoidal-linear-w8"  # .onnx file, bundle, or shipped (exported)
    data: tuple[str, ...] = ("flite-slt", "festival-slt")
    concurrency: int = 8
    requests: int = 100  # per round and side
    rounds: int = 3  # per side, alternating between sides
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_length_ratio: float = 1.5  # of the batched server; the max_batch=1 one never batches
    workers: int = 2
    threads: int | None = None  # onnxruntime threads per session, both sides (None: the
    # server's default, cores / workers)
    decoder: str = "lm"
    compare: bool = True  # also a max_batch=1 server, rounds interleaved
    soak_seconds: float = 0.0  # > 0: the soak instead of the comparison
    bad_fraction: float = 0.2  # of the soak's uploads
    startup_timeout: float = 600.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "requests", "rounds", "max_batch", "workers"):
            if getattr(self, name) < 1:
                raise MhoError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.max_length_ratio >= 1:  # also refuses NaN
            raise MhoError(f"the max length ratio must be at least 1, got "
                           f"{self.max_length_ratio}")
        if self.threads is not None and self.threads < 1:
            raise MhoError(f"threads must be at least 1, got {self.threads}")
        if not 0 <= self.bad_fraction < 1:
            raise MhoError(f"the bad fraction must be in [0, 1), got {self.bad_fraction}")


@dataclass
class Outcome:
    status: int | None  # None: lost (no answer)
    latency: float
    text: str | None = None
    batch_size: int | None = None
    expected_status: int = 200
    reference: str | None = None
    audio_seconds: float = 0.0


@dataclass
class SideResult:
    name: str
    max_batch: int
    rounds: list[dict] = field(default_factory=list)  # per round: throughput, seconds
    outcomes: list[Outcome] = field(default_factory=list)
    rss_mb: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        good = [o for o in self.outcomes if o.status == 200]
        latencies = sorted(o.latency for o in good)
        sizes = Counter(o.batch_size for o in good if o.batch_size)
        throughputs = [r["audio_seconds_per_second"] for r in self.rounds]
        checked = [o for o in good if o.reference is not None]
        return {
            "max_batch": self.max_batch,
            "requests": len(self.outcomes),
            "audio_seconds_per_second": statistics.median(throughputs) if throughputs else 0,
            "rounds": self.rounds,
            "latency_ms": {f"p{q}": 1000 * _percentile(latencies, q) for q in (50, 95, 99)},
            # batches of each size: requests that ran in a batch of k, divided by k
            "batch_sizes": {str(k): sizes[k] // k for k in sorted(sizes)},
            "errors": sum(1 for o in self.outcomes
                          if o.status is not None and o.status != o.expected_status),
            "lost": sum(1 for o in self.outcomes if o.status is None),
            "transcripts_identical": sum(1 for o in checked if o.text == o.reference),
            "transcripts_checked": len(checked),
            "rss_mb": self.rss_mb,
            **{key: statistics.median(r[key] for r in self.rounds)
               for key in ("server_cpu_ms_per_request", "client_cpu_ms_per_request")
               if self.rounds and key in self.rounds[0]},
        }


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (0 when empty)."""
    if not values:
        return 0.0
    rank = max(1, -(-len(values) * q // 100))
    return values[int(rank) - 1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise MhoError(f"no VmRSS for process {pid}")


class _RssSampler:
    """A process's resident memory every ``interval`` seconds while in the with-block: a
    soak's memory is flat when the samples plateau, not only when start and end agree."""

    def __init__(self, pid: int, interval: float):
        import threading

        self.pid, self.interval = pid, interval
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.values.append(round(rss_mb(self.pid), 1))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "_RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class ServerProcess:
    """`python -m mho serve` on a free local port, until closed (SIGTERM)."""

    def __init__(self, model: str, config: ServeBenchConfig, max_batch: int, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mho", "serve", f"bench={model}", "--port", str(self.port),
             "--max-batch", str(max_batch), "--max-wait-ms", str(config.max_wait_ms),
             "--max-length-ratio", str(config.max_length_ratio),
             "--workers", str(config.workers), "--decoder", config.decoder,
             "--max-queue", str(max(64, 4 * config.concurrency)),
             *(["--threads", str(config.threads)] if config.threads else [])],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.log = log

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text().strip().splitlines()[-1:]
                raise MhoError(f"the server exited: {' '.join(tail)}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise MhoError(f"the server was not ready within {timeout:g} s")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


def _load_requests(config: ServeBenchConfig, model_path: str) -> list[dict]:
    """The test sets' uploads with their reference transcripts (the recognizer on each file
    alone, as `mho transcribe` runs it)."""
    from mho.data.audio import load_audio
    from mho.data.datasets import resolve_dataset
    from mho.runtime.recognizer import load_recognizer

    recognizer = load_recognizer(model_path, decoder=config.decoder)
    items = []
    for spec in config.data:
        _, utterances = resolve_dataset(spec)
        for utterance in utterances:
            waveform = load_audio(utterance.audio, resample=True)
            items.append({"name": utterance.audio.name, "data": utterance.audio.read_bytes(),
                          "seconds": waveform.size / 16_000,
                          "reference": recognizer.transcribe(waveform)})
    if not items:
        raise MhoError("no utterances to replay")
    return items


def _bad_uploads(config: ServeBenchConfig) -> list[dict]:
    """Bad uploads of the soak with the status each must get."""
    import io

    import numpy as np
    import soundfile

    too_long = io.BytesIO()
    soundfile.write(too_long, np.zeros(16_000 * 61, np.float32), 16_000, format="FLAC")
    return [
        {"name": "corrupt.wav", "data": b"RIFF....WAVEfmt garbage" * 40, "status": 400},
        {"name": "empty.wav", "data": b"", "status": 400},
        {"name": "long.flac", "data": too_long.getvalue(), "status": 413},
        {"name": "unknown-model.flac", "data": None, "status": 404},
    ]


async def _drive(url: str, jobs: list[dict], concurrency: int,
                 deadline: float | None = None) -> tuple[list[Outcome], float]:
    """Send ``jobs`` from ``concurrency`` clients (each job once; with ``deadline``, cycling
    until then); -> outcomes and wall seconds."""
    import httpx

    outcomes: list[Outcome] = []
    next_job = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_job
        while True:
            if deadline is None:
                if next_job >= len(jobs):
                    return
            elif time.perf_counter() >= deadline:
                return
            job = jobs[next_job % len(jobs)]
            next_job += 1
            outcome = Outcome(None, 0.0, expected_status=job.get("status", 200),
                              reference=job.get("reference"), audio_seconds=job.get("seconds",
                                                                                  0.0))
            started = time.perf_counter()
            try:
                response = await http.post(
                    url + "/v1/audio/transcriptions",
                    files={"file": (job["name"], job["data"] or b"x")},
                    data={"model": "nope" if job["data"] is None else "bench",
                          "response_format": "verbose_json"})
                outcome.status = response.status_code
                if response.status_code == 200:
                    body = response.json()
                    outcome.text, outcome.batch_size = body["text"], body["batch_size"]
            except httpx.HTTPError:
                pass  # lost: no answer
            outcome.latency = time.perf_counter() - started
            outcomes.append(outcome)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return outcomes, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _round(side: SideResult, server: "ServerProcess", jobs: list[dict],
           config: ServeBenchConfig) -> None:
    # CPU time per request, besides wall time: on a shared machine the throughput follows
    # what the other jobs leave, the CPU a request costs much less so
    server_cpu, client_cpu = cpu_seconds(server.process.pid), time.process_time()
    outcomes, seconds = asyncio.run(_drive(server.url, jobs, config.concurrency))
    server_cpu = cpu_seconds(server.process.pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    good = [o for o in outcomes if o.status == 200]
    audio = sum(o.audio_seconds for o in good)
    side.rounds.append({"seconds": seconds, "audio_seconds": audio,
                        "audio_seconds_per_second": audio / seconds,
                        "server_cpu_ms_per_request": 1000 * server_cpu / max(1, len(good)),
                        "client_cpu_ms_per_request": 1000 * client_cpu / max(1, len(good))})
    side.outcomes.extend(outcomes)


def _model_file(config: ServeBenchConfig, workdir: Path) -> str:
    """The file both sides serve: given, or the shipped model exported once here."""
    from mho.exporter.bundle import is_bundle

    if config.model.endswith(".onnx") or is_bundle(config.model):
        return config.model
    from mho.exporter.onnx import export_onnx, load_for_export

    model, metadata = load_for_export(config.model)
    path = workdir / f"{config.model}.onnx"
    export_onnx(model, path, metadata, input="waveform")
    return str(path)


def bench_serve(config: ServeBenchConfig, log=lambda message: None) -> dict:
    """Run the comparison (or the soak) and return its JSON-ready summary."""
    with tempfile.TemporaryDirectory(prefix="mho-bench-serve-") as scratch:
        workdir = Path(scratch)
        log(f"model: {config.model}")
        model = _model_file(config, workdir)
        log("reference transcripts")
        items = _load_requests(config, model)
        jobs = [items[i % len(items)] for i in range(config.requests)]
        sides = [("batched", config.max_batch)]
        if config.compare and not config.soak_seconds:
            sides.append(("max_batch_1", 1))
        servers = {}
        try:
            for name, max_batch in sides:
                servers[name] = ServerProcess(model, config, max_batch,
                                              workdir / f"{name}.log")
            for name, server in servers.items():
                log(f"starting {name} on {server.url}")
                server.wait_ready(config.startup_timeout)
            results = {name: SideResult(name, max_batch) for name, max_batch in sides}
            for name, server in servers.items():
                # warm-up: one untimed pass over every utterance, so onnxruntime has met the
                # batch shapes a round makes (after a pass over only the first few, the
                # first timed round of a side often ran at half the speed of the next ones)
                asyncio.run(_drive(server.url, items, config.concurrency))
                results[name].rss_mb["start"] = rss_mb(server.process.pid)
            if config.soak_seconds:
                server, side = servers["batched"], results["batched"]
                bad = _bad_uploads(config)
                every = round(1 / config.bad_fraction) if config.bad_fraction else 0
                mixed = [bad[i // every % len(bad)] if every and i % every == every - 1
                         else items[i % len(items)] for i in range(len(items) * 2)]
                log(f"soak: {config.soak_seconds:g} s at concurrency {config.concurrency}")
                deadline = time.perf_counter() + config.soak_seconds
                samples = _RssSampler(server.process.pid, config.soak_seconds / 10)
                with samples:
                    outcomes, seconds = asyncio.run(_drive(server.url, mixed,
                                                           config.concurrency, deadline))
                side.rss_mb["samples"] = samples.values
                side.outcomes = outcomes
                audio = sum(o.audio_seconds for o in outcomes if o.status == 200)
                side.rounds.append({"seconds": seconds, "audio_seconds": audio,
                                    "audio_seconds_per_second": audio / seconds})
            else:
                for number in range(config.rounds):
                    for name, server in servers.items():
                        log(f"round {number + 1}/{config.rounds}: {name}")
                        _round(results[name], server, jobs, config)
            for name, server in servers.items():
                results[name].rss_mb["end"] = rss_mb(server.process.pid)
        finally:
            for server in servers.values():
                server.close()
        summary = {
            "model": config.model, "data": list(config.data), "concurrency": config.concurrency,
            **({} if config.soak_seconds else {"requests_per_round": config.requests,
                                               "rounds": config.rounds}),
            "max_wait_ms": config.max_wait_ms, "max_length_ratio": config.max_length_ratio,
            "workers": config.workers, "threads": config.threads,
            "decoder": config.decoder, "cores": len(os.sched_getaffinity(0)),
            "sides": {name: side.summary() for name, side in results.items()},
        }
        if "max_batch_1" in results:
            batched = summary["sides"]["batched"]["audio_seconds_per_second"]
            single = summary["sides"]["max_batch_1"]["audio_seconds_per_second"]
            summary["speedup"] = batched / single if single else None
        if config.soak_seconds:
            side = summary["sides"]["batched"]
            outcomes = results["batched"].outcomes
            summary["soak"] = {
                "seconds": config.soak_seconds,
                "good": sum(1 for o in outcomes if o.expected_status == 200),
                "good_answered_correctly": sum(1 for o in outcomes if o.expected_status == 200
                                               and o.status == 200 and o.text == o.reference),
                "bad": sum(1 for o in outcomes if o.expected_status != 200),
                "bad_answered_as_expected": sum(1 for o in outcomes if o.expected_status != 200
                                                and o.status == o.expected_status),
                "rss_mb": side["rss_mb"],
            }
        return summary
