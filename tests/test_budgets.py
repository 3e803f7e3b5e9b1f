"""Budgets: reserve the worst case, settle the real cost, never overspend under concurrency,
in one process and in Redis across clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.dbs import delete_redis_prefix, entry, redis_url_or_skip, settings_for
from tierwise.budgets import (
    Budgets,
    InProcessBudgets,
    RedisBudgets,
    Reservation,
    admit,
    ledger_seed,
    open_budgets,
    period_bounds,
    worst_case_cost,
)
from tierwise.errors import BudgetExceeded
from tierwise.keys import KeyInfo
from tierwise.ledger import open_store
from tierwise.pricing import PriceCatalogue

NOW = dt.datetime(2026, 11, 26, 15, 0, tzinfo=dt.UTC)
TIERS = [
    ("haiku", "claude-haiku-4-5"),
    ("sonnet", "claude-sonnet-4-6"),
    ("opus", "claude-opus-4-6"),
]


def key(budget: str | None = "1.00", period: str = "day", name: str | None = None) -> KeyInfo:
    return KeyInfo(
        name=name or f"k{uuid.uuid4().hex[:8]}",
        key_prefix="tw-xxxxxxx",
        budget_usd=None if budget is None else Decimal(budget),
        period=period,
        created_at=NOW,
    )


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisBudgets]]:
    url = redis_url_or_skip()
    prefix = f"tierwise-test-{uuid.uuid4().hex[:10]}:"
    made: list[RedisBudgets] = []

    def make(**kwargs: object) -> RedisBudgets:
        b = RedisBudgets(url, prefix=prefix, **kwargs)  # type: ignore[arg-type]
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
    delete_redis_prefix(url, prefix)


@pytest.fixture(params=["memory", "redis"])
def budgets(request: pytest.FixtureRequest) -> Budgets:
    if request.param == "memory":
        return InProcessBudgets()
    factory: Callable[..., RedisBudgets] = request.getfixturevalue("redis_factory")
    return factory()


def test_period_bounds_are_utc_calendar_periods() -> None:
    assert period_bounds("day", NOW)[:2] == (
        "d2026-11-26",
        dt.datetime(2026, 11, 26, tzinfo=dt.UTC),
    )
    bucket, start, end = period_bounds("month", dt.datetime(2026, 12, 31, 23, tzinfo=dt.UTC))
    assert (bucket, start, end) == (
        "m2026-12",
        dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
    )
    assert period_bounds("total", NOW) == ("total", None, None)


def test_reserve_settle_release(budgets: Budgets) -> None:
    k = key("1.00")
    a = budgets.reserve(k, Decimal("0.60"))
    assert isinstance(a, Reservation)
    refused = budgets.reserve(k, Decimal("0.50"))
    assert isinstance(refused, BudgetExceeded)
    assert refused.key_name == k.name and refused.period == "day"
    assert refused.remaining_usd == Decimal("0.40") and refused.reserved_usd == Decimal("0.60")
    assert "daily budget" in str(refused) and "$0.40 left" in str(refused)
    budgets.settle(a, Decimal("0.10"))  # the real cost replaces the hold
    status = budgets.status(k)
    assert (status.spent_usd, status.reserved_usd) == (Decimal("0.10"), Decimal(0))
    b = budgets.reserve(k, Decimal("0.90"))
    assert isinstance(b, Reservation)
    budgets.release(b)  # failed upstream: nothing spent
    assert budgets.status(k).remaining_usd == Decimal("0.90")
    c = budgets.reserve(k, Decimal("0.90"))
    assert isinstance(c, Reservation)
    budgets.settle(c, None)  # unpriced: the held worst case is kept
    assert budgets.status(k).remaining_usd == 0
    # No budget: always admitted, nothing counted.
    free = budgets.reserve(key(None), Decimal("1000"))
    assert isinstance(free, Reservation) and not free.limited
    budgets.settle(free, Decimal("1000"))


def _hammer(budgets: Budgets, k: KeyInfo, threads: int, attempts: int) -> Decimal:
    """Many threads reserve and settle against one budget; returns what was settled."""
    settled: list[Decimal] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        barrier.wait()
        for _ in range(attempts):
            amount = Decimal(rnd.randint(1, 90)) / 1000
            r = budgets.reserve(k, amount)
            if isinstance(r, BudgetExceeded):
                continue
            status = budgets.status(k)
            assert k.budget_usd is not None
            assert status.spent_usd + status.reserved_usd <= k.budget_usd
            if rnd.random() < 0.2:
                budgets.release(r)
                continue
            actual = amount * rnd.randint(0, 100) / 100
            budgets.settle(r, actual)
            with lock:
                settled.append(actual)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(settled, Decimal(0))


def test_threads_never_overspend(budgets: Budgets) -> None:
    k = key("1.00")
    settled = _hammer(budgets, k, threads=8, attempts=40)
    status = budgets.status(k)
    assert status.reserved_usd == 0
    assert status.spent_usd == settled <= Decimal("1.00")
    assert settled > Decimal("0.5")  # the budget was really used, not refused wholesale


def test_asyncio_tasks_never_overspend() -> None:
    budgets = InProcessBudgets()
    k = key("0.50", period="total")
    admitted: list[Reservation] = []

    async def one() -> None:
        r = budgets.reserve(k, Decimal("0.03"))  # non-blocking: fine on the event loop
        if isinstance(r, Reservation):
            admitted.append(r)
            await asyncio.sleep(0.001)
            budgets.settle(r, Decimal("0.03"))

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(200)))

    asyncio.run(main())
    assert len(admitted) == 16  # floor(0.50 / 0.03)
    assert budgets.status(k).spent_usd == Decimal("0.48")


def test_redis_two_clients_share_one_atomic_budget(
    redis_factory: Callable[..., RedisBudgets],
) -> None:
    one, two = redis_factory(), redis_factory()  # two replicas, separate connection pools
    k = key("2.00", period="month")
    results: list[Decimal] = []
    lock = threading.Lock()

    def replica(b: RedisBudgets) -> None:
        got = _hammer(b, k, threads=6, attempts=30)
        with lock:
            results.append(got)

    ts = [threading.Thread(target=replica, args=(b,)) for b in (one, two)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    total = sum(results, Decimal(0))
    spent = one.status(k).spent_usd
    assert spent == two.status(k).spent_usd
    # Redis counts in nano-USD rounded up: never less than the exact sum, never more than 1e-9
    # per settlement above it; and never above the budget.
    assert total <= spent <= Decimal("2.00")
    assert spent - total < Decimal("1e-9") * 400


def test_redis_unsettled_reservations_expire(redis_factory: Callable[..., RedisBudgets]) -> None:
    b = redis_factory(reservation_ttl_s=0.3)
    k = key("1.00")
    assert isinstance(b.reserve(k, Decimal("0.90")), Reservation)  # then the replica "dies"
    assert isinstance(b.reserve(k, Decimal("0.50")), BudgetExceeded)
    time.sleep(0.4)
    assert isinstance(b.reserve(k, Decimal("0.50")), Reservation)


def _ledger_with_spend(tmp_path: Path, name: str) -> Path:
    settings = settings_for(tmp_path)
    store = open_store(settings)
    today = dt.datetime.now(dt.UTC)
    store.insert(
        [
            entry(ts=today, key_name=name, cost_usd=Decimal("0.25"),
                  classifier_cost_usd=Decimal("0.05")),
            entry(ts=today, key_name=name, cost_usd=None, status="error",
                  classifier_cost_usd=Decimal("0.01")),
            entry(ts=today - dt.timedelta(days=40), key_name=name, cost_usd=Decimal("5"),
                  classifier_cost_usd=Decimal(0)),
            entry(ts=today, key_name="someone-else", cost_usd=Decimal("7"),
                  classifier_cost_usd=Decimal(0)),
        ]
    )  # fmt: skip
    store.close()
    return tmp_path


def test_spent_survives_a_restart_via_the_ledger(tmp_path: Path) -> None:
    name = "alice"
    _ledger_with_spend(tmp_path, name)
    settings = settings_for(tmp_path)
    store = open_store(settings)
    try:
        budgets = open_budgets(settings, store)  # a fresh process: counters seeded
        assert isinstance(budgets, InProcessBudgets)
        assert budgets.status(key("1.00", "day", name)).spent_usd == Decimal("0.31")
        assert budgets.status(key("1.00", "total", name)).spent_usd == Decimal("5.31")
    finally:
        store.close()


def test_redis_counter_is_seeded_from_the_ledger_once(
    tmp_path: Path, redis_factory: Callable[..., RedisBudgets]
) -> None:
    name = f"alice-{uuid.uuid4().hex[:6]}"
    _ledger_with_spend(tmp_path, name)
    store = open_store(settings_for(tmp_path))
    try:
        b = redis_factory(seed=ledger_seed(store))
        k = key("1.00", "month", name)
        assert b.status(k).spent_usd == Decimal("0.31")
        r = b.reserve(k, Decimal("0.5"))
        assert isinstance(r, Reservation)
        b.settle(r, Decimal("0.5"))
        # Another replica starting now finds the counter and does not seed it again.
        assert redis_factory(seed=ledger_seed(store)).status(k).spent_usd == Decimal("0.81")
    finally:
        store.close()


def test_admit_downgrades_to_the_most_capable_affordable_tier() -> None:
    cat = PriceCatalogue.default()
    budgets = InProcessBudgets()
    opus = worst_case_cost(cat, "claude-opus-4-6", 1000, 1000)
    sonnet = worst_case_cost(cat, "claude-sonnet-4-6", 1000, 1000)
    assert opus is not None and sonnet is not None and sonnet < opus
    k = key(str(sonnet), period="total")  # covers sonnet's worst case, not opus's
    got = admit(budgets, k, TIERS, "opus", 1000, 1000, cat)
    assert not isinstance(got, BudgetExceeded)
    assert (got.tier, got.model, got.downgraded_from) == ("sonnet", "claude-sonnet-4-6", "opus")
    assert got.reservation.amount_usd == sonnet
    budgets.release(got.reservation)
    refused = admit(budgets, k, TIERS, "opus", 1000, 1000, cat, on_exceeded="refuse")
    assert isinstance(refused, BudgetExceeded)
    assert refused.tier == "opus" and refused.needed_usd == opus
    assert "on tier opus" in str(refused) and "total budget" in str(refused)
    exact = admit(budgets, k, TIERS, "sonnet", 1000, 1000, cat)
    assert not isinstance(exact, BudgetExceeded) and exact.downgraded_from is None
    # Nothing left: even haiku does not fit.
    none_left = admit(budgets, k, TIERS, "opus", 1000, 1000, cat)
    assert isinstance(none_left, BudgetExceeded) and none_left.tier == "opus"
    unpriced = admit(budgets, key("5"), [("x", "claude-unknown")], "x", 10, 10, cat)
    assert isinstance(unpriced, BudgetExceeded) and "no price" in str(unpriced)
