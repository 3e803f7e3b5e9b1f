"""Turns of the event loop shared between bursts of request work and everything else
(gateway/slices.py), and one large read per upstream connection per turn (http1.py,
``_TURN_READ``). Both are checked by order of events, not by timing: which callbacks ran
before the loop polled its sockets again."""

from __future__ import annotations

import asyncio
import gc
import itertools
import socket
import time
import weakref

import uvloop

from tests.loopback import read_request, serve
from tierwise.gateway import http1
from tierwise.gateway.http1 import Pool
from tierwise.gateway.slices import LoopSlices


def _uvloop(coro_fn: object) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(coro_fn(), 20))  # type: ignore[operator]


def _socket_reads_between(loop_factory: object, slices: LoopSlices | None) -> int:
    """Start 20 requests that each spend 2 ms of CPU after their checkpoint; the first one
    also sends a byte to a socket the loop watches (a /health request arriving in the
    middle of the burst). How many requests had done their work when the loop read it."""
    done: list[int] = []
    seen: list[int] = []

    async def request(i: int) -> None:
        if slices is not None:
            await slices.turn()
        if i == 0:
            b.send(b"x")
        until = time.perf_counter() + 0.002
        while time.perf_counter() < until:  # synchronous work: parsing, classifying, ...
            pass
        done.append(i)

    a, b = socket.socketpair()
    a.setblocking(False)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def read() -> None:
            seen.append(len(done))
            loop.remove_reader(a)

        loop.add_reader(a, read)
        await asyncio.sleep(0)  # the reader is registered
        await asyncio.gather(*(request(i) for i in range(20)))
        a.close()
        b.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[arg-type]
        runner.run(main())
    assert sorted(done) == list(range(20)), "every request ran"
    return seen[0]


def test_a_burst_of_request_work_lets_the_loop_read_its_sockets_in_between() -> None:
    for factory in (asyncio.new_event_loop, uvloop.new_event_loop):
        # Without slices the whole burst (40 ms) runs before the socket is read.
        assert _socket_reads_between(factory, None) == 20
        # With a 5 ms slice the socket is read after a few requests, long before the end
        # (a slice is 3 requests; the reader may come after the next slice's, by loop).
        slices = LoopSlices(0.005)
        assert _socket_reads_between(factory, slices) <= 8
        assert slices.deferred > 0


def test_slices_cost_nothing_but_a_clock_read_when_the_loop_is_not_busy() -> None:
    slices = LoopSlices(0.005)

    async def main() -> None:
        for _ in range(50):
            await slices.turn()
            await asyncio.sleep(0.001)  # each request in a turn of its own

    asyncio.run(main())
    assert slices.deferred == 0


def test_an_upstream_connection_reads_once_per_turn_after_a_large_read() -> None:
    """A 4 MiB reply sent at once: libuv would read it in up to 32 reads in a row within
    one turn; after a read of ``_TURN_READ`` bytes or more the connection waits for the next
    turn, so every other socket gets its turn too."""
    body = b"x" * (4 << 20)
    reads: list[tuple[int, int]] = []  # (turn, size)
    turn = [0]
    original = http1._Connection.data_received

    def counting(self: http1._Connection, data: bytes) -> None:
        reads.append((turn[0], len(data)))
        original(self, data)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ticking = True

        def tick() -> None:  # one increment per pass over the ready queue
            turn[0] += 1
            if ticking:
                loop.call_soon(tick)

        server, url = await serve(handler)
        pool = Pool(url)
        loop.call_soon(tick)
        response = await pool.post("/v1/messages", b"{}", {}, 10)
        assert await response.read(10) == body
        ticking = False
        await pool.aclose()
        server.close()

    http1._Connection.data_received = counting  # type: ignore[method-assign]
    try:
        _uvloop(main)
    finally:
        http1._Connection.data_received = original  # type: ignore[method-assign]
    big = [(t, n) for t, n in reads if n >= http1._TURN_READ]
    assert len(big) >= 2, reads  # the body came in large reads
    for (t1, n1), (t2, _) in itertools.pairwise(reads):
        if n1 >= http1._TURN_READ:
            assert t2 > t1, f"a read in the same turn after a {n1}-byte read: {reads}"


def test_a_slice_left_open_by_a_stopped_loop_does_not_hold_the_next_loop() -> None:
    """A loop that stops right after a checkpoint never runs the callback that closes its
    slice; the next loop's requests must not wait for it (they would wait forever)."""
    slices = LoopSlices(0.005)

    async def checkpoint_then_stop() -> None:
        await slices.turn()
        asyncio.get_running_loop().stop()  # before the next turn, where the slice closes

    first = asyncio.new_event_loop()
    task = first.create_task(checkpoint_then_stop())
    first.run_forever()
    first.close()
    assert task.done()
    assert slices.open
    time.sleep(0.01)  # past the slice: on the same loop the next checkpoint would wait
    asyncio.run(asyncio.wait_for(slices.turn(), 2))  # returns at once on the new loop
    assert slices.deferred == 0


def test_a_closed_upstream_connection_is_freed_without_the_garbage_collector() -> None:
    """Its parser held it (the parser's callbacks), a reference cycle per connection that
    only a garbage collection freed; full collections under load paused the loop."""
    alive: list[weakref.ref[http1._Connection]] = []
    original = http1._Connection.connection_made

    def made(self: http1._Connection, transport: asyncio.BaseTransport) -> None:
        alive.append(weakref.ref(self))
        original(self, transport)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        pool = Pool(url)
        for _ in range(3):
            response = await pool.post("/v1/messages", b"{}", {}, 10)
            assert await response.read(10) == b"ok"
        await pool.aclose()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # every connection_lost delivered

    http1._Connection.connection_made = made  # type: ignore[method-assign]
    gc.collect()
    gc.disable()
    try:
        _uvloop(main)
        assert len(alive) == 3
        assert [ref() for ref in alive] == [None, None, None]
    finally:
        gc.enable()
        http1._Connection.connection_made = original  # type: ignore[method-assign]
