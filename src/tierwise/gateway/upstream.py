"""Where the gateway sends requests: the Anthropic API over HTTP, or the simulator.

``HttpUpstream`` keeps a bounded pool of keep-alive connections (:mod:`tierwise.gateway.http1`,
through a proxy when configured) and forwards bodies as bytes (never re-encoded here), with
every size and time the upstream controls bounded. ``SimulatedUpstream`` answers in the same
wire format (JSON or SSE) from the offline simulator, for laptops with no key. Both raise
:class:`UpstreamError` when there is no usable reply (connection errors, timeouts, replies
that break HTTP or a limit); a reply with any status is returned as :class:`UpstreamReply`,
and only a 200 is a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from pydantic import SecretStr

from tierwise.errors import ConfigError
from tierwise.gateway.http1 import (
    DEFAULT_MAX_CONNECTIONS,
    BrokenResponse,
    DeadlineExceeded,
    Limits,
    Pool,
    PoolTimeout,
    Proxy,
    ProxyError,
    ReadStalled,
    Response,
    proxy_for,
)
from tierwise.gateway.sse import message_to_sse
from tierwise.providers.base import CallSpec
from tierwise.providers.simulated import estimate_input_tokens, simulate

if TYPE_CHECKING:
    from tierwise.config import Settings

MAX_ERROR_BODY_BYTES = 1024 * 1024  # a reply that is not a success: kept up to this, then cut


class UpstreamError(Exception):
    """No usable HTTP answer. ``kind``:

    - ``connection_error``: the connection failed, or broke before the reply was complete;
    - ``timeout_error``: no head in time, a stalled read, the exchange's deadline, or no free
      connection in the pool in time (the message says which);
    - ``bad_response``: the upstream broke HTTP or one of the limits (head size or count,
      decoded body or stream size, an unsupported content-encoding, a corrupt gzip body).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class UpstreamReply:
    """An upstream reply whose head arrived.

    For ``/v1/messages`` **only a 200 is a success**. Every other status (1xx never reaches
    here; 201-299, 3xx redirects, which are never followed, 4xx, 5xx) is an upstream error for
    the caller to handle, whatever the request asked: its body is in ``body``, bounded (at
    most :data:`MAX_ERROR_BODY_BYTES`, cut beyond). ``chunks`` is set only for a streamed
    request answered with 200: the decoded body as it arrives; iterating it raises
    :class:`UpstreamError` (a stall, the deadline, a broken connection, a limit). A
    non-streamed 200 has its whole decoded body (at most the body limit) in ``body``.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes | None = None  # the whole body (non-streaming, or any status but 200)
    chunks: AsyncIterator[bytes] | None = None  # a streamed 200's body, as it arrives
    _release: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True for the one success status of the Messages API, 200."""
        return self.status == 200

    async def read(self) -> bytes:
        if self.body is None and self.chunks is not None:
            self.body = b"".join([c async for c in self.chunks])
            self.chunks = None
        return self.body or b""

    def close(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class Upstream(Protocol):
    simulated: bool

    async def post(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
        timeout_s: float,
        deadline: float | None = None,
    ) -> UpstreamReply: ...

    async def aclose(self) -> None: ...


def _failure(exc: BaseException, phase: str, timeout_s: float) -> UpstreamError:
    """The :class:`UpstreamError` for an exception of the HTTP client. ``phase``: ``request``
    (until the head), ``reply`` (a body read whole) or ``stream``."""
    if isinstance(exc, PoolTimeout | ReadStalled | BrokenResponse | ProxyError):
        kind = exc.kind if isinstance(exc, BrokenResponse) else None
        if isinstance(exc, TimeoutError):
            kind = "timeout_error"
        return UpstreamError(kind or "connection_error", str(exc))
    if isinstance(exc, DeadlineExceeded):
        return UpstreamError("timeout_error", f"upstream {phase} cut at the exchange's deadline")
    if isinstance(exc, TimeoutError):
        what = "no response head" if phase == "request" else f"the {phase} was not complete"
        return UpstreamError("timeout_error", f"upstream timed out: {what} within {timeout_s:g}s")
    if phase == "request":
        return UpstreamError("connection_error", f"cannot reach upstream: {type(exc).__name__}")
    return UpstreamError("connection_error", f"upstream {phase} broke: {type(exc).__name__}")


class HttpUpstream:
    """The real API (or anything wire-compatible) at ``base_url``, over a bounded pool of
    keep-alive connections (:mod:`tierwise.gateway.http1`), optionally through a proxy."""

    simulated = False

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout_s: float = 5.0,
        limits: Limits | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        proxy: Proxy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self.limits = limits or Limits()
        self.max_connections = max_connections
        self.proxy = proxy
        self._ssl_context = ssl_context
        self._pool: Pool | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        environ: Mapping[str, str],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> HttpUpstream:
        """The upstream client the gateway's settings describe. ``environ`` (read once, here)
        supplies ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` unless the settings set them.
        Raises :class:`ConfigError` for a proxy URL it cannot use."""
        gw = settings.gateway
        if settings.provider.api_key is None:
            raise ConfigError("provider.api_key is needed to call the upstream API")
        base_url = settings.provider.base_url or "https://api.anthropic.com"
        value: Any = gw.upstream_proxy  # a SecretStr (a plain str if set by code unvalidated)
        configured: str | None = value.get_secret_value() if isinstance(value, SecretStr) else value
        try:
            proxy = proxy_for(base_url, environ, proxy=configured, no_proxy=gw.upstream_no_proxy)
        except ValueError as exc:
            where = "gateway.upstream_proxy" if configured is not None else "HTTPS_PROXY"
            raise ConfigError(f"{where}: {exc}") from exc
        limits = Limits(
            max_header_bytes=gw.upstream_max_header_bytes,
            max_headers=gw.upstream_max_headers,
            max_body_bytes=gw.upstream_max_body_bytes,
            max_stream_bytes=gw.upstream_max_stream_bytes,
        )
        return cls(
            base_url,
            settings.provider.api_key.get_secret_value(),
            connect_timeout_s=gw.connect_timeout_s,
            limits=limits,
            max_connections=gw.upstream_max_connections,
            proxy=proxy,
            ssl_context=ssl_context,
        )

    def _client(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(
                self._base,
                connect_timeout_s=self._connect_timeout_s,
                limits=self.limits,
                max_connections=self.max_connections,
                ssl_context=self._ssl_context,
                proxy=self.proxy,
            )
        return self._pool

    def stats(self) -> dict[str, int]:
        """Upstream connections open and idle, and requests waiting for one."""
        if self._pool is None:
            return {"open": 0, "idle": 0, "waiting": 0}
        return self._pool.stats()

    async def post(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
        timeout_s: float,
        deadline: float | None = None,
    ) -> UpstreamReply:
        """Send one request.

        ``timeout_s``: the response head must arrive within it (counting the wait for a free
        connection and the connect); a non-streamed reply must be complete within it; each
        read of a stream must bring bytes within it (a stall). ``deadline``: a
        :func:`time.monotonic` instant that ends the whole exchange, the streamed body
        included, even while bytes keep coming. Raises :class:`UpstreamError`."""
        pool = self._client()
        send_headers = {**headers, "x-api-key": self._api_key, "content-type": "application/json"}
        started = time.monotonic()
        ends = started + timeout_s if deadline is None else min(deadline, started + timeout_s)
        head_s = ends - started
        if head_s <= 0:
            raise UpstreamError("timeout_error", "no time left for an upstream attempt")
        try:
            response = await pool.post(path, body, send_headers, head_s)
        except (OSError, TimeoutError) as exc:
            raise _failure(exc, "request", head_s) from exc
        if not stream or response.status != 200:
            limit = None if response.status == 200 else MAX_ERROR_BODY_BYTES
            try:
                if limit is None:
                    data = await response.read(deadline=ends)
                else:
                    data = await _read_cut(response, ends, limit)
            except (OSError, TimeoutError) as exc:
                response.close()
                raise _failure(exc, "reply", head_s) from exc
            return UpstreamReply(response.status, response.headers, body=data)
        chunks: AsyncIterator[bytes] = (
            _stream(response, timeout_s, deadline)
            if response.encoded
            else UpstreamStream(response, timeout_s, deadline)
        )
        return UpstreamReply(200, response.headers, chunks=chunks, _release=response.close)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


async def _read_cut(response: Response, deadline: float, limit: int) -> bytes:
    """At most ``limit`` bytes of the body (the rest is not read: the connection closes)."""
    parts: list[bytes] = []
    size = 0
    async with contextlib.aclosing(response.iter(None, deadline=deadline)) as pieces:
        async for piece in pieces:
            parts.append(piece[: limit - size])
            size += len(parts[-1])
            if size >= limit:
                break
    response.close()
    return b"".join(parts)


class StreamSink(Protocol):
    """Where :meth:`UpstreamStream.push` delivers a stream (see :class:`http1.BodySink`)."""

    def on_data(self, chunk: bytes) -> None: ...

    def on_flush(self) -> None: ...

    def on_end(self, error: UpstreamError | None) -> None: ...


class UpstreamStream:
    """The body of a streamed 200 (uncompressed), as it arrives.

    Pull: iterate it (``async for``); each piece within the stall timeout, the whole body
    before the deadline, errors as :class:`UpstreamError`. Push: :meth:`push` hands the rest
    to a sink straight from the connection's reads, without a task wake-up, generator or
    timer per piece (:meth:`http1.Response.push`). Pieces taken out by a reader that looked at
    the start (the probe) can be put back with :meth:`unread`; both modes deliver them
    first."""

    def __init__(self, response: Response, stall_s: float, deadline: float | None) -> None:
        self.response = response
        self.stall_s = stall_s
        self.deadline = deadline
        self._unread: list[bytes] = []
        self._sink: StreamSink | None = None

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> bytes:
        if self._unread:
            return self._unread.pop(0)
        try:
            chunk = await self.response.next(self.stall_s, deadline=self.deadline)
        except (OSError, TimeoutError) as exc:
            raise _failure(exc, "stream", self.stall_s) from exc
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self.response.close()

    def unread(self, chunks: list[bytes]) -> None:
        """Put ``chunks`` back in front of what comes next."""
        self._unread[:0] = chunks

    def push(self, sink: StreamSink) -> None:
        """Deliver the rest to ``sink`` (the put-back pieces at once, then as they arrive)."""
        if self._sink is not None:
            raise RuntimeError("the stream is already pushed")
        self._sink = sink
        unread, self._unread = self._unread, []
        for chunk in unread:
            sink.on_data(chunk)
        self.response.push(_Mapped(sink, self.stall_s), self.stall_s, deadline=self.deadline)

    def pause(self) -> None:
        self.response.pause()

    def resume(self) -> None:
        self.response.resume()


class _Mapped:
    """A :class:`StreamSink` as the HTTP client's body sink: the same data and flush
    callables (no extra call per piece), errors given as :class:`UpstreamError`."""

    __slots__ = ("_end", "_stall_s", "on_data", "on_flush")

    def __init__(self, sink: StreamSink, stall_s: float) -> None:
        self.on_data = sink.on_data
        self.on_flush = sink.on_flush
        self._end = sink.on_end
        self._stall_s = stall_s

    def on_end(self, error: BaseException | None) -> None:
        self._end(None if error is None else _failure(error, "stream", self._stall_s))


async def _stream(
    response: Response, stall_s: float, deadline: float | None
) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.iter(stall_s, deadline=deadline):
            yield chunk
    except (OSError, TimeoutError) as exc:
        raise _failure(exc, "stream", stall_s) from exc
    finally:
        response.close()


class SimulatedUpstream:
    """Answers ``/v1/messages`` and ``/v1/messages/count_tokens`` offline, in the wire format."""

    simulated = True

    async def post(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
        timeout_s: float,
        deadline: float | None = None,
    ) -> UpstreamReply:
        request_id = f"req_sim_{uuid.uuid4().hex[:20]}"
        base_headers = {"content-type": "application/json", "request-id": request_id}
        data = orjson.loads(body)
        thinking, config = data.get("thinking"), data.get("output_config")
        if not isinstance(thinking, dict | None) or not isinstance(config, dict | None):
            problem = "thinking" if not isinstance(thinking, dict | None) else "output_config"
            error = {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": f"{problem}: Input should be an object",
                },
                "request_id": request_id,
            }
            return UpstreamReply(400, base_headers, body=orjson.dumps(error))
        call = CallSpec(
            model=data["model"],
            messages=data["messages"],
            max_tokens=int(data.get("max_tokens") or 1),
            system=_system_text(data.get("system")),
            thinking=thinking,
            output_config=config,
        )
        if path.endswith("/count_tokens"):
            tokens = estimate_input_tokens(call)
            return UpstreamReply(200, base_headers, body=orjson.dumps({"input_tokens": tokens}))
        completion = simulate(call)
        u = completion.usage
        message = {
            "id": f"msg_sim_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": completion.content,
            "stop_reason": completion.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "service_tier": "standard",
                "output_tokens_details": {"thinking_tokens": u.thinking_tokens},
            },
        }
        await asyncio.sleep(0)
        if not stream:
            return UpstreamReply(200, base_headers, body=orjson.dumps(message))
        payload = message_to_sse(message)

        async def chunks() -> AsyncIterator[bytes]:
            yield payload

        return UpstreamReply(
            200, {"content-type": "text/event-stream", "request-id": request_id}, chunks=chunks()
        )

    async def aclose(self) -> None:
        return None


def _system_text(system: Any) -> str | None:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return None
