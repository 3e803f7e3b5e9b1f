"""Client connections under uvicorn: a cap per process, a deadline for each request head, a
limit on its size, and the idle keep-alive timeout.

uvicorn's httptools protocol has none of the first three: an idle TCP connection is held
until the client goes away, a request head may take forever (slowloris), and a head of any size
is buffered (llhttp has no limit). :class:`GuardedHttpToolsProtocol` is that protocol with them
added; the parser and the request path are uvicorn's own (httptools' speed is kept: the
additions are a counter per connection and one deadline timer per server).

* **Connections** (``gateway.max_connections``, per process): default derived from the file
  descriptor limit, ``(RLIMIT_NOFILE soft - 320) // 2`` capped at 10,000 (each client may hold
  an upstream connection too; 320 are left for the upstream pool's idle connections, the
  database, Redis and logs). At the cap, a new connection first closes the *oldest idle*
  connection (one with no request in progress), taking connections that never completed a
  request before kept-alive ones waiting between two requests, so a flood of idle sockets
  cannot lock real clients out nor cut an established client's connection; when every
  connection is busy, the new one is answered ``503`` with ``retry-after: 1`` and closed at
  once, holding nothing. Connections that never completed a request are also held to an
  eighth of the cap (:func:`unused_cap`, oldest closed first): a client sends its request a
  round trip after connecting, a flood socket never does, and every connection held is walked
  by each full garbage collection (with 10,000 flood sockets those paused the loop for
  over 100 ms). Such a connection costs little: its parser and flow control are made when its
  first bytes arrive, and one timer per server keeps every head deadline.
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
import contextlib
import json
import logging
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import httptools
import orjson
from prometheus_client import Counter, Gauge
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tierwise.gateway.relay import DIRECT_BODY, ON_DISCONNECT, BodyListener

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


def _find_health(app: Any) -> Callable[[], tuple[int, bytes]] | None:
    """The gateway's ``health_reply`` through uvicorn's wrappers (``.app`` chains), if any."""
    for _ in range(8):
        health = getattr(app, "tierwise_health", None)
        if callable(health):
            return cast(Callable[[], tuple[int, bytes]], health)
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def unused_cap(max_connections: int) -> int:
    """How many connections that never completed a request are kept at once: an eighth of
    ``max_connections`` (at least :data:`MIN_CONNECTIONS`). A client sends its request right
    after connecting, so its connection is in this state for a round trip; a flood socket
    stays in it."""
    return max(MIN_CONNECTIONS, max_connections // 8)


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
    """The connections of one server waiting for a request head, oldest first, and their
    head deadlines. Two queues: connections that never completed a request (``fresh``: a flood
    socket looks like this) and kept-alive connections between two requests (``kept``).
    Eviction takes from ``fresh`` first, so a flood of never-used sockets cannot close an
    established client's connection while a never-used one is left to close.

    Every member waits with the same ``header_timeout_s``, so each queue is also in deadline
    order: one timer per server (at the earliest deadline) replaces a timer per connection,
    which kept three more objects per idle connection for the garbage collector to walk
    (a flood of 10,000 sockets made its full collections last over 100 ms)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, health: Callable[[], tuple[int, bytes]] | None
    ) -> None:
        self.loop = loop
        self.health = health  # the gateway's health_reply for GET /health, if it has one
        self.fresh: OrderedDict[GuardedHttpToolsProtocol, float] = OrderedDict()
        self.kept: OrderedDict[GuardedHttpToolsProtocol, float] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(self, conn: GuardedHttpToolsProtocol, deadline: float) -> None:
        members = self.kept if conn.served else self.fresh
        members.pop(conn, None)  # a new deadline goes to the end: the order stays by deadline
        members[conn] = deadline
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)

    def discard(self, conn: GuardedHttpToolsProtocol) -> None:
        if self.fresh.pop(conn, None) is None:
            self.kept.pop(conn, None)

    def pop_fresh(self) -> GuardedHttpToolsProtocol | None:
        return self._pop(self.fresh)

    def pop_oldest(self, settled_by: float) -> GuardedHttpToolsProtocol | None:
        """The connection to evict at the cap: the oldest that never sent a request and had
        time to (its deadline at or before ``settled_by``), else the oldest kept-alive one,
        else the oldest of those that just connected (a client that connected a moment ago
        is most likely about to send its request: evicting it first lost real requests when
        several clients connected at once at the cap)."""
        fresh = self.fresh
        while fresh:
            conn, deadline = next(iter(fresh.items()))
            if deadline > settled_by:
                break
            del fresh[conn]
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return self._pop(self.kept) or self._pop(fresh)

    @staticmethod
    def _pop(
        members: OrderedDict[GuardedHttpToolsProtocol, float],
    ) -> GuardedHttpToolsProtocol | None:
        while members:
            conn, _ = members.popitem(last=False)
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self.loop.time()
        nearest: float | None = None
        for members in (self.fresh, self.kept):
            while members:
                conn, deadline = next(iter(members.items()))
                if deadline > now:
                    nearest = deadline if nearest is None else min(nearest, deadline)
                    break
                del members[conn]
                conn.head_timed_out()
        if nearest is not None:
            self._arm(nearest)


