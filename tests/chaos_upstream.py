"""The upstream of the full hostile suite (tests/hostile_chaos.py): one address that answers
each request as the request asks, so that well-behaved, faulty and malicious replies reach one
gateway at the same time.

A request whose body contains the marker ``[[chaos:<case>]]`` (in a message's text: the
gateway forwards it in both dialects) is answered by the malicious behaviour that ``<case>``
names in :func:`cases` (:mod:`tests.fakes.hostile_upstream`'s behaviours, with the suite's
sizes). Any other request is relayed to :class:`~tests.fakes.anthropic_server.FakeAnthropic`
with its fault injection on (``--rate``): 429, 529, 500, resets, slow replies, broken streams.

Runs as its own process, so that the client load and the gateway's monitor do not share a GIL
with it::

    python -m tests.chaos_upstream --scale full --rate 0.25 --seed 7

prints ``port <n>`` once it listens; ``GET /__stats`` answers what it did (cases served,
requests relayed, faults injected); SIGTERM or a closed stdin stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.hostile_upstream import BEHAVIOURS, MiB, _Exchange

MARKER = re.compile(rb"\[\[chaos:([a-z0-9_]+)\]\]")
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * MiB
CJK = "请把下面的段落翻译成英文并总结要点：" + "数据库事务的隔离级别决定了并发读写的可见性。" * 12
CJK_TOKENS = len(CJK) + 20  # one token per character, as a real tokenizer may count


def marker(case: str) -> str:
    return f"[[chaos:{case}]]"


@dataclass(frozen=True)
class Sizes:
    gzip_decoded: int
    long_line: int
    huge_headers: int
    huge_header: int


SIZES = {
    "full": Sizes(1024 * MiB, 50_000_000, 200_000_000, 8_000_000),
    "small": Sizes(64 * MiB, 20_000_000, 1_000_000, 1_000_000),
}


def cases(scale: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Case name → (hostile behaviour, its parameters), at the scale's sizes."""
    s = SIZES[scale]
    return {
        "gzip_bomb": ("gzip_bomb", {"decoded_bytes": s.gzip_decoded}),
        "long_line": ("long_line", {"line_bytes": s.long_line}),
        "endless": ("endless", {"interval_s": 0.005}),
        "trickle": ("trickle", {"interval_s": 0.02, "fast_events": 3}),
        "huge_headers": ("huge_headers", {"total_bytes": s.huge_headers}),
        "huge_request_id": ("huge_header", {"name": "request-id", "value_bytes": s.huge_header}),
        "invalid_utf8": ("invalid_utf8", {}),
        "nan": ("nan", {}),
        "empty_object": ("empty_object", {}),
        "error_200": ("error_200", {}),
        "content_strings": ("content_strings", {}),
        "usage_negative": ("usage", {"value": -5}),
        "usage_string": ("usage", {"value": "12"}),
        "usage_huge": ("usage", {"value": 10**30}),
        "bad_index": ("bad_index", {"index": 7}),
        "redirect": ("redirect", {"status": 302}),
        "cr_only": ("cr_only", {}),
        "reset": ("reset", {}),
        # the budgeted keys' traffic: usage the reservation must survive
        "cjk_usage": ("usage", {"value": CJK_TOKENS}),
        "lying_input": ("usage", {"value": 10**15}),
        "lying_output": ("usage", {"value": 10**9}),
        "normal": ("normal", {}),
    }


@dataclass
class Request:
    method: str
    target: str
    head: bytes  # request line and headers, with the final CRLF CRLF
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request (content-length bodies only: what the gateway sends), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) < 3:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("chunked request bodies are not supported by the chaos upstream")
    length = int(headers.get("content-length", "0") or 0)
    if length > _MAX_BODY:
        return None
    try:
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return Request(parts[0], parts[1], head, headers, body)


class Router:
    def __init__(self, fake: FakeAnthropic, scale: str) -> None:
        self.fake = fake
        self.cases = cases(scale)
        self.counts: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return {"cases": dict(self.counts), "injected": dict(self.fake.chaos_counts)}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                if request.target == "/__stats":
                    payload = json.dumps(self.stats()).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
                    )
                    await writer.drain()
                    continue
                found = MARKER.search(request.body)
                case = found.group(1).decode() if found else None
                if case is None or case not in self.cases:
                    self.counts["relayed to the fault-injecting fake"] += 1
                    await self.relay(request, writer)
                    break  # the relayed reply ends with the connection
                self.counts[case] += 1
                behaviour, params = self.cases[case]
                try:
                    body = json.loads(request.body)
                except ValueError:
                    body = {}
                exchange = _Exchange(
                    reader,
                    writer,
                    request.target,
                    request.headers,
                    body if isinstance(body, dict) else {},
                    dict(params),
                )
                if not await BEHAVIOURS[behaviour](exchange):
                    break
        except ConnectionError:
            pass  # the gateway went away (it cuts what it refuses): that is the point
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def relay(self, request: Request, writer: asyncio.StreamWriter) -> None:
        """Send the request to the fake with ``connection: close`` and pipe its reply back
        byte for byte (resets and cut streams included)."""
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.fake.port)
        try:
            lines = request.head.split(b"\r\n")
            kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith(b"connection:")]
            head = b"\r\n".join([lines[0], *kept, b"connection: close"]) + b"\r\n\r\n"
            up_writer.write(head + request.body)
            await up_writer.drain()
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            up_writer.close()


async def serve(scale: str, rate: float, seed: int, slow_s: float) -> None:
    with FakeAnthropic() as fake:
        fake.chaos(rate, seed=seed, slow_s=slow_s)
        router = Router(fake, scale)
        server = await asyncio.start_server(router.handle, "127.0.0.1", 0, limit=_MAX_HEAD)
        port = server.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stdin = sys.stdin.fileno()
        loop.add_reader(stdin, lambda: None if os.read(stdin, 64) else stop.set())
        print(f"port {port}", flush=True)
        await stop.wait()
        server.close()  # open exchanges are cancelled by asyncio.run on the way out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", choices=sorted(SIZES), default="full")
    parser.add_argument("--rate", type=float, default=0.25, help="share of faulty replies")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--slow-s", type=float, default=2.5, help="how slow a slow reply is")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.scale, args.rate, args.seed, args.slow_s))


if __name__ == "__main__":
    main()
