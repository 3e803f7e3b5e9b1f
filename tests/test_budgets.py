"""Budgets: reserve the worst case, settle the real cost, never overspend under concurrency,
in one process and in Redis across clients; fail closed when Redis is slow or gone, settle late
when it comes back, and let leaked holds expire."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from tests.dbs import delete_redis_prefix, entry, redis_url_or_skip, settings_for
from tests.tcpproxy import TcpProxy
from tierwise.budgets import (
    Budgets,
    InProcessBudgets,
    RedisBudgets,
    Reservation,
    UnsharedBudgets,
    admit,
    ledger_seed,
    open_budgets,
    period_bounds,
    worst_case_cost,
)
from tierwise.errors import BudgetExceeded, BudgetUnavailable
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


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisBudgets]]:
    """RedisBudgets made inside the test's own event loop (redis.asyncio clients belong to
    one loop): call it from the coroutine the test runs."""
    url = redis_url_or_skip()
    prefix = f"tierwise-test-{uuid.uuid4().hex[:10]}:"

    def make(**kwargs: Any) -> RedisBudgets:
        return RedisBudgets(kwargs.pop("url", url), prefix=prefix, **kwargs)

    yield make
    delete_redis_prefix(url, prefix)


@pytest.fixture(params=["memory", "redis"])
def make_budgets(request: pytest.FixtureRequest) -> Callable[[], Budgets]:
    if request.param == "memory":
        return InProcessBudgets
    factory: Callable[..., RedisBudgets] = request.getfixturevalue("redis_factory")
    return factory


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


def test_reserve_settle_release(make_budgets: Callable[[], Budgets]) -> None:
    async def main() -> None:
        budgets = make_budgets()
        k = key("1.00")
        a = await budgets.reserve(k, Decimal("0.60"))
        assert isinstance(a, Reservation)
        refused = await budgets.reserve(k, Decimal("0.50"))
        assert isinstance(refused, BudgetExceeded)
        assert refused.key_name == k.name and refused.period == "day"
        assert refused.remaining_usd == Decimal("0.40")
        assert refused.reserved_usd == Decimal("0.60")
        assert "daily budget" in str(refused) and "$0.40 left" in str(refused)
        budgets.settle(a, Decimal("0.10"))  # the real cost replaces the hold
        assert await budgets.drain()
        status = await budgets.status(k)
        assert (status.spent_usd, status.reserved_usd) == (Decimal("0.10"), Decimal(0))
        b = await budgets.reserve(k, Decimal("0.90"))
        assert isinstance(b, Reservation)
        budgets.release(b)  # failed upstream: nothing spent
        assert await budgets.drain()
        assert (await budgets.status(k)).remaining_usd == Decimal("0.90")
        c = await budgets.reserve(k, Decimal("0.90"))
        assert isinstance(c, Reservation)
        budgets.settle(c, None)  # unpriced: the held worst case is kept
        assert await budgets.drain()
        assert (await budgets.status(k)).remaining_usd == 0
        # No budget: always admitted, nothing counted.
        free = await budgets.reserve(key(None), Decimal("1000"))
        assert isinstance(free, Reservation) and not free.limited
        budgets.settle(free, Decimal("1000"))
        await budgets.aclose()

    run(main())


async def _hammer(budgets: Budgets, k: KeyInfo, tasks: int, attempts: int) -> Decimal:
    """Many tasks reserve and settle against one budget; returns what was settled."""
    settled: list[Decimal] = []

    async def work(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(attempts):
            amount = Decimal(rnd.randint(1, 90)) / 1000
            r = await budgets.reserve(k, amount)
            if isinstance(r, BudgetExceeded):
                await asyncio.sleep(0)
                continue
            status = await budgets.status(k)
            assert k.budget_usd is not None
            assert status.spent_usd + status.reserved_usd <= k.budget_usd
            await asyncio.sleep(rnd.random() / 1000)
            if rnd.random() < 0.2:
                budgets.release(r)
                continue
            actual = amount * rnd.randint(0, 100) / 100
            budgets.settle(r, actual)
            settled.append(actual)

    await asyncio.gather(*(work(i) for i in range(tasks)))
    assert await budgets.drain()
    return sum(settled, Decimal(0))


def test_concurrent_requests_never_overspend(make_budgets: Callable[[], Budgets]) -> None:
    async def main() -> None:
        budgets = make_budgets()
        k = key("1.00")
        settled = await _hammer(budgets, k, tasks=16, attempts=40)
        status = await budgets.status(k)
        assert status.reserved_usd == 0
        assert status.spent_usd == settled <= Decimal("1.00")
        assert settled > Decimal("0.5")  # the budget was really used, not refused wholesale
        await budgets.aclose()

    run(main())


def test_asyncio_tasks_never_overspend() -> None:
    budgets = InProcessBudgets()
    k = key("0.50", period="total")
    admitted: list[Reservation] = []

    async def one() -> None:
        r = await budgets.reserve(k, Decimal("0.03"))
        if isinstance(r, Reservation):
            admitted.append(r)
            await asyncio.sleep(0.001)
            budgets.settle(r, Decimal("0.03"))

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(200)))

    run(main())
    assert len(admitted) == 16  # floor(0.50 / 0.03)
    assert run(budgets.status(k)).spent_usd == Decimal("0.48")


def test_redis_two_clients_share_one_atomic_budget(
    redis_factory: Callable[..., RedisBudgets],
) -> None:
    async def main() -> tuple[Decimal, Decimal, Decimal]:
        one, two = redis_factory(), redis_factory()  # two replicas, separate connections
        k = key("2.00", period="month")
        got = await asyncio.gather(_hammer(one, k, 6, 30), _hammer(two, k, 6, 30))
        spent_one = (await one.status(k)).spent_usd
        spent_two = (await two.status(k)).spent_usd
        await one.aclose()
        await two.aclose()
        return sum(got, Decimal(0)), spent_one, spent_two

    total, spent, spent_two = run(main())
    assert spent == spent_two
    # Redis counts in nano-USD rounded up: never less than the exact sum, never more than 1e-9
    # per settlement above it; and never above the budget.
    assert total <= spent <= Decimal("2.00")
    assert spent - total < Decimal("1e-9") * 400


def test_redis_unsettled_holds_expire(redis_factory: Callable[..., RedisBudgets]) -> None:
    async def main() -> None:
        b = redis_factory(hold_ttl_s=0.3)
        k = key("1.00")
        assert isinstance(await b.reserve(k, Decimal("0.90")), Reservation)  # then it "dies"
        assert isinstance(await b.reserve(k, Decimal("0.50")), BudgetExceeded)
        await asyncio.sleep(0.4)
        assert isinstance(await b.reserve(k, Decimal("0.50")), Reservation)
        await b.aclose()

    run(main())


def test_in_process_holds_expire() -> None:
    """A hold nobody settles (a lost request) cannot lock a key out for good."""
    now = [0.0]
    budgets = InProcessBudgets(hold_ttl_s=60.0, clock=lambda: now[0])
    k = key("1.00")
    assert isinstance(run(budgets.reserve(k, Decimal("0.90"))), Reservation)
    assert isinstance(run(budgets.reserve(k, Decimal("0.50"))), BudgetExceeded)
    now[0] = 61.0
    assert isinstance(run(budgets.reserve(k, Decimal("0.50"))), Reservation)
    assert run(budgets.status(k)).reserved_usd == Decimal("0.50")


def test_hold_ttl_covers_the_longest_request(tmp_path: Path) -> None:
    from tierwise.budgets import hold_ttl_s
    from tierwise.config import revalidate

    settings = settings_for(tmp_path)
    slow = revalidate(
        settings, gateway=settings.gateway.model_copy(update={"upstream_timeout_s": 3600.0})
    )
    assert hold_ttl_s(slow) >= 3660.0  # never shorter than a request may run


def test_slow_redis_fails_closed_without_blocking_the_loop(
    redis_factory: Callable[..., RedisBudgets],
) -> None:
    """Redis that stops answering: reserve gives up after its timeout (the budgeted request is
    refused), and the event loop keeps running meanwhile."""
    target = urlsplit(redis_url_or_skip())
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:

        async def main() -> tuple[float, int]:
            b = redis_factory(url=proxy.url, timeout_s=0.3)
            k = key("1.00")
            assert isinstance(await b.reserve(k, Decimal("0.10")), Reservation)
            proxy.stall()
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.create_task(ticker())
            start = time.monotonic()
            with pytest.raises(BudgetUnavailable, match=r"did not answer within 0\.3s"):
                await b.reserve(k, Decimal("0.10"))
            took = time.monotonic() - start
            t.cancel()
            proxy.resume()
            await b.aclose()
            return took, ticks

        took, ticks = run(main())
    assert took < 5.0  # the 0.3 s deadline, not a hang (a generous margin on a busy machine)
    assert ticks >= 3  # the loop ran while Redis was silent (0 if it were blocked)


def test_settlements_wait_for_redis_and_are_applied_when_it_returns(
    redis_factory: Callable[..., RedisBudgets],
) -> None:
    """Redis dies between reserve and settle: settling does not fail the request; the
    settlement is applied once Redis answers again, and the key is charged exactly once."""
    target = urlsplit(redis_url_or_skip())
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:

        async def main() -> Decimal:
            b = redis_factory(url=proxy.url, timeout_s=0.2)
            k = key("1.00")
            r = await b.reserve(k, Decimal("0.40"))
            assert isinstance(r, Reservation)
            proxy.kill()
            b.settle(r, Decimal("0.25"))  # returns at once, never raises
            await asyncio.sleep(0.5)
            assert b.health().status == "degraded"
            with pytest.raises(BudgetUnavailable):
                await b.reserve(k, Decimal("0.01"))  # fail closed meanwhile
            proxy.revive()
            assert await b.drain(5.0)
            spent = (await b.status(k)).spent_usd
            await b.aclose()
            return spent

        assert run(main()) == Decimal("0.25")


def test_unshared_counters_refuse_budgeted_keys() -> None:
    """--workers > 1 without Redis: each worker would enforce the whole budget on its own."""
    budgets = UnsharedBudgets(2)
    with pytest.raises(BudgetUnavailable, match=r"budgets\.redis_url"):
        run(budgets.reserve(key("1.00"), Decimal("0.01")))
    free = run(budgets.reserve(key(None), Decimal("1")))
    assert isinstance(free, Reservation) and not free.limited


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
        assert run(budgets.status(key("1.00", "day", name))).spent_usd == Decimal("0.31")
        assert run(budgets.status(key("1.00", "total", name))).spent_usd == Decimal("5.31")
    finally:
        store.close()


def test_redis_counter_is_seeded_from_the_ledger_once(
    tmp_path: Path, redis_factory: Callable[..., RedisBudgets]
) -> None:
    name = f"alice-{uuid.uuid4().hex[:6]}"
    _ledger_with_spend(tmp_path, name)
    store = open_store(settings_for(tmp_path))

    async def main() -> None:
        b = redis_factory(seed=ledger_seed(store))
        k = key("1.00", "month", name)
        assert (await b.status(k)).spent_usd == Decimal("0.31")
        r = await b.reserve(k, Decimal("0.5"))
        assert isinstance(r, Reservation)
        b.settle(r, Decimal("0.5"))
        assert await b.drain()
        # Another replica starting now finds the counter and does not seed it again.
        other = redis_factory(seed=ledger_seed(store))
        assert (await other.status(k)).spent_usd == Decimal("0.81")
        await b.aclose()
        await other.aclose()

    try:
        run(main())
    finally:
        store.close()


def test_admit_downgrades_to_the_most_capable_affordable_tier() -> None:
    cat = PriceCatalogue.default()
    budgets = InProcessBudgets()

    def cost_of(model: str) -> Decimal | None:
        return worst_case_cost(cat, model, 1000, 1000)

    opus = cost_of("claude-opus-4-6")
    sonnet = cost_of("claude-sonnet-4-6")
    assert opus is not None and sonnet is not None and sonnet < opus
    k = key(str(sonnet), period="total")  # covers sonnet's worst case, not opus's
    got = run(admit(budgets, k, TIERS, "opus", cost_of))
    assert not isinstance(got, BudgetExceeded)
    assert (got.tier, got.model, got.downgraded_from) == ("sonnet", "claude-sonnet-4-6", "opus")
    assert got.reservation.amount_usd == sonnet
    budgets.release(got.reservation)
    refused = run(admit(budgets, k, TIERS, "opus", cost_of, on_exceeded="refuse"))
    assert isinstance(refused, BudgetExceeded)
    assert refused.tier == "opus" and refused.needed_usd == opus
    assert "on tier opus" in str(refused) and "total budget" in str(refused)
    exact = run(admit(budgets, k, TIERS, "sonnet", cost_of))
    assert not isinstance(exact, BudgetExceeded) and exact.downgraded_from is None
    # Nothing left: even haiku does not fit.
    none_left = run(admit(budgets, k, TIERS, "opus", cost_of))
    assert isinstance(none_left, BudgetExceeded) and none_left.tier == "opus"
    unpriced = run(admit(budgets, key("5"), [("x", "claude-unknown")], "x", cost_of))
    assert isinstance(unpriced, BudgetExceeded) and "no price" in str(unpriced)


def test_worst_case_prices_input_at_the_dearest_class_the_request_can_use() -> None:
    cat = PriceCatalogue.default()
    plain = worst_case_cost(cat, "claude-opus-4-6", 1_000_000, 0)
    five = worst_case_cost(cat, "claude-opus-4-6", 1_000_000, 0, input_class="cache_5m")
    hour = worst_case_cost(cat, "claude-opus-4-6", 1_000_000, 0, input_class="cache_1h")
    assert (plain, five, hour) == (Decimal(5), Decimal("6.25"), Decimal(10))
