"""Storage faults: the ledger never stalls, never dies, never loses rows silently.

Poison rows, a database that refuses every row, health, a deleted or replaced SQLite file, an
immutable or truncated WAL index (the SIGBUS), a full disk, file permissions. Run against
SQLite (a file in tmp_path) and the local PostgreSQL where the fault exists in both; the
file-system faults are SQLite's. The process-level faults are done from outside to a child
process that owns the ledger (tests/ledger_child.py), as an operator or attacker would.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.dbs import entry, postgres_schema, postgres_url_or_skip, settings_for
from tierwise.config import Settings
from tierwise.ledger import Ledger, LedgerStore, open_ledger, open_store
from tierwise.ledger.db import SQLiteDatabase
from tierwise.ledger.faults import DatabaseReplaced, is_data_error
from tierwise.ledger.store import MAX_TOKENS, Gap, Inserted
from tierwise.types import LedgerEntry, Usage

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "sqlite-truncate", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield settings_for(tmp_path)
        return
    if request.param == "sqlite-truncate":
        yield settings_for(tmp_path, sqlite_journal="truncate")
        return
    with postgres_schema(postgres_url_or_skip()) as url:
        yield settings_for(tmp_path, url)


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll until ``predicate()`` (a generous deadline only against hanging, not a timing
    assertion)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.02)


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    store = open_store(settings)
    try:
        return store.db.query(sql)
    finally:
        store.close()


def poison() -> LedgerEntry:
    return entry(99, usage=Usage(input_tokens=10**30, output_tokens=5))


class _RawStore(LedgerStore):
    """A real store whose row builder passes values through unchecked: what a gap in the
    row builder's checks would let through to the database."""

    def to_row(self, e: LedgerEntry) -> tuple[Any, ...]:
        return self._row_as_given(e)


# -- poison rows ------------------------------------------------------------------------
def test_usage_never_breaks_a_batch(settings: Settings) -> None:
    """The reported stall: 41 good entries and one with 10**30 input tokens, then close()
    (the SIGTERM path). Before: the batch was retried forever and all 42 dropped at close."""
    good = [entry(i) for i in range(41)]
    bad = poison()
    ledger = open_ledger(settings)
    for e in [*good[:20], bad, *good[20:]]:
        ledger.record(e)
    assert ledger.flush(timeout_s=20)
    later = [entry(100 + i) for i in range(5)]  # the writer is alive and still writing
    for e in later:
        ledger.record(e)
    ledger.close()
    assert (ledger.written, ledger.dropped, ledger.rejected, ledger.sanitized) == (47, 0, 0, 1)
    rows = dict(query(settings, "SELECT request_id, input_tokens FROM requests"))
    assert set(rows) == {e.request_id for e in [*good, bad, *later]}
    assert rows[bad.request_id] == MAX_TOKENS  # clamped, and the row says so:
    [(note,)] = query(settings, "SELECT sanitized FROM requests WHERE sanitized IS NOT NULL")
    assert "input_tokens" in note and "10**30" in note


