"""Turns of the event loop shared fairly between bursts of requests and everything else.

The gateway runs on one event loop per worker. A turn of the loop runs every task that is
ready, then reads the sockets that have bytes (``GET /health`` is answered there, by the
connection itself). When hundreds of requests become ready at once (a burst of clients, or
the replies of a burst arriving together), one turn runs all their synchronous work: parsing
the body, classifying, reserving the budget, validating and settling the reply, about half a
millisecond each. Two hundred of them make a turn of 100 ms or more, and every other client,
``/health`` included, waits that long.

:class:`LoopSlices` bounds that: the work of a request passes :meth:`LoopSlices.turn` at the
points where it is about to spend CPU (on arrival and when its reply is in), and once the
current turn has spent :data:`SLICE_S` on such work, the request waits for the next turn
(``asyncio.sleep(0)``), letting the loop read its sockets in between. Nothing is dropped or
reordered among the waiting requests (the loop's ready queue is first in, first out), and the
cost when the loop is not busy is one clock read per checkpoint."""

from __future__ import annotations

import asyncio
import time

#: Synchronous request work one turn of the loop may run before the rest waits for the next.
SLICE_S = 0.005


class LoopSlices:
    """A budget of CPU time per turn of the event loop for request work (module docs)."""

    __slots__ = ("began", "deferred", "loop", "open", "slice_s")

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s
        self.began = 0.0  # time.perf_counter() when this turn's first checkpoint passed
        self.open = False  # a slice is running in this turn (closed by a callback next turn)
        # the loop of that slice: a loop that stopped before its closing callback ran must
        # not leave the slice open for the next loop (tests run one gateway on several loops)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.deferred = 0  # checkpoints that waited for a later turn (metrics, tests)

    def _close(self) -> None:
        self.open = False

    async def turn(self) -> None:
        """Return at once while this turn's slice lasts; otherwise wait for a later turn."""
        loop = asyncio.get_running_loop()
        while True:
            now = time.perf_counter()
            if not self.open or self.loop is not loop:  # the turn's first checkpoint
                self.open = True
                self.loop = loop
                self.began = now
                loop.call_soon(self._close)
                return
            if now - self.began <= self.slice_s:
                return
            self.deferred += 1
            await asyncio.sleep(0)
