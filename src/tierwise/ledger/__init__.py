"""The ledger: every request recorded exactly once, written behind the request path.

    from tierwise.ledger import open_ledger
    ledger = open_ledger(settings)          # connects, migrates, starts the writer thread
    router = Router(settings, sink=ledger)  # Router.run() calls ledger.record(entry)
    ...
    ledger.close()                          # drains everything (SIGTERM/Ctrl-C paths call it)

Storage: SQLite at ``$TIERWISE_HOME/tierwise.db`` by default (in WAL mode, or with a rollback
journal: ``ledger.sqlite_journal``, see :class:`tierwise.ledger.db.SQLiteDatabase`); PostgreSQL when
``ledger.url`` / ``$TIERWISE_DB`` is ``postgresql://…``. The queue, the full-queue policy and
the loss bound on a hard kill are described in :mod:`tierwise.ledger.writer`; the schema and
its migrations in :mod:`tierwise.ledger.schema`; the exact money handling in
:mod:`tierwise.ledger.db`. Storage faults (a row the database refuses, a deleted or replaced
database file, an unwritable or full disk, the SIGBUS a memory-mapped WAL index can raise)
and what the ledger does about each: :mod:`tierwise.ledger.faults`, ``RELIABILITY.md``.
``Ledger.health()`` is what ``/health`` reports.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from tierwise.ledger.faults import enable_crash_tracebacks
from tierwise.ledger.store import LedgerStore
from tierwise.ledger.writer import Ledger, LedgerHealth, LedgerStats

if TYPE_CHECKING:
    from tierwise.config import Settings

__all__ = [
    "Ledger",
    "LedgerHealth",
    "LedgerStats",
    "LedgerStore",
    "enable_crash_tracebacks",
    "open_ledger",
    "open_store",
    "sigterm_exits",
]


def open_store(settings: Settings) -> LedgerStore:
    """A direct connection to the ledger tables (reports, keys), schema brought up to date."""
    return LedgerStore.open(
        settings.ledger.url, settings.home, journal=settings.ledger.sqlite_journal
    )


def open_ledger(settings: Settings) -> Ledger:
    """Connect to the configured database, apply migrations, start the batch writer.

    Raises :class:`~tierwise.errors.ConfigError` when the database cannot be opened.
    """
    cfg = settings.ledger
    return Ledger(
        open_store(settings),
        queue_size=cfg.queue_size,
        batch_size=cfg.batch_size,
        flush_interval_s=cfg.flush_interval_s,
    )


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While active, SIGTERM raises ``SystemExit(143)`` in the main thread, so ``finally``
    blocks and ``with`` exits run (and the ledger is flushed) as they do for Ctrl-C.

    Does nothing outside the main thread or when someone else already handles SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def _exit(signum: int, frame: FrameType | None) -> None:
        del frame
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