_FRESH_S = 0.1  # a connection this young that sent nothing yet is not evicted before idle ones
_HEALTH_HEAD = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
_NOT_YET: Any = object()  # the parser of a connection that has not sent a byte yet
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


class _Cork:
    """The transport as one response cycle sees it: its first write (the response head) is
    held until the next write (the body of a short reply: head and body leave in one write,
    one TCP segment) or, at the latest, the end of the event loop's current iteration (a
    streamed response's head). Everything else goes straight through. Measured: a second
    write per reply cost ~5-10 µs of CPU on loopback."""

    __slots__ = ("_held", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._started:
            self._transport.write(data)
        else:
            self._started = True
            self._held = bytes(data)
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class DirectBody:
    """Body writes of one streamed response straight to the client's transport (a
    :class:`~tierwise.gateway.relay.DirectWriter`).

    Offered to the app as ``scope["extensions"]["tierwise.direct_body"]`` by
    :class:`GuardedHttpToolsProtocol`. A relay that started its response with ASGI's
    ``http.response.start`` (chunked, as uvicorn frames a response without a length) calls
    :meth:`start`, then :meth:`write` for each piece of the body, and ends the response with
    ASGI's last ``http.response.body`` as usual. Each write is one ``transport.write`` with
    the chunk framing uvicorn would add: the ASGI ``send`` coroutine, its message dict and the
    task hop per event are skipped (measured: the largest item of a relayed event). Flow
    control and disconnects reach the relay through a :class:`BodyListener`."""

    __slots__ = ("_cycle", "_protocol", "listener")

    def __init__(self, protocol: GuardedHttpToolsProtocol, cycle: Any) -> None:
        self._protocol = protocol
        # Weak: the cycle's scope holds this object, and a strong reference back would make
        # every request a reference cycle, freed only by the garbage collector (whose full
        # collections then paused the loop for tens of milliseconds under load). The
        # request's task keeps the cycle alive while its response is written.
        self._cycle = weakref.ref(cycle)
        self.listener: BodyListener | None = None

    def start(self, listener: BodyListener) -> bool:
        """Take over the body writes; False when this response cannot be written directly
        (not started, not chunked, a HEAD, already complete, or the client is gone)."""
        cycle = self._cycle()
        if (
            cycle is None
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or cycle.disconnected
            or cycle.scope.get("method") == "HEAD"
            or self._protocol._direct is not None
        ):
            return False
        self.listener = listener
        self._protocol._direct = self
        return True

    def write(self, data: bytes) -> bool:
        """Write one piece of the body (never empty); False when the client is gone."""
        cycle = self._cycle()
        if cycle is None or cycle.disconnected or cycle.response_complete:
            return False
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True

    @property
    def paused(self) -> bool:
        """The client's transport buffer is full: stop producing until ``client_resumed``."""
        cycle = self._cycle()
        return cycle is not None and bool(cycle.flow.write_paused)

    def stop(self) -> None:
        """Writes end here (the response goes on through ASGI ``send``)."""
        self.listener = None
        if self._protocol._direct is self:
            self._protocol._direct = None


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
            idle = _IDLE[server_state] = _Idle(self.loop, _find_health(self.app))
        self._idle = idle
        # httptools' parser holds 8 bound methods: made when the first bytes arrive, so that a
        # connection that never sends any costs the garbage collector less (see _Idle).
        self.parser = _NOT_YET
        self._send_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._heads_done = 0
        self.served = False  # a response completed on this connection (eviction order)
        self._answered = False  # the current request was answered by the protocol itself
        self._refused = False
        self._counted = False
        self._direct: DirectBody | None = None  # the response writing straight, if any
        self._lost = False
        self._on_lost: list[Callable[[], None]] | None = None  # watch_disconnect's callbacks

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
        max_unused = unused_cap(self._limits.max_connections)
        if len(self._idle.fresh) >= max_unused:
            # Many connections that never sent a complete request: a flood, most likely. The
            # oldest goes, so floods hold little (every object it keeps is walked by each full
            # garbage collection, which pauses the loop) and real clients find room.
            oldest = self._idle.pop_fresh()
            if oldest is not None:
                CLOSED.labels("evicted").inc()
                _warn(
                    "evicted",
                    "%d client connections sent no request yet: closing the oldest of them",
                    max_unused,
                )
                oldest.close_now()
        if len(self.connections) >= self._limits.max_connections:
            limits = self._limits
            victim = self._idle.pop_oldest(self.loop.time() + limits.header_timeout_s - _FRESH_S)
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
        self.flow = None  # type: ignore[assignment]  # made with the parser (_first_bytes)
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
        self._lost = True
        # uvicorn keeps the last request's cycle and scope, and both lead back here (the
        # cycle's ``on_response``, the scope's extensions): reference cycles per connection,
        # left to the garbage collector unless broken now. Nothing is parsed any more, and
        # the app reads the extensions with ``.get`` (gone: the client is gone too).
        self.cycle = None  # type: ignore[assignment]
        extensions = self.scope.get("extensions") if self.scope is not None else None
        if extensions:
            extensions.pop(DIRECT_BODY, None)
            extensions.pop(ON_DISCONNECT, None)
        direct = self._direct
        if direct is not None and direct.listener is not None:
            direct.listener.client_gone()
        callbacks, self._on_lost = self._on_lost, None
        for callback in callbacks or ():
            callback()

    def watch_disconnect(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``callback`` when the connection is lost (the app's ``tierwise.on_disconnect``
        extension). Returns the function that unregisters it, or None when the connection is
        already gone (then ``callback`` is not called)."""
        if self._lost or self.transport is None or self.transport.is_closing():
            return None
        if self._on_lost is None:
            self._on_lost = []
        self._on_lost.append(callback)

        def unwatch() -> None:
            if self._on_lost is not None:
                with contextlib.suppress(ValueError):
                    self._on_lost.remove(callback)

        return unwatch

    def close_now(self) -> None:
        self._stop_waiting()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            self._linger()

    def data_received(self, data: bytes) -> None:
        if self._refused or self.parser is None:
            return
        if self.parser is _NOT_YET:
            self._first_bytes()
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

    def _first_bytes(self) -> None:
        """What uvicorn makes per connection, made when the first bytes arrive."""
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        if self.flow is None:
            self.flow = FlowControl(self.transport)

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
        if self.url == b"/health" and self._answer_health():
            return
        scope = self.scope
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is scope:
            cycle.transport = cast(asyncio.Transport, _Cork(self.transport, self.loop))
            extensions: Any = {
                DIRECT_BODY: DirectBody(self, cycle),
                ON_DISCONNECT: self.watch_disconnect,
            }
            scope["extensions"] = extensions

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()

    # -- GET /health, answered here ---------------------------------------------------------
    def _answer_health(self) -> bool:
        """Answer ``GET /health`` from the protocol, without a task: a health check then
        waits for nothing but the loop itself, not behind the steps of every request task
        that was ready before it (a burst of 200 requests delayed it by over 100 ms). Only
        for a bodiless GET with no earlier request still being answered on the connection;
        anything else takes the usual path."""
        health = self._idle.health
        if (
            health is None
            or self.parser.get_method() != b"GET"
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.pipeline
            or any(n in (b"content-length", b"transfer-encoding") for n, _ in self.headers)
        ):
            return False
        status, body = health()
        keep_alive = self.parser.should_keep_alive()
        extra = b"".join(b"%s: %s\r\n" % h for h in self.server_state.default_headers)
        head = _HEALTH_HEAD % (
            status,
            b"OK" if status == 200 else b"Service Unavailable",
            len(body),
            extra + (b"" if keep_alive else b"connection: close\r\n"),
        )
        self.transport.write(head + body)
        self._answered = True
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()
        return True

    def on_response_complete(self) -> None:
        self.served = True
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
        if self.flow is None:
            self.flow = FlowControl(self.transport)
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self._limits.send_timeout_s, self._send_timeout)
        direct = self._direct
        if direct is not None and direct.listener is not None:
            direct.listener.client_paused()

    def resume_writing(self) -> None:
        if not self.transport.is_closing():
            self._stop_send_timer()
        if self.flow is None:
            return
        super().resume_writing()
        direct = self._direct
        if direct is not None and direct.listener is not None:
            direct.listener.client_resumed()

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
        self._idle.add(self, self.loop.time() + self._limits.header_timeout_s)

    def _stop_waiting(self) -> None:
        self._idle.discard(self)

    def head_timed_out(self) -> None:
        """No complete request head by the deadline (called by :class:`_Idle`)."""
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
    "DirectBody",
    "GuardedHttpToolsProtocol",
    "default_max_connections",
    "uvicorn_options",
]
