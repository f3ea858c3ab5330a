"""`mho serve` live on an ephemeral port: the official OpenAI client gets `mho transcribe`'s
text, every bad input its status and message, queued requests are batched and each gets
its own answer, a client that leaves poisons nothing, a graceful stop answers what is in
flight."""

import io
import re
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import soundfile
from click.testing import CliRunner

from mho.cli import main
from mho.serve.server import ServerThread
from tests.serve.conftest import CONFIG, NAME, gated

COUNT = 12  # utterances with references


@pytest.fixture(scope="module")
def references(model_file, utterances):
    """`mho transcribe FILE AUDIO... --decoder greedy`: path -> text, one utterance at a
    time through the recognizer (no server, no batching)."""
    paths = [str(u.audio) for u in utterances[:COUNT]]
    result = CliRunner().invoke(main, ["transcribe", str(model_file), *paths,
                                       "--decoder", "greedy"])
    assert result.exit_code == 0, result.output
    texts = dict(line.split("\t") for line in result.output.strip().splitlines())
    assert len(set(texts.values())) == COUNT  # the utterances tell apart
    return texts


def post(url: str, path=None, data: bytes | None = None, timeout: float = 60, **fields):
    files = None
    if path is not None or data is not None:
        content = data if data is not None else open(path, "rb").read()
        files = {"file": ("clip.flac" if path else "clip.wav", content)}
    return httpx.post(url + "/v1/audio/transcriptions", files=files,
                      data={"model": NAME, **fields}, timeout=timeout)


def metric(server, name: str, **labels) -> float:
    """A sample of the server's Prometheus text (0 if absent)."""
    text = httpx.get(server.url + "/metrics").text
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        got = re.match(r"([^{]+)(?:\{(.*)\})?$", key)
        parts = ",".join(sorted((got.group(2) or "").split(","))) if got.group(2) else ""
        if got.group(1) == name and parts == selector:
            return float(value)
    return 0.0


def wav(seconds: float, fill: float = 0.01, rate: int = 16_000, subtype="PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.full(int(seconds * rate), fill, np.float32), rate,
                    format="WAV", subtype=subtype)
    return buffer.getvalue()


def test_openai_client_gets_mho_transcribes_text(server, references, utterances):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    utterance = utterances[0]
    expected = references[str(utterance.audio)]
    with open(utterance.audio, "rb") as audio:
        assert client.audio.transcriptions.create(model=NAME, file=audio).text == expected
    with open(utterance.audio, "rb") as audio:
        text = client.audio.transcriptions.create(model=NAME, file=audio,
                                                  response_format="text")
        assert text == expected + "\n"
    with open(utterance.audio, "rb") as audio:
        verbose = client.audio.transcriptions.create(model=NAME, file=audio,
                                                     response_format="verbose_json")
    samples = soundfile.info(str(utterance.audio)).frames
    assert verbose.text == expected and verbose.duration == samples / 16_000
    extra = verbose.model_extra
    assert extra["model"] == NAME and extra["batch_size"] >= 1
    assert extra["real_time_factor"] == pytest.approx(
        extra["processing_seconds"] / verbose.duration)
    assert [m.id for m in client.models.list()] == [NAME]


