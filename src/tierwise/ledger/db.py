"""One small connection type per database: SQLite (the default) and PostgreSQL.

Why psycopg 3 and not SQLAlchemy: tierwise issues a dozen hand-written statements (one batched
INSERT, a few aggregates, the key table) in two dialects whose differences fit in this file
(placeholders, column types, a day expression, an exact money sum). A direct driver keeps the
dependency small, the SQL visible, and ``executemany`` on psycopg 3 is pipelined, which is what
the batch writer needs. psycopg is imported only when a ``postgresql://`` URL is opened.

Money is never a float: SQLite stores it as TEXT (``format(d, "f")``) and sums it with a
registered exact aggregate, ``dsum``; PostgreSQL stores NUMERIC and sums it with ``SUM``. In
both, arithmetic on money columns is done in Python with :class:`~decimal.Decimal`, never in SQL.

Every statement is written with ``?`` placeholders; :meth:`Database.sql` rewrites them for
psycopg. A :class:`Database` is safe to share between threads (one lock per connection).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import sqlite3
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit, urlunsplit

from tierwise.errors import ConfigError
from tierwise.ledger.faults import (
    DatabaseReplaced,
    IndexDamaged,
    NotConnected,
    StorageFault,
    StorageUnwritable,
)

log = logging.getLogger("tierwise.ledger")

Row = tuple[Any, ...]

_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def to_decimal(value: Any) -> Decimal | None:
    """A money value read from either database (TEXT, NUMERIC, an aggregate) as Decimal."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):  # pragma: no cover - guarded against: money is never REAL
        raise TypeError("money must not be stored as a float")
    return Decimal(str(value))


