"""A malicious fake of the Anthropic Messages API, for tests and load scripts.

A raw asyncio TCP server (it writes bytes, so it can send broken HTTP) on 127.0.0.1 with an
ephemeral port, run in a background thread with its own event loop. One scripted behaviour per
request: a FIFO queue of scripts, then the default::

    with HostileUpstream(default="normal") as upstream:
        upstream.script("gzip_bomb", decoded_bytes=512 * MiB)   # the next request only
        base_url = upstream.base_url                           # point the gateway at it

Behaviours follow the request: a ``"stream": true`` request gets the SSE form of the attack,
any other the JSON form (when the attack has both). Every big payload is generated lazily and
written with back-pressure (``drain``), so one connection never holds more than a few MB here,
whatever the size of the attack; writing stops as soon as the client goes away.

Behaviours (parameters in brackets):

==================== ===========================================================================
``normal``           a well-formed reply (JSON, or an SSE stream), the control
``gzip_bomb``        gzip body decoding to [decoded_bytes] (default 1 GiB) of valid JSON or SSE
``long_line``        an SSE stream whose second content_block_delta is one line of [line_bytes]
                     (50 MB)
``endless``          an SSE stream of text deltas every [interval_s] (5 ms), never ending
``huge_headers``     [total_bytes] (200 MB) of header lines before any body
``huge_header``      one header [name] (request-id) of [value_bytes] (8 MB)
``invalid_utf8``     a JSON message with bytes that are not UTF-8 in its text
``nan``              a JSON message with ``NaN`` as usage.input_tokens
``empty_object``     ``{}`` with status 200
``error_200``        ``{"type": "error", …}`` with status 200
``content_strings``  a JSON message with ``content: ["a"]``
``usage``            usage.input_tokens (JSON) / message_delta usage.output_tokens (SSE) set to
                     [value]: e.g. -5, "12", 10**30 (written as a JSON integer literal)
``bad_index``        an SSE stream whose second delta has index [index] (7), never started
``redirect``         [status] (302) with a location header and a short body
``cr_only``          a well-formed SSE stream with lone CR line endings
``trickle``          a well-formed reply whose first [fast_events] (3) events come at once and
                     the rest one byte every [interval_s] (20 ms)
``reset``            head and half the body, then a TCP reset
``status``           [status] with [body] and optional [headers] (e.g. 204, 500)
``interim``          ``100 Continue`` and ``103 Early Hints`` heads, then a normal reply
``encoding``         a normal JSON reply labelled ``content-encoding: [encoding]`` (br)
==================== ===========================================================================

Run alone for a load script: ``python -m tests.fakes.hostile_upstream --port 9300 --default
gzip_bomb``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

__all__ = ["BEHAVIOURS", "HostileUpstream", "MiB", "Received"]

MiB = 1024 * 1024
_MAX_REQUEST_HEAD = 64 * 1024
_MAX_REQUEST_BODY = 8 * MiB
_PIECE = 64 * 1024  # bytes per write of a big payload


@dataclass
class Received:
    """One request as the fake saw it (the body cut at 64 KiB)."""

    path: str
    headers: dict[str, str]
    body: bytes
    behaviour: str

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class _Exchange:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) else "claude-haiku-4-5"

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, status: int, headers: dict[str, str]) -> None:
        reason = {200: "OK", 204: "No Content", 302: "Found"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in headers.items()]
        await self.send(("".join(lines) + "\r\n").encode("latin-1"))

    async def json_reply(self, payload: bytes, status: int = 200) -> None:
        await self.head(
            status,
            {
                "content-type": "application/json",
                "content-length": str(len(payload)),
                "request-id": "req_hostile",
            },
        )
        await self.send(payload)

    async def sse_head(self, extra: dict[str, str] | None = None) -> None:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "transfer-encoding": "chunked",
            "cache-control": "no-cache",
            "request-id": "req_hostile",
        }
        await self.head(200, {**headers, **(extra or {})})

    async def chunk(self, data: bytes) -> None:
        if data:
            await self.send(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_chunks(self) -> None:
        await self.send(b"0\r\n\r\n")


# -- payloads --------------------------------------------------------------------------------


def message(model: str, text: str = "Hello from the hostile fake.", **usage: Any) -> dict[str, Any]:
    return {
        "id": "msg_hostile",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            **usage,
        },
    }


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(payload).encode() + b"\n\n"


def stream_start(model: str, **usage: Any) -> list[bytes]:
    head = message(model, **usage)
    head.update(content=[], stop_reason=None)
    head["usage"]["output_tokens"] = 1
    return [
        event("message_start", {"type": "message_start", "message": head}),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]


def delta(text: str, index: int = 0) -> bytes:
    payload = {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }
    return event("content_block_delta", payload)


def stream_end(output_tokens: Any = 7) -> list[bytes]:
    return [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]


def normal_stream(model: str) -> list[bytes]:
    return [*stream_start(model), delta("Hello "), delta("from the fake."), *stream_end()]


def gzip_bomb(prefix: bytes, unit: bytes, count: int, suffix: bytes) -> Iterator[bytes]:
    """A gzip stream of ``prefix + unit * count + suffix``, generated lazily: after a full
    flush deflate forgets its history, so every ``unit`` compresses to the same bytes."""
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip header: deflate, no name, no mtime
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    yield compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(unit, crc)
        yield segment
    crc = zlib.crc32(suffix, crc)
    size = len(prefix) + len(unit) * count + len(suffix)
    yield compressor.compress(suffix) + compressor.flush(zlib.Z_FINISH)
    yield struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


# -- behaviours ------------------------------------------------------------------------------

Behaviour = Callable[[_Exchange], Awaitable[bool]]  # returns: may the connection be reused
BEHAVIOURS: dict[str, Behaviour] = {}


def behaviour(name: str) -> Callable[[Behaviour], Behaviour]:
    def register(fn: Behaviour) -> Behaviour:
        BEHAVIOURS[name] = fn
        return fn

    return register


@behaviour("normal")
async def _normal(ex: _Exchange) -> bool:
    if not ex.stream:
        await ex.json_reply(json.dumps(message(ex.model)).encode())
        return True
    await ex.sse_head()
    for piece in normal_stream(ex.model):
        await ex.chunk(piece)
    await ex.end_chunks()
    return True


@behaviour("gzip_bomb")
async def _gzip_bomb(ex: _Exchange) -> bool:
    decoded = int(ex.params.get("decoded_bytes", 1024 * MiB))
    count = max(decoded // MiB, 1)
    if ex.stream:
        one = delta("a" * 900)
        unit = one * (MiB // len(one))
        prefix = b"".join(stream_start(ex.model))
        suffix = b"".join(stream_end())
        await ex.sse_head({"content-encoding": "gzip"})
    else:
        text = json.dumps(message(ex.model, text="@@"))
        before, after = text.split("@@")
        prefix, unit, suffix = before.encode(), b"a" * MiB, after.encode()
        await ex.head(
            200,
            {
                "content-type": "application/json",
                "content-encoding": "gzip",
                "transfer-encoding": "chunked",
            },
        )
    for piece in gzip_bomb(prefix, unit, count, suffix):
        await ex.chunk(piece)
    await ex.end_chunks()
    return True


@behaviour("long_line")
async def _long_line(ex: _Exchange) -> bool:
    size = int(ex.params.get("line_bytes", 50 * 1000 * 1000))
    await ex.sse_head()
    for piece in stream_start(ex.model):
        await ex.chunk(piece)
    await ex.chunk(delta("Hi "))  # the stream has started when the long line comes
    await ex.chunk(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"'
    )
    block = b"a" * _PIECE
    sent = 0
    while sent < size:
        piece = block[: size - sent]
        await ex.chunk(piece)
        sent += len(piece)
    await ex.chunk(b'"}}\n\n')
    for piece in stream_end():
        await ex.chunk(piece)
    await ex.end_chunks()
    return True


@behaviour("endless")
async def _endless(ex: _Exchange) -> bool:
    interval = float(ex.params.get("interval_s", 0.005))
    await ex.sse_head()
    for piece in stream_start(ex.model):
        await ex.chunk(piece)
    while True:
        await ex.chunk(delta("and more "))
        await asyncio.sleep(interval)


@behaviour("huge_headers")
async def _huge_headers(ex: _Exchange) -> bool:
    total = int(ex.params.get("total_bytes", 200 * 1000 * 1000))
    await ex.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
    filler = b"b" * 1000
    sent, i = 0, 0
    batch: list[bytes] = []
    while sent < total:
        line = b"x-junk-%d: %s\r\n" % (i, filler)
        batch.append(line)
        sent += len(line)
        i += 1
        if len(batch) == 64:
            await ex.send(b"".join(batch))
            batch = []
    payload = json.dumps(message(ex.model)).encode()
    await ex.send(b"".join(batch) + b"content-length: %d\r\n\r\n" % len(payload) + payload)
    return False


@behaviour("huge_header")
async def _huge_header(ex: _Exchange) -> bool:
    name = str(ex.params.get("name", "request-id"))
    size = int(ex.params.get("value_bytes", 8 * 1000 * 1000))
    await ex.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + name.encode() + b": ")
    block = b"r" * _PIECE
    sent = 0
    while sent < size:
        piece = block[: size - sent]
        await ex.send(piece)
        sent += len(piece)
    payload = json.dumps(message(ex.model)).encode()
    await ex.send(b"\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)
    return False


def _json_attack(payload: bytes) -> Behaviour:
    async def run(ex: _Exchange) -> bool:
        await ex.json_reply(payload)
        return True

    return run


BEHAVIOURS["invalid_utf8"] = _json_attack(
    json.dumps(message("claude-haiku-4-5", text="@@")).encode().replace(b"@@", b"\xff\xfe\xc3(")
)
BEHAVIOURS["nan"] = _json_attack(
    json.dumps(message("claude-haiku-4-5", input_tokens=float("nan"))).encode()
)
BEHAVIOURS["empty_object"] = _json_attack(b"{}")
BEHAVIOURS["error_200"] = _json_attack(
    b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
)


@behaviour("content_strings")
async def _content_strings(ex: _Exchange) -> bool:
    reply = message(ex.model)
    reply["content"] = ["a"]
    await ex.json_reply(json.dumps(reply).encode())
    return True


@behaviour("usage")
async def _usage(ex: _Exchange) -> bool:
    value = ex.params.get("value", -5)
    if not ex.stream:
        await ex.json_reply(json.dumps(message(ex.model, input_tokens=value)).encode())
        return True
    await ex.sse_head()
    for piece in [*stream_start(ex.model), delta("Hi"), *stream_end(output_tokens=value)]:
        await ex.chunk(piece)
    await ex.end_chunks()
    return True


@behaviour("bad_index")
async def _bad_index(ex: _Exchange) -> bool:
    index = ex.params.get("index", 7)
    await ex.sse_head()
    pieces = [*stream_start(ex.model), delta("Hi "), delta("there", index=index), *stream_end()]
    for piece in pieces:
        await ex.chunk(piece)
    await ex.end_chunks()
    return True


@behaviour("redirect")
async def _redirect(ex: _Exchange) -> bool:
    status = int(ex.params.get("status", 302))
    body = b"<html>moved</html>"
    await ex.head(
        status,
        {
            "location": "http://127.0.0.1:9/elsewhere",
            "content-type": "text/html",
            "content-length": str(len(body)),
        },
    )
    await ex.send(body)
    return True


@behaviour("cr_only")
async def _cr_only(ex: _Exchange) -> bool:
    await ex.sse_head()
    for piece in normal_stream(ex.model):
        await ex.chunk(piece.replace(b"\n", b"\r"))
    await ex.end_chunks()
    return True


@behaviour("trickle")
async def _trickle(ex: _Exchange) -> bool:
    interval = float(ex.params.get("interval_s", 0.02))
    fast = int(ex.params.get("fast_events", 3))
    if not ex.stream:
        payload = json.dumps(message(ex.model)).encode()
        await ex.head(
            200, {"content-type": "application/json", "content-length": str(len(payload))}
        )
        for byte in payload:
            await ex.send(bytes([byte]))
            await asyncio.sleep(interval)
        return True
    pieces = normal_stream(ex.model)
    await ex.sse_head()
    await ex.chunk(b"".join(pieces[:fast]))
    for byte in b"".join(pieces[fast:]):
        await ex.chunk(bytes([byte]))
        await asyncio.sleep(interval)
    await ex.end_chunks()
    return True


@behaviour("reset")
async def _reset(ex: _Exchange) -> bool:
    if ex.stream:
        await ex.sse_head()
        for piece in [*stream_start(ex.model), delta("Hi ")]:
            await ex.chunk(piece)
    else:
        payload = json.dumps(message(ex.model)).encode()
        await ex.head(
            200, {"content-type": "application/json", "content-length": str(len(payload))}
        )
        await ex.send(payload[: len(payload) // 2])
    await asyncio.sleep(0.05)
    sock = ex.writer.get_extra_info("socket")
    if sock is not None:  # RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ex.writer.transport.abort()
    return False


@behaviour("status")
async def _status(ex: _Exchange) -> bool:
    status = int(ex.params.get("status", 204))
    body = ex.params.get("body", b"")
    body = body.encode() if isinstance(body, str) else bytes(body)
    headers = dict(ex.params.get("headers") or {})
    if status not in (204, 304):
        headers.setdefault("content-length", str(len(body)))
    await ex.head(status, headers)
    if status not in (204, 304):
        await ex.send(body)
    return True


@behaviour("interim")
async def _interim(ex: _Exchange) -> bool:
    await ex.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
    return await _normal(ex)


@behaviour("encoding")
async def _encoding(ex: _Exchange) -> bool:
    encoding = str(ex.params.get("encoding", "br"))
    payload = json.dumps(message(ex.model)).encode()
    await ex.head(
        200,
        {
            "content-type": "application/json",
            "content-encoding": encoding,
            "content-length": str(len(payload)),
        },
    )
    await ex.send(payload)
    return True


# -- the server ------------------------------------------------------------------------------


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except asyncio.LimitOverrunError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    path = parts[1] if len(parts) > 1 else "/"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length > _MAX_REQUEST_BODY:
        return None
    try:
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return path, headers, body


class HostileUpstream:
    """The malicious upstream, as a context manager (a thread with its own event loop)."""

    def __init__(
        self,
        default: str = "normal",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        url_host: str | None = None,
    ) -> None:
        """``ssl_context``: serve HTTPS with it (a test CA's certificate); ``url_host``: the
        host name :attr:`base_url` uses (e.g. a name only a test proxy resolves)."""
        if default not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {default!r}; known: {', '.join(BEHAVIOURS)}")
        self.default: tuple[str, dict[str, Any]] = (default, {})
        self.host = host
        self._port = port
        self._ssl = ssl_context
        self.url_host = url_host or host
        self._scripts: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._lock = threading.Lock()
        self._received: collections.deque[Received] = collections.deque(maxlen=200)
        self.handled = 0
        self.open_connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- scripting -----------------------------------------------------------------------
    def script(self, name: str, **params: Any) -> None:
        """Behave as ``name`` for the next request that has no earlier script."""
        if name not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}")
        with self._lock:
            self._scripts.append((name, params))

    def set_default(self, name: str, **params: Any) -> None:
        if name not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}")
        with self._lock:
            self.default = (name, params)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._received.clear()
            self.handled = 0

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def pending_scripts(self) -> int:
        with self._lock:
            return len(self._scripts)

    def _next(self) -> tuple[str, dict[str, Any]]:
        with self._lock:
            return self._scripts.popleft() if self._scripts else self.default

    # -- serving -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the hostile upstream is not running")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self.url_host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.open_connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                path, headers, raw = request
                name, params = self._next()
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                with self._lock:
                    self.handled += 1
                    self._received.append(Received(path, headers, raw[:_PIECE], name))
                exchange = _Exchange(
                    reader, writer, path, headers, body if isinstance(body, dict) else {}, params
                )
                if not await BEHAVIOURS[name](exchange):
                    break
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self._port, limit=_MAX_REQUEST_HEAD, ssl=self._ssl
        )

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="hostile-upstream", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=10)
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop, self._thread, self._server = None, None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--default", default="normal", choices=sorted(BEHAVIOURS))
    args = parser.parse_args(argv)
    with HostileUpstream(args.default, host=args.host, port=args.port) as upstream:
        print(
            f"hostile upstream on {upstream.base_url}, default behaviour {args.default}", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
