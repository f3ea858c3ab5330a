"""The ASGI application: an OpenAI-compatible transcription API over dynamically batched
onnxruntime sessions, with health, Prometheus metrics and a small web page.

Routes:

- ``POST /v1/audio/transcriptions``: multipart ``file`` and ``model``, optional
  ``response_format`` (``json``: ``{"text"}``, ``text``: the words, ``verbose_json``: also
  duration, timings and real-time factor); the other OpenAI fields (``language``,
  ``prompt``, ``temperature``...) are accepted and ignored.
- ``GET /v1/models``, ``GET /v1/models/{name}``: the models served, OpenAI's shape.
- ``GET /health``: 200 once every session is loaded, 503 before (and with the reason when
  loading failed).
- ``GET /metrics``: Prometheus text.
- ``GET /``: the web page.

Every failure answers JSON in OpenAI's error shape, ``{"error": {"message", "type",
"param", "code"}}``, ``code`` being the error kind (also the ``kind`` label of
``mho_errors_total``).
"""

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mho.errors import MhoError
from mho.serve.audio import UploadError, decode_upload
from mho.serve.batching import BatchObserver, DynamicBatcher, QueueFull, ShuttingDown
from mho.serve.config import ServeConfig
from mho.serve.metrics import CONTENT_TYPE, ServerMetrics
from mho.serve.models import MIN_SAMPLES, ModelSource, ServedModel, load_model

log = logging.getLogger("mho.serve")

RESPONSE_FORMATS = ("json", "text", "verbose_json")
RETRY_AFTER_QUEUE_S = 1  # a full queue drains within a few batches
RETRY_AFTER_LOADING_S = 5  # exports and session loads take seconds


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.param, self.retry_after = param, retry_after


@dataclass
class ServerState:
    """Everything one running app holds."""

    config: ServeConfig
    sources: list[ModelSource]
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    models: dict[str, ServedModel] = field(default_factory=dict)
    batchers: dict[str, DynamicBatcher] = field(default_factory=dict)
    ready: bool = False
    load_error: str | None = None
    started: float = field(default_factory=time.time)


