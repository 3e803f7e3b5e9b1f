"""The write-behind ledger: a bounded queue and one batch-writer thread.

``record()`` is what the request path calls. It only appends the entry to a bounded in-memory
queue (a :class:`collections.deque`: one atomic C call, O(1), thread-safe, never waits, never
touches the database), so it is safe from any thread and from inside an asyncio event loop.
It takes no lock, so a signal (Ctrl-C, SIGTERM turned into ``SystemExit``) that interrupts
the caller can never leave the queue locked or a wake-up lost: the writer polls.

The writer thread takes the first entry, lingers up to ``flush_interval_s`` for up to
``batch_size`` entries, and writes them in one transaction (it checks the queue every 20 ms
while it is empty). A failed write is retried with back-off (reconnecting) and the batch is
kept meanwhile; the insert is idempotent on ``request_id``, so a retry after a lost
acknowledgement records nothing twice.

**Full-queue policy.** When ``queue_size`` entries are waiting (the database is slower than
the traffic, or down) ``record()`` does not block: the entry is *dropped and counted*. The
count is kept in :attr:`Ledger.dropped`, logged as a warning (the first drop, then at most
every 10 s with the running count), and written to the ``ledger_gaps`` table with the next
batch, so ``tierwise report`` shows ``dropped_requests``. Nothing is dropped silently. (Threads
racing at the limit can overshoot it by at most one entry each.)

**Shutdown.** :meth:`Ledger.flush` waits until everything recorded before it was written;
:meth:`Ledger.close` drains the queue completely, then stops the writer (idempotent; also
registered with :mod:`atexit`). Entries recorded after ``close()`` are counted as dropped.
From async code call them off the loop: ``await asyncio.to_thread(ledger.flush)``.

**Loss bound on a hard kill** (``kill -9``, OOM): the entries still in memory, that is at
most ``queue_size`` queued entries + the ``batch_size`` entries of the batch being collected
or written. Committed batches are never lost or corrupted (SQLite WAL / PostgreSQL
transactions). In time: with the writer keeping up, what arrived during the last
``flush_interval_s`` plus one write.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tierwise.ledger.db import redact_url
from tierwise.ledger.store import Gap, LedgerStore
from tierwise.types import LedgerEntry

log = logging.getLogger("tierwise.ledger")

_WARN_EVERY_S = 10.0
_MAX_BACKOFF_S = 5.0
_POLL_S = 0.02


@dataclass(eq=False)
class _Marker:
    """Put on the queue by flush(): set once everything before it is written."""

    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Counters for ``/metrics`` and reports."""

    queued: int
    written: int
    dropped: int
    write_errors: int
    batches: int


