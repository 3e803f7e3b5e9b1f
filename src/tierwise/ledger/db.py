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

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit, urlunsplit

from tierwise.errors import ConfigError

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

    def __init__(self) -> None:
        self._lock = threading.RLock()

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
    """SQLite in WAL mode with ``synchronous=NORMAL``.

    WAL lets readers (reports) run while the writer writes, and several processes share one
    file. With ``synchronous=NORMAL`` a committed transaction survives the process being killed
    (the data is in the OS page cache); only an OS crash or power loss can lose the last few
    commits, never corrupt the file.
    """

    dialect = "sqlite"
    types: ClassVar[dict[str, str]] = {
        "money": "TEXT",
        "ts": "TEXT",
        "float": "REAL",
        "id_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    }
    money_sum = "dsum"

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.path = path
        self.url = f"sqlite:///{path}"
        self._busy_timeout_s = busy_timeout_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # guarded by self._lock
        )
        conn.create_aggregate("dsum", 1, cast(Any, _DecimalSum))
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        # Switching to WAL needs a moment of exclusive access: retry while another process
        # that is starting at the same time holds it.
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

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

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        with self._lock:
            self._conn.execute(statement, tuple(params))

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._conn.executemany(statement, rows)

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            return list(self._conn.execute(statement, tuple(params)).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes SQLite's write lock: a second process waits (busy_timeout).
        with self.transaction():
            yield

    def journal_mode(self) -> str:
        return str(self.query("PRAGMA journal_mode")[0][0])

    def reconnect(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            finally:
                self._conn = self._connect()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


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
        with self._lock:
            try:
                self._conn.close()
            finally:
                self._conn = self._connect()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def connect(url: str | None, home: Path) -> Database:
    """Open the database a ledger URL names (None → SQLite at ``home/tierwise.db``)."""
    if url is None or url == "":
        return SQLiteDatabase(Path(home).expanduser() / "tierwise.db")
    if url.startswith("sqlite:///"):
        return SQLiteDatabase(Path(url.removeprefix("sqlite:///")).expanduser())
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise ConfigError(
        f"ledger.url {redact_url(url)!r}: expected sqlite:///PATH or postgresql://… "
        "(or leave it unset for SQLite in $TIERWISE_HOME)"
    )
