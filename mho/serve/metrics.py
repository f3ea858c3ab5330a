"""Prometheus metrics of one server (a registry of its own, so several servers in one process,
as in tests, never share counts)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# powers of two up to the largest batch worth allowing on a CPU
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# error kinds: the `kind` label of mho_errors_total, and the JSON error body's `code`
ERROR_KINDS = ("bad_request", "bad_audio", "unknown_model", "too_large", "queue_full",
               "not_ready", "not_found", "method_not_allowed", "internal")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mho_requests", "Transcription requests answered, by model "
                                "and HTTP status", ["model", "status"], registry=r)
        self.errors = Counter("mho_errors", "Failed requests by kind", ["kind"], registry=r)
        self.disconnects = Counter("mho_disconnects", "Requests whose client left before the "
                                   "answer", ["model"], registry=r)
        self.queue_depth = Gauge("mho_queue_depth", "Requests waiting for a batch", ["model"],
                                 registry=r)
        self.batch_size = Histogram("mho_batch_size", "Requests per onnxruntime call",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("mho_batch_seconds", "One batch: onnxruntime call and "
                                       "decoding", ["model"], buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.latency = Histogram("mho_request_seconds", "Transcription request latency, "
                                 "upload parsed to answer", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("mho_audio_seconds", "Audio transcribed", ["model"],
                                     registry=r)
        for kind in ERROR_KINDS:  # every kind shows, at 0, before it first happens
            self.errors.labels(kind)

    def text(self) -> bytes:
        return generate_latest(self.registry)
