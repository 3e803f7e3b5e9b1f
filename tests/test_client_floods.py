"""Hostile clients against the gateway's HTTP server, with raw sockets and the official SDKs:
floods of idle connections (up to the file descriptor limit), slowloris heads, oversized heads,
idle keep-alive connections, every connection busy. Small configurations (a few hundred
sockets, limits set low) so they run in `make test`; see RELIABILITY.md for the limits."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self, cast

import anthropic
import httpx2 as httpx
import openai
import pytest
import uvicorn

from tests.fakes.anthropic_server import FakeAnthropic
from tests.transports import FakeTransport
from tierwise.config import Settings, load, revalidate
from tierwise.gateway import build_app
from tierwise.gateway.connections import (
    ClientLimits,
    GuardedHttpToolsProtocol,
    _Idle,
    default_max_connections,
    unused_cap,
)

TIERWISE = str(Path(sys.executable).parent / "tierwise")
MSG: dict[str, Any] = {
    "model": "auto",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "Translate 'hi' to German"}],
}
BODY = b'{"model":"auto","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}'


class GuardedServer:
    """The gateway app under uvicorn with the guarded protocol, in a thread."""

    def __init__(self, app: Any, limits: ClientLimits, *, idle_timeout_s: float = 5.0) -> None:
        self.app = app
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            http=GuardedHttpToolsProtocol.with_limits(self.limits),
            timeout_keep_alive=self.idle_timeout_s,  # type: ignore[arg-type]
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "no server"
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def settings(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Settings:
    settings = load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": fake_anthropic.api_key,
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        }
    )
    return revalidate(settings, gateway=settings.gateway.model_copy(update={"max_attempts": 1}))


def limits(**changes: Any) -> ClientLimits:
    base = {"max_connections": 64, "header_timeout_s": 10.0, "max_header_bytes": 64 * 1024}
    return ClientLimits(**{**base, **changes})


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=15)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def closed_by_server(socks: list[socket.socket], wait_s: float) -> int:
    """How many of ``socks`` the server closes within ``wait_s`` (EOF, reset, or a 503)."""
    open_ = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in open_:
        poller.register(fd, select.POLLIN)
    closed = 0
    deadline = time.monotonic() + wait_s
    while open_ and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            try:
                data = open_[fd].recv(65536)
            except ConnectionResetError:
                data = b""
            if not data or data.startswith(b"HTTP/1.1 503"):
                poller.unregister(fd)
                open_.pop(fd)
                closed += 1
    return closed


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


# -- the case from the field: idle sockets up to the file descriptor limit ---------------------
def test_idle_flood_up_to_the_fd_limit_does_not_stop_real_requests(
    fake_anthropic: FakeAnthropic, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """`tierwise serve` with a soft RLIMIT_NOFILE of 512 (default cap: (512 - 320) // 2 = 96
    connections), then 700 idle sockets: more than the process has descriptors. Before the cap,
    accept() failed with EMFILE and real requests hung; now the oldest idle connections make
    room, real requests from both SDKs succeed during the flood, and every idle socket is
    closed within the head deadline."""
    soft = 512
    assert default_max_connections(soft) == 96
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[gateway]\nheader_timeout_s = 2\nmax_attempts = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {
        "TIERWISE_HOME": str(home),
        "ANTHROPIC_API_KEY": fake_anthropic.api_key,
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
    }
    port = free_port()

    def low_fd_limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    proc = subprocess.Popen(
        [TIERWISE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_fd_limit,  # noqa: PLW1509 - only sets a resource limit
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        for _ in range(700):
            sockets.append(connect(port))
        ac = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0)
        oa = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        for _ in range(3):
            assert ac.messages.create(**MSG).content
            done = oa.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "Translate 'hi' to Italian"}]
            )
            assert done.choices[0].message.content
        assert httpx.get(base + "/health", timeout=5).status_code == 200
        # every idle socket is closed: at once for the evicted, at the deadline for the rest
        assert closed_by_server(sockets, wait_s=20) == 700
        metrics = httpx.get(base + "/metrics", timeout=5).text
        closed = 'tierwise_client_connections_closed_total{reason="%s"}'
        evicted = sample(metrics, closed % "evicted")
        timed_out = sample(metrics, closed % "header_timeout")
        assert evicted >= 1 and timed_out >= 1 and evicted + timed_out >= 700
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "out of system resource" not in stderr and "Too many open files" not in stderr
    assert stderr.count("client connection limit") < 10  # rate-limited, not one per socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.05)


def sample(text: str, name_and_labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name_and_labels + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- heads: too slow, too large -------------------------------------------------------------------
def test_slowloris_head_is_closed_at_the_deadline(settings: Settings) -> None:
    with GuardedServer(build_app(settings), limits(header_timeout_s=1.0)) as srv:
        sock = connect(srv.port)
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
        drip = b"x-slow: " + b"a" * 200  # a byte every 50 ms: 10 s, if it were let through
        sent = 0
        try:
            for byte in drip:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_until_closed(sock)
        sock.close()
        assert sent < len(drip)
        assert reply.startswith(b"HTTP/1.1 408") and b"timeout_error" in reply
        with httpx.Client(base_url=srv.base_url) as client:
            assert client.post("/v1/messages", json=MSG).status_code == 200


def test_silent_and_idle_keep_alive_connections_are_closed(settings: Settings) -> None:
    with GuardedServer(
        build_app(settings), limits(header_timeout_s=0.5), idle_timeout_s=0.5
    ) as srv:
        silent = connect(srv.port)
        assert read_until_closed(silent) == b""  # never sent a byte: closed, nothing said
        silent.close()
        kept = connect(srv.port)
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_closed(kept)  # answered, then closed once idle
        kept.close()
        assert reply.startswith(b"HTTP/1.1 200") and reply.count(b"HTTP/1.1") == 1
        # a keep-alive client that starts a second head but never ends it
        half = connect(srv.port)
        half.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHo")
        reply = read_until_closed(half)
        half.close()
        assert reply.startswith(b"HTTP/1.1 200") and reply.count(b"HTTP/1.1 200") == 1
        # the same after a long keep-alive wait: the head deadline, not only the idle timeout
        slow = connect(srv.port)
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert slow.recv(65536).startswith(b"HTTP/1.1 200")
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nx-a: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb":
            try:
                slow.sendall(bytes([byte]))  # every 0.1 s: the idle timer never fires
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        reply = read_until_closed(slow)
        slow.close()
        assert reply.startswith(b"HTTP/1.1 408")


def test_oversized_head_is_refused_and_bodies_are_not_heads(settings: Settings) -> None:
    with GuardedServer(build_app(settings), limits(max_header_bytes=8192)) as srv:
        sock = connect(srv.port)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-filler: "
                + b"a" * 200_000
                + b"\r\n\r\n"
            )
        reply = read_until_closed(sock)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 431")
        # a head just under the limit, and a small head followed by a 1 MB body in one write
        with httpx.Client(base_url=srv.base_url, timeout=30) as client:
            near = client.post("/v1/messages", json=MSG, headers={"x-filler": "a" * 7000})
            assert near.status_code == 200
            big = {k: v for k, v in MSG.items() if k != "max_tokens"}  # count_tokens takes none
            big["system"] = "word " * 200_000
            assert client.post("/v1/messages/count_tokens", json=big).status_code == 200
        sock = connect(srv.port)
        payload = b'{"model":"auto","messages":[{"role":"user","content":"' + b"b" * 1_000_000
        payload += b'"}]}'
        sock.sendall(
            b"POST /v1/messages/count_tokens HTTP/1.1\r\nHost: x\r\ncontent-type: "
            b"application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
            % len(payload)
            + payload
        )
        reply = read_until_closed(sock)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]


def test_a_client_that_stops_reading_is_cut_off(settings: Settings) -> None:
    """Pipelined requests for 15 kB documents, never read: once the kernel's buffers and the
    connection's own are full, the reply waits; after send_timeout_s the connection is aborted
    (before, it held its task and the unsent replies forever)."""
    from prometheus_client import REGISTRY

    def aborted() -> float:
        labels = {"reason": "send_timeout"}
        return REGISTRY.get_sample_value("tierwise_client_connections_closed_total", labels) or 0

    before = aborted()
    with GuardedServer(build_app(settings), limits(send_timeout_s=0.5)) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(15)
        sock.connect(("127.0.0.1", srv.port))
        requests = 2000  # ~30 MB of replies: more than every buffer on the way
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
        deadline = time.monotonic() + 30
        while aborted() == before:
            assert time.monotonic() < deadline, "the server kept waiting for the reader"
            time.sleep(0.05)
        received = read_until_closed(sock)  # what was in the buffers, then the end
        sock.close()
        assert received.count(b"HTTP/1.1 200") < requests
        with httpx.Client(base_url=srv.base_url) as client:
            assert client.get("/health").status_code == 200


# -- the cap ---------------------------------------------------------------------------------------
def test_at_the_cap_idle_connections_make_room_and_busy_ones_do_not(
    settings: Settings, fake_anthropic: FakeAnthropic, sockets: list[socket.socket]
) -> None:
    with GuardedServer(build_app(settings), limits(max_connections=3)) as srv:
        # three idle sockets fill the cap; a real request evicts the oldest
        for _ in range(3):
            sockets.append(connect(srv.port))
        client = anthropic.Anthropic(base_url=srv.base_url, api_key="x", max_retries=0)
        assert client.messages.create(**MSG).content
        assert closed_by_server(sockets[:1], wait_s=5) == 1
        for s in sockets:
            s.close()
        sockets.clear()
        # three requests in progress: nothing can be evicted, the fourth is told to come back
        fake_anthropic.script(delay_s=2.0, times=3)
        results: list[str] = []

        def slow() -> None:
            c = anthropic.Anthropic(base_url=srv.base_url, api_key="x", max_retries=0)
            results.append(c.messages.create(**MSG).content[0].type)

        threads = [threading.Thread(target=slow) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(fake_anthropic.requests_to("/v1/messages")) < 4:  # the first request + 3
            assert time.monotonic() < deadline, "the slow requests did not reach the upstream"
            time.sleep(0.02)
        refused = connect(srv.port)
        reply = read_until_closed(refused)
        refused.close()
        assert reply.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in reply
        assert b"overloaded_error" in reply
        for t in threads:
            t.join(timeout=30)
        assert results == ["text"] * 3


def test_unused_connections_are_held_to_an_eighth_of_the_cap(
    settings: Settings, sockets: list[socket.socket]
) -> None:
    """A flood of sockets that never send a byte is held to unused_cap (here 160 // 8 = 20),
    oldest closed first, far below the connection cap; kept-alive clients are not touched
    and new clients that send their request at once are served."""
    assert unused_cap(160) == 20
    with GuardedServer(build_app(settings), limits(max_connections=160)) as srv:
        with httpx.Client(base_url=srv.base_url) as kept:
            assert kept.post("/v1/messages", json=MSG).status_code == 200
            for _ in range(60):
                sockets.append(connect(srv.port))
            assert closed_by_server(sockets[:40], wait_s=5) == 40  # the oldest 40 of 60
            assert closed_by_server(sockets[40:], wait_s=0.5) == 0  # the newest 20 stay
            assert kept.post("/v1/messages", json=MSG).status_code == 200  # the same connection
        with httpx.Client(base_url=srv.base_url) as fresh:
            assert fresh.post("/v1/messages", json=MSG).status_code == 200


def test_health_is_answered_by_the_protocol_in_order_and_keeps_the_connection(
    settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    """GET /health is answered by the connection protocol (never behind request tasks); the
    body is the gateway's own health_reply, HTTP/1.1 order and keep-alive are kept."""
    app: Any = build_app(settings)
    real = app.tierwise_health
    assert real is not None and real()[0] == 200
    app.tierwise_health = lambda: (200, b'{"answered_by":"protocol"}')  # which path answered
    with GuardedServer(app, limits()) as srv:
        sock = connect(srv.port)
        get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(get + get)
        replies = b""
        while replies.count(b"protocol") < 2:
            replies += sock.recv(65536)
        assert replies.count(b"HTTP/1.1 200 OK") == 2 and b"date: " in replies
        # a request still being answered comes first: /health waits its turn (pipelined, it
        # takes the application's route, which answers with the real health_reply)
        fake_anthropic.script(delay_s=0.5)
        body = json.dumps(MSG).encode()
        post = (
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"anthropic-version: 2023-06-01\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        sock.sendall(post + get)
        replies = b""
        while b'"status"' not in replies:
            replies += sock.recv(65536)
        assert replies.index(b'"type":"message"') < replies.index(b'"status"')
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
        last = read_until_closed(sock)
        sock.close()
        assert last.startswith(b"HTTP/1.1 200") and b"connection: close" in last
        # with a query, /health takes the application's route
        with httpx.Client(base_url=srv.base_url) as client:
            routed = client.get("/health?full=1")
            assert routed.status_code == 200 and "status" in routed.json()


# -- worker processes ----------------------------------------------------------------------------
def test_worker_processes_get_the_limits(
    fake_anthropic: FakeAnthropic, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """`--workers 2` spawns processes that import the protocol by name: the limits reach them
    through the environment."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        "[gateway]\nheader_timeout_s = 1\nmax_header_bytes = 2048\nworkers = 2\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {
        "TIERWISE_HOME": str(home),
        "ANTHROPIC_API_KEY": fake_anthropic.api_key,
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
    }
    port = free_port()
    proc = subprocess.Popen(
        [TIERWISE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        for _ in range(4):  # spread over both workers
            with httpx.Client() as client:
                too_big = client.get(base + "/health", headers={"x-filler": "a" * 4096})
            assert too_big.status_code == 431
            sockets.append(connect(port))
        assert closed_by_server(sockets, wait_s=15) == 4
        assert anthropic.Anthropic(base_url=base, api_key="x").messages.create(**MSG).content
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


class _StuckTransport(FakeTransport):
    """A transport whose peer reads nothing more: whatever is written stays buffered (the
    kernel's buffers are full), as asyncio's own transport behaves then."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = asyncio.Event()

    def get_write_buffer_size(self) -> int:
        return len(self.written)

    def close(self) -> None:
        self.closing = True  # asyncio waits for the buffer to drain before it really closes

    def abort(self) -> None:
        self.closing = True
        self.aborted.set()


def test_a_closed_connection_with_an_unsent_tail_is_aborted() -> None:
    """The reply's end left in the write buffer of a closed connection (`connection: close`,
    a client that stopped reading): asyncio would hold the connection until the client reads,
    forever; it is aborted after send_timeout_s."""
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 1000})

    async def run() -> _StuckTransport:
        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        config.load()
        protocol_class = GuardedHttpToolsProtocol.with_limits(limits(send_timeout_s=0.05))
        protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
        transport = _StuckTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
        await asyncio.wait_for(transport.aborted.wait(), timeout=10)
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(run())
    assert transport.written.startswith(b"HTTP/1.1 200") and transport.aborted.is_set()


def test_a_finished_connection_is_freed_without_the_garbage_collector() -> None:
    """The protocol keeps its last request's cycle and scope (uvicorn), and both lead back to
    it: the cycle through ``on_response``, the scope through the extensions offered in it
    (the direct-body writer, which also held the cycle, and ``on_disconnect``). Reference
    cycles per request and per connection, freed only by full garbage collections, which then
    paused the loop for tens of milliseconds under load."""
    alive: list[weakref.ref[Any]] = []
    original = GuardedHttpToolsProtocol.connection_made

    def made(self: GuardedHttpToolsProtocol, transport: asyncio.Transport) -> None:
        original(self, transport)
        alive.append(weakref.ref(self))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        assert "tierwise.direct_body" in scope["extensions"]  # offered, and in the scope
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    GuardedHttpToolsProtocol.connection_made = made  # type: ignore[method-assign]
    gc.collect()
    gc.disable()
    try:
        with GuardedServer(app, limits()) as srv:
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
                    sock.sendall(b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    assert read_until_closed(sock).endswith(b"2\r\nok\r\n0\r\n\r\n")
            deadline = time.monotonic() + 5
            while any(ref() is not None for ref in alive) and time.monotonic() < deadline:
                time.sleep(0.02)
            # The protocol is freed only when no cycle holds it: the protocol keeps the
            # last request's cycle and scope, both of which lead back to it.
            assert len(alive) == 3
            assert [ref() for ref in alive] == [None] * 3
    finally:
        gc.enable()
        GuardedHttpToolsProtocol.connection_made = original  # type: ignore[method-assign]


def test_at_the_cap_a_connection_that_just_connected_goes_after_idle_ones() -> None:
    """Eviction order at the cap: connections that never sent a request and had time to,
    then kept-alive idle ones, then those that connected a moment ago (clients about to send
    their request: evicting them first lost requests when several connected at once)."""

    class Conn:
        def __init__(self, served: bool) -> None:
            self.served = served
            self.transport = FakeTransport()

    loop = asyncio.new_event_loop()
    try:
        idle = _Idle(loop, None)
        old, kept, young = (cast(GuardedHttpToolsProtocol, Conn(s)) for s in (False, True, False))
        for conn, deadline in ((old, 100.0), (kept, 105.0), (young, 110.0)):
            idle.add(conn, deadline)
        assert idle.pop_oldest(settled_by=108.0) is old
        assert idle.pop_oldest(settled_by=108.0) is kept
        assert idle.pop_oldest(settled_by=108.0) is young
        assert idle.pop_oldest(settled_by=108.0) is None
    finally:
        loop.close()
