"""Push mode of the upstream HTTP client (``Response.push`` / ``UpstreamStream.push``), the
path a long stream takes to the relay (issue 16): the body handed to a sink from the
connection's reads, with the same limits as the pull mode (a stall, the deadline, the stream's
size), a pause that is not a stall, and the connection back in the pool once the body ended
cleanly. Raw asyncio servers on loopback, as in ``test_http1.py``."""

from __future__ import annotations

import asyncio
import time

from tests.loopback import Handler, read_request, run, serve
from tierwise.gateway.http1 import (
    DeadlineExceeded,
    Limits,
    Pool,
    ReadStalled,
    ResponseTooLarge,
)
from tierwise.gateway.upstream import HttpUpstream, UpstreamError, UpstreamStream

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Sink:
    """Collects what a push delivers; ``ended`` resolves with the end (None or the error)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.flushes = 0
        self.ended: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )

    def on_data(self, chunk: bytes) -> None:
        assert not self.ended.done(), "data after the end"
        self.pieces.append(chunk)

    def on_flush(self) -> None:
        self.flushes += 1

    def on_end(self, error: BaseException | None) -> None:
        assert not self.ended.done(), "ended twice"
        self.ended.set_result(error)


def test_push_delivers_what_was_buffered_then_each_piece_and_reuses_the_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):
            await read_request(reader)
            writer.write(HEAD + chunk(b"one"))
            await writer.drain()
            await asyncio.sleep(0.05)
            for piece in (b"two", b"three"):
                writer.write(chunk(piece))
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        pool = Pool(url)
        for _ in range(2):
            response = await pool.post("/v1/messages", b"{}", {}, 5)
            await asyncio.sleep(0.01)  # "one" is buffered before the push starts
            sink = Sink()
            response.push(sink, 5.0)
            assert await sink.ended is None
            assert b"".join(sink.pieces) == b"onetwothree"
            assert sink.flushes >= 2
            response.close()  # read to its end: back to the pool, not closed
            assert pool.stats()["idle"] == 1
        await pool.aclose()
        server.close()
        await server.wait_closed()

    run(main())
    assert connections == 1


def _trickle(pieces: int, interval_s: float, then_stall: bool = False) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD)
        for i in range(pieces):
            writer.write(chunk(b"piece %d " % i))
            await writer.drain()
            await asyncio.sleep(interval_s)
        if then_stall:
            await asyncio.sleep(30)
        else:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    return handler


def test_a_stall_ends_a_push_with_read_stalled_and_closes_the_connection() -> None:
    async def main() -> None:
        server, url = await serve(_trickle(3, 0.05, then_stall=True))
        pool = Pool(url)
        response = await pool.post("/v1/messages", b"{}", {}, 5)
        sink = Sink()
        response.push(sink, 0.3)
        error = await sink.ended
        assert isinstance(error, ReadStalled)
        assert "sent nothing for 0.3s" in str(error)
        assert b"".join(sink.pieces).count(b"piece") == 3
        response.close()
        assert pool.stats() == {"open": 0, "idle": 0, "waiting": 0}
        await pool.aclose()
        server.close()

    run(main())


def test_the_deadline_cuts_a_push_while_bytes_keep_coming() -> None:
    async def main() -> None:
        server, url = await serve(_trickle(1000, 0.02))
        pool = Pool(url)
        response = await pool.post("/v1/messages", b"{}", {}, 5)
        sink = Sink()
        started = time.monotonic()
        response.push(sink, 5.0, deadline=started + 0.4)
        error = await sink.ended
        assert isinstance(error, DeadlineExceeded)
        assert 3 < len(sink.pieces) < 1000  # it was relaying until the deadline
        response.close()
        await pool.aclose()
        server.close()

    run(main())


def test_a_push_stops_at_the_stream_size_limit() -> None:
    async def main() -> None:
        server, url = await serve(_trickle(100, 0.001))
        pool = Pool(url, limits=Limits(max_stream_bytes=50))
        response = await pool.post("/v1/messages", b"{}", {}, 5)
        sink = Sink()
        response.push(sink, 5.0)
        error = await sink.ended
        assert isinstance(error, ResponseTooLarge)
        assert sum(map(len, sink.pieces)) <= 50
        response.close()
        await pool.aclose()
        server.close()

    run(main())


def test_a_paused_push_is_not_a_stall_and_resumes_where_it_stopped() -> None:
    async def main() -> None:
        server, url = await serve(_trickle(6, 0.05))
        pool = Pool(url)
        response = await pool.post("/v1/messages", b"{}", {}, 5)
        sink = Sink()
        response.push(sink, 0.3)
        while not sink.pieces:
            await asyncio.sleep(0.01)
        response.pause()  # the consumer is slow: no reads, and no stall counted
        seen = len(sink.pieces)
        await asyncio.sleep(0.8)
        assert len(sink.pieces) <= seen + 1  # at most what one read had already brought
        assert not sink.ended.done()
        response.resume()
        assert await sink.ended is None
        assert b"".join(sink.pieces).count(b"piece") == 6
        response.close()
        await pool.aclose()
        server.close()

    run(main())


def test_upstream_stream_puts_back_what_was_read_and_maps_errors_to_upstream_error() -> None:
    """The probe reads the start of a stream (pull), puts it back, and the relay takes the
    rest by push: the put-back pieces come first, and a failure is an UpstreamError."""

    async def main() -> None:
        server, url = await serve(_trickle(4, 0.02, then_stall=True))
        upstream = HttpUpstream(url, "key")
        reply = await upstream.post("/v1/messages", b"{}", {}, stream=True, timeout_s=0.3)
        stream = reply.chunks
        assert isinstance(stream, UpstreamStream)
        first = await anext(stream)
        stream.unread([first])
        sink = Sink()
        stream.push(sink)
        error = await sink.ended
        assert isinstance(error, UpstreamError)
        assert error.kind == "timeout_error"
        joined = b"".join(sink.pieces)
        assert joined.startswith(b"piece 0 ")
        assert joined.count(b"piece") == 4
        reply.close()
        await upstream.aclose()
        server.close()

    run(main())


def test_a_compressed_stream_is_never_pushed() -> None:
    """gzip stream bodies are decoded by the pull iterator; push is for the raw body only."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import gzip

        await read_request(reader)
        body = gzip.compress(b"event: ping\ndata: {}\n\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
            + chunk(body)
            + b"0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        upstream = HttpUpstream(url, "key")
        reply = await upstream.post("/v1/messages", b"{}", {}, stream=True, timeout_s=5)
        assert not isinstance(reply.chunks, UpstreamStream)
        assert reply.chunks is not None
        assert b"".join([c async for c in reply.chunks]) == b"event: ping\ndata: {}\n\n"
        await upstream.aclose()
        server.close()

    run(main())