class Ledger:
    """A :class:`~tierwise.types.LedgerSink` that writes behind the request path.

    Build it with :func:`tierwise.ledger.open_ledger`.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.queue_size = queue_size
        self._items: collections.deque[LedgerEntry | _Marker] = collections.deque()
        self._lock = threading.Lock()  # counters and close(); never taken by record()'s fast path
        self._closed = False  # no more records accepted
        self._stopping = False  # the writer drains what is left, then ends
        self._give_up_at: float | None = None
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        self.batches = 0
        self._unsaved_drops: dict[str, int] = {}
        self._last_warning = 0.0
        self._host = socket.gethostname()
        self._thread = threading.Thread(target=self._run, name="tierwise-ledger", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def url(self) -> str:
        """The database URL, password redacted."""
        return redact_url(self.store.db.url)

    # -- the request path ----------------------------------------------------------------
    def record(self, entry: LedgerEntry) -> None:
        """Queue one entry. Never blocks; a full queue counts the entry as dropped."""
        if self._closed:
            self._drop(1, "closed")
        elif len(self._items) >= self.queue_size:
            self._drop(1, "queue full")
        else:
            self._items.append(entry)

    def _drop(self, n: int, reason: str) -> None:
        with self._lock:
            self.dropped += n
            self._unsaved_drops[reason] = self._unsaved_drops.get(reason, 0) + n
            now = time.monotonic()
            warn = now - self._last_warning >= _WARN_EVERY_S
            if warn:
                self._last_warning = now
            total = self.dropped
        if warn:
            log.warning(
                "ledger: %d entr%s not recorded (%s; %d dropped in total): the write-behind "
                "queue (size %d) is full or the ledger is closed",
                n,
                "y" if n == 1 else "ies",
                reason,
                total,
                self.queue_size,
            )

    def stats(self) -> LedgerStats:
        return LedgerStats(
            queued=len(self._items),
            written=self.written,
            dropped=self.dropped,
            write_errors=self.write_errors,
            batches=self.batches,
        )

    # -- flushing and closing ------------------------------------------------------------
    def flush(self, timeout_s: float | None = None) -> bool:
        """Block until everything recorded so far is written. False on timeout."""
        if self._stopping or not self._thread.is_alive():
            return not self._items
        marker = _Marker()
        self._items.append(marker)
        return marker.done.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, stop the writer, close the database (idempotent).

        If the database stays unreachable for ``timeout_s``, what is left is counted as
        dropped (and logged) instead of hanging the process forever.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._give_up_at = time.monotonic() + timeout_s
        self._stopping = True
        self._thread.join(timeout_s + 5)
        if self._thread.is_alive():  # pragma: no cover - a wedged driver call
            log.error("ledger: the writer did not stop within %.0f s", timeout_s)
            return
        # Records that raced with close() (accepted just before it): write them here.
        while self._items:
            batch, markers = self._collect()
            self._write(batch)
            for marker in markers:
                marker.done.set()
        if self._unsaved_drops:
            self._write([])  # the gap counts (one try once past the deadline)
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch, markers = self._collect()
            if batch or self._unsaved_drops:
                self._write(batch)
            for marker in markers:
                marker.done.set()
            if self._stopping and not self._items:
                return

    def _collect(self) -> tuple[list[LedgerEntry], list[_Marker]]:
        """A batch: the first entry, then whatever arrives within the linger time, up to
        ``batch_size``. A flush marker ends it early; while stopping, no lingering."""
        batch: list[LedgerEntry] = []
        markers: list[_Marker] = []
        idle_until = time.monotonic() + max(self.flush_interval_s, _POLL_S)
        deadline: float | None = None
        while len(batch) < self.batch_size:
            try:
                item = self._items.popleft()
            except IndexError:
                if self._stopping:
                    break
                now = time.monotonic()
                limit = idle_until if deadline is None else deadline
                if now >= limit:
                    break
                time.sleep(min(_POLL_S, limit - now))
                continue
            if isinstance(item, _Marker):
                markers.append(item)
                break
            batch.append(item)
            if deadline is None:
                deadline = time.monotonic() + self.flush_interval_s
        return batch, markers

    def _take_gaps(self) -> list[Gap]:
        with self._lock:
            drops, self._unsaved_drops = self._unsaved_drops, {}
        now = dt.datetime.now(dt.UTC)
        return [Gap(now, n, reason, self._host, os.getpid()) for reason, n in drops.items()]

    def _restore_gaps(self, gaps: list[Gap]) -> None:
        with self._lock:
            for gap in gaps:
                self._unsaved_drops[gap.reason] = (
                    self._unsaved_drops.get(gap.reason, 0) + gap.dropped
                )

    def _write(self, batch: list[LedgerEntry]) -> None:
        backoff = 0.05
        for start in range(0, max(len(batch), 1), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            while True:
                gaps = self._take_gaps()
                try:
                    self.store.insert(chunk, gaps)
                except Exception as exc:
                    self._restore_gaps(gaps)
                    self.write_errors += 1
                    give_up = self._give_up_at is not None and time.monotonic() > self._give_up_at
                    log.error(
                        "ledger: writing %d entries to %s failed (%s: %s)%s",
                        len(chunk),
                        self.url,
                        type(exc).__name__,
                        _first_line(exc),
                        "; giving up at shutdown" if give_up else f"; retrying in {backoff:.2f} s",
                    )
                    if give_up:
                        if chunk:
                            self._drop(len(chunk), "write failed at shutdown")
                        break
                    time.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                    self._reconnect()
                    continue
                with self._lock:
                    self.written += len(chunk)
                    self.batches += 1
                break

    def _reconnect(self) -> None:
        try:
            self.store.db.reconnect()
        except Exception as exc:
            log.error("ledger: reconnecting to %s failed: %s", self.url, _first_line(exc))


def _first_line(exc: BaseException) -> Any:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
