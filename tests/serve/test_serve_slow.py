"""The real thing, slow: the shipped baseline exported as a bundle by the CLI and served, the
OpenAI client against it; `mho serve` as a process stopped by SIGTERM mid-batch."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from click.testing import CliRunner

from mho.cli import main
from mho.serve.config import ServeConfig
from mho.serve.server import ServerThread

BASELINE = "conformer-sinusoidal-linear-w8"
pytestmark = pytest.mark.slow


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


@pytest.fixture(scope="module")
def baseline_bundle(tmp_path_factory):
    directory = tmp_path_factory.mktemp("baseline") / "baseline"
    result = run("export", "onnx", BASELINE, "--bundle", directory, "--json")
    assert result.exit_code == 0, result.output
    return directory


def test_openai_client_on_the_baseline_bundle(baseline_bundle, utterances):
    utterance = next(u for u in utterances if u.text == "set a fast pace")
    cli = run("transcribe", baseline_bundle, utterance.audio)
    assert cli.exit_code == 0 and cli.output.strip().endswith("\tset a fast pace")
    with ServerThread(ServeConfig(port=0), [str(baseline_bundle)]) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        with open(utterance.audio, "rb") as audio:
            result = client.audio.transcriptions.create(model="baseline", file=audio)
    assert result.text == "set a fast pace"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_answers_requests_in_flight_then_exits_0(model_file, utterances):
    """A batch window of 3 s holds the requests in flight when SIGTERM comes; each is still
    answered, new connections are refused, and the process exits 0."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "mho", "serve", str(model_file), "--port", str(port),
         "--decoder", "greedy", "--max-wait-ms", "3000", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        results = [None] * 3

        def request(i):
            with open(utterances[i].audio, "rb") as audio:
                results[i] = httpx.post(url + "/v1/audio/transcriptions", files={"file": audio},
                                        data={"model": "synthetic"}, timeout=60)

        threads = [threading.Thread(target=request, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # uploaded and waiting in the batch window
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    log = process.stdout.read()
    assert [r.status_code for r in results] == [200] * 3, log
    assert all(r.json()["text"] for r in results)
    assert [r.json()["text"] for r in results] == [
        line.split("\t")[1] for line in run("transcribe", model_file,
                                            *[u.audio for u in utterances[:3]],
                                            "--decoder", "greedy").output.strip().splitlines()]
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=1)
