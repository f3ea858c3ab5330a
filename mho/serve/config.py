"""What `mho serve` is told: where to listen, how to batch, what to refuse."""

from dataclasses import dataclass

from mho.errors import ConfigError

DECODERS = ("greedy", "lm")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (tests, benches)
    # Requests for one model are gathered into one onnxruntime call until this many...
    max_batch: int = 8
    # ...or until the first of them has waited this long.
    max_wait_ms: float = 10.0
    # A batch is padded to its longest row: it only takes requests that keep its longest /
    # shortest waveform within this ratio, the others wait for a later batch (inf: any mix).
    max_length_ratio: float = 1.5
    # Batches run at the same time, each in its own worker thread (onnxruntime and the
    # decoder release the event loop); sessions get cores / workers intra-op threads each.
    workers: int = 2
    # Accepted requests waiting for a batch, per model; past it: 503 with Retry-After.
    max_queue: int = 64
    # Longer uploads are refused with 413 (the model attends over the whole utterance).
    max_audio_seconds: float = 60.0
    # Larger request bodies are refused with 413 before they are parsed.
    max_body_bytes: int = 25 * 2**20  # OpenAI's own upload limit
    decoder: str = "lm"
    # Hypotheses the LM search keeps per frame; None: mho's default (a bundle: its own).
    # About 0.1 s of CPU per utterance at 1024, 5 ms at 32, for a higher WER (docs/lm.md).
    beam_size: int | None = None
    # onnxruntime intra-op threads per session; None: cores / workers.
    threads: int | None = None
    # Seconds a graceful shutdown waits for in-flight requests before closing them.
    shutdown_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0-65535, got {self.port}")
        for name in ("max_batch", "workers", "max_queue", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, "
                                  f"got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        if not self.max_length_ratio >= 1:  # also refuses NaN
            raise ConfigError(f"--max-length-ratio must be at least 1, got "
                              f"{self.max_length_ratio}")
        if self.max_audio_seconds <= 0:
            raise ConfigError(f"--max-audio-seconds must be positive, got "
                              f"{self.max_audio_seconds}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {self.decoder!r}: choose 'greedy' or 'lm'")
        if self.beam_size is not None and (self.decoder != "lm" or self.beam_size < 1):
            raise ConfigError(f"--beam-size is for --decoder lm and at least 1, got "
                              f"{self.beam_size} with {self.decoder}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