def test_a_row_the_database_refuses_is_rejected_and_the_rest_written(settings: Settings) -> None:
    """The same batch with the row builder's checks bypassed, so the database itself
    refuses the row (OverflowError in SQLite, NumericValueOutOfRange in PostgreSQL): 41 rows
    written, one reject in ledger_gaps with its request_id, the writer alive afterwards."""
    store = _RawStore(open_store(settings).db)
    ledger = Ledger(store, batch_size=500, flush_interval_s=0.05)
    good = [entry(i) for i in range(41)]
    bad = poison()
    for e in [*good[:20], bad, *good[20:]]:
        ledger.record(e)
    assert ledger.flush(timeout_s=20)
    health = ledger.health()
    assert health.status == "degraded" and bad.request_id in health.reason
    later = [entry(100 + i) for i in range(5)]
    for e in later:
        ledger.record(e)
    ledger.record(poison())  # a second one, in the close() path
    ledger.close()
    assert (ledger.written, ledger.dropped, ledger.rejected) == (46, 0, 2)
    ids = {r[0] for r in query(settings, "SELECT request_id FROM requests")}
    assert ids == {e.request_id for e in [*good, *later]}
    gaps = query(settings, "SELECT request_id, dropped, reason FROM ledger_gaps")
    assert len(gaps) == 2
    assert bad.request_id in {g[0] for g in gaps}
    assert all(g[1] == 1 and g[2].startswith("rejected by the database") for g in gaps)
    # Reports count them among the requests missing from the ledger, and can list them.
    check = open_store(settings)
    try:
        assert check.dropped() == 2
        rejects = check.rejects()
        assert len(rejects) == 2 and bad.request_id in {g.request_id for g in rejects}
        assert all(g.dropped == 1 and g.host == check.host for g in rejects)
    finally:
        check.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"usage": Usage(input_tokens=10**30)},
        {"usage": Usage(output_tokens=2**63, thinking_tokens=7)},
        {"reason": "bad \ud800 surrogate", "key_name": "k\udfffey"},
        {"model": "nul\x00byte", "tags": {"t\x00": "v\ud83d"}},
        {"confidence": math.nan, "total_ms": math.inf, "upstream_ms": -math.inf},
        {"cost_usd": Decimal("NaN"), "baseline_cost_usd": Decimal("Infinity")},
        {"saved_usd": Decimal("1E+999999999"), "classifier_cost_usd": Decimal("1E-999999")},
        {"requested_model": "m" * 100_000, "prompt": "p" * (2 << 20)},
        {"http_status": 10**40},
        {"request_id": "tw_" + "x" * 5000},
        {"request_id": "tw_\ud800_surrogate"},
    ],
    ids=",".join,
)
def test_values_the_database_cannot_hold_are_stored_sanitised_and_marked(
    settings: Settings, fields: dict[str, Any]
) -> None:
    e = entry(**fields)
    store = open_store(settings)
    try:
        result = store.insert([e, entry(1)])
        assert result.rows == 2 and result.rejected == []
        assert len(result.sanitized) == 1
        rows = store.db.query("SELECT request_id, sanitized FROM requests ORDER BY ts")
        assert rows[0][1] and rows[0][1] == result.sanitized[0][1]
        assert rows[1][1] is None  # the good row is untouched
        got = store.get(rows[0][0])
        assert got is not None  # and the stored row reads back
        if "request_id" not in fields:
            assert got.request_id == e.request_id
        assert max(getattr(got.usage, k) for k in ("input_tokens", "output_tokens")) <= MAX_TOKENS
    finally:
        store.close()


def test_an_entry_without_a_request_id_is_recorded_as_a_gap(settings: Settings) -> None:
    store = open_store(settings)
    try:
        result = store.insert([entry(0), entry(1, request_id=""), entry(2)])
        assert result.rows == 2 and len(result.rejected) == 1
        gaps = store.db.query("SELECT dropped, reason FROM ledger_gaps")
        assert gaps == [(1, "rejected: no request_id")]
    finally:
        store.close()


def test_the_fast_path_keeps_valid_values_exactly(settings: Settings) -> None:
    """Non-ASCII text, extreme but valid numbers: stored as given, not marked."""
    e = entry(
        reason="中文 emoji 🎉 and ümlauts",
        usage=Usage(input_tokens=MAX_TOKENS, output_tokens=0),
        confidence=0.0,
        cost_usd=Decimal("0.000000000000000000000000000001"),
        baseline_cost_usd=Decimal("9999999999999999999999999999999"),
    )
    store = open_store(settings)
    try:
        assert store.insert([e]).sanitized == []
        assert store.entries() == [e]
    finally:
        store.close()


