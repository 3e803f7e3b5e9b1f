"""Run an ASGI app under uvicorn on an ephemeral loopback port, in a thread (for tests).

By default with the HTTP protocol ``tierwise serve`` runs (uvicorn's httptools protocol with
the gateway's client limits and direct body writes for stream relays,
:mod:`tierwise.gateway.connections`); ``http="httptools"`` runs uvicorn's own."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Literal, Self

import uvicorn


def serve_protocol() -> type[Any]:
    """The protocol class of ``tierwise serve``, with the default client limits."""
    from tierwise.gateway.connections import ClientLimits, GuardedHttpToolsProtocol

    return GuardedHttpToolsProtocol.with_limits(ClientLimits.defaults())


class ServerThread:
    def __init__(
        self,
        app: Any,
        *,
        lifespan: Literal["auto", "on", "off"] = "on",
        http: type[Any] | str | None = None,
    ) -> None:
        self.app = app
        self.lifespan = lifespan
        self.http = http if http is not None else serve_protocol()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan=self.lifespan,
            timeout_graceful_shutdown=2,
            http=self.http,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="asgi-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server failed to start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