class _DecimalSum:
    """SQLite aggregate ``dsum(text)``: the exact Decimal sum, as text (NULLs ignored)."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            self.total = (self.total or Decimal(0)) + Decimal(str(value))

    def finalize(self) -> str | None:
        return None if self.total is None else format(self.total, "f")


class Database:
    """A connection to the ledger database. Subclasses fill in the dialect."""

    dialect: str = ""
    #: column types used by the migrations: {money}, {ts}, {float}, {id_pk}
    types: ClassVar[dict[str, str]] = {}
    #: the exact sum of a money column
    money_sum: str = "SUM"
    url: str = ""
    #: how many times the connection moved to a different database after the one it had
    #: vanished (see :meth:`SQLiteDatabase.recover`): whoever caches rows (the key table)
    #: must drop its cache when this changes.
    generation: int = 0

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- faults --------------------------------------------------------------------------
    def check(self) -> None:
        """Raise a :class:`~tierwise.ledger.faults.StorageFault` when the connection cannot be
        used safely now (see :meth:`SQLiteDatabase.check`); cheap."""

    def recover(self, fault: StorageFault) -> None:
        """Make the connection usable again after ``fault`` (or raise)."""
        del fault
        self.reconnect()

    # -- dialect -------------------------------------------------------------------------
    def sql(self, statement: str) -> str:
        return statement

    def day_expr(self, column: str) -> str:
        raise NotImplementedError

    def hour_expr(self, column: str) -> str:
        """``YYYY-MM-DD HH`` of a timestamp column, in UTC."""
        raise NotImplementedError

    def ts_param(self, ts: dt.datetime) -> Any:
        raise NotImplementedError

    def ts_value(self, value: Any) -> dt.datetime:
        raise NotImplementedError

    def money_param(self, value: Decimal | None) -> Any:
        return value

    # -- statements ----------------------------------------------------------------------
    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield  # pragma: no cover

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        """A transaction that only one process at a time can hold (for migrations)."""
        raise NotImplementedError
        yield  # pragma: no cover

    def reconnect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteDatabase(Database):
    """SQLite, with ``synchronous=NORMAL``, guarded against its files changing underneath it.

    **Journal** (``journal``, from ``ledger.sqlite_journal``):

    * ``"wal"`` (the default): readers never hold off the writer, in this process or another
      (a report over millions of rows runs for seconds), and commits do not sync. But SQLite
      maps the WAL index (``-shm``) into memory, and a change to that file while a
      transaction runs (made immutable, truncated, its file system gone read-only) kills the
      process with SIGBUS: :meth:`check` sees such changes, and keeps SQLite away from them,
      only between transactions.
    * ``"truncate"``: a rollback journal. Nothing is memory-mapped, so no change to the files
      can do worse than make a statement fail, which the ledger writer retries: for a ledger
      directory that others can tamper with, or a file system that may fail. The price: each
      commit syncs the journal and the database, and a commit waits for every reader (of any
      process) to finish its query, while new readers wait for the commit.

    With ``synchronous=NORMAL`` a committed transaction survives the process being killed;
    only an OS crash or power loss can lose the last commits, never corrupt the file. A
    process that finds the database open in WAL mode elsewhere (an older version still
    running) uses WAL too rather than wait, and says so.

    **Files.** The database and its ``-wal``/``-shm``/``-journal`` are created 0600 (SQLite
    gives the side files the database's mode) and tightened to 0600, with a warning, when they
    exist with group or other access. ``private_dir``: the directory (``$TIERWISE_HOME``) is
    created 0700, and tightened likewise.

    **The guard** (:meth:`check`, run before every transaction and every statement outside
    one, a few ``stat`` calls): see :meth:`check`. After every commit the database file is
    checked again, so a batch that went into a file deleted meanwhile is reported
    (``after_commit``) and written again by the ledger writer.
    """

    dialect = "sqlite"
    types: ClassVar[dict[str, str]] = {
        "money": "TEXT",
        "ts": "TEXT",
        "float": "REAL",
        "id_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    }
    money_sum = "dsum"

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = 30.0,
        private_dir: bool = False,
        journal: str = "wal",
    ) -> None:
        super().__init__()
        if journal not in JOURNALS:
            raise ConfigError(f"ledger.sqlite_journal {journal!r}: choose one of {JOURNALS}")
        self.path = path
        self.journal = journal
        self.url = f"sqlite:///{path}"
        self._busy_timeout_s = busy_timeout_s
        self._private_dir = private_dir
        self._in_tx = 0
        self._conn: sqlite3.Connection | None = None
        self._files: _Files | None = None
        self._down = ""  # why there is no connection (after a failed reconnect)
        self._real = str(path)
        try:
            self._conn, self._files = self._open()
        except OSError as exc:
            raise ConfigError(
                f"cannot open the ledger database {path}: {exc.strerror or exc}"
            ) from exc

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> tuple[sqlite3.Connection, _Files]:
        parent = self.path.parent
        if self._private_dir:
            ensure_private_dir(parent)
        else:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_private_file(self.path)
        # SQLite puts -wal and -shm next to the file a symlinked path points to.
        self._real = os.path.realpath(self.path)
        for suffix in _SIDE_FILES:
            _tighten(Path(f"{self._real}{suffix}"))
        conn = self._connect()
        try:
            files = self._attach(conn)
        except BaseException:
            conn.close()
            raise
        return conn, files

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # guarded by self._lock
        )
        try:
            conn.create_aggregate("dsum", 1, cast(Any, _DecimalSum))
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            # Never map the database file itself: a mapped file that shrinks or stops being
            # writable underneath the process kills it with SIGBUS (the -shm is guarded below).
            conn.execute("PRAGMA mmap_size = 0")
            self._set_journal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opens -wal, -shm
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_journal(self, conn: sqlite3.Connection) -> None:
        """Switch to the configured journal. Switching needs a moment of exclusive access:
        retry while another process holds it briefly (one starting at the same time). Leaving
        WAL is impossible while another process has the database open in WAL mode: after a
        few seconds of trying, stay in WAL (warning once) rather than fail."""
        mode = "WAL" if self.journal == "wal" else "TRUNCATE"
        patience = self._busy_timeout_s if self.journal == "wal" else min(3.0, self._busy_timeout_s)
        deadline = time.monotonic() + patience
        while True:
            try:
                conn.execute(f"PRAGMA journal_mode = {mode}")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if time.monotonic() > deadline:
                    current = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
                    if mode == "WAL" or current != "wal":
                        raise
                    _warn_once(
                        self.path,
                        "ledger: %s is open in WAL mode in another process; using WAL too "
                        "(ledger.sqlite_journal = %r applies once no process uses WAL)",
                        self.path,
                        self.journal,
                    )
                    return
            time.sleep(0.05)

    def _attach(self, conn: sqlite3.Connection) -> _Files:
        """Record which files the fresh connection uses (in WAL mode also the -wal and the
        -shm SQLite maps).

        By path only: this process must never open and close a descriptor of the database or
        its ``-shm`` itself, because closing any descriptor of a file drops every POSIX lock
        the process holds on it, SQLite's included (another process could then checkpoint
        and delete the WAL under a live connection)."""
        files = _Files(db=_ident(os.stat(self.path)), wal=None)
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            return files
        files.wal_mode = True
        files.wal = _path_ident(self._wal)
        shm = _file_info(self._shm)
        if shm is not None:
            files.shm, files.shm_size = shm.ident, shm.size
        return files

    @property
    def _wal(self) -> str:
        return f"{self._real}-wal"

    @property
    def _shm(self) -> str:
        return f"{self._real}-shm"

    # -- the guard -----------------------------------------------------------------------
    def check(self) -> None:
        """Raise a :class:`~tierwise.ledger.faults.StorageFault` when using the connection
        now could lose rows or kill the process; do nothing otherwise (microseconds).

        * the database file was deleted or replaced (SQLite would keep writing into the
          unlinked file, and every later row would be lost): :class:`DatabaseReplaced`;
        * the WAL or the WAL index (``-shm``) was deleted, replaced or truncated:
          :class:`IndexDamaged`;
        * the ``-shm`` became immutable or append-only, or its file system read-only:
          :class:`StorageUnwritable`.

        Why the ``-shm`` matters: SQLite maps it into memory (``MAP_SHARED``) and reads and
        writes it directly at every transaction. A write to a mapped page of a file that is
        now immutable (``chattr +i``; permission bits do not matter), on a file system that
        went read-only, or a read past the end of a file that was truncated, is not an error
        SQLite can return: the kernel sends SIGBUS and the process dies on the spot. The only
        prevention short of giving up WAL (or locking every other process out) is to look
        before SQLite touches the file, which is what this does before every use of the
        connection. What it cannot see is a change made between the check and SQLite's
        access, that is while one transaction runs (milliseconds; under a steady load the
        writer is in one most of the time): that can still fault, and
        :func:`~tierwise.ledger.faults.enable_crash_tracebacks` makes it leave a traceback.
        """
        with self._lock:
            self._check()

    def _check(self) -> None:
        files = self._files
        if self._conn is None or files is None:
            raise NotConnected(f"not connected to {self.path}{self._down}")
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise DatabaseReplaced(f"{self.path} was deleted while open") from None
        except OSError as exc:
            raise StorageUnwritable(f"cannot look at {self.path}: {exc.strerror}") from None
        if _ident(st) != files.db:
            raise DatabaseReplaced(f"{self.path} was replaced by another file while open")
        if files.wal_mode:
            self._check_index(files)
            self._check_wal(files, after_commit=False)

    def _check_index(self, files: _Files) -> None:
        shm = _file_info(self._shm)
        if files.shm is None:  # not created when the connection was made: record it now
            if shm is None:
                return
            files.shm, files.shm_size = shm.ident, shm.size
        if shm is None or shm.ident != files.shm:
            what = "deleted" if shm is None else "replaced by another file"
            raise IndexDamaged(f"{self._shm} was {what} while open")
        if shm.size < files.shm_size:
            raise IndexDamaged(
                f"{self._shm} was truncated from {files.shm_size} to {shm.size} bytes while open"
            )
        files.shm_size = shm.size
        if shm.unwritable:
            raise StorageUnwritable(
                f"{self._shm} is immutable or append-only (chattr): SQLite cannot write its "
                "WAL index"
            )
        now = time.monotonic()
        if now >= files.next_fs_check:  # rarer: a file system going read-only is rarer
            if os.statvfs(self._shm).f_flag & os.ST_RDONLY:
                raise StorageUnwritable(f"the file system holding {self._shm} is read-only")
            files.next_fs_check = now + 0.5

    def _check_wal(self, files: _Files, *, after_commit: bool) -> None:
        current = _path_ident(self._wal)
        if files.wal is None:
            files.wal = current
        elif current != files.wal:
            what = "deleted" if current is None else "replaced by another file"
            raise IndexDamaged(f"{self._wal} was {what} while open", after_commit=after_commit)

    def _check_after_commit(self) -> None:
        files = self._files
        assert files is not None
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        if st is None or _ident(st) != files.db:
            raise DatabaseReplaced(
                f"{self.path} was deleted or replaced while a batch was written into it",
                after_commit=True,
            )
        if files.wal_mode:
            self._check_wal(files, after_commit=True)
        elif files.journal is None:  # a rollback journal stays (truncated) after its first use
            files.journal = _path_ident(f"{self._real}-journal")

    def _use(self) -> sqlite3.Connection:
        if self._in_tx == 0:
            self._check()
        assert self._conn is not None
        return self._conn

    # -- recovery ------------------------------------------------------------------------
    def recover(self, fault: StorageFault) -> None:
        """Reconnect after :meth:`check` reported ``fault`` (it raises again while the files
        still cannot be used).

        A deleted or replaced database: the old connection is abandoned, never closed (closing
        it would delete the ``-wal``/``-shm`` *at the path*, which may already belong to the
        new file), stale side files of the vanished database are removed, and the path is
        opened afresh (created 0600 when missing; the caller migrates). :attr:`generation`
        counts these. A damaged index: a truncated ``-shm`` is grown back to its size first
        (SQLite then rebuilds its content from the WAL), then the connection is closed and
        reopened.
        """
        with self._lock:
            if isinstance(fault, StorageUnwritable):  # nothing to remake: wait until writable
                self._check()
                return
            old, files = self._conn, self._files
            if old is not None and files is not None:
                if isinstance(fault, IndexDamaged):
                    self._regrow_index(files)  # StorageUnwritable when it cannot
                self._conn, self._files = None, None
                self._release(old, files, safe=not isinstance(fault, DatabaseReplaced))
                if isinstance(fault, DatabaseReplaced):
                    _remove_stale_side_files(self._real, files)
            try:
                self._conn, self._files = self._open()
            except (OSError, sqlite3.Error) as exc:
                self._down = f" (reconnecting failed: {type(exc).__name__}: {_line(exc)})"
                raise StorageUnwritable(f"cannot reopen {self.path}: {_line(exc)}") from exc
            self._down = ""
            if isinstance(fault, DatabaseReplaced):
                self.generation += 1

    def _regrow_index(self, files: _Files) -> None:
        """Give a truncated ``-shm`` its size back (by path: see :meth:`_attach`), so that
        the pages SQLite has mapped exist again; SQLite rebuilds their content from the WAL."""
        shm = _file_info(self._shm)
        if shm is None or shm.ident != files.shm or shm.size >= files.shm_size:
            return
        try:
            os.truncate(self._shm, files.shm_size)
        except OSError as exc:
            raise StorageUnwritable(f"cannot repair {self._shm}: {exc.strerror}") from None

    def _release(self, conn: sqlite3.Connection, files: _Files, *, safe: bool) -> None:
        del files
        if safe:
            conn.close()
        else:
            _abandon(conn)

    # -- dialect -------------------------------------------------------------------------
    def day_expr(self, column: str) -> str:
        return f"substr({column}, 1, 10)"

    def hour_expr(self, column: str) -> str:
        return f"substr({column}, 1, 13)"

    def ts_param(self, ts: dt.datetime) -> str:
        if ts.tzinfo is not None:
            ts = ts.astimezone(dt.UTC)
        return ts.strftime(_TS_FORMAT)

    def ts_value(self, value: Any) -> dt.datetime:
        return dt.datetime.strptime(str(value), _TS_FORMAT).replace(tzinfo=dt.UTC)

    def money_param(self, value: Decimal | None) -> str | None:
        return None if value is None else format(value, "f")

    # -- statements ----------------------------------------------------------------------
    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        with self._lock:
            self._use().execute(statement, tuple(params))

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._use().executemany(statement, rows)

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            return list(self._use().execute(statement, tuple(params)).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            conn = self._use()
            conn.execute("BEGIN IMMEDIATE")
            self._in_tx += 1
            try:
                yield
            except BaseException:
                self._in_tx -= 1
                _rollback(conn)
                raise
            self._in_tx -= 1
            try:
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            self._check_after_commit()

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes SQLite's write lock: a second process waits (busy_timeout).
        with self.transaction():
            yield

    def journal_mode(self) -> str:
        return str(self.query("PRAGMA journal_mode")[0][0])

    def reconnect(self) -> None:
        """Close and reopen (the files are intact; use :meth:`recover` after a fault)."""
        with self._lock:
            self.close()
            self._conn, self._files = self._open()

    def close(self) -> None:
        """Close the connection, unless that would touch a file that cannot be touched
        safely (then the connection is abandoned: committed rows are in the WAL)."""
        with self._lock:
            conn, files = self._conn, self._files
            if conn is None or files is None:
                return
            safe = True
            try:
                self._check()
            except IndexDamaged:
                try:
                    self._regrow_index(files)
                except StorageUnwritable:
                    safe = False
            except StorageFault as exc:  # replaced or unwritable
                safe = False
                log.warning("ledger: leaving %s open at close: %s", self.path, exc)
            self._conn, self._files = None, None
            self._release(conn, files, safe=safe)


@dataclass(slots=True)
class _Files:
    """The files one SQLite connection uses, as (st_dev, st_ino)."""

    db: tuple[int, int]
    wal: tuple[int, int] | None
    wal_mode: bool = False
    journal: tuple[int, int] | None = None
    shm: tuple[int, int] | None = None
    shm_size: int = 0
    next_fs_check: float = 0.0


@dataclass(frozen=True, slots=True)
class _FileInfo:
    ident: tuple[int, int]
    size: int
    unwritable: bool  # immutable or append-only (Linux file attributes)


_SIDE_FILES = ("-wal", "-shm", "-journal")
JOURNALS = ("wal", "truncate")
# statx(2) (Linux >= 4.11, glibc >= 2.28) reports a file's attributes by path, without
# opening it: STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND.
_STATX_UNWRITABLE = 0x10 | 0x20
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_BASIC_STATS = 0x7FF
_statx: Any = None  # the libc function, looked up on first use; False: not available
_ABANDONED: list[sqlite3.Connection] = []
_MAX_ABANDONED = 32
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _ident(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _path_ident(path: str) -> tuple[int, int] | None:
    try:
        return _ident(os.stat(path))
    except FileNotFoundError:
        return None


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (disk full, I/O) already rolled the transaction back; a failed ROLLBACK must
    # not hide the error being raised.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("ledger: ROLLBACK failed: %s", _line(exc))


def _abandon(conn: sqlite3.Connection) -> None:
    """Keep ``conn`` open until the process exits, never closed, even at interpreter exit.

    Closing a connection runs a checkpoint through the memory-mapped ``-shm`` and deletes the
    ``-wal`` and ``-shm`` found at the database's path; neither is safe once the files were
    replaced or became unwritable. One leaked connection (three file descriptors) per such
    event is the price, up to :data:`_MAX_ABANDONED`; past that (someone deleting the file in
    a loop) connections are closed after all, with that risk, rather than exhausting file
    descriptors."""
    if len(_ABANDONED) >= _MAX_ABANDONED:
        _warn_once(
            "abandoned",
            "ledger: %d connections to vanished or unwritable databases are held open; "
            "closing further ones (their -wal/-shm may be removed from the path)",
            len(_ABANDONED),
        )
        conn.close()
        return
    import ctypes

    _ABANDONED.append(conn)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


def _remove_stale_side_files(path: str, files: _Files) -> None:
    """Unlink the ``-wal``/``-shm``/``-journal`` at ``path`` when they are the vanished
    database's own: a new database must not start next to another database's WAL or hot
    journal (SQLite would replay it into the new file)."""
    for suffix, old in (("-wal", files.wal), ("-shm", files.shm), ("-journal", files.journal)):
        side = f"{path}{suffix}"
        if old is not None and _path_ident(side) == old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(side)


def _warn_once(path: Path | str, message: str, *args: Any) -> None:
    key = f"{path}:{message}"
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


def _tighten(path: Path, *, mode: int = 0o600) -> None:
    """chmod ``path`` to ``mode`` when it grants group or other access (warning once). By
    path, never through a descriptor (see :meth:`SQLiteDatabase._attach`)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not st.st_mode & 0o077:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:
        _warn_once(
            path,
            "ledger: %s is accessible to other users (mode %s) and cannot be restricted: %s",
            path,
            oct(st.st_mode & 0o777),
            exc.strerror,
        )
        return
    _warn_once(
        path,
        "ledger: %s was accessible to other users (mode %s); restricted it to %s",
        path,
        oct(st.st_mode & 0o777),
        oct(mode),
    )


