"""The gateway's upstream HTTP/1.1 client (``tierwise.gateway.http1``) against raw asyncio
servers on loopback: keep-alive reuse, bodies by length / chunks / end of connection, gzip,
the failures the engine turns into retries (resets, garbage, stalls), and hostile replies
(issue 11): oversized heads, gzip bombs, odd encodings and statuses, endless streams, and the
bounded pool (issue 16)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.loopback import Handler, read_request, run, serve
from tierwise.gateway.http1 import (
    SLICE,
    BrokenResponse,
    DeadlineExceeded,
    Limits,
    Pool,
    PoolTimeout,
    ReadStalled,
    ResponseTooLarge,
)
from tierwise.gateway.upstream import MAX_ERROR_BODY_BYTES, HttpUpstream, UpstreamError


def test_keep_alive_reuses_one_connection_and_sends_the_body_verbatim() -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Thing: a\r\n\r\nok")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
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
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"6\r\n world\r\n0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
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
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n\r\n" + gzip.compress(b"zip!"))
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        pool = Pool(url)
        response = await pool.post("/x", b"{}", {}, 5)
        assert await response.read(5) == b"zip!"
        await pool.aclose()
        server.close()

    run(main())


def test_reset_before_the_head_and_garbage_are_connection_errors() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        for handler in (reset, garbage):
            server, url = await serve(handler)
            pool = Pool(url)
            with pytest.raises(ConnectionError):
                await pool.post("/x", b"{}", {}, 5)
            await pool.aclose()
            server.close()

    run(main())


def test_stalls_time_out_and_a_closed_port_is_refused() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def main() -> None:
        server, url = await serve(stall)
        pool = Pool(url)
        response = await pool.post("/x", b"{}", {}, 5)
        with pytest.raises(TimeoutError):
            await response.read(0.2)
        await pool.aclose()
        server.close()
        server2, url2 = await serve(stall)
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


# -- hostile responses: heads, bodies, encodings, statuses (issue 11) -------------------------

MiB = 1024 * 1024


async def _hold(writer: asyncio.StreamWriter, data: bytes) -> int:
    """Write ``data`` in 64 KiB pieces until done or the client goes away; bytes written."""
    sent = 0
    try:
        for i in range(0, len(data), 65536):
            writer.write(data[i : i + 65536])
            await writer.drain()
            sent += len(data[i : i + 65536])
    except ConnectionError:
        pass
    return sent


def _bomb(decoded: int) -> bytes:
    """A gzip body that decodes to ``decoded`` bytes of "a" (~1 KB per MiB)."""
    from tests.fakes.hostile_upstream import gzip_bomb

    return b"".join(gzip_bomb(b"", b"a" * MiB, decoded // MiB, b""))


def _respond_once(response: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await _hold(writer, response)
        await asyncio.sleep(0.5)
        writer.close()

    return handler


async def _one(handler: Handler, pool_kwargs: dict[str, Any] | None = None) -> Any:
    """Serve one request with ``handler``; return (pool, response) or the exception raised."""
    server, url = await serve(handler)
    pool = Pool(url, **(pool_kwargs or {}))
    try:
        return pool, await pool.post("/x", b"{}", {}, 5)
    except (OSError, TimeoutError) as exc:
        return pool, exc
    finally:
        server.close()


def test_200_mb_of_headers_are_refused_after_the_limit_without_being_read() -> None:
    written: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"x-junk: " + b"b" * 1000 + b"\r\n"
        sent = 0
        try:
            while sent < 200 * 1000 * 1000:
                writer.write(line * 64)
                await writer.drain()
                sent += len(line) * 64
        except ConnectionError:
            pass
        written.append(sent)
        writer.close()

    async def main() -> None:
        pool, result = await _one(handler)
        assert isinstance(result, ResponseTooLarge)
        assert "head is larger than 65536 bytes" in str(result)
        assert result.kind == "bad_response"
        await asyncio.sleep(0.2)  # let the server notice the close
        await pool.aclose()

    run(main())
    # The client closed at once: the server could push only what the socket buffers hold.
    assert written and written[0] < 20 * MiB


def test_an_8_mb_header_value_and_too_many_header_lines_are_refused() -> None:
    big = b"HTTP/1.1 200 OK\r\nrequest-id: " + b"r" * (8 * MiB) + b"\r\ncontent-length: 0\r\n\r\n"
    many = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(129))
    many += b"content-length: 0\r\n\r\n"

    async def main() -> None:
        for response, message in ((big, "head is larger"), (many, "more than 128 header")):
            pool, result = await _one(_respond_once(response))
            assert isinstance(result, ResponseTooLarge), result
            assert message in str(result)
            await pool.aclose()
        # Both limits are settings: a larger head passes with a larger limit.
        pool, result = await _one(
            _respond_once(many), {"limits": Limits(max_headers=200, max_header_bytes=1 << 20)}
        )
        assert not isinstance(result, BaseException)
        assert await result.read(5) == b""
        await pool.aclose()

    run(main())


def test_header_values_with_control_bytes_are_refused() -> None:
    async def main() -> None:
        for value in (b"a\x01b", b"a\x00b", b"a\x7fb", b"a\x1bb"):
            response = b"HTTP/1.1 200 OK\r\nx-bad: " + value + b"\r\ncontent-length: 0\r\n\r\n"
            pool, result = await _one(_respond_once(response))
            assert isinstance(result, BrokenResponse), (value, result)
            await pool.aclose()
        ok = b"HTTP/1.1 200 OK\r\nx-tab: a\tb\r\ncontent-length: 0\r\n\r\n"
        pool, result = await _one(_respond_once(ok))
        assert result.headers["x-tab"] == "a\tb"
        await result.read(5)
        await pool.aclose()

    run(main())


def test_a_gzip_bomb_read_whole_stops_at_the_decoded_limit_with_bounded_memory() -> None:
    import tracemalloc

    body = _bomb(256 * MiB)  # ~260 KB on the wire
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body)
    limit = 8 * MiB

    async def main() -> None:
        pool, response = await _one(
            _respond_once(head + body), {"limits": Limits(max_body_bytes=limit)}
        )
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLarge, match=f"larger than {limit} bytes"):
                await response.read(5)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < limit + 4 * MiB  # the decoded limit plus a few slices, never 256 MiB
        await pool.aclose()

    run(main())


def test_decompression_yields_to_the_event_loop_and_never_hands_out_a_huge_piece() -> None:
    body = _bomb(64 * MiB)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"

    async def main() -> None:
        pool, response = await _one(_respond_once(head + chunked))
        await asyncio.sleep(0.3)  # the whole compressed body is buffered: no network waits left
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        sizes = []
        async for piece in response.iter(5):
            sizes.append(len(piece))
        done = True
        await task
        assert sum(sizes) == 64 * MiB
        assert max(sizes) <= SLICE
        assert ticks >= 32  # the loop ran other tasks while 64 MiB were decoded
        await pool.aclose()

    run(main())


def test_a_streamed_gzip_bomb_stops_at_the_stream_limit() -> None:
    body = _bomb(128 * MiB)
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body)

    async def main() -> None:
        pool, response = await _one(
            _respond_once(head + body), {"limits": Limits(max_stream_bytes=16 * MiB)}
        )
        sizes: list[int] = []

        async def drain() -> None:
            async for piece in response.iter(5):
                sizes.append(len(piece))

        with pytest.raises(ResponseTooLarge, match="stream is larger than 16777216 bytes"):
            await drain()
        assert max(sizes) <= SLICE
        assert sum(sizes) <= 16 * MiB
        await pool.aclose()

    run(main())


def test_unsupported_or_broken_content_encodings_are_errors_not_garbage() -> None:
    import zlib

    def reply(encoding: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-encoding: %s\r\ncontent-length: %d\r\n\r\n%s" % (
            encoding,
            len(body),
            body,
        )

    good = gzip.compress(b'{"ok": true}')

    async def main() -> None:
        for encoding in (b"br", b"zstd", b"compress", b"gzip, br", b"x-evil"):
            pool, result = await _one(_respond_once(reply(encoding, b"\x8b\x00garbage")))
            assert isinstance(result, BrokenResponse), (encoding, result)
            assert "unsupported content-encoding" in str(result)
            await pool.aclose()
        pool, response = await _one(_respond_once(reply(b"gzip", good[:-12])))  # truncated
        with pytest.raises(BrokenResponse, match="truncated"):
            await response.read(5)
        await pool.aclose()
        pool, response = await _one(_respond_once(reply(b"gzip", b"not gzip at all")))
        with pytest.raises(BrokenResponse, match="does not decompress"):
            await response.read(5)
        await pool.aclose()
        two = gzip.compress(b'{"a":') + gzip.compress(b"1}")  # two gzip members: both decoded
        pool, response = await _one(_respond_once(reply(b"gzip", two)))
        assert await response.read(5) == b'{"a":1}'
        await pool.aclose()
        deflated = zlib.compress(b"deflated!")
        pool, response = await _one(_respond_once(reply(b"deflate", deflated)))
        assert await response.read(5) == b"deflated!"
        await pool.aclose()

    run(main())


def test_interim_1xx_heads_are_skipped_and_101_or_odd_framing_is_refused() -> None:
    interim = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-final: yes\r\n\r\nok"
    )
    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
    te = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nabc"

    async def main() -> None:
        pool, response = await _one(_respond_once(interim))
        assert response.status == 200
        assert response.headers == {"content-length": "2", "x-final": "yes"}
        assert await response.read(5) == b"ok"
        await pool.aclose()
        for data, message in ((upgrade, "101"), (te, "transfer-encoding")):
            pool, result = await _one(_respond_once(data))
            assert isinstance(result, BrokenResponse), result
            assert message in str(result)
            await pool.aclose()

    run(main())


def test_204_and_302_are_plain_replies_and_the_connection_is_reused() -> None:
    connections = 0
    replies = [
        b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n",
        b"HTTP/1.1 302 Found\r\nlocation: http://elsewhere/\r\ncontent-length: 5\r\n\r\nmoved",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for reply in replies:
            await read_request(reader)
            writer.write(reply)
            await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        pool = Pool(url)
        seen = []
        for _ in replies:
            response = await pool.post("/x", b"{}", {}, 5)
            seen.append((response.status, await response.read(5)))
        assert seen == [(204, b""), (302, b"moved"), (200, b"ok")]
        await pool.aclose()
        server.close()

    run(main())
    assert connections == 1


def test_bytes_after_a_complete_response_spoil_the_connection_not_the_response() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(reader)
                if connections == 1:  # a response, then junk on the same connection
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"
                    )
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nnew")
                await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        pool = Pool(url)
        response = await pool.post("/x", b"{}", {}, 5)
        assert await response.read(5) == b"ok"
        response = await pool.post("/x", b"{}", {}, 5)
        assert await response.read(5) == b"new"
        await pool.aclose()
        server.close()

    run(main())
    assert connections == 2


# -- time: the stall timeout and the deadline of the whole exchange ---------------------------


async def _drain(pieces: AsyncIterator[bytes], sizes: list[int]) -> None:
    async for piece in pieces:
        sizes.append(len(piece))


def _endless_handler(interval_s: float) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"6\r\nmore..\r\n" * 20)
                await writer.drain()
                await asyncio.sleep(interval_s)

    return handler


def test_a_stream_that_never_ends_is_cut_at_the_deadline_even_while_bytes_keep_coming() -> None:
    async def main() -> None:
        for interval in (0.01, 0.0):  # a steady stream, and one that is always already buffered
            pool, response = await _one(_endless_handler(interval))
            received: list[int] = []
            with pytest.raises(DeadlineExceeded):
                await _drain(response.iter(5, deadline=time.monotonic() + 0.3), received)
            assert sum(received) > 0
            await pool.aclose()

    run(main())


def test_a_stall_is_a_read_timeout_and_a_read_whole_honours_the_deadline() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def main() -> None:
        pool, response = await _one(stall)
        with pytest.raises(ReadStalled, match=r"sent nothing for 0\.2s"):
            async for _ in response.iter(0.2):
                pass
        await pool.aclose()
        pool, response = await _one(stall)
        with pytest.raises(DeadlineExceeded):
            await response.read(30, deadline=time.monotonic() + 0.2)
        await pool.aclose()

    run(main())


def test_upstream_post_cuts_an_endless_stream_at_its_deadline() -> None:
    async def main() -> None:
        server, url = await serve(_endless_handler(0.005))
        upstream = HttpUpstream(url, "k")
        reply = await upstream.post(
            "/v1/messages", b"{}", {}, stream=True, timeout_s=5, deadline=time.monotonic() + 0.3
        )
        assert reply.chunks is not None
        with pytest.raises(UpstreamError) as caught:
            async for _ in reply.chunks:
                pass
        assert caught.value.kind == "timeout_error"
        assert "deadline" in str(caught.value)
        await upstream.aclose()
        server.close()

    run(main())


def test_upstream_post_returns_a_302_on_a_stream_as_a_reply_with_a_bounded_body() -> None:
    big = b"x" * (3 * MiB)
    replies = {
        "302": b"HTTP/1.1 302 Found\r\nlocation: http://x/\r\ncontent-length: 5\r\n\r\nmoved",
        "500": b"HTTP/1.1 500 Oops\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big),
        "204": b"HTTP/1.1 204 No Content\r\n\r\n",
    }

    async def main() -> None:
        for status, data in replies.items():
            server, url = await serve(_respond_once(data))
            upstream = HttpUpstream(url, "k")
            reply = await upstream.post("/v1/messages", b"{}", {}, stream=True, timeout_s=5)
            assert reply.status == int(status)
            assert not reply.ok
            assert reply.chunks is None
            assert reply.body is not None
            assert len(reply.body) <= MAX_ERROR_BODY_BYTES
            if status == "302":
                assert reply.body == b"moved"
            await upstream.aclose()
            server.close()

    run(main())


def test_upstream_errors_name_the_limit_that_was_broken() -> None:
    async def main() -> None:
        body = _bomb(64 * MiB)
        head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(
            body
        )
        server, url = await serve(_respond_once(head + body))
        upstream = HttpUpstream(url, "k", limits=Limits(max_body_bytes=MiB))
        with pytest.raises(UpstreamError) as caught:
            await upstream.post("/v1/messages", b"{}", {}, stream=False, timeout_s=5)
        assert caught.value.kind == "bad_response"
        assert "larger than 1048576 bytes" in str(caught.value)
        await upstream.aclose()
        server.close()

    run(main())


# -- the pool: a cap per origin, FIFO queueing, slots given back on every path ---------------


def test_the_pool_caps_connections_and_serves_waiting_requests_in_order() -> None:
    active = 0
    peak = 0
    order: list[int] = []
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            while True:
                try:
                    request = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                order.append(int(request.rsplit(b"=", 1)[1]))
                await gate.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            active -= 1
            writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        pool = Pool(url, max_connections=2)

        async def call(i: int) -> bytes:
            response = await pool.post("/x", b"i=%d" % i, {}, 10)
            return await response.read(10)

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(call(i)))
            await asyncio.sleep(0.02)  # queued in this order
        assert pool.stats() == {"open": 2, "idle": 0, "waiting": 4}
        gate.set()
        assert await asyncio.gather(*tasks) == [b"ok"] * 6
        assert pool.stats()["open"] == 2
        await pool.aclose()
        server.close()

    run(main())
    assert peak == 2
    assert order[:2] == [0, 1] or order[:2] == [1, 0]
    assert order[2:] == [2, 3, 4, 5]


def test_a_request_waiting_for_a_connection_times_out_with_a_clear_error() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(1)  # keep-alive: the connection goes back to the pool
        writer.close()

    async def main() -> None:
        server, url = await serve(slow)
        pool = Pool(url, max_connections=1)
        first = asyncio.create_task(pool.post("/x", b"{}", {}, 10))
        await asyncio.sleep(0.05)
        with pytest.raises(
            PoolTimeout, match=r"no upstream connection became free within 0\.2s \(all 1 in use\)"
        ):
            await pool.post("/x", b"{}", {}, 0.2)
        response = await first
        assert await response.read(5) == b"ok"
        assert pool.stats() == {"open": 1, "idle": 1, "waiting": 0}
        await pool.aclose()
        server.close()

    run(main())


def test_failed_requests_give_their_slot_back() -> None:
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await read_request(reader)
        if calls == 1:
            writer.write(b"GARBAGE\r\n\r\n")
        elif calls == 2:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")  # then closes
        elif calls == 3:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\ncontent-length: 1\r\n\r\nx")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        pool = Pool(url, max_connections=1)
        with pytest.raises(BrokenResponse):
            await pool.post("/x", b"{}", {}, 5)
        response = await pool.post("/x", b"{}", {}, 5)
        with pytest.raises(BrokenResponse, match="closed the connection before the end"):
            await response.read(5)
        with pytest.raises(BrokenResponse, match="content-encoding"):
            await pool.post("/x", b"{}", {}, 5)
        response = await pool.post("/x", b"{}", {}, 5)  # would hang if a slot had leaked
        response.close()  # given up before reading: the slot comes back too
        response = await pool.post("/x", b"{}", {}, 5)
        assert await response.read(5) == b"ok"
        assert pool.stats()["open"] <= 1
        await pool.aclose()
        server.close()

    run(main())
