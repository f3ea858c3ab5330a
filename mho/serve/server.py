"""Running the app: ``serve`` (blocking, what `mho serve` calls) and ``ServerThread`` (a live
server on a free local port inside this process, for tests and embedding).

Shutdown is uvicorn's graceful one: on SIGTERM or SIGINT the listening socket closes (new
connections are refused), requests in flight are answered (their batches finish), then the
batchers and worker threads stop and ``serve`` returns.
"""

import logging
import socket
import threading
import time

import uvicorn

from mho.errors import MhoError
from mho.serve.app import create_app
from mho.serve.config import ServeConfig
from mho.serve.models import ModelSource, resolve_sources


class _Server(uvicorn.Server):
    """uvicorn's server, except that a graceful stop on SIGTERM ends in a normal return
    (uvicorn raises the signal again once it is done, which would end the process with
    status 143 after it shut down cleanly)."""

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def _uvicorn_config(app, config: ServeConfig, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=config.host, port=config.port, log_level=log_level, access_log=False,
        timeout_graceful_shutdown=config.shutdown_timeout,
        # requests over the limit are refused with 413 by the app; these bound what one
        # connection can hold open
        h11_max_incomplete_event_size=64 * 1024, timeout_keep_alive=30)


def serve(config: ServeConfig, specs: list[str] | tuple[str, ...],
          log_level: str = "info") -> None:
    """Serve the models ``specs`` name until SIGTERM or SIGINT. Bad specs fail at once
    (MhoError); a model that fails to load stops the server and raises MhoError."""
    sources = resolve_sources(list(specs))
    failure: list[str] = []
    server: _Server | None = None

    def on_load_error(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(config, sources, on_load_error)
    server = _Server(_uvicorn_config(app, config, log_level))
    listening = _listen(config.host, config.port)  # here, so a taken port is an MhoError
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
    if failure:
        raise MhoError(failure[0])
    if not server.started:
        raise MhoError(f"the server did not start on {config.host}:{config.port} (see the "
                       f"log above)")


def _listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn (port 0: a free one)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:  # the port is taken, the host unknown
        raise MhoError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listening


class ServerThread:
    """A server on ``config.host`` and a free port, in a thread of this process:

        with ServerThread(config, ["model.onnx"]) as server:
            httpx.get(server.url + "/health")

    Entering waits until every model is loaded (MhoError if one fails)."""

    def __init__(self, config: ServeConfig, specs: list[str] | tuple[str, ...],
                 sources: list[ModelSource] | None = None, ready_timeout: float = 300.0):
        self.sources = sources or resolve_sources(list(specs))
        self.config = config
        self._failure: list[str] = []
        self.app = create_app(config, self.sources, self._failure.append)
        self._socket = _listen(config.host, config.port)
        self.port = self._socket.getsockname()[1]
        self.url = f"http://{config.host}:{self.port}"
        uv_config = _uvicorn_config(self.app, config, "warning")
        uv_config.log_config = None  # leave the host process's logging alone
        self._server = _Server(uv_config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]}, daemon=True,
                                        name="mho-serve")
        self._ready_timeout = ready_timeout

    @property
    def state(self):
        return self.app.state.mho

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + self._ready_timeout
        while not (self.state.ready and self._server.started):
            if self._failure:
                self.stop()
                raise MhoError(self._failure[0])
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise MhoError(f"the server was not ready within {self._ready_timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Graceful stop: requests in flight are answered first."""
        self._server.should_exit = True
        self._thread.join()
        self._socket.close()

    def __exit__(self, *exc) -> None:
        self.stop()


logging.getLogger("mho.serve").addHandler(logging.NullHandler())