def _file_info(path: str) -> _FileInfo | None:
    """Identity, size and whether the file is immutable/append-only; None when missing."""
    global _statx  # noqa: PLW0603 - looked up once
    if _statx is None:
        _statx = _find_statx()
    if _statx is False:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return _FileInfo(_ident(st), st.st_size, unwritable=False)
    import ctypes

    buf = ctypes.create_string_buffer(256)
    if _statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_BASIC_STATS, buf):
        code = ctypes.get_errno()
        if code == errno.ENOENT:
            return None
        raise OSError(code, os.strerror(code), path)
    attributes, _, _, _, _, _, ino, size, _, mask = struct.unpack_from("=QIIIHHQQQQ", buf, 8)
    major, minor = struct.unpack_from("=II", buf, 136)
    return _FileInfo(
        (os.makedev(major, minor), ino), size, bool(attributes & mask & _STATX_UNWRITABLE)
    )


def _find_statx() -> Any:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).statx
    except (OSError, AttributeError):
        return False
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    ]
    function.restype = ctypes.c_int
    return function


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700), or restrict it to 0700 when it grants group/other access.

    Only a directory of tierwise's own is changed: one that this user owns, that is not
    shared by design (sticky, like /tmp) and is not the user's home or ``/``. Anything else
    (``TIERWISE_HOME=/tmp``...) gets a warning; the database files are 0600 either way."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise
    else:
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; 0700 is what we want
        return
    st = path.stat()
    if not st.st_mode & 0o077:
        return
    resolved = path.resolve()
    if (
        st.st_uid != os.geteuid()
        or st.st_mode & stat.S_ISVTX
        or resolved in (Path(resolved.anchor), Path.home().resolve())
    ):
        _warn_once(
            path,
            "ledger: the directory %s is accessible to other users (mode %s) and is not "
            "restricted (not a directory of tierwise's own); the database files are 0600",
            path,
            oct(st.st_mode & 0o777),
        )
        return
    _tighten(path, mode=0o700)


