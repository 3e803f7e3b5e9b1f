"""A small HTTP/1.1 client for the one upstream the gateway talks to: a bounded pool of
keep-alive connections (plain TCP or TLS, directly or through an HTTP proxy), requests written
in one call, responses parsed by httptools (the C parser uvicorn uses), bodies delivered as
they arrive.

Why not aiohttp: profiled under load, its generic client (multidict headers, tracing hooks,
timer handles, payload objects) cost ~75 µs of CPU per request, the largest single item on the
gateway's hot path. This client does the same job for one origin in a fraction of that. What it
does not do, on purpose: redirects (a 3xx is returned to the caller like any other status),
cookies, compression other than gzip/deflate replies (it never asks for compression; a
compressed reply is decoded, any other content-encoding is an error).

Everything the upstream controls is bounded (:class:`Limits`): the response head (bytes and
header count, enforced while parsing, so 200 MB of headers are refused after the first 64 KiB;
header values with control bytes other than tab are refused by llhttp's strict parsing),
the decoded body of a reply read whole (a gzip bomb is decompressed incrementally and never
allocates more than the limit plus one slice), the decoded bytes of a stream, and the time
(each read within a stall timeout, a whole exchange within a deadline). Decompression runs in
slices of at most :data:`SLICE` output bytes and yields to the event loop between megabytes, so
one reply never blocks the loop for long.

Connections per origin are capped (``max_connections``): requests beyond the cap wait in FIFO
order within their own head timeout, then fail with :class:`PoolTimeout`.

Proxies (:class:`Proxy`, :func:`proxy_for`): an ``https://`` origin is reached through a
``CONNECT`` tunnel, then TLS to the origin; an ``http://`` origin through an absolute-form
request to the proxy. Proxy credentials are sent as ``Proxy-Authorization`` and never appear in
a message or a ``repr``.

Errors: :class:`OSError` (and its :class:`ConnectionError` subclasses) when the connection
fails or breaks; :class:`BrokenResponse` (a ``ConnectionError``) when the upstream sent bytes
that are not acceptable HTTP, with ``kind == "bad_response"`` when it broke the protocol or a
limit (:class:`ResponseTooLarge`), ``"connection_error"`` when it just closed;
:class:`TimeoutError` when a time limit passed (:class:`ReadStalled`, :class:`DeadlineExceeded`,
:class:`PoolTimeout` say which). A request is never retried here; the engine decides.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ipaddress
import re
import ssl
import time
import zlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import httptools

from tierwise.gateway.buffers import HELD, BufferCapExceeded

_IDLE_LIMIT = 256  # idle connections kept for reuse
_HIGH_WATER = 1 << 20  # buffered body bytes before reading from the socket pauses
SLICE = 64 * 1024  # most decoded bytes produced by one decompression step
_YIELD_EVERY = 256 * 1024  # body bytes handed out between two turns of the event loop
# A read this large means the socket had a backlog: the connection reads no more in this turn
# of the event loop (libuv would read up to 32 times in a row, 8 MiB, and a 50 MB SSE line or
# a JSON reply read whole then holds the loop for tens of milliseconds per connection).
_TURN_READ = 64 * 1024
# Pool default: each concurrent stream holds one upstream connection for its whole duration
# (10-60 s), and issue 16 asks one worker to hold 5,000 of them; 8,192 is above that with
# room, and still a bound (two file descriptors per stream: raise ``ulimit -n`` accordingly).
DEFAULT_MAX_CONNECTIONS = 8192


@dataclass(frozen=True, slots=True)
class Limits:
    """What one response may cost. Sizes in bytes.

    ``max_header_bytes``: the response head(s), status lines included (interim 1xx heads
    count too). ``max_headers``: header lines in the final head. ``max_body_bytes``: the
    *decoded* body of a reply read whole (:meth:`Response.read`). ``max_stream_bytes``: the
    decoded bytes of a body read as it arrives (:meth:`Response.iter`); generous, since a long
    answer with thinking is tens of MB of SSE at most, and the deadline bounds it too.
    """

    max_header_bytes: int = 64 * 1024
    max_headers: int = 128
    max_body_bytes: int = 32 * 1024 * 1024
    max_stream_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "max_body_bytes", "max_stream_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


class BrokenResponse(ConnectionError):
    """The upstream closed the connection or sent bytes that are not acceptable HTTP.

    ``kind``: ``"connection_error"`` (it closed early) or ``"bad_response"`` (it broke the
    protocol or one of the :class:`Limits`)."""

    def __init__(self, message: str, kind: str = "bad_response") -> None:
        super().__init__(message)
        self.kind = kind


class ResponseTooLarge(BrokenResponse):
    """A response head, body or stream went over its limit."""


class ReadStalled(TimeoutError):
    """No bytes arrived within the read (stall) timeout."""


class DeadlineExceeded(TimeoutError):
    """The exchange's wall-clock deadline passed (bytes may still have been arriving)."""


