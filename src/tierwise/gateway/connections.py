"""Client connections under uvicorn: a cap per process, a deadline for each request head, a
limit on its size, and the idle keep-alive timeout.

uvicorn's httptools protocol has none of the first three: an idle TCP connection is held
until the client goes away, a request head may take forever (slowloris), and a head of any size
is buffered (llhttp has no limit). :class:`GuardedHttpToolsProtocol` is that protocol with them
added; the parser and the request path are uvicorn's own (httptools' speed is kept: the
additions are a counter and one timer per connection).

* **Connections** (``gateway.max_connections``, per process): default derived from the file
  descriptor limit, ``(RLIMIT_NOFILE soft - 320) // 2`` capped at 10,000 (each client may hold
  an upstream connection too; 320 are left for the upstream pool's idle connections, the
  database, Redis and logs). At the cap, a new connection first closes the *oldest idle*
  connection (one with no request in progress: never sent a complete head, or waiting between
  keep-alive requests), so a flood of idle sockets cannot lock real clients out; when every
  connection is busy, the new one is answered ``503`` with ``retry-after: 1`` and closed at
  once, holding nothing.
* **Request head deadline** (``gateway.header_timeout_s``, 10 s): from the connection's opening,
  or from the previous response on a keep-alive connection, a complete request line and headers
  must have arrived; otherwise the connection is closed (``408`` when part of a head came).
  A client sending a byte per second is closed at the deadline like a silent one.
* **Head size** (``gateway.max_header_bytes``, 64 KiB, request line + headers): past it, ``431``
  and the connection is closed; nothing beyond it is buffered.
* **Idle keep-alive** (``gateway.idle_timeout_s``, 5 s): uvicorn's ``timeout_keep_alive``.
* **A client that stops reading** (``gateway.send_timeout_s``, 60 s): when a reply waits that
  long with the connection's write buffer full (above 64 KiB beyond what the kernel holds), or
  a closed connection still has part of a reply unsent that long, the connection is aborted.
  Without it, a client that never reads holds its connection, the request's task and the unsent
  reply forever (asyncio's ``close()`` waits for the buffer to drain).
* The body has its own deadline and size limit in the app (``gateway.body_timeout_s``,
  ``gateway.max_body_bytes``).

Counted in ``tierwise_client_connections`` (open now) and
``tierwise_client_connections_closed_total{reason}`` (``refused``, ``evicted``,
``header_timeout``, ``header_too_large``, ``send_timeout``).

Worker processes (``--workers N``) are spawned and import this class by name; the limits reach
them through the environment (:data:`ENV_LIMITS`, set by :func:`uvicorn_options`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import httptools
import orjson
from prometheus_client import Counter, Gauge
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

if TYPE_CHECKING:
    from tierwise.config import GatewayConfig

log = logging.getLogger("tierwise.gateway")

ENV_LIMITS = "TIERWISE_CLIENT_LIMITS"
PROTOCOL = "tierwise.gateway.connections:GuardedHttpToolsProtocol"
RESERVED_FDS = 320
MAX_DEFAULT_CONNECTIONS = 10_000
MIN_CONNECTIONS = 16
_WARN_EVERY_S = 10.0

OPEN = Gauge("tierwise_client_connections", "Open client connections (this process)")
CLOSED = Counter(
    "tierwise_client_connections_closed_total",
    "Client connections closed by the gateway's limits: refused (at the cap, every connection "
    "busy), evicted (idle, at the cap), header_timeout, header_too_large, send_timeout",
    ["reason"],
)
REASONS = ("refused", "evicted", "header_timeout", "header_too_large", "send_timeout")
for _reason in REASONS:
    CLOSED.labels(_reason)


def default_max_connections(soft_limit: int | None = None) -> int:
    """The connection cap derived from the file descriptor limit (see the module)."""
    if soft_limit is None:
        try:
            import resource

            soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft_limit == resource.RLIM_INFINITY:
                soft_limit = 1 << 20
        except (ImportError, OSError, ValueError):  # not a Unix: the usual default
            soft_limit = 1024
    return max(MIN_CONNECTIONS, min(MAX_DEFAULT_CONNECTIONS, (soft_limit - RESERVED_FDS) // 2))


@dataclass(frozen=True, slots=True)
class ClientLimits:
    max_connections: int
    header_timeout_s: float
    max_header_bytes: int
    send_timeout_s: float = 60.0

    @classmethod
    def from_config(cls, gw: GatewayConfig) -> ClientLimits:
        return cls(
            max_connections=gw.max_connections or default_max_connections(),
            header_timeout_s=gw.header_timeout_s,
            max_header_bytes=gw.max_header_bytes,
            send_timeout_s=gw.send_timeout_s,
        )

    @classmethod
    def defaults(cls) -> ClientLimits:
        from tierwise.config import GatewayConfig

        return cls.from_config(GatewayConfig())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ClientLimits:
        data = json.loads(text)
        return cls(
            max_connections=int(data["max_connections"]),
            header_timeout_s=float(data["header_timeout_s"]),
            max_header_bytes=int(data["max_header_bytes"]),
            send_timeout_s=float(data["send_timeout_s"]),
        )


def uvicorn_options(gw: GatewayConfig) -> dict[str, Any]:
    """uvicorn settings for ``tierwise serve``: the guarded protocol and the idle timeout.
    Publishes the limits in the environment for spawned worker processes."""
    limits = ClientLimits.from_config(gw)
    os.environ[ENV_LIMITS] = limits.to_json()
    return {"http": PROTOCOL, "timeout_keep_alive": gw.idle_timeout_s}


class _Idle:
    """The connections of one server with no request in progress, oldest first."""

    def __init__(self) -> None:
        self.members: OrderedDict[GuardedHttpToolsProtocol, None] = OrderedDict()

    def add(self, conn: GuardedHttpToolsProtocol) -> None:
        self.members[conn] = None

    def discard(self, conn: GuardedHttpToolsProtocol) -> None:
        self.members.pop(conn, None)

    def pop_oldest(self) -> GuardedHttpToolsProtocol | None:
        while self.members:
            conn, _ = self.members.popitem(last=False)
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None


_IDLE: weakref.WeakKeyDictionary[ServerState, _Idle] = weakref.WeakKeyDictionary()
_ENV_CACHE: dict[str, ClientLimits] = {}
_LAST_WARNING: dict[str, float] = {}


def _warn(reason: str, message: str, *args: Any) -> None:
    """A warning at most every few seconds per reason: a flood must not flood the log."""
    now = time.monotonic()
    if now - _LAST_WARNING.get(reason, -_WARN_EVERY_S) >= _WARN_EVERY_S:
        _LAST_WARNING[reason] = now
        log.warning(message, *args)


def _error_reply(status: int, phrase: str, error_type: str, message: str, extra: str = "") -> bytes:
    body = orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    ).encode("ascii") + body


_BUSY = _error_reply(
    503,
    "Service Unavailable",
    "overloaded_error",
    "the gateway is at its connection limit; retry shortly",
    "retry-after: 1\r\n",
)
_TOO_LARGE = _error_reply(
    431,
    "Request Header Fields Too Large",
    "invalid_request_error",
    "request line and headers are larger than the gateway's limit",
)
_TOO_SLOW = _error_reply(
    408,
    "Request Timeout",
    "timeout_error",
    "request headers were not received in time",
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap, a request-head deadline and a
    request-head size limit (see the module)."""

    #: set on a subclass (:meth:`with_limits`); otherwise read from :data:`ENV_LIMITS`
    limits: ClassVar[ClientLimits | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = self._current_limits()
        idle = _IDLE.get(server_state)
        if idle is None:
            idle = _IDLE[server_state] = _Idle()
        self._idle = idle
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._heads_done = 0
        self._refused = False
        self._counted = False

    @classmethod
    def with_limits(cls, limits: ClientLimits) -> type[GuardedHttpToolsProtocol]:
        """This protocol with the given limits (for a server run in this process)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    @classmethod
    def _current_limits(cls) -> ClientLimits:
        if cls.limits is not None:
            return cls.limits
        raw = os.environ.get(ENV_LIMITS, "")
        cached = _ENV_CACHE.get(raw)
        if cached is None:
            cached = _ENV_CACHE[raw] = (
                ClientLimits.from_json(raw) if raw else ClientLimits.defaults()
            )
        return cached

    # -- the connection ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.max_connections:
            victim = self._idle.pop_oldest()
            if victim is None:
                self._refused = True
                self.transport = transport
                CLOSED.labels("refused").inc()
                _warn(
                    "refused",
                    "client connection limit (%d) reached with every connection busy: "
                    "refusing new connections with 503",
                    self._limits.max_connections,
                )
                transport.write(_BUSY)
                transport.close()
                return
            CLOSED.labels("evicted").inc()
            _warn(
                "evicted",
                "client connection limit (%d) reached: closing the oldest idle connections",
                self._limits.max_connections,
            )
            victim.close_now()
        super().connection_made(transport)
        self._counted = True
        OPEN.inc()
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._stop_waiting()
        self._stop_send_timer()
        if self._counted:
            self._counted = False
            OPEN.dec()
        super().connection_lost(exc)

    def close_now(self) -> None:
        self._stop_waiting()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            self._linger()

    def data_received(self, data: bytes) -> None:
        if self._refused or self.parser is None:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            room = self._limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Feed what the limit allows; unless that completes the head, refuse it.
                heads = self._heads_done
                if room > 0 and not self._feed(data[:room]):
                    return
                if self._heads_done == heads:
                    self._head_too_large()
                    return
                data = data[max(room, 0) :]
            else:
                self._head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """uvicorn's ``data_received`` body: False once the connection is done with."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    def handle_websocket_upgrade(self) -> None:
        self._stop_waiting()
        self._stop_send_timer()
        if self._counted:  # the WebSocket protocol takes the connection over
            self._counted = False
            OPEN.dec()
        super().handle_websocket_upgrade()

    # -- parser callbacks ----------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._heads_done += 1
        self._stop_waiting()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        idle_next = not self.pipeline
        super().on_response_complete()
        if self.transport.is_closing():
            self._linger()
        elif idle_next:
            self._wait_for_head()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._linger()

    # -- a client that does not read -------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self._limits.send_timeout_s, self._send_timeout)

    def resume_writing(self) -> None:
        if not self.transport.is_closing():
            self._stop_send_timer()
        super().resume_writing()

    def _linger(self) -> None:
        """A closed connection with part of a reply still unsent: asyncio keeps it (and its
        descriptor) until the client reads that part, however long; give it send_timeout_s."""
        if self._send_timer is None and self.transport.get_write_buffer_size():
            self._send_timer = self.loop.call_later(self._limits.send_timeout_s, self._send_timeout)

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timeout(self) -> None:
        self._send_timer = None
        if not self.transport.get_write_buffer_size():
            return  # flushed meanwhile
        CLOSED.labels("send_timeout").inc()
        _warn(
            "send_timeout",
            "aborting client connections that read nothing of their reply for %gs",
            self._limits.send_timeout_s,
        )
        self.transport.abort()  # drops the unsent reply; connection_lost follows

    # -- the head deadline ---------------------------------------------------------------
    def _wait_for_head(self) -> None:
        self._idle.add(self)
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self._limits.header_timeout_s, self._head_timeout
            )

    def _stop_waiting(self) -> None:
        self._idle.discard(self)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        self._idle.discard(self)
        if self.transport is None or self.transport.is_closing():
            return
        CLOSED.labels("header_timeout").inc()
        _warn(
            "header_timeout",
            "closing client connections that sent no complete request head within %gs",
            self._limits.header_timeout_s,
        )
        if self._head_bytes > 0:
            self.transport.write(_TOO_SLOW)
        self.transport.close()
        self._linger()

    def _head_too_large(self) -> None:
        self._stop_waiting()
        CLOSED.labels("header_too_large").inc()
        _warn(
            "header_too_large",
            "refusing request heads larger than %d bytes (431)",
            self._limits.max_header_bytes,
        )
        self.transport.write(_TOO_LARGE)
        self.transport.close()
        self._linger()


__all__ = [
    "ENV_LIMITS",
    "PROTOCOL",
    "ClientLimits",
    "GuardedHttpToolsProtocol",
    "default_max_connections",
    "uvicorn_options",
]