def test_models_health_and_metrics(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "models": [NAME]}
    card = httpx.get(f"{server.url}/v1/models/{NAME}").json()
    assert card["id"] == NAME and card["mho"]["model_type"] == "synthetic-ctc"
    missing = httpx.get(server.url + "/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_model"
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for family in ("mho_requests_total", "mho_errors_total", "mho_queue_depth",
                   "mho_batch_size", "mho_request_seconds", "mho_batch_seconds"):
        assert f"# TYPE {family.removesuffix('_total')}" in metrics.text


BAD = [  # id, request, status, error code, message pattern
    ("corrupt", dict(data=b"RIFF this is not audio"), 400, "bad_audio",
     r"cannot decode 'clip.wav' as audio"),
    ("empty", dict(data=b""), 400, "bad_audio", r"'clip.wav' is empty"),
    ("nan", dict(data=wav(1, fill=np.nan, subtype="FLOAT")), 400, "bad_audio",
     r"NaN or infinite"),
    ("too short", dict(data=wav(0.05)), 400, "bad_audio", r"50 ms long; the shortest clip"),
    ("too long", dict(data=wav(12)), 413, "too_large",
     r"12\.0 s long; this server takes at most 10 s"),
    ("body too large", dict(data=b"\0" * (3 * 2**20)), 413, "too_large",
     r"at most 2097152 bytes"),
    ("unknown model", dict(data=wav(1), model="nope"), 404, "unknown_model",
     r"model 'nope' is not served here; served: synthetic"),
    ("no model", dict(data=wav(1), model=""), 400, "bad_request", r"`model` field is missing"),
    ("no file", dict(), 400, "bad_request", r"`file` field is missing"),
    ("bad format", dict(data=wav(1), response_format="srt"), 400, "bad_request",
     r"response_format 'srt' is not supported"),
]


@pytest.mark.parametrize("request_, status, code, message", [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_input_is_a_json_error_and_the_server_goes_on(server, references, utterances,
                                                           request_, status, code, message):
    before = metric(server, "mho_errors_total", kind=code)
    fields = {k: v for k, v in request_.items() if k != "data"}
    if "data" in request_:
        response = post(server.url, data=request_["data"], **fields)
    else:
        response = httpx.post(server.url + "/v1/audio/transcriptions",
                              files={"model": (None, NAME)})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and re.search(message, error["message"]), error
    assert "\n" not in error["message"]
    assert metric(server, "mho_errors_total", kind=code) == before + 1
    good = post(server.url, utterances[1].audio)  # still up, still right
    assert good.json()["text"] == references[str(utterances[1].audio)]


def test_protocol_errors_are_json(server):
    not_multipart = httpx.post(server.url + "/v1/audio/transcriptions", json={"model": NAME})
    assert not_multipart.status_code == 400
    assert "multipart/form-data" in not_multipart.json()["error"]["message"]
    wrong_method = httpx.get(server.url + "/v1/audio/transcriptions")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    nowhere = httpx.get(server.url + "/v2/nothing")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"


def test_openai_client_raises_the_servers_message(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="'whisper-1' is not served here"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(1)))
    with pytest.raises(openai.BadRequestError, match="cannot decode 'a.wav' as audio"):
        client.audio.transcriptions.create(model=NAME, file=("a.wav", b"junk"))


def in_threads(calls):
    """Start each call in a thread; -> (threads, results list filled in call order)."""
    results = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except Exception as error:  # the test reads it
            results[i] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    return threads, results


def wait_until(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_queued_requests_are_batched_each_answered_and_a_full_queue_is_503(
        server, references, utterances):
    """One worker, held busy: the first request runs, the second waits for the worker and
    eight more queue (max_queue 8); the eleventh is refused with Retry-After. Released, the
    waiting nine run as one batch and every request gets its own transcript."""
    batcher = server.state.batchers[NAME]
    sizes_before = metric(server, "mho_batch_size_count", model=NAME)
    sum_before = metric(server, "mho_batch_size_sum", model=NAME)
    with gated(server) as gate:
        first, rest = utterances[0], utterances[1:10]
        threads, results = in_threads([lambda: post(server.url, first.audio,
                                                    response_format="verbose_json")])
        wait_until(lambda: not batcher._queue.qsize() and batcher._running)
        more, more_results = in_threads([lambda u=u: post(server.url, u.audio,
                                                          response_format="verbose_json")
                                         for u in rest])
        wait_until(lambda: batcher.depth == CONFIG.max_queue)
        refused = post(server.url, utterances[10].audio)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "queue_full"
        gate.set()
        for thread in threads + more:
            thread.join()
    answers = results + more_results
    assert [a.status_code for a in answers] == [200] * 10
    assert [a.json()["text"] for a in answers] == [references[str(u.audio)]
                                                   for u in [first, *rest]]
    assert sorted(a.json()["batch_size"] for a in answers) == [1] + [9] * 9
    assert metric(server, "mho_batch_size_count", model=NAME) == sizes_before + 2
    assert metric(server, "mho_batch_size_sum", model=NAME) == sum_before + 10
    assert metric(server, "mho_batch_size_bucket", model=NAME, le="8.0") < metric(
        server, "mho_batch_size_bucket", model=NAME, le="12.0")  # the batch of 9


def test_concurrent_clients_each_get_their_own_answer(server, references, utterances):
    """As many clients as the queue holds (one running, one waiting for the worker, the rest
    queued: none refused, whatever the timing)."""
    clients = CONFIG.max_queue
    barrier = threading.Barrier(clients)

    def request(utterance):
        barrier.wait()
        return post(server.url, utterance.audio)

    threads, results = in_threads([lambda u=u: request(u) for u in utterances[:clients]])
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [200] * clients
    assert [r.json()["text"] for r in results] == [references[str(u.audio)]
                                                   for u in utterances[:clients]]


def test_a_client_that_leaves_does_not_poison_its_batch(server, references, utterances):
    gone_before = metric(server, "mho_disconnects_total", model=NAME)
    with gated(server) as gate:
        batcher = server.state.batchers[NAME]
        threads, results = in_threads([lambda: post(server.url, utterances[0].audio)])
        wait_until(lambda: batcher._running)
        leaving, left = in_threads([lambda: post(server.url, utterances[1].audio,
                                                 timeout=1.0)])
        staying, stayed = in_threads([lambda: post(server.url, utterances[2].audio)])
        leaving[0].join()
        assert isinstance(left[0], httpx.TimeoutException)
        wait_until(lambda: metric(server, "mho_disconnects_total", model=NAME)
                   == gone_before + 1)
        gate.set()
        for thread in threads + staying:
            thread.join()
    assert results[0].json()["text"] == references[str(utterances[0].audio)]
    assert stayed[0].json()["text"] == references[str(utterances[2].audio)]
    assert httpx.get(server.url + "/health").status_code == 200


def test_graceful_stop_answers_requests_in_flight(model_file, references, utterances):
    """The same path as SIGTERM (uvicorn's should_exit): the port closes at once, requests
    already accepted are answered, then the server stops."""
    with ServerThread(CONFIG, [str(model_file)]) as running:
        batcher = running.state.batchers[NAME]
        with gated(running) as gate:
            threads, results = in_threads([lambda u=u: post(running.url, u.audio)
                                           for u in utterances[:3]])
            wait_until(lambda: batcher._running and batcher.in_flight == 3)  # all accepted
            stopping = threading.Thread(target=running.stop)
            stopping.start()

            def refused():
                try:
                    httpx.get(running.url + "/health", timeout=1)
                except httpx.TransportError:
                    return True
                return False

            wait_until(refused)
            gate.set()
            for thread in threads:
                thread.join()
            stopping.join(timeout=60)
            assert not stopping.is_alive()
    assert [r.status_code for r in results] == [200] * 3
    assert [r.json()["text"] for r in results] == [references[str(u.audio)]
                                                   for u in utterances[:3]]


def test_serve_command_errors_are_one_line(model_file, tmp_path):
    import socket

    def serve(*args):
        return CliRunner().invoke(main, ["serve", *map(str, args)])

    cases = [
        ((tmp_path / "missing.onnx",), f"no such ONNX file: {tmp_path / 'missing.onnx'}"),
        (("no-such-model",), "cannot serve 'no-such-model': give an exported .onnx file"),
        ((model_file, f"synthetic={model_file}"), "two models are named synthetic"),
        ((model_file, "--max-batch", "0"), "Invalid value for '--max-batch'"),
        ((model_file, "--max-length-ratio", "0.5"), "Invalid value for '--max-length-ratio'"),
    ]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cases.append(((model_file, "--port", taken.getsockname()[1]), "cannot listen on "
                      f"127.0.0.1:{taken.getsockname()[1]}: Address already in use"))
        for args, message in cases:
            result = serve(*args)
            assert result.exit_code != 0 and message in result.output, result.output
            if "Invalid value" not in message:
                assert result.output.strip() == f"error: {result.output.strip()[7:]}"
                assert len(result.output.strip().splitlines()) == 1


def test_health_is_503_until_the_sessions_load(model_file, monkeypatch):
    import mho.serve.app
    from mho.errors import MhoError

    loading = threading.Event()
    real_load = mho.serve.app.load_model

    def slow_load(*args):
        loading.wait(timeout=60)
        return real_load(*args)

    monkeypatch.setattr(mho.serve.app, "load_model", slow_load)
    starting = ServerThread(CONFIG, [str(model_file)])
    waiting = threading.Thread(target=starting.__enter__)
    waiting.start()
    try:
        wait_until(lambda: starting._server.started)
        health = httpx.get(starting.url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        early = post(starting.url, data=wav(1))
        assert early.status_code == 503 and early.headers["retry-after"] == "5"
        assert early.json()["error"]["code"] == "not_ready"
        loading.set()
        waiting.join()
        assert httpx.get(starting.url + "/health").json()["status"] == "ok"
    finally:
        loading.set()
        waiting.join()
        starting.stop()

    def failing_load(*args):
        raise MhoError("onnxruntime cannot load it")

    monkeypatch.setattr(mho.serve.app, "load_model", failing_load)
    with pytest.raises(MhoError, match="cannot load synthetic: onnxruntime cannot load it"):
        with ServerThread(CONFIG, [str(model_file)]):
            pass
