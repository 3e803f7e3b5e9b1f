"""The process-wide cap on upstream bytes held in memory (``gateway.upstream_max_buffered_bytes``).

Each upstream reply is bounded on its own (``upstream_max_body_bytes`` for a reply read whole,
``upstream_max_event_bytes`` for one SSE event), but nothing bounded them *together*: a hostile
upstream answering 16 concurrent requests with gzip bombs or 50 MB SSE lines took a one-worker
gateway past 1 GB. :data:`HELD` counts the bytes that are held only because a reply is still
being read: the decoded parts of a reply read whole, and the pending bytes of an incomplete SSE
event beyond :data:`FREE_EVENT_BYTES` (ordinary events, a few hundred bytes, are never counted).
A reply that would take the total past the cap fails at once as an upstream error (its request
may fall back like any other bad reply); the bytes of replies that finish are given back.

One event loop per process reads upstream replies; the lock only matters for tests that run
several gateways in threads of one process.
"""

from __future__ import annotations

import threading

DEFAULT_MAX_BUFFERED_BYTES = 96 * 1024 * 1024
#: pending bytes of one incomplete SSE event that are not counted (a normal event is far less)
FREE_EVENT_BYTES = 256 * 1024


class BufferCapExceeded(Exception):
    """Taking the bytes would exceed the process-wide cap."""


class ByteAllowance:
    """Bytes held across the process, at most ``limit`` at once."""

    __slots__ = ("_lock", "held", "limit", "peak", "refused")

    def __init__(self, limit: int = DEFAULT_MAX_BUFFERED_BYTES) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self.refused = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        """Count ``size`` more bytes held, or raise :class:`BufferCapExceeded`."""
        with self._lock:
            held = self.held + size
            if held > self.limit:
                self.refused += 1
                raise BufferCapExceeded(
                    f"upstream replies in flight hold more than {self.limit} bytes in this "
                    "process (gateway.upstream_max_buffered_bytes)"
                )
            self.held = held
            self.peak = max(self.peak, held)

    def give(self, size: int) -> None:
        """Count ``size`` bytes as no longer held."""
        with self._lock:
            self.held = max(0, self.held - size)


#: the process's allowance; :func:`configure` sets its limit from the gateway settings
HELD = ByteAllowance()


def configure(limit: int) -> None:
    HELD.limit = limit