def _create_private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite would use 0644 & ~umask and
    give the same mode to ``-wal`` and ``-shm``), or restrict an existing one (by path: see
    :meth:`SQLiteDatabase._attach`; a new file has no locks to lose)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        _tighten(path)
        return
    os.close(fd)


class PostgresDatabase(Database):
    """PostgreSQL through psycopg 3, in autocommit mode with explicit transactions.

    A schema other than ``public`` is chosen the libpq way, in the URL:
    ``postgresql://u@host/db?options=-csearch_path%3Dmyschema``.
    """

    dialect = "postgresql"
    types: ClassVar[dict[str, str]] = {
        "money": "NUMERIC",
        "ts": "TIMESTAMPTZ",
        "float": "DOUBLE PRECISION",
        "id_pk": "BIGSERIAL PRIMARY KEY",
    }
    money_sum = "SUM"

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.url = url
        self._connect_timeout_s = connect_timeout_s
        self._conn = self._connect()

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ConfigError("a postgresql:// ledger needs psycopg: pip install psycopg") from exc
        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s))
            )
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"cannot connect to the ledger database {redact_url(self.url)}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"
            ) from exc

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def day_expr(self, column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def hour_expr(self, column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')"

    def ts_param(self, ts: dt.datetime) -> dt.datetime:
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=dt.UTC)

    def ts_value(self, value: Any) -> dt.datetime:
        assert isinstance(value, dt.datetime)
        return value.astimezone(dt.UTC)

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        with self._lock:
            self._conn.execute(self.sql(statement), tuple(params) or None)

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock, self._conn.cursor() as cur:
            cur.executemany(self.sql(statement), list(rows))

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            cur = self._conn.execute(self.sql(statement), tuple(params) or None)
            return [tuple(r) for r in cur.fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._conn.transaction():
            yield

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        with self.transaction():
            # One migrator per schema at a time; released at the end of the transaction.
            self._conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.tierwise'))"
            )
            yield

    def reconnect(self) -> None:
        """A new connection first (outside the lock), then the swap: a failed attempt leaves
        the old connection in place."""
        new = self._connect()
        with self._lock:
            old, self._conn = self._conn, new
        old.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def connect(url: str | None, home: Path, *, journal: str = "wal") -> Database:
    """Open the database a ledger URL names (None → SQLite at ``home/tierwise.db``, in a
    private directory); ``journal``: SQLite's, see :class:`SQLiteDatabase`."""
    if url is None or url == "":
        path = Path(home).expanduser() / "tierwise.db"
        return SQLiteDatabase(path, private_dir=True, journal=journal)
    if url.startswith("sqlite:///"):
        return SQLiteDatabase(Path(url.removeprefix("sqlite:///")).expanduser(), journal=journal)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise ConfigError(
        f"ledger.url {redact_url(url)!r}: expected sqlite:///PATH or postgresql://… "
        "(or leave it unset for SQLite in $TIERWISE_HOME)"
    )