# -- a database that refuses every row ----------------------------------------------------
def _refuse_all_rows(settings: Settings, on: bool) -> None:
    store = open_store(settings)
    try:
        if store.db.dialect == "sqlite":
            store.db.execute(
                "CREATE TRIGGER tw_refuse BEFORE INSERT ON requests "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
                if on
                else "DROP TRIGGER tw_refuse"
            )
        elif on:
            store.db.execute(
                "CREATE FUNCTION tw_refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION "
                "'refused by a test trigger' USING ERRCODE = 'check_violation'; END $$ "
                "LANGUAGE plpgsql"
            )
            store.db.execute(
                "CREATE TRIGGER tw_refuse BEFORE INSERT ON requests "
                "FOR EACH ROW EXECUTE FUNCTION tw_refuse()"
            )
        else:
            store.db.execute("DROP TRIGGER tw_refuse ON requests")
    finally:
        store.close()


def test_a_database_refusing_every_row_rejects_none_and_says_failing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A constraint error on every row is the database's state, not the rows' data: nothing
    is rejected, health is failing, and everything is written once it accepts rows again."""
    ledger = open_ledger(settings)
    assert ledger.health().status == "ok"
    _refuse_all_rows(settings, on=True)
    sent = [entry(i) for i in range(30)]
    for e in sent:
        ledger.record(e)
    wait_for(lambda: ledger.health().status == "failing", "health says failing")
    health = ledger.health()
    assert "refused by a test trigger" in health.reason
    assert health.queued == 30 and health.write_errors >= 1 and health.rejected == 0
    # (the writer logs right after it marks itself failing)
    wait_for(lambda: any(r.levelno == logging.ERROR for r in caplog.records), "an ERROR log")
    _refuse_all_rows(settings, on=False)
    assert ledger.flush(timeout_s=30)
    health = ledger.health()
    assert health.status == "degraded" and "recovered" in health.reason
    ledger.close()
    assert (ledger.written, ledger.rejected, ledger.dropped) == (30, 0, 0)
    assert query(settings, "SELECT COUNT(*) FROM requests") == [(30,)]


# -- health -------------------------------------------------------------------------------
class _GatedStore(LedgerStore):
    """A real store whose writes wait for a gate: a database that hangs."""

    def __init__(self, inner: LedgerStore) -> None:
        super().__init__(inner.db)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def insert(self, entries: Sequence[LedgerEntry], gaps: Sequence[Gap] = ()) -> Inserted:
        if entries:
            self.entered.set()
            self.gate.wait(30)
        return super().insert(entries, gaps)


def test_health_says_failing_while_a_write_is_stuck_and_counts_the_waiting(
    settings: Settings,
) -> None:
    store = _GatedStore(open_store(settings))
    ledger = Ledger(store, queue_size=10, batch_size=2, flush_interval_s=0.01, stall_after_s=0.3)
    try:
        ledger.record(entry(0))
        assert store.entered.wait(20)  # the writer holds entry 0 and hangs
        for i in range(1, 11):
            ledger.record(entry(i))
        _stuck_write_shows(ledger, store)
    finally:
        store.gate.set()
        ledger.close()
    assert ledger.health().status == "failing"  # closed


def _stuck_write_shows(ledger: Ledger, store: _GatedStore) -> None:
    wait_for(lambda: ledger.health().status == "failing", "a stuck write shows")
    health = ledger.health()
    assert "has been running" in health.reason
    # everything not yet written counts, the batch held by the writer included
    assert health.queued == 11 and health.oldest_queued_s > 0.3
    assert ledger.stats().queued == 11 and ledger.stats().oldest_queued_s > 0.3
    ledger.record(entry(99))  # the queue is full: dropped and counted
    store.gate.set()
    assert ledger.flush(timeout_s=20)
    health = ledger.health()
    assert health.status == "degraded" and "dropped" in health.reason and health.dropped == 1
    assert health.as_dict()["since"].endswith("+00:00")


def test_health_is_ok_with_a_healthy_database(settings: Settings) -> None:
    with open_ledger(settings) as ledger:
        for i in range(5):
            ledger.record(entry(i))
        assert ledger.flush(timeout_s=20)
        health = ledger.health()
        assert (health.status, health.queued, health.dropped, health.rejected) == ("ok", 0, 0, 0)
        assert json.loads(json.dumps(health.as_dict()))["status"] == "ok"


# -- a deleted or replaced SQLite file ----------------------------------------------------
def _sqlite_rows(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT request_id FROM requests")}
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("how", "journal"),
    [
        ("database file", "wal"),
        ("database and side files", "wal"),
        ("replaced", "wal"),
        ("database file", "truncate"),
        ("replaced", "truncate"),
    ],
)
def test_a_deleted_or_replaced_database_is_noticed_and_later_rows_kept(
    tmp_path: Path, how: str, journal: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: SQLite kept writing into the unlinked file and every later row was lost."""
    settings = settings_for(tmp_path / "home", sqlite_journal=journal)
    db_path = tmp_path / "home" / "tierwise.db"
    ledger = open_ledger(settings)
    first = [entry(i) for i in range(10)]
    for e in first:
        ledger.record(e)
    assert ledger.flush(timeout_s=20)
    generation = ledger.store.db.generation
    if how == "replaced":
        other = tmp_path / "restored.db"
        restored = open_store(settings_for(tmp_path, f"sqlite:///{other}"))
        restored.insert([entry(50)])
        restored.close()
        os.replace(other, db_path)
    else:
        db_path.unlink()
        if how == "database and side files":
            for suffix in ("-wal", "-shm"):
                Path(f"{db_path}-{suffix[1:]}").unlink()
    later = [entry(20 + i) for i in range(10)]
    for e in later:
        ledger.record(e)
    assert ledger.flush(timeout_s=20)
    health = ledger.health()
    assert health.status == "degraded" and "deleted or replaced" in health.reason
    assert ledger.stats().replaced == 1 and ledger.store.db.generation == generation + 1
    assert any(r.levelno == logging.ERROR and "deleted" in r.getMessage() for r in caplog.records)
    ledger.close()
    rows = _sqlite_rows(db_path)
    assert {e.request_id for e in later} <= rows
    assert not {e.request_id for e in first} & rows
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