def create_app(config: ServeConfig, sources: list[ModelSource],
               on_load_error=lambda message: None) -> Starlette:
    """The app serving ``sources``; they load in the background after start-up (``/health``
    says when), ``on_load_error(message)`` is called if one cannot."""
    state = ServerState(config, sources)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        workdir = Path(tempfile.mkdtemp(prefix="mho-serve-"))  # shipped models' exports
        executor = ThreadPoolExecutor(config.workers, thread_name_prefix="mho-batch")
        slots = asyncio.Semaphore(config.workers)
        loader = asyncio.create_task(_load(state, workdir, executor, slots, on_load_error))
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            # uvicorn has answered every request in flight before it gets here; closing
            # the batchers finishes whatever is still queued all the same
            await asyncio.gather(*(b.close() for b in state.batchers.values()))
            executor.shutdown(wait=True)
            shutil.rmtree(workdir, ignore_errors=True)

    async def transcriptions(request: Request) -> Response:
        return await _transcribe(state, request)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model_card(state, s.name)
                                                        for s in state.sources]})

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in {s.name for s in state.sources}:
            raise ApiError(404, "unknown_model", _unknown_model(state, name), "model")
        return JSONResponse(_model_card(state, name))

    async def health(request: Request) -> Response:
        body = {"status": "ok" if state.ready else ("failed" if state.load_error
                                                     else "loading"),
                "models": [s.name for s in state.sources]}
        if state.load_error:
            body["error"] = state.load_error
        return JSONResponse(body, status_code=200 if state.ready else 503)

    async def metrics(request: Request) -> Response:
        for name, batcher in state.batchers.items():
            state.metrics.queue_depth.labels(name).set(batcher.depth)
        return Response(state.metrics.text(), media_type=CONTENT_TYPE)

    async def page(request: Request) -> Response:
        from mho.serve.page import page_html

        return HTMLResponse(page_html())

    async def api_error(request: Request, error: ApiError) -> Response:
        return _error_response(state, error)

    async def http_error(request: Request, error: HTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code,
                                                                 "bad_request")
        message = {404: f"no such route: {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
            error.status_code, str(error.detail))
        return _error_response(state, ApiError(error.status_code, kind, message))

    async def internal_error(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _error_response(state, ApiError(500, "internal",
                                               f"internal error: {type(error).__name__}"))

    routes = [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/", page, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: api_error, HTTPException: http_error, Exception: internal_error})
    app.state.mho = state
    return app


async def _load(state: ServerState, workdir: Path, executor: ThreadPoolExecutor,
                slots: asyncio.Semaphore, on_load_error) -> None:
    """Load every model off the event loop (exports and sessions take seconds), then start
    their batchers and turn ready."""
    config = state.config
    threads = config.threads or max(1, (_cores() // config.workers))
    try:
        for source in state.sources:
            log.info("loading %s (%s)", source.name, source.spec)
            served = await asyncio.to_thread(load_model, source, workdir, config.decoder,
                                             threads, config.beam_size)
            state.models[source.name] = served
    except MhoError as error:
        state.load_error = f"cannot load {source.name}: {error}"
    except Exception as error:  # onnxruntime and torch raise their own types
        state.load_error = f"cannot load {source.name}: {type(error).__name__}: {error}"
    if state.load_error:
        log.error("%s", state.load_error)
        on_load_error(state.load_error)
        return
    for name, served in state.models.items():
        batcher = DynamicBatcher(
            served.transcribe_batch, max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms, max_queue=config.max_queue, executor=executor,
            slots=slots, observer=_observer(state.metrics, name),
            max_length_ratio=config.max_length_ratio)
        batcher.start()
        state.batchers[name] = batcher
    state.ready = True
    log.info("ready: %s", ", ".join(state.models))


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _observer(metrics: ServerMetrics, name: str) -> BatchObserver:
    return BatchObserver(
        queued=metrics.queue_depth.labels(name).set,
        batch=lambda size, seconds: (metrics.batch_size.labels(name).observe(size),
                                     metrics.batch_seconds.labels(name).observe(seconds)),
        dropped=lambda: None)


def _model_card(state: ServerState, name: str) -> dict:
    card = {"id": name, "object": "model", "created": int(state.started), "owned_by": "mho"}
    served = state.models.get(name)
    if served is not None:
        meta = served.metadata
        card["mho"] = {"model_name": meta.model_name, "model_type": meta.model_type,
                       "weight_bits": meta.weight_bits, "memristor": meta.memristor is not None,
                       "programming_seed": meta.programming_seed}
    return card


def _unknown_model(state: ServerState, name: str) -> str:
    served = ", ".join(s.name for s in state.sources)
    return f"model {name!r} is not served here; served: {served}"


def _error_response(state: ServerState, error: ApiError) -> Response:
    state.metrics.errors.labels(error.kind).inc()
    body = {"error": {"message": error.message,
                      "type": "server_error" if error.status >= 500 else "invalid_request_error",
                      "param": error.param, "code": error.kind}}
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return JSONResponse(body, status_code=error.status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes: a client
    cannot make the server buffer more than that, declared length or not."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the request body is {int(declared)} bytes; this "
                       f"server takes at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the request body passes {limit} bytes, the "
                           f"most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_form(request: Request, body: bytes):
    """The multipart form of an already read body."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "bad_request", "send the audio as multipart/form-data with a "
                       "`file` field and a `model` field")
    sent = False

    async def replay():  # the body once, as the ASGI server would have sent it
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=1, max_fields=20)
    except HTTPException as error:  # Starlette's own limits
        raise ApiError(400, "bad_request", f"malformed form: {error.detail}") from None
    except Exception as error:  # python-multipart's parse errors
        raise ApiError(400, "bad_request", f"malformed multipart form: {error}") from None


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client hangs up (the body is read, so the next message is that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _transcribe(state: ServerState, request: Request) -> Response:
    started = time.perf_counter()
    config = state.config
    if not state.ready:
        if state.load_error:
            raise ApiError(503, "not_ready", state.load_error)
        raise ApiError(503, "not_ready", "the models are still loading",
                       retry_after=RETRY_AFTER_LOADING_S)
    try:
        body = await _read_body(request, config.max_body_bytes)
    except ClientDisconnect:
        return Response(status_code=499)  # nobody reads it
    form = await _parse_form(request, body)
    try:
        return await _answer(state, request, form, started)
    finally:
        await form.close()  # the upload's spooled temporary file


async def _answer(state: ServerState, request: Request, form, started: float) -> Response:
    config = state.config
    name = form.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "bad_request", "the `model` field is missing", "model")
    if name not in state.batchers:
        raise ApiError(404, "unknown_model", _unknown_model(state, name), "model")
    response_format = form.get("response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, "bad_request", f"response_format {response_format!r} is not "
                       f"supported; choose {', '.join(RESPONSE_FORMATS)}", "response_format")
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "bad_request", "the `file` field is missing or not a file upload",
                       "file")
    data = await upload.read()
    filename = upload.filename or "upload"
    try:
        waveform = await asyncio.to_thread(decode_upload, data, filename,
                                           max_seconds=config.max_audio_seconds,
                                           min_samples=MIN_SAMPLES)
    except UploadError as error:
        raise ApiError(error.status, error.kind, str(error), "file") from None
    duration = waveform.size / 16_000
    try:
        future = state.batchers[name].submit(waveform)
    except QueueFull as error:
        state.metrics.requests.labels(name, "503").inc()
        raise ApiError(503, "queue_full", str(error), retry_after=RETRY_AFTER_QUEUE_S) from None
    except ShuttingDown as error:
        raise ApiError(503, "not_ready", str(error)) from None
    watch = asyncio.create_task(_wait_disconnect(request))
    try:
        await asyncio.wait({future, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not future.done():  # the client left: drop the request, never its batch
        future.cancel()
        state.metrics.disconnects.labels(name).inc()
        return Response(status_code=499)
    if future.exception() is not None:
        error = future.exception()
        log.error("%s failed on a %.1f s upload: %s", name, duration, error)
        state.metrics.requests.labels(name, "500").inc()
        raise ApiError(500, "internal", f"transcription failed: {error}")
    result = future.result()
    seconds = time.perf_counter() - started
    state.metrics.requests.labels(name, "200").inc()
    state.metrics.latency.labels(name).observe(seconds)
    state.metrics.audio_seconds.labels(name).inc(duration)
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format == "json":
        return JSONResponse({"text": result.text})
    return JSONResponse({
        "task": "transcribe", "language": "english", "duration": duration,
        "text": result.text, "model": name,
        "processing_seconds": seconds, "queue_seconds": result.queue_seconds,
        "inference_seconds": result.inference_seconds, "batch_size": result.batch_size,
        "real_time_factor": seconds / duration,
    })
