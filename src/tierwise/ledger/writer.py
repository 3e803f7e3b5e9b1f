"""The write-behind ledger: a bounded queue and one batch-writer thread.

``record()`` is what the request path calls. It only appends the entry to a bounded in-memory
queue (a :class:`collections.deque`: one atomic C call, O(1), thread-safe, never waits, never
touches the database), so it is safe from any thread and from inside an asyncio event loop.
It takes no lock, so a signal (Ctrl-C, SIGTERM turned into ``SystemExit``) that interrupts
the caller can never leave the queue locked or a wake-up lost: the writer polls.

The writer thread takes the first entry, lingers up to ``flush_interval_s`` for up to
``batch_size`` entries, and writes them in one transaction (it checks the queue every 20 ms
while it is empty, and the database files every second). The insert is idempotent on
``request_id``, so a retry after a lost acknowledgement records nothing twice.

**A write that fails** is one of two things (:func:`~tierwise.ledger.faults.is_data_error`):

* *The rows' data* (a value the database cannot hold, which the row builder's checks missed):
  the batch is bisected, every row the database takes is written, and each row it refuses on
  its own is *rejected*: recorded in ``ledger_gaps`` with its ``request_id`` and the reason,
  counted in :attr:`Ledger.rejected`, logged. A row is only rejected once the database has
  shown that it takes a valid row (another row of the batch, or a probe row rolled back), so
  a database that refuses everything never turns into rejected rows. One bad row therefore
  never holds back the rows behind it.
* *The database's state* (connection lost, locked, read-only, disk full, I/O error, a
  deleted or replaced file): the batch is kept and retried with exponential back-off (50 ms
  to 5 s; never a busy loop), logged at ERROR when it starts, every 30 s while it lasts, and
  when it ends. A deleted or replaced SQLite file is reconnected to at once (recreated and
  migrated when missing; see :meth:`tierwise.ledger.db.SQLiteDatabase.recover`), and a
  batch that was committed into the vanished file is written again.

**Health.** :meth:`Ledger.health` says ``ok`` / ``degraded`` / ``failing`` with a one-line
reason, since when, and the counters (see :class:`LedgerHealth`). It never touches the
database, so ``/health`` can call it on the event loop.

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
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tierwise.ledger.db import redact_url
from tierwise.ledger.faults import (
    DatabaseReplaced,
    IndexDamaged,
    StorageFault,
    StorageUnwritable,
    is_data_error,
)
from tierwise.ledger.store import Gap, Inserted, LedgerStore
from tierwise.types import LedgerEntry

log = logging.getLogger("tierwise.ledger")

_WARN_EVERY_S = 10.0  # drops and rejects: the first, then at most this often
_ERROR_EVERY_S = 30.0  # a failure that lasts: at most this often
_MAX_BACKOFF_S = 5.0
_POLL_S = 0.02
_CHECK_EVERY_S = 1.0  # the database files, while the writer is idle
_RECENT_S = 60.0  # a drop, reject, replacement or recovered failure keeps "degraded" this long
_FULL_FRACTION = 0.8  # a queue this full is "degraded"


@dataclass(eq=False)
class _Marker:
    """Put on the queue by flush(): set once everything before it is written."""

    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Counters for ``/metrics`` and reports (all since the ledger was opened).

    ``queued`` includes the batch being written; ``rejected``: entries the database refused
    (recorded in ``ledger_gaps``); ``sanitized``: rows stored with values changed to fit
    (marked in their ``sanitized`` column); ``replaced``: times the database file was found
    deleted or replaced and the ledger moved to a new one; ``rewritten``: rows written again
    because their batch went into such a vanished file.
    """

    queued: int
    written: int
    dropped: int
    write_errors: int
    batches: int
    rejected: int = 0
    sanitized: int = 0
    replaced: int = 0
    rewritten: int = 0
    oldest_queued_s: float = 0.0


