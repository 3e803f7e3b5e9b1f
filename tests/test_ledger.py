"""The ledger contract, run against SQLite (a file in tmp_path) and the local PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from tests.dbs import entry, postgres_schema, postgres_url_or_skip, settings_for
from tierwise.config import Settings
from tierwise.ledger import Ledger, LedgerStore, open_ledger, open_store
from tierwise.ledger.db import SQLiteDatabase
from tierwise.ledger.schema import MIGRATIONS, applied_versions, migrate
from tierwise.ledger.store import Gap, Inserted
from tierwise.types import LedgerEntry


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield settings_for(tmp_path)
        return
    with postgres_schema(postgres_url_or_skip()) as url:
        yield settings_for(tmp_path, url)


def test_every_field_round_trips_exactly(settings: Settings) -> None:
    original = entry()
    failed = entry(
        1,
        status="error",
        error_type="overloaded_error",
        http_status=529,
        usage=entry().usage.__class__(),
        cost_usd=None,
        baseline_cost_usd=None,
        saved_usd=None,
        price_version=None,
        tags={},
        fallbacks=(),
        key_name=None,
        requested_model=None,
        confidence=None,
        streaming=False,
        simulated=True,
        prompt="what is 2+2?",
        reply="4",
    )
    with open_ledger(settings) as ledger:
        ledger.record(original)
        ledger.record(failed)
    store = open_store(settings)
    try:
        got = store.entries()
    finally:
        store.close()
    assert got == [original, failed]
    # Exact decimal text, not merely equal numbers (no float ever touched them).
    for field in ("cost_usd", "classifier_cost_usd", "baseline_cost_usd", "saved_usd"):
        assert format(getattr(got[0], field), "f") == format(getattr(original, field), "f")
        assert isinstance(getattr(got[0], field), Decimal)


def test_migrations_are_recorded_and_idempotent(settings: Settings) -> None:
    store = open_store(settings)
    try:
        assert applied_versions(store.db) == [m.version for m in MIGRATIONS]
        assert migrate(store.db) == []  # a second start applies nothing
        rows = store.db.query("SELECT version, name FROM tierwise_migrations ORDER BY version")
        assert [r[1] for r in rows] == [m.name for m in MIGRATIONS]
    finally:
        store.close()


def test_processes_starting_at_once_migrate_once(settings: Settings) -> None:
    stores: list[LedgerStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(open_store(settings))  # each has its own connection
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert applied_versions(stores[0].db) == [m.version for m in MIGRATIONS]
    finally:
        for s in stores:
            s.close()


def test_concurrent_writers_lose_nothing(settings: Settings) -> None:
    ledgers = [open_ledger(settings), open_ledger(settings)]  # two writers, one database
    ids: list[str] = []
    lock = threading.Lock()

    def work(ledger: Ledger, n: int) -> None:
        for i in range(n):
            e = entry(i)
            with lock:
                ids.append(e.request_id)
            ledger.record(e)

    threads = [threading.Thread(target=work, args=(ledgers[i % 2], 300)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ledger in ledgers:
        ledger.close()
        assert ledger.dropped == 0
    store = open_store(settings)
    try:
        rows = store.db.query("SELECT request_id FROM requests")
    finally:
        store.close()
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert len(ids) == 1800


def test_flush_makes_everything_recorded_so_far_visible(settings: Settings) -> None:
    s = settings.model_copy(
        update={"ledger": settings.ledger.model_copy(update={"flush_interval_s": 30.0})}
    )
    with open_ledger(s) as ledger:
        for i in range(25):
            ledger.record(entry(i))
        assert ledger.flush(timeout_s=10)
        assert ledger.store.count() == 25
        assert ledger.stats().written == 25


def test_a_retried_batch_is_not_recorded_twice(settings: Settings) -> None:
    store = open_store(settings)
    try:
        batch = [entry(i) for i in range(3)]
        store.insert(batch)
        store.insert(batch)  # as after a lost commit acknowledgement
        assert store.count() == 3
    finally:
        store.close()


class _GatedStore(LedgerStore):
    """A real store whose writes wait for a gate: the database is 'slow'."""

    def __init__(self, inner: LedgerStore) -> None:
        super().__init__(inner.db)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def insert(self, entries: Sequence[LedgerEntry], gaps: Sequence[Gap] = ()) -> Inserted:
        if entries:
            self.entered.set()
            self.gate.wait(30)
        return super().insert(entries, gaps)


def test_a_full_queue_is_counted_and_reported_never_silent(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    store = _GatedStore(open_store(settings))
    ledger = Ledger(store, queue_size=5, batch_size=1, flush_interval_s=0.01)
    sent = 50
    for i in range(sent):
        ledger.record(entry(i))
        if i == 0:  # the writer takes the first entry and blocks on the gate
            assert store.entered.wait(10)
    assert ledger.dropped == sent - 1 - 5
    assert any("not recorded" in r.getMessage() for r in caplog.records)
    store.gate.set()
    ledger.close()
    assert ledger.written == 6
    check = open_store(settings)
    try:
        assert check.count() == 6
        assert check.dropped() == sent - 6  # written to ledger_gaps for the reports
    finally:
        check.close()


def test_records_after_close_are_counted(settings: Settings) -> None:
    ledger = open_ledger(settings)
    ledger.close()
    ledger.record(entry())
    assert ledger.dropped == 1
    ledger.close()  # idempotent


def test_record_is_cheap_and_does_not_wait_for_the_database(settings: Settings) -> None:
    store = _GatedStore(open_store(settings))
    ledger = Ledger(store, queue_size=20_000, batch_size=500, flush_interval_s=0.05)
    start = time.perf_counter()
    for i in range(5_000):
        ledger.record(entry(i))
    elapsed = time.perf_counter() - start
    store.gate.set()
    ledger.close()
    assert ledger.dropped == 0
    assert elapsed < 2.0  # ~10 µs each on this machine, while the database is blocked


def test_sqlite_is_in_wal_mode_in_the_home(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home")
    with open_ledger(settings) as ledger:
        ledger.record(entry())
        ledger.flush()
        db = ledger.store.db
        assert isinstance(db, SQLiteDatabase)
        assert db.path == tmp_path / "home" / "tierwise.db"
        assert db.journal_mode() == "wal"
        assert (tmp_path / "home" / "tierwise.db-wal").exists()


def test_spent_by_key_sums_model_and_classifier_cost(settings: Settings) -> None:
    store = open_store(settings)
    try:
        store.insert(
            [
                entry(
                    0, key_name="k", cost_usd=Decimal("0.10"), classifier_cost_usd=Decimal("0.01")
                ),
                entry(1, key_name="k", cost_usd=None, status="error"),
                entry(2, key_name="other", cost_usd=Decimal("5")),
            ]
        )
        assert store.spent("k", None) == Decimal("0.11") + entry().classifier_cost_usd
        assert store.spent("nobody", None) == 0
    finally:
        store.close()


class _FlakyStore(LedgerStore):
    """A real store whose first ``failures`` writes fail (the database was briefly down)."""

    def __init__(self, inner: LedgerStore, failures: int) -> None:
        super().__init__(inner.db)
        self.failures = failures

    def insert(self, entries: Sequence[LedgerEntry], gaps: Sequence[Gap] = ()) -> Inserted:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        return super().insert(entries, gaps)


def test_failed_writes_are_retried_and_nothing_is_lost(settings: Settings) -> None:
    store = _FlakyStore(open_store(settings), failures=3)
    ledger = Ledger(store, queue_size=100, batch_size=10, flush_interval_s=0.01)
    for i in range(30):
        ledger.record(entry(i))
    ledger.close()
    assert (ledger.write_errors, ledger.written, ledger.dropped) == (3, 30, 0)
    check = open_store(settings)
    try:
        assert check.count() == 30
    finally:
        check.close()


def test_close_gives_up_on_a_dead_database_and_counts_the_loss(settings: Settings) -> None:
    store = _FlakyStore(open_store(settings), failures=10**9)
    ledger = Ledger(store, queue_size=100, batch_size=10, flush_interval_s=0.01)
    for i in range(25):
        ledger.record(entry(i))
    start = time.monotonic()
    ledger.close(timeout_s=0.3)
    assert time.monotonic() - start < 10
    assert ledger.written == 0 and ledger.dropped == 25
