"""Storage faults: what the ledger tells apart, and the guards that keep it alive through them.

Two kinds of write failure need opposite treatment:

* **Data errors** belong to one row (a value the database cannot hold: an int past 64 bits, a
  lone surrogate, a NUL byte for PostgreSQL, a NOT NULL column given NaN...). Retrying cannot
  help; the row is isolated, recorded in ``ledger_gaps`` with its ``request_id``, and the rest
  of the batch is written. :func:`is_data_error` decides.
* **Everything else is transient** for the writer: connection lost, database locked, disk
  I/O error, read-only, disk full, a schema that went missing. The batch is kept and retried
  with back-off; nothing is rejected because the database is unwell.

:class:`StorageFault` and its subclasses are raised by
:class:`~tierwise.ledger.db.SQLiteDatabase` *before* SQLite touches files that could crash the
process or swallow rows: a deleted or replaced database file, a truncated or replaced WAL index
(``-shm``), a file or file system that became unwritable underneath SQLite's memory map (see
:meth:`~tierwise.ledger.db.SQLiteDatabase.check` for why that means SIGBUS).

:func:`enable_crash_tracebacks` makes a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGABRT,
SIGILL) leave a Python traceback of every thread on stderr instead of nothing.
"""

from __future__ import annotations

import faulthandler
import sqlite3
import sys
from typing import IO, Any


class StorageFault(Exception):
    """The database cannot be used safely right now; nothing was attempted."""


class DatabaseReplaced(StorageFault):
    """The database file at the configured path was deleted or replaced while open.

    ``after_commit``: the last transaction committed into the vanished file (its rows must be
    written again after reconnecting; the insert is idempotent).
    """

    def __init__(self, message: str, *, after_commit: bool = False) -> None:
        super().__init__(message)
        self.after_commit = after_commit


class IndexDamaged(StorageFault):
    """The WAL or its index (``-shm``) was truncated, deleted or replaced: reconnect before use.

    ``after_commit`` as for :class:`DatabaseReplaced`."""

    def __init__(self, message: str, *, after_commit: bool = False) -> None:
        super().__init__(message)
        self.after_commit = after_commit


class StorageUnwritable(StorageFault):
    """Files cannot be written now (immutable or append-only, read-only file system, not
    connected): using the connection could crash the process, so it is left alone."""


class NotConnected(StorageFault):
    """An earlier attempt to reconnect failed; :meth:`Database.recover` tries again."""


class RowError(ValueError):
    """One ledger entry that cannot be turned into a row at all (e.g. no ``request_id``)."""

    def __init__(self, request_id: str | None, reason: str) -> None:
        super().__init__(f"ledger entry {request_id!r}: {reason}")
        self.request_id = request_id
        self.reason = reason


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised while inserting rows, is about the rows' values (permanent)
    rather than the database's state (transient)."""
    if isinstance(exc, StorageFault):
        return False
    if isinstance(exc, RowError | OverflowError | UnicodeError):
        return True
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.InterfaceError):
        return True
    if isinstance(exc, sqlite3.ProgrammingError):
        # Also "Cannot operate on a closed database": that one is the connection's state.
        return str(exc).startswith("Error binding parameter")
    psycopg: Any = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        # DataError: NumericValueOutOfRange, CharacterNotInRepertoire, client-side NUL
        # bytes...; IntegrityError: NotNullViolation, CheckViolation. A dropped table or
        # column is a ProgrammingError, a lost connection an OperationalError: transient.
        return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
    return False


def enable_crash_tracebacks(file: IO[str] | None = None) -> bool:
    """Dump every thread's Python traceback to ``file`` (default: stderr, where the gateway's
    log goes) when the process dies of a fatal signal. Idempotent; returns whether it is on.

    Call it once at process start-up (``tierwise serve``, each uvicorn worker).
    """
    if faulthandler.is_enabled() and file is None:
        return True
    target = file if file is not None else sys.stderr
    try:
        faulthandler.enable(file=target, all_threads=True)
    except (ValueError, OSError, AttributeError):  # stderr closed or without a file descriptor
        return False
    return True