class PoolTimeout(TimeoutError):
    """Every connection to the origin stayed busy for the whole wait."""


class ProxyError(ConnectionError):
    """The proxy refused or broke the tunnel (the message never carries credentials)."""


# -- the connection ------------------------------------------------------------------------


class _Violation(Exception):
    """Raised inside httptools callbacks to stop parsing at once (the cause is kept)."""

    def __init__(self, error: BrokenResponse) -> None:
        super().__init__(str(error))
        self.error = error


class _NoCallbacks:
    """A parser's protocol that wants nothing (for :data:`_SPENT_PARSER`)."""


_SPENT_PARSER = httptools.HttpResponseParser(_NoCallbacks())  # a lost connection's parser


class _Connection(asyncio.Protocol):
    """One connection, one response at a time. httptools calls the ``on_*`` methods."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        self.slot = False  # counts against the pool's max_connections
        self._active = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # bytes fed to the parser before the final head completed
        self._head_done = False
        self._interim = False  # parsing a 1xx interim response
        self._head: asyncio.Future[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._until_eof = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._pump: _Pump | None = None  # push mode: body pieces go straight to a sink
        self._feeding = False  # inside parser.feed_data (callbacks may run)
        self._turn_paused = False  # reading paused until the next turn of the loop (_TURN_READ)

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._active or self._complete or self._error is not None:
            # Bytes nobody asked for (or after the response): this connection cannot be trusted.
            self.close()
            return
        self._feeding = True
        try:
            if self._head_done:
                self.parser.feed_data(data)
            elif len(data) <= self.limits.max_header_bytes - self._head_bytes:
                self._head_bytes += len(data)  # the usual case: the head fits in one read
                self.parser.feed_data(data)
            else:
                self._feed_head(data)
        except _Violation as exc:
            self._fail(exc.error)
            self.close()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not self._complete:  # after a complete response, junk only spoils reuse
                error = cause.error if isinstance(cause, _Violation) else None
                self._fail(error or BrokenResponse(f"malformed HTTP response: {cause}"))
            self.close()
        except httptools.HttpParserUpgrade:
            self._fail(BrokenResponse("upstream switched protocols (101), which was not asked"))
            self.close()
        except httptools.HttpParserError as exc:
            if not self._complete:
                self._fail(BrokenResponse(f"malformed HTTP response from upstream: {exc}"))
            self.close()
        finally:
            self._feeding = False
        self._after_read(len(data))

    def _after_read(self, size: int) -> None:
        pump = self._pump
        if pump is not None:
            pump.flush()  # everything this read brought, to the sink in one go
        transport = self.transport
        if size < _TURN_READ or self._turn_paused or transport is None:
            return
        if not transport.is_closing():  # no more reads in this turn of the loop (_TURN_READ)
            self._turn_paused = True
            transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """Read again after a turn of the loop (:data:`_TURN_READ`), unless a pause of its
        own (a full buffer, a slow consumer) holds the connection."""
        self._turn_paused = False
        transport, pump = self.transport, self._pump
        if self._paused or (pump is not None and pump.paused) or transport is None:
            return
        if not transport.is_closing():
            transport.resume_reading()

    def _feed_head(self, data: bytes) -> None:
        """Feed bytes while the head is incomplete, never more than the head limit allows
        (httptools buffers a header line until it ends: 200 MB of one header must not be)."""
        room = self.limits.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self.parser.feed_data(data)
            return
        self._head_bytes += room
        self.parser.feed_data(data[:room])
        if not self._head_done:
            limit = self.limits.max_header_bytes
            raise _Violation(
                ResponseTooLarge(f"upstream response head is larger than {limit} bytes")
            )
        self.parser.feed_data(data[room:])

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._active and not self._complete:
            if exc is None and self._head_done and self._until_eof:
                self.on_message_complete()  # a body delimited by the end of the connection
            else:
                message = "upstream closed the connection"
                if self._head_done:
                    message += " before the end of the body"
                self._fail(exc or BrokenResponse(message, "connection_error"))
        # The parser holds this protocol (its callbacks): a reference cycle per connection,
        # left to the garbage collector unless it is broken here. Nothing is parsed any more.
        self.parser = _SPENT_PARSER

    # -- httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._complete:
            raise _Violation(BrokenResponse("upstream sent bytes after the response"))

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= self.limits.max_headers:
            limit = self.limits.max_headers
            raise _Violation(ResponseTooLarge(f"upstream sent more than {limit} header lines"))
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _Violation(BrokenResponse("upstream switched protocols (101), not asked"))
            self._interim = True  # 100 Continue, 103 Early Hints: wait for the final head
            self._headers = []
            return
        self._status = status
        self._head_done = True
        self._keep_alive = self.parser.should_keep_alive()  # not reliable once complete
        framing = False
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                framing = True
            elif lowered == b"transfer-encoding":
                framing = True
                if value.strip().lower() != b"chunked":
                    shown = value.decode("latin-1")[:64]
                    raise _Violation(BrokenResponse(f"unsupported transfer-encoding {shown!r}"))
        self._until_eof = not framing and status not in (204, 304)
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        pump = self._pump
        if pump is not None:
            pump.on_body(body)
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._notify()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        pump = self._pump
        if pump is not None:
            pump.end(None)
            return
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
        pump = self._pump
        if pump is not None:
            pump.end(self._error)

    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def start(self, data: bytes) -> asyncio.Future[None]:
        """Send a request; the returned future resolves when the response head is in."""
        if self.lost or self.transport is None:  # the pool hands out usable ones
            raise BrokenResponse(
                "upstream connection closed before the request", "connection_error"
            )
        loop = asyncio.get_running_loop()
        self._active = True
        self._status = 0
        self._headers = []
        self._head_bytes = 0
        self._head_done = False
        self._interim = False
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

    def pop_chunk(self) -> bytes | None:
        """A piece of the body that already arrived, if any (no waiting)."""
        if not self._chunks:
            return None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= _HIGH_WATER // 2:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        return chunk

    async def next_chunk(self, wait_s: float | None = None) -> bytes | None:
        """The next piece of the body, or None at its end; :class:`TimeoutError` when nothing
        came within ``wait_s`` (one timer handle per wait: ``asyncio.timeout`` cost ~10 µs of
        CPU per read, measured, the largest item of a relayed event)."""
        while True:
            chunk = self.pop_chunk()
            if chunk is not None:
                return chunk
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            wake = self._wake = loop.create_future()
            timer = None if wait_s is None else loop.call_later(wait_s, _expire, wake)
            try:
                await wake
            finally:
                self._wake = None
                if timer is not None:
                    timer.cancel()

    def finished(self) -> bool:
        """True when the response was read to its end and the connection can serve another."""
        return (
            self._complete
            and self._error is None
            and self._keep_alive
            and not self._until_eof
            and self.usable()
        )

    def reset(self) -> None:
        self._pump = None
        self._active = False
        self._complete = False
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


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class BodySink(Protocol):
    """Where a pushed body goes (:meth:`Response.push`). Called from the connection's
    ``data_received``: must be quick, must not raise, and must not close the response."""

    def on_data(self, chunk: bytes) -> None:
        """A piece of the body (one HTTP chunk, or one socket read)."""

    def on_flush(self) -> None:
        """The end of one socket read: every piece it brought was given to ``on_data``."""

    def on_end(self, error: BaseException | None) -> None:
        """The body ended (None) or failed (the error: :class:`ReadStalled`,
        :class:`DeadlineExceeded`, :class:`ResponseTooLarge`, a broken connection). Called
        once, after which nothing more arrives."""


class _Pump:
    """Push mode of one response body: pieces go to a sink as the parser produces them, with
    one watchdog timer per stream for the stall timeout and the deadline (re-armed only when
    it fires, never per read) and the stream's size limit."""

    __slots__ = (
        "complete",
        "conn",
        "data",
        "deadline",
        "ended",
        "flushed",
        "last",
        "limit",
        "paused",
        "response",
        "sink",
        "stall_s",
        "timer",
    )

    def __init__(
        self,
        response: Response,
        conn: _Connection,
        sink: BodySink,
        stall_s: float | None,
        deadline: float | None,
        limit: int,
    ) -> None:
        self.response = response
        self.conn = conn
        self.sink = sink
        self.data = sink.on_data  # bound once: called for every piece
        self.flushed = sink.on_flush
        self.stall_s = stall_s
        self.deadline = deadline
        self.limit = limit
        self.last = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False
        self.ended = False
        self.complete = False  # the HTTP body ended cleanly (the connection can be reused)

    def arm(self) -> None:
        """(Re-)schedule the watchdog at the earlier of the stall and the deadline."""
        at = None if self.stall_s is None else self.last + self.stall_s
        if self.deadline is not None and (at is None or self.deadline < at):
            at = self.deadline
        if at is not None:
            delay = max(at - time.monotonic(), 0.0)
            self.timer = asyncio.get_running_loop().call_later(delay, self.check)

    def check(self) -> None:
        self.timer = None
        if self.ended:
            return
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            self.fail(DeadlineExceeded("upstream exchange passed its deadline"))
            return
        if self.paused:  # the sink asked for a pause: not the upstream's stall
            self.last = now
        elif self.stall_s is not None and now - self.last >= self.stall_s:
            self.fail(ReadStalled(f"upstream sent nothing for {self.stall_s:g}s"))
            return
        self.arm()

    def on_body(self, body: bytes) -> None:
        if self.ended:
            return
        self.last = time.monotonic()
        response = self.response
        streamed = response._streamed = response._streamed + len(body)
        if streamed > self.limit:
            self.fail(ResponseTooLarge(f"upstream stream is larger than {self.limit} bytes"))
            return
        self.data(body)

    def flush(self) -> None:
        if not self.ended:
            self.flushed()

    def fail(self, error: BaseException) -> None:
        """End the stream with ``error`` and close the connection (it cannot be reused)."""
        if self.ended:
            return
        self.conn.close()
        self.end(error)

    def end(self, error: BaseException | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.complete = error is None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.flushed()
        self.sink.on_end(error)

    def stop(self) -> None:
        """Nothing more to the sink (the response is being closed)."""
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.conn._pump is self:
            self.conn._pump = None


# -- decoding ------------------------------------------------------------------------------


class _Decoder:
    """Incremental gzip/deflate decoding in bounded steps (``max_length`` and
    ``unconsumed_tail``): a bomb never produces more than one slice per call."""

    def __init__(self, gzip: bool) -> None:
        self._wbits = 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS
        self._obj = zlib.decompressobj(self._wbits)
        self._input = b""

    def push(self, data: bytes) -> None:
        self._input = self._input + data if self._input else data

    def pull(self, size: int) -> bytes:
        """Up to ``size`` decoded bytes; b"" when the pushed input is used up."""
        out = b""
        while not out and self._input:
            if self._obj.eof:
                if self._wbits == zlib.MAX_WBITS:
                    raise BrokenResponse("upstream sent data after the end of its deflate body")
                self._obj = zlib.decompressobj(self._wbits)  # another gzip member
            try:
                out = self._obj.decompress(self._input, size)
            except zlib.error as exc:
                raise BrokenResponse(f"upstream body does not decompress: {exc}") from exc
            self._input = self._obj.unused_data if self._obj.eof else self._obj.unconsumed_tail
        return out

    def finish(self) -> None:
        if not self._obj.eof or self._input:
            raise BrokenResponse("upstream compressed body is truncated")


def _decoder_for(headers: Mapping[str, str]) -> _Decoder | None:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return _Decoder(gzip=True)
    if encoding == "deflate":
        return _Decoder(gzip=False)
    raise BrokenResponse(f"upstream used an unsupported content-encoding {encoding[:64]!r}")


def _wait_s(stall_s: float | None, deadline: float | None) -> tuple[float | None, bool]:
    """How long the next read may wait, and whether the deadline (not the stall) sets it."""
    if deadline is None:
        return stall_s, False
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded("upstream exchange passed its deadline")
    if stall_s is None or remaining < stall_s:
        return remaining, True
    return stall_s, False


class Response:
    """A response whose head has arrived; read the body with :meth:`read` or :meth:`iter`.

    Exactly one of: read the body to the end (the connection goes back to the pool), or
    :meth:`close` (the connection is closed). Raises :class:`BrokenResponse` at once for a
    content-encoding it cannot decode."""

    def __init__(self, pool: Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.limits = conn.limits
        self.status = conn._status
        headers: dict[str, str] = {}
        for name, value in conn._headers:
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self.headers = headers
        self._streamed = 0  # body bytes handed out by next() and push()
        self._unyielded = 0  # of those, since the last turn given to the event loop
        self._pump: _Pump | None = None
        try:
            self._decoder = _decoder_for(headers)
        except BrokenResponse:
            self.close()
            raise

    @property
    def encoded(self) -> bool:
        """True when the body is compressed (read it with :meth:`iter` or :meth:`read`)."""
        return self._decoder is not None

    async def _raw_chunk(self, stall_s: float | None, deadline: float | None) -> bytes | None:
        conn = self._conn
        if conn is None:
            return None
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("upstream exchange passed its deadline")
        chunk = conn.pop_chunk()  # already here: no timer needed
        if chunk is None and not conn._complete:
            wait_s, by_deadline = _wait_s(stall_s, deadline)
            try:
                chunk = await conn.next_chunk(wait_s)
            except TimeoutError as exc:
                if isinstance(exc, DeadlineExceeded | ReadStalled | PoolTimeout):
                    raise
                if by_deadline:
                    raise DeadlineExceeded("upstream exchange passed its deadline") from exc
                raise ReadStalled(f"upstream sent nothing for {stall_s:g}s") from exc
        if chunk is None:
            self._done()
        return chunk

    async def next(
        self, stall_s: float | None, *, deadline: float | None = None, max_bytes: int | None = None
    ) -> bytes | None:
        """The next piece of an uncompressed body as it arrives (None at its end), with the
        limits of :meth:`iter`; the connection goes back to the pool at the end. The same
        body can then be switched to :meth:`push`."""
        if self._decoder is not None:
            raise ValueError("a compressed body is read with iter()")
        limit = self.limits.max_stream_bytes if max_bytes is None else max_bytes
        try:
            chunk = await self._raw_chunk(stall_s, deadline)
        except BaseException:
            self.close()
            raise
        if chunk is None:
            return None
        self._streamed += len(chunk)
        if self._streamed > limit:
            self.close()
            raise ResponseTooLarge(f"upstream stream is larger than {limit} bytes")
        self._unyielded += len(chunk)
        if self._unyielded >= _YIELD_EVERY:  # a backlog comes without waits: let others run
            self._unyielded = 0
            await asyncio.sleep(0)
        return chunk

    def push(
        self,
        sink: BodySink,
        stall_s: float | None,
        *,
        deadline: float | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Deliver the rest of an uncompressed body to ``sink`` as the connection receives it,
        with no task, future or timer per piece: what is already buffered at once, then from
        the connection's ``data_received``. The limits are those of :meth:`iter` (a stall
        counts only while the sink has not paused reading). End it with :meth:`close`, which
        returns the connection to the pool if the body ended cleanly."""
        if self._decoder is not None:
            raise ValueError("a compressed body is read with iter()")
        if self._pump is not None:
            raise RuntimeError("the body is already being pushed")
        limit = self.limits.max_stream_bytes if max_bytes is None else max_bytes
        conn = self._conn
        if conn is None:  # already read to its end
            sink.on_end(None)
            return
        pump = self._pump = _Pump(self, conn, sink, stall_s, deadline, limit)
        while (chunk := conn.pop_chunk()) is not None:
            pump.on_body(chunk)
        if pump.ended:
            return
        if conn._error is not None:
            pump.end(conn._error)
        elif conn._complete:
            pump.end(None)
        elif deadline is not None and time.monotonic() >= deadline:
            pump.fail(DeadlineExceeded("upstream exchange passed its deadline"))
        else:
            conn._pump = pump
            pump.flush()
            pump.arm()

    def pause(self) -> None:
        """Push mode: stop reading from the upstream (the sink's consumer is slow)."""
        pump, conn = self._pump, self._conn
        if pump is not None and not pump.paused and conn is not None:
            pump.paused = True
            if conn.transport is not None:
                conn.transport.pause_reading()

    def resume(self) -> None:
        pump, conn = self._pump, self._conn
        if pump is not None and pump.paused and conn is not None:
            pump.paused = False
            pump.last = time.monotonic()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()

    async def iter(
        self,
        read_timeout_s: float | None,
        *,
        deadline: float | None = None,
        max_bytes: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The decoded body as it arrives, in pieces of at most one socket read (or
        :data:`SLICE` bytes when decompressing). Each piece must come within
        ``read_timeout_s``; the whole body before ``deadline`` (a :func:`time.monotonic`
        instant), even when bytes keep coming; at most ``max_bytes`` decoded bytes (default:
        ``limits.max_stream_bytes``)."""
        limit = self.limits.max_stream_bytes if max_bytes is None else max_bytes
        decoder = self._decoder
        total = 0
        next_yield = _YIELD_EVERY  # bytes handed out before the loop must get a turn
        try:
            while True:
                chunk = await self._raw_chunk(read_timeout_s, deadline)
                if chunk is None:
                    if decoder is not None:
                        decoder.finish()
                    return
                if decoder is None:
                    total += len(chunk)
                    if total > limit:
                        raise ResponseTooLarge(f"upstream stream is larger than {limit} bytes")
                    yield chunk
                else:
                    decoder.push(chunk)
                    while piece := decoder.pull(SLICE):
                        total += len(piece)
                        if total > limit:
                            raise ResponseTooLarge(f"upstream stream is larger than {limit} bytes")
                        yield piece
                        if total >= next_yield:
                            # Decoded bytes come with no wait at all (a bomb's 1 KB is 1 MB):
                            # the loop gets a turn after every slice, so that the consumer's
                            # work on it (an SSE relay: ~1,500 events per 256 KiB) is paid in
                            # small steps and a health check is not kept waiting.
                            next_yield = total + SLICE
                            await asyncio.sleep(0)
                            if deadline is not None and time.monotonic() >= deadline:
                                raise DeadlineExceeded("upstream exchange passed its deadline")
                # Bytes that were already buffered come without a wait (a compressed backlog
                # can be a GiB decoded): give the loop a turn every _YIELD_EVERY bytes anyway.
                if total >= next_yield:
                    next_yield = total + _YIELD_EVERY
                    await asyncio.sleep(0)
        finally:
            self.close()

    async def read(
        self,
        timeout_s: float | None = None,
        *,
        deadline: float | None = None,
        max_bytes: int | None = None,
    ) -> bytes:
        """The whole decoded body, within ``timeout_s`` (and before ``deadline``), at most
        ``max_bytes`` decoded bytes (default: ``limits.max_body_bytes``); over the limit it
        raises :class:`ResponseTooLarge` without reading or decoding the rest."""
        limit = self.limits.max_body_bytes if max_bytes is None else max_bytes
        if timeout_s is not None:
            ends = time.monotonic() + timeout_s
            deadline = ends if deadline is None else min(deadline, ends)
        conn = self._conn
        if conn is None:
            return b""
        length = self.headers.get("content-length", "")
        if self._decoder is None and length.isdigit() and int(length) > limit:
            self.close()
            raise ResponseTooLarge(f"upstream body is larger than {limit} bytes ({length})")
        if self._decoder is None and conn._complete and conn._buffered <= limit:
            parts = []  # all of it is here (the usual case): no waiting, no timer
            while (chunk := conn.pop_chunk()) is not None:
                parts.append(chunk)
            self._done()
        else:
            parts = await self._read_parts(limit, deadline)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _read_parts(self, limit: int, deadline: float | None) -> list[bytes]:
        """The decoded parts of the body, counted against the process-wide cap on bytes held
        (:data:`tierwise.gateway.buffers.HELD`) while they are read."""
        parts: list[bytes] = []
        size = 0
        held = HELD
        complete = False
        try:
            if self._decoder is None:
                while (chunk := await self._raw_chunk(None, deadline)) is not None:
                    size += len(chunk)
                    if size > limit:
                        raise ResponseTooLarge(f"upstream body is larger than {limit} bytes")
                    held.take(len(chunk))
                    parts.append(chunk)
            else:
                async for piece in self.iter(None, deadline=deadline, max_bytes=limit):
                    held.take(len(piece))
                    parts.append(piece)
            complete = True
        except ResponseTooLarge as exc:
            if self._decoder is not None:  # the same limit, named for a reply read whole
                raise ResponseTooLarge(f"upstream body is larger than {limit} bytes") from exc
            raise
        except BufferCapExceeded as exc:
            raise ResponseTooLarge(str(exc)) from exc
        finally:
            held.give(sum(len(p) for p in parts))
            if not complete:
                # The exception's traceback keeps this frame (and would keep ``parts``, up to
                # the body limit) alive as long as the request that failed: let the bytes go.
                parts.clear()
            self.close()
        return parts

    def _done(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    def close(self) -> None:
        """Give up on the rest of the body (closes the connection); no-op once read. A pushed
        body that ended cleanly returns its connection to the pool instead."""
        conn, self._conn = self._conn, None
        pump = self._pump
        if pump is not None:
            pump.stop()
        if conn is None:
            return
        if pump is not None and pump.complete and not conn._feeding:
            self._pool.release(conn)
        else:
            self._pool.discard(conn)


# -- proxies -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy (``http://[user:password@]host[:port]``). ``authorization`` is the
    ``Proxy-Authorization`` value, kept out of ``repr`` and every message."""

    host: str
    port: int
    authorization: str | None = None

    def __repr__(self) -> str:
        auth = ", with credentials" if self.authorization else ""
        return f"Proxy({self.display}{auth})"

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Parse a proxy URL; a bare ``host:port`` means ``http://``. Raises ValueError (the
        message never repeats credentials)."""
        text = url.strip()
        if "://" not in text:
            text = "http://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ValueError("proxy URL is not valid (expected http://host:port)") from exc
        if parts.scheme.lower() != "http":
            raise ValueError(
                f"proxy scheme {parts.scheme!r} is not supported: only http:// proxies "
                "(an https upstream is still TLS end to end, through a CONNECT tunnel)"
            )
        if not parts.hostname:
            raise ValueError("proxy URL has no host (expected http://host:port)")
        authorization = None
        if parts.username is not None or parts.password is not None:
            user = unquote(parts.username or "")
            password = unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            authorization = f"Basic {token}"
        return cls(parts.hostname, port or 80, authorization)


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port`` / ``[v6]:port`` → (host, port); anything else → (entry, None)."""
    if entry.startswith("["):
        end = entry.find("]")
        if end > 0:
            tail = entry[end + 1 :]
            port = int(tail[1:]) if tail.startswith(":") and tail[1:].isdigit() else None
            return entry[1:end], port
        return entry, None
    if entry.count(":") == 1:
        name, _, digits = entry.partition(":")
        if digits.isdigit():
            return name, int(digits)
    return entry, None


def _entry_matches(
    entry: str, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> bool:
    if "/" in entry:  # a CIDR block
        try:
            return address is not None and address in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    entry = entry.lstrip("*").lstrip(".").rstrip(".")
    if not entry:
        return False
    if address is not None:
        try:
            return ipaddress.ip_address(entry) == address
        except ValueError:
            return False
    return host == entry or host.endswith("." + entry)


def _no_proxy_match(host: str, port: int, no_proxy: str) -> bool:
    """``NO_PROXY`` semantics (as curl and requests): comma- or space-separated entries;
    ``*`` matches everything; ``example.com`` / ``.example.com`` match the domain and its
    subdomains; an IP address or a CIDR block matches addresses; ``entry:port`` only that port."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in re.split(r"[,\s]+", no_proxy.lower()):
        if raw == "*":
            return True
        if not raw:
            continue
        entry, entry_port = _split_port(raw)
        if entry_port is not None and entry_port != port:
            continue
        if _entry_matches(entry, host, address):
            return True
    return False


def proxy_for(
    url: str,
    environ: Mapping[str, str],
    *,
    proxy: str | None = None,
    no_proxy: str | None = None,
) -> Proxy | None:
    """The proxy to reach ``url`` through, or None for a direct connection.

    ``proxy``/``no_proxy`` (configuration) win over the environment; ``proxy=""`` means no
    proxy. Otherwise ``https_proxy``/``HTTPS_PROXY`` for an ``https://`` URL, ``http_proxy``/
    ``HTTP_PROXY`` for ``http://`` (lower case first, as curl), unless the host matches
    ``no_proxy``/``NO_PROXY``. Read once, at start-up, from the mapping given."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    if proxy is None:
        names = (
            ("https_proxy", "HTTPS_PROXY") if scheme == "https" else ("http_proxy", "HTTP_PROXY")
        )
        proxy = next((environ[n] for n in names if environ.get(n)), "")
    if not proxy.strip():
        return None
    if no_proxy is None:
        no_proxy = next((environ[n] for n in ("no_proxy", "NO_PROXY") if environ.get(n)), "")
    if no_proxy and _no_proxy_match(host, port, no_proxy):
        return None
    return Proxy.parse(proxy)


class _Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT`` (bounded), before TLS takes the socket over."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.done.done():  # bytes before TLS started: the tunnel is not clean
            self._finish(ProxyError("proxy sent data before the TLS handshake"))
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            if end + 4 != len(self.buffer):
                self._finish(ProxyError("proxy sent data before the TLS handshake"))
            else:
                self.done.set_result(bytes(self.buffer[:end]))
        elif len(self.buffer) > self.max_bytes:
            self._finish(ProxyError(f"proxy response head is larger than {self.max_bytes} bytes"))

    def _finish(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ProxyError("proxy closed the connection during CONNECT"))


# -- the pool ------------------------------------------------------------------------------


class Pool:
    """Keep-alive connections to one origin (``http://`` or ``https://``), at most
    ``max_connections`` at once; requests beyond wait in FIFO order."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 5.0,
        keepalive_s: float = 30.0,
        limits: Limits | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_idle: int = _IDLE_LIMIT,
        ssl_context: ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port][/path]: {base_url!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == default else f"{host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.limits = limits or Limits()
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.proxy = proxy
        self._ssl: ssl.SSLContext | None = None
        if self.tls:
            self._ssl = ssl_context or ssl.create_default_context()
        # An http:// origin through a proxy: absolute-form requests to the proxy.
        self._forward = proxy is not None and not self.tls
        self._target = f"http://{self.authority}{self.prefix}" if self._forward else self.prefix
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or being opened (each holds a slot)
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._closed = False

    def stats(self) -> dict[str, int]:
        """Connections open (busy + idle), idle, and requests waiting for one."""
        waiting = sum(1 for w in self._waiters if not w.done())
        return {"open": self._open, "idle": len(self._idle), "waiting": waiting}

    def request_head(self, path: str, headers: Mapping[str, str], length: int) -> bytes:
        lines = [f"POST {self._target}{path} HTTP/1.1\r\nhost: {self.authority}\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}\r\n")
        if self._forward and self.proxy is not None and self.proxy.authorization:
            lines.append(f"proxy-authorization: {self.proxy.authorization}\r\n")
        lines.append(f"content-length: {length}\r\n\r\n")
        return "".join(lines).encode("utf-8")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        limits = self.limits
        async with asyncio.timeout(self.connect_timeout_s):
            if self.proxy is None:
                _, conn = await loop.create_connection(
                    lambda: _Connection(limits),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self.tls else None,
                )
                return conn
            if self._forward:
                _, conn = await loop.create_connection(
                    lambda: _Connection(limits), self.proxy.host, self.proxy.port
                )
                return conn
            return await self._tunnel(self.proxy)

    async def _tunnel(self, proxy: Proxy) -> _Connection:
        """CONNECT through ``proxy``, then TLS to the origin over the tunnel."""
        loop = asyncio.get_running_loop()
        try:
            transport, tunnel = await loop.create_connection(
                lambda: _Tunnel(self.limits.max_header_bytes), proxy.host, proxy.port
            )
        except OSError as exc:
            raise ProxyError(f"cannot reach proxy {proxy.display}: {exc.strerror or exc}") from exc
        try:
            host = f"[{self.host}]" if ":" in self.host else self.host
            target = f"{host}:{self.port}"
            lines = [f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n"]
            if proxy.authorization:
                lines.append(f"proxy-authorization: {proxy.authorization}\r\n")
            lines.append("\r\n")
            transport.write("".join(lines).encode("utf-8"))
            head = await tunnel.done
            status_line = head.split(b"\r\n", 1)[0]
            fields = status_line.split(b" ", 2)
            code = int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else 0
            if not (fields[0].startswith(b"HTTP/1.") and 200 <= code < 300):
                reason = fields[2].decode("latin-1", "replace")[:80] if len(fields) > 2 else ""
                shown = f"{code} {reason}".strip() if code else "a malformed reply"
                hint = " (proxy authentication required)" if code == 407 else ""
                raise ProxyError(
                    f"proxy {proxy.display} refused CONNECT to {target}: {shown}{hint}"
                )
            conn = _Connection(self.limits)
            assert self._ssl is not None
            tls = await loop.start_tls(transport, conn, self._ssl, server_hostname=self.host)
            if tls is None:
                raise ProxyError(f"TLS over the proxy {proxy.display} tunnel did not start")
            conn.connection_made(tls)
            return conn
        except BaseException:
            transport.close()
            raise

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable():
                self.discard(conn)
                continue
            if now - conn.idle_since > self.keepalive_s:
                self.discard(conn)
                continue
            return conn
        return None

    def _wake_next(self, conn: _Connection | None) -> bool:
        """Hand ``conn`` (or, with None, a free slot) to the longest waiting request."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def _new_connection(self) -> _Connection:
        """Open a connection in a slot already counted in ``_open``."""
        try:
            conn = await self._connect()
        except BaseException:
            self._slot_freed()
            raise
        conn.slot = True
        return conn

    async def _acquire(self, queued: list[bool]) -> _Connection:
        conn = self._take_idle()
        if conn is not None:
            return conn
        while self._waiters and self._waiters[0].done():  # requests that gave up
            self._waiters.popleft()
        if self._open < self.max_connections and not self._waiters:
            self._open += 1
            return await self._new_connection()
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        queued[0] = True
        try:
            got = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed over as we gave up: pass on
                handed = waiter.result()
                if handed is None:
                    self._slot_freed()
                else:
                    self._keep(handed)
            raise
        if got is None:
            return await self._new_connection()
        if not got.usable():  # it died while handed over: open another in its slot
            got.slot = False
            got.close()
            return await self._new_connection()
        return got

    def _slot_freed(self) -> None:
        if not self._wake_next(None):
            self._open -= 1

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str], head_timeout_s: float | None
    ) -> Response:
        """Send the request; return once the response head arrived (within
        ``head_timeout_s``, counting the wait for a free connection and the connect)."""
        if self._closed:
            raise ConnectionError("the upstream client is closed")
        data = self.request_head(path, headers, len(body)) + body
        conn = self._take_idle()  # the usual case, without the coroutine of _acquire
        queued = [False]  # set when the request waited for a free connection
        try:
            async with asyncio.timeout(head_timeout_s):
                if conn is None:
                    conn = await self._acquire(queued)
                await conn.start(data)
        except TimeoutError as exc:
            if conn is not None:
                self.discard(conn)
            elif queued[0]:
                raise PoolTimeout(
                    f"no upstream connection became free within {head_timeout_s:g}s "
                    f"(all {self.max_connections} in use)"
                ) from exc
            raise
        except BaseException:
            if conn is not None:
                self.discard(conn)
            raise
        return Response(self, conn)

    def _keep(self, conn: _Connection) -> None:
        """A reusable connection: to the next waiter, else idle (bounded), else closed."""
        if self._closed:
            self.discard(conn)
            return
        if self._wake_next(conn):
            return
        if len(self._idle) >= self.max_idle:
            self.discard(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def release(self, conn: _Connection) -> None:
        """A response read to its end: keep the connection when it can serve another."""
        if not conn.finished():
            self.discard(conn)
            return
        conn.reset()
        self._keep(conn)

    def discard(self, conn: _Connection) -> None:
        """Close ``conn`` and give its slot to the next waiter."""
        conn.close()
        if conn.slot:
            conn.slot = False
            self._slot_freed()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self.discard(conn)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("the upstream client is closed"))
        if idle:
            await asyncio.sleep(0)  # let the transports finish closing