def test_an_idle_ledger_recreates_a_deleted_database_without_waiting_for_a_row(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    with open_ledger(settings) as ledger:
        ledger.record(entry())
        assert ledger.flush(timeout_s=20)
        (tmp_path / "tierwise.db").unlink()
        wait_for((tmp_path / "tierwise.db").exists, "the file is recreated")
        wait_for(lambda: ledger.stats().replaced == 1, "the replacement is counted")
        # the shared connection (keys, budgets, dashboard) reads the new database
        assert ledger.store.db.query("SELECT COUNT(*) FROM api_keys") == [(0,)]


def test_a_batch_committed_into_a_vanished_file_is_written_again(tmp_path: Path) -> None:
    """The file is deleted between the check before the transaction and its commit: the
    check after the commit notices, and the batch is written again into the new file."""
    settings = settings_for(tmp_path)
    store = open_store(settings)
    db = store.db
    assert isinstance(db, SQLiteDatabase)
    executemany = db.executemany
    deleted: list[bool] = []

    def delete_midway(statement: str, rows: Any) -> None:
        executemany(statement, rows)
        if not deleted and "INSERT INTO requests" in statement:
            deleted.append(True)
            db.path.unlink()

    db.executemany = delete_midway  # type: ignore[method-assign]
    with pytest.raises(DatabaseReplaced) as caught:
        store.insert([entry(0)])
    assert caught.value.after_commit
    deleted.clear()
    ledger = Ledger(store, flush_interval_s=0.01)
    batch = [entry(i) for i in range(7)]
    for e in batch:
        ledger.record(e)
    ledger.close()
    assert ledger.stats().rewritten == 7 and ledger.written == 7
    assert _sqlite_rows(tmp_path / "tierwise.db") == {e.request_id for e in batch}


def test_other_connections_opening_and_closing_never_look_like_a_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stores opened and closed beside a running ledger, in this process and in others, leave
    its files alone: the guard looks at files by path only (closing a descriptor of its own
    would drop SQLite's POSIX locks, and the next process to close would delete the WAL and
    index under the live connection)."""
    settings = settings_for(tmp_path)
    wal = tmp_path / "tierwise.db-wal"
    with open_ledger(settings) as ledger:
        ledger.record(entry(0))
        assert ledger.flush(timeout_s=20)
        before = wal.stat().st_ino
        writer = (
            "import sys; from pathlib import Path; from tests.dbs import entry, settings_for; "
            "from tierwise.ledger import open_store; "
            "s = open_store(settings_for(Path(sys.argv[1]))); s.insert([entry(7)]); s.close()"
        )
        for i in range(3):
            open_store(settings).close()
            subprocess.run([sys.executable, "-c", writer, str(tmp_path)], cwd=ROOT, check=True)
            ledger.record(entry(1 + i))
            assert ledger.flush(timeout_s=20)
        assert wal.stat().st_ino == before
        stats = ledger.stats()
        assert (stats.replaced, stats.write_errors, stats.written) == (0, 0, 4)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(_sqlite_rows(tmp_path / "tierwise.db")) == 7


# -- the WAL index: SIGBUS, truncation -----------------------------------------------------
class Child:
    """tests/ledger_child.py in its own process."""

    def __init__(self, home: Path, journal: str = "wal") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ledger_child", str(home), journal],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(self, command: str, timeout_s: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(
                f"the ledger process died (exit status {self.proc.returncode}) on "
                f"{command!r}; stderr:\n{err[-3000:]}"
            )
        out: dict[str, Any] = json.loads(line)
        return out

    def wait_health(self, status: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            health = self("health")
            if health["status"] == status or time.monotonic() > deadline:
                return health
            time.sleep(0.05)

    def finish(self) -> tuple[dict[str, Any], str]:
        stats = self("exit")
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return stats, err


def _chattr_or_skip(path: Path) -> None:
    """Skip unless this user can make files immutable here (root on ext4, xfs, btrfs...)."""
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs root and chattr (an immutable file is the unwritable -shm root sees)")
    probe = path / "chattr-probe"
    probe.write_text("x")
    try:
        if subprocess.run(
            ["chattr", "+i", str(probe)], check=False, capture_output=True
        ).returncode:
            pytest.skip("this file system does not support immutable files")
        subprocess.run(["chattr", "-i", str(probe)], check=True)
    finally:
        probe.unlink()


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True)


def test_an_immutable_wal_index_does_not_kill_the_process(tmp_path: Path) -> None:
    """The reported crash: the -shm made unwritable while the gateway runs killed it with
    SIGBUS and nothing in the log. Now: health failing, rows kept queued, resumed after."""
    home = tmp_path / "home"
    home.mkdir()
    _chattr_or_skip(tmp_path)
    shm = home / "tierwise.db-shm"
    child = Child(home)
    try:
        child("record 20")
        assert child("flush")["flushed"]
        _chattr("+i", shm)
        try:
            child("record 20")
            health = child.wait_health("failing")
            assert health["status"] == "failing", health
            assert "immutable" in health["reason"] and health["queued"] == 20
            time.sleep(1.5)  # retries back off; the process stays up
            assert child("health")["status"] == "failing"
        finally:
            _chattr("-i", shm)
        assert child("flush")["flushed"]
        stats, err = child.finish()
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
    assert stats["written"] == 40 and stats["dropped"] == 0
    assert "immutable" in err  # logged (ERROR), and when it recovered
    assert "works again" in err
    assert len(_sqlite_rows(home / "tierwise.db")) == 40


def _flip_immutable_during_load(child: Child, path: Path, seconds: float = 3.0) -> int:
    """Keep the child's writer busy for ``seconds`` while ``path`` is made immutable and
    writable again, four times; returns how many entries it recorded."""
    done: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: done.update(child(f"load {seconds}")))
    loader.start()
    try:
        for _ in range(4):
            time.sleep(0.3)
            _chattr("+i", path)
            try:
                time.sleep(0.3)
            finally:
                _chattr("-i", path)
    finally:
        loader.join(120)
    return int(done["recorded"])


def test_with_a_rollback_journal_no_file_fault_kills_a_busy_writer(tmp_path: Path) -> None:
    """ledger.sqlite_journal = "truncate": nothing is memory-mapped, so the database (or its
    journal) made immutable while the writer is busy only makes writes fail for a while."""
    home = tmp_path / "home"
    home.mkdir()
    _chattr_or_skip(tmp_path)
    child = Child(home, "truncate")
    try:
        child("record 1")
        assert child("flush")["flushed"]
        for target in ("tierwise.db", "tierwise.db-journal"):
            _flip_immutable_during_load(child, home / target)
        assert child("flush")["flushed"]
        stats, _ = child.finish()
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
    assert stats["dropped"] == 0 and stats["write_errors"] > 0
    assert stats["written"] == len(_sqlite_rows(home / "tierwise.db")) > 1000


def test_a_truncated_wal_index_does_not_kill_the_process(tmp_path: Path) -> None:
    """Truncating the mapped -shm (no root needed) used to mean SIGBUS at the next access."""
    home = tmp_path / "home"
    child = Child(home)
    try:
        child("record 20")
        assert child("flush")["flushed"]
        os.truncate(home / "tierwise.db-shm", 0)
        child("record 20")
        assert child("flush")["flushed"]
        stats, err = child.finish()
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
    assert stats["written"] == 40 and "truncated" in err
    assert len(_sqlite_rows(home / "tierwise.db")) == 40
    conn = sqlite3.connect(home / "tierwise.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


def test_a_full_disk_is_survived_without_spinning_and_writing_resumes(tmp_path: Path) -> None:
    """No file may grow (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC): writes fail,
    are retried with back-off, and succeed once there is room; nothing is lost."""
    home = tmp_path / "home"
    child = Child(home)
    try:
        child("record 5")
        assert child("flush")["flushed"]
        sizes = [(home / f).stat().st_size for f in ("tierwise.db", "tierwise.db-wal")]
        child(f"fsize {max(sizes)}")
        child("record 2000")
        health = child.wait_health("failing")
        assert health["status"] == "failing", health
        errors = health["write_errors"]
        time.sleep(2.0)
        health = child("health")
        # back-off: a handful of attempts in two seconds, not a busy loop
        assert health["status"] == "failing" and health["write_errors"] - errors < 20
        child("unlimit")
        assert child("flush")["flushed"]
        stats, err = child.finish()
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
    assert stats["written"] == 2005 and stats["dropped"] == 0
    assert "full" in err or "too large" in err.lower() or "disk" in err
    assert len(_sqlite_rows(home / "tierwise.db")) == 2005


def test_a_fatal_signal_leaves_a_traceback(tmp_path: Path) -> None:
    script = (
        "import os, signal\n"
        "from tierwise.ledger import enable_crash_tracebacks\n"
        "assert enable_crash_tracebacks()\n"
        "def crash_here():\n"
        "    os.kill(os.getpid(), signal.SIGBUS)\n"
        "crash_here()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGBUS
    assert "Bus error" in proc.stderr and "crash_here" in proc.stderr


# -- permissions ----------------------------------------------------------------------------
def test_home_and_database_files_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_ledger(settings_for(home)) as ledger:
        ledger.record(entry())
        assert ledger.flush(timeout_s=20)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for name in ("tierwise.db", "tierwise.db-wal", "tierwise.db-shm"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


def test_loose_permissions_are_tightened_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / f"home-{uuid.uuid4().hex[:6]}"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    db = home / "tierwise.db"
    conn = sqlite3.connect(db)  # as an older tierwise left it: 0644 under umask 022
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    os.chmod(db, 0o644)
    with caplog.at_level(logging.WARNING, logger="tierwise.ledger"):
        for _ in range(2):
            open_store(settings_for(home)).close()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    warnings = [
        r.getMessage() for r in caplog.records if "accessible to other users" in r.getMessage()
    ]
    assert len(warnings) == 2  # the directory and the file, once each
    assert all("restricted" in w for w in warnings)


def test_a_rollback_journal_leaves_nothing_mapped_and_its_files_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_ledger(settings_for(home, sqlite_journal="truncate")) as ledger:
        ledger.record(entry())
        assert ledger.flush(timeout_s=20)
        db = ledger.store.db
        assert isinstance(db, SQLiteDatabase) and db.journal_mode() == "truncate"
        assert not (home / "tierwise.db-wal").exists() and not (home / "tierwise.db-shm").exists()
        for name in ("tierwise.db", "tierwise.db-journal"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


def test_a_database_in_wal_mode_elsewhere_is_joined_not_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older gateway still running in WAL mode: a process configured for the rollback
    journal cannot switch the file while it is open, so it uses WAL too and says so."""
    running = open_store(settings_for(tmp_path))
    try:
        with caplog.at_level(logging.WARNING, logger="tierwise.ledger"):
            other = open_store(settings_for(tmp_path, sqlite_journal="truncate"))
        try:
            assert isinstance(other.db, SQLiteDatabase) and other.db.journal_mode() == "wal"
            other.insert([entry()])
        finally:
            other.close()
    finally:
        running.close()
    assert any("open in WAL mode in another process" in r.getMessage() for r in caplog.records)


def test_a_shared_home_directory_is_not_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TIERWISE_HOME=/tmp or the like: not tierwise's own directory to restrict."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with caplog.at_level(logging.WARNING, logger="tierwise.ledger"):
        open_store(settings_for(shared)).close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "tierwise.db").stat().st_mode) == 0o600
    assert any("is not restricted" in r.getMessage() for r in caplog.records)


