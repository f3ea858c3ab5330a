"""A live server on an ephemeral local port, serving the synthetic model (tests/serve/
synthetic.py) with the greedy decoder, shared by a module's tests (a server start builds a
decoder: seconds)."""

import threading
from contextlib import contextmanager

import pytest

from mho.data.datasets import resolve_dataset
from mho.serve.config import ServeConfig
from mho.serve.server import ServerThread
from tests.serve.synthetic import synthetic_model

NAME = "synthetic"
# max_length_ratio inf: the batching tests here queue clips of any length and expect them in
# one batch (length windows are tested on the batcher itself, tests/serve/test_batching.py)
CONFIG = ServeConfig(port=0, max_batch=16, max_wait_ms=30, max_length_ratio=float("inf"),
                     workers=1, max_queue=8, max_audio_seconds=10, max_body_bytes=2 * 2**20,
                     decoder="greedy")


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    return synthetic_model(tmp_path_factory.mktemp("synthetic") / f"{NAME}.onnx")


@pytest.fixture(scope="session")
def utterances():
    return resolve_dataset("festival-slt")[1]


@pytest.fixture(scope="module")
def server(model_file):
    with ServerThread(CONFIG, [str(model_file)]) as running:
        yield running


@contextmanager
def gated(server, name: str = NAME):
    """Batches of `name` wait until the yielded event is set: requests pile up in the queue
    the way they do behind a busy worker, deterministically."""
    batcher = server.state.batchers[name]
    run_batch = batcher._run_batch
    gate = threading.Event()

    def waiting(waveforms):
        gate.wait(timeout=60)
        return run_batch(waveforms)

    batcher._run_batch = waiting
    try:
        yield gate
    finally:
        gate.set()
        batcher._run_batch = run_batch
