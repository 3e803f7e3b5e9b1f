"""A fast fake Anthropic API for benchmarks: asyncio + uvloop + httptools, fixed bodies.

It answers ``POST …/messages`` (JSON, or SSE when the body says ``"stream": true``),
``POST …/messages/count_tokens`` and ``GET /health``, echoing the request's ``model``. It does
no JSON parsing (two regular expressions on the raw body) and builds each reply once per
model, so that it is not the limit of what it measures: on this machine it answers several
thousand requests per second on one core. Wire-compatible enough for tierwise's gateway and
for LiteLLM's anthropic provider (keep-alive, content-length JSON, chunked SSE).

    python benchmarks/fake_upstream.py --port 9100
    python benchmarks/fake_upstream.py --port 9100 --stream-events 200 --stream-seconds 20

With ``--stream-events N --stream-seconds T`` (the long-stream benchmark,
``benchmarks/longstream.py``) every streamed reply is a *long* stream instead: N events in the
exact Messages grammar (``message_start`` with usage, ``content_block_start``, ``ping``, N - 6
``text_delta`` events of realistic size, ``content_block_stop``, ``message_delta`` with usage,
``message_stop``), one HTTP chunk per event. The first four events leave together when the
request is complete (time to first token 0); the other N - 4 follow one every T / (N - 4)
seconds, so the stream lasts T seconds. Every text delta carries the upstream's own send time
in its text, ``[t:<CLOCK_MONOTONIC ns, 19 digits>]``, read just before the write, so that a
client on the same machine can compute each event's transit time exactly
(``longstream.MARK``). One timer wheel (1 ms ticks) drives all the streams, so thousands of
them cost one callback per tick plus one write per event.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from typing import Any, cast

import httptools
import orjson

_MODEL = re.compile(rb'"model"\s*:\s*"([A-Za-z0-9._:@/-]{1,100})"')
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_TEXT = "Hello from the benchmark upstream."
_USAGE = {
    "input_tokens": 12,
    "output_tokens": 8,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
_CACHE_LIMIT = 256


def _message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_bench_0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": _TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _USAGE,
    }


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _json_reply(body: bytes, status: str = "200 OK") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nrequest-id: req_bench\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _sse_reply(model: str) -> tuple[bytes, bytes]:
    """(headers + the message_start chunk, the rest of the stream + the last chunk)."""
    start = {**_message(model), "content": [], "stop_reason": None}
    start["usage"] = {**_USAGE, "output_tokens": 1}
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\nrequest-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    first = _event("message_start", {"type": "message_start", "message": start})
    rest = b"".join(
        [
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            _event("ping", {"type": "ping"}),
            _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": _TEXT},
                },
            ),
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 8},
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
    )
    return head + _chunk(first), _chunk(rest) + b"0\r\n\r\n"


class Replies:
    """Replies built once per model (bounded)."""

    def __init__(self) -> None:
        self._json: dict[bytes, bytes] = {}
        self._sse: dict[bytes, tuple[bytes, bytes]] = {}
        self.count_tokens = _json_reply(b'{"input_tokens":12}')
        self.health = _json_reply(b'{"status":"ok"}')
        self.not_found = _json_reply(
            b'{"type":"error","error":{"type":"not_found_error","message":"no route"}}',
            "404 Not Found",
        )

    def message(self, model: bytes) -> bytes:
        reply = self._json.get(model)
        if reply is None:
            reply = _json_reply(orjson.dumps(_message(model.decode())))
            if len(self._json) < _CACHE_LIMIT:
                self._json[model] = reply
        return reply

    def stream(self, model: bytes) -> tuple[bytes, bytes]:
        reply = self._sse.get(model)
        if reply is None:
            reply = _sse_reply(model.decode())
            if len(self._sse) < _CACHE_LIMIT:
                self._sse[model] = reply
        return reply


REPLIES = Replies()


# -- long streams (--stream-events / --stream-seconds) ------------------------------------------

# Text deltas of realistic size: a few tokens each (Claude's deltas are typically 1-10
# tokens); with the 24-byte time marker a delta's text is ~30-70 bytes and the whole event,
# framing included, ~150-190 bytes on the wire.
_WORDS = (
    " The",
    " quick answer is",
    " that the gateway",
    " relays each event",
    " unchanged, while",
    " reading usage on the side.",
    " Streams like this",
    " one last",
    " ten to sixty seconds",
    " in production",
    ",",
    " so what matters is",
    " how many stay open",
    " at once, and the delay",
    " added to each event.",
)
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nrequest-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)
_TICK_S = 0.001


def _delta_template(text: str) -> tuple[bytes, bytes]:
    """(chunk framing + event up to the timestamp digits, the rest of the chunk)."""
    payload = orjson.dumps(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text + " [t:@@@@@@@@@@@@@@@@@@@]"},
        }
    )
    event = b"event: content_block_delta\ndata: " + payload + b"\n\n"
    framed = _chunk(event)
    pre, post = framed.split(b"@" * 19)
    return pre, post


_DELTAS = [_delta_template(w) for w in _WORDS]


_ARMING: Any = object()  # LongStreams.timer while _tick runs


class LongStreams:
    """All the long streams of this server, driven by one timer wheel (ticks of 1 ms)."""

    def __init__(self, events: int, seconds: float) -> None:
        if events < 7:
            raise ValueError("--stream-events must be at least 7 (the grammar needs 6 + a delta)")
        self.events = events
        self.deltas = events - 6
        self.interval = seconds / (events - 4)
        self.wheel: dict[int, list[list[Any]]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.next_tick = 0
        self.started = 0
        self.serial = 0

    def _start_event(self, model: str) -> bytes:
        self.serial += 1
        message = {
            **_message(model),
            "id": f"msg_bench_{self.serial:08d}",
            "content": [],
            "stop_reason": None,
        }
        message["usage"] = {**_USAGE, "input_tokens": 25, "output_tokens": 1}
        return _event("message_start", {"type": "message_start", "message": message})

    def _end_events(self) -> bytes:
        return b"".join(
            [
                _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                _event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": 6 * self.deltas},
                    },
                ),
                _event("message_stop", {"type": "message_stop"}),
            ]
        )

    def start(self, transport: asyncio.Transport, model: bytes) -> None:
        loop = asyncio.get_running_loop()
        first = b"".join(
            [
                self._start_event(model.decode()),
                _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                _event("ping", {"type": "ping"}),
            ]
        )
        pre, post = _DELTAS[0]
        delta = pre + b"%019d" % time.monotonic_ns() + post
        # headers + (message_start, content_block_start, ping) as one chunk + the first delta
        transport.write(_STREAM_HEAD + _chunk(first) + delta)
        t0 = loop.time()
        # state: [transport, next delta index (1-based count sent), t0]
        self._schedule([transport, 1, t0], t0 + self.interval, loop)
        self.started += 1

    def _schedule(self, state: list[Any], due: float, loop: asyncio.AbstractEventLoop) -> None:
        tick = int(due / _TICK_S) + 1
        bucket = self.wheel.get(tick)
        if bucket is None:
            self.wheel[tick] = [state]
        else:
            bucket.append(state)
        if self.timer is _ARMING:
            return  # inside _tick, which arms the timer when it is done
        if self.timer is None or tick < self.next_tick:
            if self.timer is not None:
                self.timer.cancel()
            self.next_tick = tick
            self.timer = loop.call_at(tick * _TICK_S, self._tick)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        # While the due streams are written, _schedule must not arm the timer: it would arm it
        # at the first rescheduled stream's tick (one interval ahead) and skip every stream due
        # in between, which then all leave in one burst per interval (a bug of the first
        # version: every stream's events bunched into ~10 ms every ~100 ms). The timer is armed
        # below, at the earliest tick left in the wheel.
        self.timer = _ARMING
        now_tick = int(loop.time() / _TICK_S)
        due = [t for t in self.wheel if t <= now_tick]
        due.sort()
        deltas, n_deltas, interval = _DELTAS, len(_DELTAS), self.interval
        for t in due:
            for state in self.wheel.pop(t):
                transport, sent, t0 = state
                if transport.is_closing():
                    continue
                if sent < self.deltas:
                    pre, post = deltas[sent % n_deltas]
                    transport.write(pre + b"%019d" % time.monotonic_ns() + post)
                    state[1] = sent + 1
                    self._schedule(state, t0 + (sent + 1) * interval, loop)
                elif sent == self.deltas:  # content_block_stop, message_delta, message_stop
                    transport.write(_chunk(self._end_events()) + b"0\r\n\r\n")
                # the connection stays open for the next request (keep-alive)
        self.timer = None
        if self.wheel:
            self.next_tick = min(self.wheel)
            self.timer = loop.call_at(self.next_tick * _TICK_S, self._tick)


LONG: LongStreams | None = None


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/messages"):
            body = b"".join(self.body)
            found = _MODEL.search(body)
            model = found.group(1) if found else b"claude-haiku-4-5"
            if _STREAM.search(body) and LONG is not None:
                LONG.start(transport, model)
            elif _STREAM.search(body):
                first, rest = REPLIES.stream(model)
                transport.write(first)
                transport.write(rest)
            else:
                transport.write(REPLIES.message(model))
        elif method == b"POST" and path.endswith(b"/count_tokens"):
            transport.write(REPLIES.count_tokens)
        elif method == b"GET" and path in (b"/health", b"/"):
            transport.write(REPLIES.health)
        else:
            transport.write(REPLIES.not_found)
        if not self.parser.should_keep_alive():
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream on http://{host}:{port}", file=sys.stderr, flush=True)
    if LONG is not None:
        with _batch_accepting(loop, host, port):
            await stop.wait()
        return
    server = await loop.create_server(Connection, host, port, backlog=4096, reuse_address=True)
    async with server:
        await stop.wait()


class _batch_accepting:  # noqa: N801 - a context manager used like a function
    """Accept up to 256 connections per readable event of the listening socket.

    libuv (under uvloop) accepts one connection per event-loop iteration since 1.45; while
    this server is busy writing thousands of stream events, an iteration takes milliseconds,
    so a burst of new connections waited seconds in the accept queue (measured: ~10 % of
    5,000 streams got their first byte ~20 s late on a loaded machine). The benchmark's
    upstream must not be the limit of what it measures, so in long-stream mode it accepts
    in batches, as asyncio's own selector loop does."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        import socket

        self.loop = loop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.tasks: set[asyncio.Task[Any]] = set()

    def _accept(self) -> None:
        import socket

        for _ in range(256):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE and the like: say so, keep serving the others
                print(f"fake upstream: accept failed: {exc}", file=sys.stderr, flush=True)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self.loop.create_task(self.loop.connect_accepted_socket(Connection, conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def __enter__(self) -> _batch_accepting:
        self.loop.add_reader(self.sock.fileno(), self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--stream-events", type=int, default=0, help="long streams: N events per stream"
    )
    parser.add_argument(
        "--stream-seconds", type=float, default=20.0, help="long streams: over T seconds"
    )
    args = parser.parse_args(argv)
    global LONG
    if args.stream_events:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:  # thousands of streams: one descriptor each
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        LONG = LongStreams(args.stream_events, args.stream_seconds)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
