"""A recording HTTP/1.1 proxy for client tests: forwards bytes unchanged, and keeps a parsed copy
of every exchange (request line, headers and body; response status, headers and body).

Real clients (the Claude Code CLI) are pointed at the recorder, the recorder at the gateway, so a
test sees exactly what the client sent and what the gateway answered, byte for byte, without the
proxy changing either side. Parsing is done with h11 on copies of the two byte streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import h11

MAX_BODY = 16 * 1024 * 1024  # bytes of one recorded body (a client sending more is a bug here)


@dataclass
class Exchange:
    """One request and, once it has been answered, its response."""

    method: str
    target: str
    headers: list[tuple[str, str]]  # lower-cased names, in order
    body: bytes = b""
    complete: bool = False  # the whole request body arrived
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    answered: bool = False  # the whole response arrived

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None

    def response_header(self, name: str) -> str | None:
        values = [v for k, v in self.response_headers if k == name.lower()]
        return ", ".join(values) if values else None


class _Connection:
    """Parses one TCP connection's two directions into exchanges."""

    def __init__(self, sink: list[Exchange], lock: threading.Lock) -> None:
        self._sink = sink
        self._lock = lock
        self._requests = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        self._responses = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_BODY)
        self._pending: list[Exchange] = []  # requests whose response has not finished
        self._current: Exchange | None = None
        self.error: str | None = None

    def client_bytes(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._requests.receive_data(data)
            self._drain_requests()
        except h11.ProtocolError as exc:
            self.error = f"request parse error: {exc!r}"

    def _drain_requests(self) -> None:
        while True:
            event = self._requests.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                exchange = Exchange(
                    method=event.method.decode(),
                    target=event.target.decode(),
                    headers=[(k.decode().lower(), v.decode("latin-1")) for k, v in event.headers],
                )
                self._current = exchange
                self._pending.append(exchange)
                with self._lock:
                    self._sink.append(exchange)
                # Mirror the request (without its body) into the response parser, so it knows
                # which response belongs to it (HEAD has no body).
                self._responses.send(
                    h11.Request(method=event.method, target=event.target, headers=[("host", "x")])
                )
                self._responses.send(h11.EndOfMessage())
            elif isinstance(event, h11.Data) and self._current is not None:
                if len(self._current.body) + len(event.data) > MAX_BODY:
                    raise h11.RemoteProtocolError("request body over the recorder's bound")
                self._current.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage) and self._current is not None:
                self._current.complete = True
                self._current = None
                # The server side of this parser must "answer" before the next cycle.
                self._requests.send(h11.Response(status_code=204, headers=[]))
                self._requests.send(h11.EndOfMessage())
                self._requests.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return

    def server_bytes(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._responses.receive_data(data)
            while True:
                event = self._responses.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                exchange = self._pending[0] if self._pending else None
                if isinstance(event, h11.Response) and exchange is not None:
                    exchange.status = event.status_code
                    exchange.response_headers = [
                        (k.decode().lower(), v.decode("latin-1")) for k, v in event.headers
                    ]
                elif isinstance(event, h11.Data) and exchange is not None:
                    if len(exchange.response_body) + len(event.data) <= MAX_BODY:
                        exchange.response_body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage) and exchange is not None:
                    exchange.answered = True
                    self._pending.pop(0)
                    self._responses.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.ProtocolError as exc:
            self.error = f"response parse error: {exc!r}"


class HttpRecorder:
    """Forwards 127.0.0.1:<port> to ``target`` (host, port) and records every HTTP exchange."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._connections: list[_Connection] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def exchanges(self) -> list[Exchange]:
        """A snapshot of every exchange so far, in the order the requests started."""
        with self._lock:
            return list(self._exchanges)

    @property
    def parse_errors(self) -> list[str]:
        return [c.error for c in self._connections if c.error is not None]

    def wait_answered(self, timeout_s: float = 10.0) -> list[Exchange]:
        """The exchanges, once every request seen so far has its whole response."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            snapshot = self.exchanges
            if all(e.answered for e in snapshot):
                return snapshot
            time.sleep(0.02)
        return self.exchanges

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        observe: Any,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                observe(data)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        connection = _Connection(self._exchanges, self._lock)
        self._connections.append(connection)
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer, connection.client_bytes),
            self._pipe(up_reader, writer, connection.server_bytes),
        )
        for w in (writer, up_writer):
            w.close()
        self._writers.difference_update((writer, up_writer))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ProxySink:
    """An HTTP(S) proxy that forwards nothing: it records the first line of every request a
    client sends it (``CONNECT host:443 HTTP/1.1`` for HTTPS) and answers 403. Set as a
    client's ``HTTPS_PROXY``/``HTTP_PROXY`` (with ``NO_PROXY`` naming loopback), it shows every
    attempt the client made to reach anything but the gateway, and stops each one."""

    def __init__(self) -> None:
        self.port = 0
        self._lock = threading.Lock()
        self._attempts: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def attempts(self) -> list[str]:
        with self._lock:
            return list(self._attempts)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.LimitOverrunError, ValueError):
            line = await asyncio.wait_for(reader.readline(), 5)
            with self._lock:
                self._attempts.append(line.decode("latin-1").strip()[:300])
            writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            if self._server is not None:
                self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