def test_an_explicit_database_path_leaves_its_directory_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    store = open_store(settings_for(tmp_path / "home", f"sqlite:///{shared / 'ledger.db'}"))
    store.close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # not ours to change
    assert stat.S_IMODE((shared / "ledger.db").stat().st_mode) == 0o600


# -- classification ---------------------------------------------------------------------------
def test_data_errors_are_told_from_the_database_state() -> None:
    data = [
        OverflowError("Python int too large to convert to SQLite INTEGER"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        sqlite3.IntegrityError("NOT NULL constraint failed"),
        sqlite3.DataError("string or blob too big"),
        sqlite3.ProgrammingError("Error binding parameter 3: type 'dict' is not supported"),
    ]
    state = [
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("attempt to write a readonly database"),
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.ProgrammingError("Cannot operate on a closed database."),
        sqlite3.DatabaseError("database disk image is malformed"),
        ConnectionError("gone"),
        DatabaseReplaced("deleted"),
    ]
    assert all(is_data_error(e) for e in data)
    assert not any(is_data_error(e) for e in state)
    psycopg = pytest.importorskip("psycopg")
    assert is_data_error(psycopg.errors.NumericValueOutOfRange("bigint out of range"))
    assert is_data_error(psycopg.errors.NotNullViolation("null value"))
    assert is_data_error(psycopg.DataError("PostgreSQL text fields cannot contain NUL"))
    assert not is_data_error(psycopg.OperationalError("server closed the connection"))
    assert not is_data_error(psycopg.errors.UndefinedTable("relation does not exist"))