@dataclass(frozen=True, slots=True)
class LedgerHealth:
    """The ledger's state for ``/health`` and ``/metrics``.

    ``status``: ``"ok"``; ``"degraded"`` (rows are being written, but something needs a look:
    entries dropped or rejected, the database file replaced, writes failed and recovered, all
    within the last minute, or the writer is behind, the queue 80% full); ``"failing"`` (rows
    are not being written now: the last attempt failed and is being retried, the database is
    unwritable, a write has been running longer than the stall limit, the writer stopped, or
    the ledger is closed). ``reason``: one line for humans; ``since``: when this status began
    (UTC); ``oldest_queued_s``: age of the oldest entry not yet written.
    """

    status: str
    reason: str
    since: dt.datetime
    queued: int
    oldest_queued_s: float
    write_errors: int
    rejected: int
    dropped: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``since`` as ISO 8601)."""
        out = asdict(self)
        out["since"] = self.since.isoformat()
        return out


class Ledger:
    """A :class:`~tierwise.types.LedgerSink` that writes behind the request path.

    Build it with :func:`tierwise.ledger.open_ledger`. ``stall_after_s``: a write running
    longer, or an entry waiting longer, makes :meth:`health` say so.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        stall_after_s: float = 10.0,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.queue_size = queue_size
        self.stall_after_s = stall_after_s
        self._items: collections.deque[tuple[float, LedgerEntry] | _Marker] = collections.deque()
        self._lock = threading.Lock()  # counters and state; never taken by record()
        self._closed = False  # no more records accepted
        self._stopping = False  # the writer drains what is left, then ends
        self._give_up_at: float | None = None
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        self.batches = 0
        self.rejected = 0
        self.sanitized = 0
        self.replaced = 0
        self.rewritten = 0
        self._unsaved_drops: dict[str, int] = {}
        self._unsaved_rejects: list[Gap] = []
        self._last_warning = -_WARN_EVERY_S
        self._host = store.host
        # health
        self._inflight = 0  # entries taken off the queue and not yet written
        self._inflight_since: float | None = None  # when the oldest of them was recorded
        self._write_started: float | None = None
        self._fault: tuple[float, str] | None = None  # (since, message) while failing
        self._fault_attempts = 0
        self._fault_logged = 0.0
        self._events: dict[str, tuple[float, str]] = {}  # kind -> (when, message)
        self._status = "ok"
        self._status_since = time.monotonic()
        self._last_check = time.monotonic()
        self._reject_logged = -_WARN_EVERY_S
        self._recover_logged = -_WARN_EVERY_S
        self._sanitize_logged = -_WARN_EVERY_S
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
            self._items.append((time.monotonic(), entry))

    def _drop(self, n: int, reason: str) -> None:
        with self._lock:
            self.dropped += n
            self._unsaved_drops[reason] = self._unsaved_drops.get(reason, 0) + n
            now = time.monotonic()
            self._events["dropped"] = (now, f"{self.dropped} entries dropped so far ({reason})")
            warn = now - self._last_warning >= _WARN_EVERY_S
            if warn:
                self._last_warning = now
            total = self.dropped
        if warn:
            log.warning(
                "ledger: %d entr%s not recorded (%s; %d dropped in total): the write-behind "
                "queue (size %d) is full, the database is failing, or the ledger is closed",
                n,
                "y" if n == 1 else "ies",
                reason,
                total,
                self.queue_size,
            )

    # -- what /metrics and /health read ----------------------------------------------------
    def stats(self) -> LedgerStats:
        return LedgerStats(
            queued=self._queued(),
            written=self.written,
            dropped=self.dropped,
            write_errors=self.write_errors,
            batches=self.batches,
            rejected=self.rejected,
            sanitized=self.sanitized,
            replaced=self.replaced,
            rewritten=self.rewritten,
            oldest_queued_s=self._oldest_queued_s(time.monotonic()),
        )

    def health(self) -> LedgerHealth:
        """The ledger's state now (no database access; microseconds)."""
        now = time.monotonic()
        status, reason = self._evaluate(now)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=now - self._status_since)
        return LedgerHealth(
            status=status,
            reason=reason,
            since=since,
            queued=self._queued(),
            oldest_queued_s=round(self._oldest_queued_s(now), 3),
            write_errors=self.write_errors,
            rejected=self.rejected,
            dropped=self.dropped,
        )

    def _queued(self) -> int:
        return len(self._items) + self._inflight

    def _oldest_queued_s(self, now: float) -> float:
        oldest = self._inflight_since
        try:
            head = self._items[0]
        except IndexError:
            head = None
        if isinstance(head, tuple) and (oldest is None or head[0] < oldest):
            oldest = head[0]
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def _evaluate(self, now: float) -> tuple[str, str]:
        status, reason = self._assess(now)
        with self._lock:
            if status != self._status:
                self._status, self._status_since = status, now
        return status, reason

    def _assess(self, now: float) -> tuple[str, str]:
        failing = self._failing(now)
        if failing is not None:
            return "failing", failing
        degraded = self._degraded(now)
        if degraded is not None:
            return "degraded", degraded
        return "ok", f"{self.written} rows written, {self._queued()} waiting"

    def _failing(self, now: float) -> str | None:
        """Why rows are not being written now, or None."""
        if self._closed:
            return "the ledger is closed"
        if not self._thread.is_alive():
            return "the ledger's writer thread has stopped"
        fault, started, queued = self._fault, self._write_started, self._queued()
        if fault is not None:
            return (
                f"writes to {self.url} failing for {now - fault[0]:.0f} s: {fault[1]} "
                f"({queued} entries waiting, retrying with back-off)"
            )
        if started is not None and now - started > self.stall_after_s:
            return (
                f"a write to {self.url} has been running for {now - started:.0f} s "
                f"(database locked or unresponsive; {queued} entries waiting)"
            )
        return None

    def _degraded(self, now: float) -> str | None:
        """What needs a look although rows are being written, or None."""
        queued, oldest = self._queued(), self._oldest_queued_s(now)
        if oldest > self.stall_after_s:
            return f"the writer is {oldest:.0f} s behind ({queued} entries waiting)"
        if queued >= _FULL_FRACTION * self.queue_size:
            return f"the queue is {queued}/{self.queue_size} full"
        with self._lock:
            recent = [
                (when, kind, message)
                for kind, (when, message) in self._events.items()
                if now - when < _RECENT_S
            ]
        if not recent:
            return None
        when, _kind, message = max(recent)
        return f"{message}; {now - when:.0f} s ago"

    def _event(self, kind: str, message: str) -> None:
        with self._lock:
            self._events[kind] = (time.monotonic(), message)

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
        if self._unsaved_drops or self._unsaved_rejects:
            self._write([])  # the gap counts (one try once past the deadline)
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        backoff = _POLL_S
        while True:
            try:
                batch, markers = self._collect()
                if batch or self._unsaved_drops or self._unsaved_rejects:
                    self._write(batch)
                for marker in markers:
                    marker.done.set()
                self._evaluate(time.monotonic())
                backoff = _POLL_S
            except Exception:  # a bug, not a database error: keep the writer alive, loudly
                log.exception("ledger: unexpected error in the writer thread; continuing")
                self._event("internal", "unexpected error in the writer thread (see the log)")
                time.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
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
                if not batch and now - self._last_check >= _CHECK_EVERY_S:
                    self._idle_check(now)
                limit = idle_until if deadline is None else deadline
                if now >= limit:
                    break
                time.sleep(min(_POLL_S, limit - now))
                continue
            if isinstance(item, _Marker):
                markers.append(item)
                break
            recorded, entry = item
            if not batch:
                self._inflight_since = recorded
            batch.append(entry)
            self._inflight = len(batch)
            if deadline is None:
                deadline = time.monotonic() + self.flush_interval_s
        return batch, markers

    def _idle_check(self, now: float) -> None:
        """Look at the database files while nothing is being written: a deleted database is
        recreated, and an unwritable one shows in :meth:`health`, without waiting for a
        request."""
        self._last_check = now
        try:
            self.store.db.check()
        except StorageFault as exc:
            problem = self._recover(exc)
            if problem is None:
                self._clear_fault()
            else:
                self._note_failure(problem, pending=0, attempt=False)
            return
        if self._fault is not None and self._write_started is None:
            self._clear_fault()

    # -- writing -------------------------------------------------------------------------
    def _take_gaps(self) -> list[Gap]:
        with self._lock:
            drops, self._unsaved_drops = self._unsaved_drops, {}
            rejects, self._unsaved_rejects = self._unsaved_rejects, []
        now = dt.datetime.now(dt.UTC)
        counted = [Gap(now, n, reason, self._host, os.getpid()) for reason, n in drops.items()]
        return counted + rejects

    def _restore_gaps(self, gaps: list[Gap]) -> None:
        with self._lock:
            for gap in gaps:
                if gap.request_id is not None:
                    self._unsaved_rejects.append(gap)
                else:
                    self._unsaved_drops[gap.reason] = (
                        self._unsaved_drops.get(gap.reason, 0) + gap.dropped
                    )

    def _write(self, batch: list[LedgerEntry]) -> None:
        for start in range(0, max(len(batch), 1), self.batch_size):
            self._write_chunk(batch[start : start + self.batch_size])
        self._inflight, self._inflight_since = 0, None

    def _write_chunk(self, chunk: list[LedgerEntry]) -> None:
        """Write ``chunk`` (and the gaps waiting to be recorded) until it is written, its bad
        rows rejected, or the shutdown deadline passes."""
        backoff = 0.05
        pending = chunk
        recoveries = 0
        while True:
            error = self._try_insert(pending)
            if error is None:
                self._clear_fault()
                return
            if is_data_error(error):
                if not pending:  # only gap records, which the store sanitises: a bug
                    lost = self._take_gaps()
                    log.error("ledger: cannot record %d gap record(s): %s", len(lost), error)
                    return
                pending, error = self._isolate(pending, error)
                if error is None:
                    self._clear_fault()
                    return
            if isinstance(error, DatabaseReplaced | IndexDamaged) and error.after_commit:
                # That batch went into a file that is gone: write it again (idempotent).
                with self._lock:
                    self.rewritten += len(pending)
            problem = self._recover(error)
            if problem is None:
                recoveries += 1
                if recoveries == 1:
                    continue  # reconnected: try again at once (then with back-off)
            else:
                self._note_failure(problem, pending=len(pending))
            if self._give_up_at is not None and time.monotonic() > self._give_up_at:
                log.error(
                    "ledger: giving up on %d entries at shutdown: %s",
                    len(pending),
                    problem or error,
                )
                if pending:
                    self._drop(len(pending), "write failed at shutdown")
                return
            time.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _try_insert(self, entries: list[LedgerEntry]) -> Exception | None:
        """One transaction: ``entries`` and the waiting gaps. The exception, or None."""
        gaps = self._take_gaps()
        self._write_started = time.monotonic()
        try:
            result = self.store.insert(entries, gaps)
        except Exception as exc:
            self._restore_gaps(gaps)
            return exc
        finally:
            self._write_started = None
        self._account(entries, result)
        return None

    def _account(self, entries: list[LedgerEntry], result: Inserted | None) -> None:
        rows = len(entries) if result is None else result.rows
        with self._lock:
            self.written += rows
            self.batches += 1
            if result is not None:
                self.sanitized += len(result.sanitized)
                self.rejected += len(result.rejected)
        if result is None:
            return
        for gap in result.rejected:
            self._log_reject(gap.request_id, gap.reason)
        if result.sanitized:
            now = time.monotonic()
            request_id, note = result.sanitized[-1]  # counted, not a health matter: the
            # rows are written (it is the upstream or the caller that sent odd values)
            if now - self._sanitize_logged >= _WARN_EVERY_S:
                self._sanitize_logged = now
                log.warning(
                    "ledger: %d row(s) stored with values changed to fit the database "
                    "(%d so far; last: %s: %s)",
                    len(result.sanitized),
                    self.sanitized,
                    request_id,
                    note,
                )

    def _isolate(
        self, rows: list[LedgerEntry], first: Exception
    ) -> tuple[list[LedgerEntry], Exception | None]:
        """After data error ``first`` on ``rows``: bisect, write every part the database
        takes, and reject each single row it refuses, once the database has taken a valid row.

        Returns the rows still to write and the transient error that interrupted (or [] and
        None when every row was written or rejected)."""
        todo: list[list[LedgerEntry]] = []
        suspects: list[tuple[LedgerEntry, Exception]] = []
        if len(rows) == 1:
            suspects.append((rows[0], first))
        else:
            mid = len(rows) // 2
            todo = [rows[mid:], rows[:mid]]
        took_a_row = False
        while todo:
            part = todo.pop()
            error = self._try_insert(part)
            if error is None:
                took_a_row = True
                continue
            if not is_data_error(error):
                left = [e for p in todo for e in p] + part + [e for e, _ in suspects]
                return left, error
            if len(part) == 1:
                suspects.append((part[0], error))
            else:
                mid = len(part) // 2
                todo += [part[mid:], part[:mid]]
        if suspects and not took_a_row:
            try:
                self.store.probe()
            except Exception as exc:  # the database refuses a valid row: not these rows' fault
                return [e for e, _ in suspects], exc
        for entry, error in suspects:
            self._reject(entry, error)
        return [], None

    def _reject(self, entry: LedgerEntry, error: Exception) -> None:
        request_id = entry.request_id if isinstance(entry.request_id, str) else None
        reason = f"rejected by the database: {type(error).__name__}: {_first_line(error)}"[:500]
        with self._lock:
            self.rejected += 1
            self._unsaved_rejects.append(self.store.reject_gap(request_id, reason))
        self._log_reject(request_id, reason)

    def _log_reject(self, request_id: str | None, reason: str) -> None:
        self._event(
            "rejected", f"{self.rejected} entries rejected, the last {request_id!r} {reason}"
        )
        now = time.monotonic()
        if now - self._reject_logged >= _WARN_EVERY_S:
            self._reject_logged = now
            log.error(
                "ledger: entry %r not written (%s); recorded in ledger_gaps (%d rejected so "
                "far); the rows around it were written",
                request_id,
                reason,
                self.rejected,
            )

    # -- faults --------------------------------------------------------------------------
    def _recover(self, error: Exception) -> Exception | None:
        """Reconnect when ``error`` says reconnecting helps. None when the connection was
        remade (the next attempt can go ahead), else the error to report."""
        if isinstance(error, StorageUnwritable) or not isinstance(error, StorageFault):
            if not isinstance(error, StorageFault) and self.store.db.dialect == "postgresql":
                self._reconnect()  # a lost connection; harmless otherwise
            return error
        try:
            self.store.recover(error)
        except Exception as exc:
            return exc
        now = time.monotonic()
        with self._lock:
            if isinstance(error, DatabaseReplaced):
                self.replaced += 1
            due = now - self._recover_logged >= _WARN_EVERY_S
            if due:
                self._recover_logged = now
        if isinstance(error, DatabaseReplaced):
            self._event(
                "replaced",
                f"the database file was deleted or replaced ({error}); reconnected to "
                f"{self.url} (recreated if missing)",
            )
        if due:
            log.error(
                "ledger: %s; reconnected to %s%s (%d replacement(s) so far)",
                error,
                self.url,
                " (created and migrated anew if it was missing: the rows of the old file "
                "are not in it)"
                if isinstance(error, DatabaseReplaced)
                else "",
                self.replaced,
            )
        return None

    def _reconnect(self) -> None:
        try:
            self.store.db.reconnect()
        except Exception as exc:
            log.error("ledger: reconnecting to %s failed: %s", self.url, _first_line(exc))

    def _note_failure(self, error: BaseException, *, pending: int, attempt: bool = True) -> None:
        """A failed write (``attempt``) or a failed check of the files: health says failing,
        the log says so when it starts and every 30 s while it lasts."""
        now = time.monotonic()
        message = f"{type(error).__name__}: {_first_line(error)}"
        with self._lock:
            self.write_errors += int(attempt)
            first = self._fault is None
            since = now if first else self._fault[0]  # type: ignore[index]
            self._fault = (since, message)
            self._fault_attempts += 1
            attempts = self._fault_attempts
            due = first or now - self._fault_logged >= _ERROR_EVERY_S
            if due:
                self._fault_logged = now
        if due:
            log.error(
                "ledger: %s %s (%s); %d entries waiting (queue limit %d), retrying with back-off%s",
                "writing to" if first else "still failing to write to",
                self.url,
                message,
                pending + len(self._items),
                self.queue_size,
                "" if first else f" ({attempts} attempts in {now - since:.0f} s)",
            )

    def _clear_fault(self) -> None:
        with self._lock:
            fault, self._fault = self._fault, None
            attempts, self._fault_attempts = self._fault_attempts, 0
        if fault is not None:
            took = time.monotonic() - fault[0]
            self._event("recovered", f"writes recovered after failing for {took:.0f} s")
            log.warning(
                "ledger: writing to %s works again after %.1f s (%d failed attempts)",
                self.url,
                took,
                attempts,
            )


def _first_line(exc: BaseException) -> Any:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
