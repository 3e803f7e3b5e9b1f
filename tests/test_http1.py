"""The gateway's upstream HTTP/1.1 client (``tierwise.gateway.http1``) against raw asyncio
servers on loopback: keep-alive reuse, bodies by length / chunks / end of connection, gzip,
and the failures the engine turns into retries (resets, garbage, stalls)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from tierwise.gateway.http1 import Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


def test_keep_alive_reuses_one_connection_and_sends_the_body_verbatim() -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                seen.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Thing: a\r\n\r\nok")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await _serve(handler)
        pool = Pool(url + "/base")
        for i in range(5):
            response = await pool.post("/v1/messages", b'{"i":%d}' % i, {"x-api-key": "k"}, 5)
            assert response.status == 200
            assert response.headers["x-thing"] == "a"
            assert await response.read(5) == b"ok"
        await pool.aclose()
        server.close()
        await server.wait_closed()

    run(main())
    assert connections == 1
    assert seen[0].startswith(b"POST /base/v1/messages HTTP/1.1\r\n")
    assert b"x-api-key: k\r\n" in seen[0]
    assert seen[3].endswith(b'\r\n\r\n{"i":3}')


def test_chunked_stream_arrives_piece_by_piece_then_the_connection_is_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"6\r\n world\r\n0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await _serve(handler)
        pool = Pool(url)
        for _ in range(2):
            response = await pool.post("/s", b"{}", {}, 5)
            pieces = [p async for p in response.iter(5)]
            assert b"".join(pieces) == b"hello world"
            assert len(pieces) == 2
        await pool.aclose()
        server.close()

    run(main())
    assert connections == 1


def test_body_delimited_by_the_end_of_the_connection_and_gzip() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n\r\n" + gzip.compress(b"zip!"))
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await _serve(handler)
        pool = Pool(url)
        response = await pool.post("/x", b"{}", {}, 5)
        assert await response.read(5) == b"zip!"
        await pool.aclose()
        server.close()

    run(main())


def test_reset_before_the_head_and_garbage_are_connection_errors() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.transport.abort()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        for handler in (reset, garbage):
            server, url = await _serve(handler)
            pool = Pool(url)
            with pytest.raises(ConnectionError):
                await pool.post("/x", b"{}", {}, 5)
            await pool.aclose()
            server.close()

    run(main())


def test_stalls_time_out_and_a_closed_port_is_refused() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def main() -> None:
        server, url = await _serve(stall)
        pool = Pool(url)
        response = await pool.post("/x", b"{}", {}, 5)
        with pytest.raises(TimeoutError):
            await response.read(0.2)
        await pool.aclose()
        server.close()
        server2, url2 = await _serve(stall)
        server2.close()
        await server2.wait_closed()
        refused = Pool(url2)
        with pytest.raises(ConnectionRefusedError):
            await refused.post("/x", b"{}", {}, 5)
        await refused.aclose()

    run(main())


def test_header_values_with_line_breaks_are_refused() -> None:
    pool = Pool("https://api.example.invalid")
    assert pool.authority == "api.example.invalid" and pool.port == 443
    with pytest.raises(ValueError, match="line break"):
        pool.request_head("/v1/messages", {"anthropic-beta": "a\r\nx-evil: 1"}, 2)
