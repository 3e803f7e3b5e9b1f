"""A small HTTP/1.1 client for the one upstream the gateway talks to: pooled keep-alive
connections (plain TCP or TLS), requests written in one call, responses parsed by httptools
(the C parser uvicorn uses), bodies delivered as they arrive.

Why not aiohttp: profiled under load, its generic client (multidict headers, tracing hooks,
timer handles, payload objects) cost ~75 µs of CPU per request, the largest single item on the
gateway's hot path. This client does the same job for one origin in a fraction of that. What it
does not do, on purpose: redirects, cookies, proxies from the environment (aiohttp's
``trust_env`` was off too), compression other than gzip/deflate replies (it never asks for
compression; a compressed reply is still decoded).

Errors: :class:`OSError` (and its :class:`ConnectionError` subclasses) when the connection
fails or breaks, :class:`TimeoutError` when a deadline passes. A request is never retried
here; the engine decides about retries.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

_IDLE_LIMIT = 256  # idle connections kept for reuse
_HIGH_WATER = 1 << 20  # buffered body bytes before reading from the socket pauses


class BrokenResponse(ConnectionError):
    """The upstream closed the connection or sent bytes that are not HTTP."""


class _Connection(asyncio.Protocol):
    """One connection, one response at a time. httptools calls the ``on_*`` methods."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        self._active = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._until_eof = False
        self._keep_alive = False
        self._error: BaseException | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for: this connection cannot be trusted
            self.lost = True
            if self.transport is not None:
                self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenResponse(f"malformed HTTP response from upstream: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._active and not self._complete:
            if exc is None and self._status and self._until_eof:
                self.on_message_complete()  # a body delimited by the end of the connection
            else:
                self._fail(exc or BrokenResponse("upstream closed the connection"))

    # -- httptools callbacks --------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()  # not reliable once complete
        names = {name.lower() for name, _ in self._headers}
        self._until_eof = (
            b"content-length" not in names
            and b"transfer-encoding" not in names
            and self._status >= 200
            and self._status not in (204, 304)
        )
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._notify()

    def on_message_complete(self) -> None:
        self._complete = True
        self._notify()

    # -- the request side -----------------------------------------------------------------
    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
        if self._wake is not None and not self._wake.done():
            self._wake.set_exception(exc)

    def start(self, data: bytes) -> asyncio.Future[None]:
        """Send a request; the returned future resolves when the response head is in."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._active = True
        self._status = 0
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._until_eof = False
        self._keep_alive = False
        self._error = None
        self._head = loop.create_future()
        self._wake = None
        self.transport.write(data)
        return self._head

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= _HIGH_WATER // 2:
                    self._paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                return chunk
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None

    def finished(self) -> bool:
        """True when the response was read to its end and the connection can serve another."""
        return (
            self._complete
            and not self.lost
            and self._error is None
            and self._keep_alive
            and not self._until_eof
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def reset(self) -> None:
        self._active = False
        self._head = None
        self._wake = None
        self._chunks.clear()
        self._buffered = 0
        self.parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        self.lost = True
        self._active = False
        if self.transport is not None:
            self.transport.close()


class Response:
    """A response whose head has arrived; read the body with :meth:`read` or :meth:`iter`.

    Exactly one of: read the body to the end (the connection goes back to the pool), or
    :meth:`close` (the connection is closed)."""

    def __init__(self, pool: Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status = conn._status
        headers: dict[str, str] = {}
        for name, value in conn._headers:
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self.headers = headers
        encoding = headers.get("content-encoding", "").strip().lower()
        self._decoder: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()

    async def _raw_chunk(self, timeout_s: float | None) -> bytes | None:
        conn = self._conn
        if conn is None:
            return None
        if timeout_s is None:
            chunk = await conn.next_chunk()
        else:
            async with asyncio.timeout(timeout_s):
                chunk = await conn.next_chunk()
        if chunk is None:
            self._done()
        return chunk

    def _decode(self, chunk: bytes, final: bool = False) -> bytes:
        if self._decoder is None:
            return chunk
        try:
            out = bytes(self._decoder.decompress(chunk))
            if final:
                out += self._decoder.flush()
        except zlib.error as exc:
            raise BrokenResponse(f"upstream sent a body that does not decompress: {exc}") from exc
        return out

    async def iter(self, read_timeout_s: float | None) -> AsyncIterator[bytes]:
        """The body as it arrives; each piece must come within ``read_timeout_s``."""
        try:
            while True:
                chunk = await self._raw_chunk(read_timeout_s)
                if chunk is None:
                    tail = self._decode(b"", final=True) if self._decoder is not None else b""
                    if tail:
                        yield tail
                    return
                data = self._decode(chunk)
                if data:
                    yield data
        finally:
            self.close()

    async def read(self, timeout_s: float | None = None) -> bytes:
        """The whole body, within ``timeout_s``."""
        conn = self._conn
        parts: list[bytes] = []
        try:
            if conn is not None:
                while conn._chunks:  # what already arrived (often all of it): no waiting
                    parts.append(conn._chunks.popleft())
                conn._buffered = 0
                if conn._paused and conn.transport is not None:
                    conn._paused = False
                    conn.transport.resume_reading()
                if conn._complete:
                    self._done()
                elif conn._error is not None:
                    raise conn._error
                else:
                    async with asyncio.timeout(timeout_s):
                        while (chunk := await conn.next_chunk()) is not None:
                            parts.append(chunk)
                    self._done()
        finally:
            self.close()
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._decode(body, final=True)

    def _done(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    def close(self) -> None:
        """Give up on the rest of the body (closes the connection); no-op once read."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Pool:
    """Keep-alive connections to one origin (``http://`` or ``https://``)."""

    def __init__(
        self, base_url: str, *, connect_timeout_s: float = 5.0, keepalive_s: float = 30.0
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port][/path]: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == default else f"{host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None
        self._idle: list[_Connection] = []
        self._closed = False

    def request_head(self, path: str, headers: Mapping[str, str], length: int) -> bytes:
        lines = [f"POST {self.prefix}{path} HTTP/1.1\r\nhost: {self.authority}\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"content-length: {length}\r\n\r\n")
        return "".join(lines).encode("utf-8")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, conn = await loop.create_connection(
                _Connection,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self.tls else None,
            )
        return conn

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            transport = conn.transport
            if conn.lost or transport is None or transport.is_closing():
                continue
            if now - conn.idle_since > self.keepalive_s:
                conn.close()
                continue
            return conn
        return None

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str], head_timeout_s: float | None
    ) -> Response:
        """Send the request; return once the response head arrived (within
        ``head_timeout_s``, counting the connect)."""
        if self._closed:
            raise ConnectionError("the upstream client is closed")
        data = self.request_head(path, headers, len(body)) + body
        conn = self._take_idle()
        try:
            async with asyncio.timeout(head_timeout_s):
                if conn is None:
                    conn = await self._connect()
                await conn.start(data)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return Response(self, conn)

    def release(self, conn: _Connection) -> None:
        if self._closed or not conn.finished() or len(self._idle) >= _IDLE_LIMIT:
            conn.close()
            return
        conn.reset()
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if idle:
            await asyncio.sleep(0)  # let the transports finish closing
