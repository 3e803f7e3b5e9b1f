"""Per-key budgets: reserve the worst case at admission, settle the real cost at completion.

The gateway, per request on a key with a budget::

    outcome = admit(budgets, key, tiers, chosen_tier, input_tokens, max_tokens, catalogue,
                    on_exceeded=settings.budgets.on_exceeded)
    if isinstance(outcome, BudgetExceeded):   # → 429 with str(outcome)
        ...
    else:                                     # call outcome.model (maybe downgraded)
        try: ... budgets.settle(outcome.reservation, actual_total_cost_usd)
        except: budgets.release(outcome.reservation)   # nothing was billed

A reservation holds ``worst_case_cost`` (the input estimate as uncached input + ``max_tokens``
of output on the chosen model) against the key's budget for the current period (``day`` and
``month`` are UTC calendar periods; ``total`` never resets). ``spent + reserved + amount`` may
never exceed the budget, so concurrent requests together never overspend.

Two implementations, chosen by :func:`open_budgets` from ``budgets.redis_url``:

- :class:`InProcessBudgets`: counters in memory under one lock (thread- and asyncio-safe:
  every call is a few microseconds and never blocks, so call it directly on the event loop).
  A period's spent amount is seeded from the ledger the first time the key is seen in it, so
  it survives restarts.
- :class:`RedisBudgets`: for several replicas. Each reserve/settle/release is one Lua script,
  atomic in Redis, so replicas together never overspend. Amounts are integers of nano-USD,
  rounded *up* (a reservation or a cost is never under-counted by more than $1e-9). Spent
  amounts live in Redis (seeded from the ledger when the counter does not exist yet); day and
  month counters expire after their period. A reservation never settled (a replica died)
  stops counting after ``budgets.reservation_ttl_s``. Calls do a network round trip: from
  async code use ``await asyncio.to_thread(budgets.reserve, ...)``.

Keys without a budget get an unlimited reservation; settle/release on it do nothing.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from tierwise.errors import BudgetExceeded, ConfigError
from tierwise.keys import KeyInfo
from tierwise.types import Usage

if TYPE_CHECKING:
    from tierwise.config import Settings
    from tierwise.ledger.store import LedgerStore
    from tierwise.pricing import PriceCatalogue

__all__ = [
    "Admission",
    "BudgetExceeded",
    "BudgetStatus",
    "Budgets",
    "InProcessBudgets",
    "RedisBudgets",
    "Reservation",
    "admit",
    "open_budgets",
    "period_bounds",
    "worst_case_cost",
]

_NANO = Decimal("1e-9")


def period_bounds(
    period: str, now: dt.datetime
) -> tuple[str, dt.datetime | None, dt.datetime | None]:
    """(bucket id, start, end) of the UTC period containing ``now``."""
    now = now.astimezone(dt.UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"d{start:%Y-%m-%d}", start, start + dt.timedelta(days=1)
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + dt.timedelta(days=32)).replace(day=1)
        return f"m{start:%Y-%m}", start, end
    if period == "total":
        return "total", None, None
    raise ConfigError(f"unknown budget period {period!r}; expected day, month or total")


def worst_case_cost(
    catalogue: PriceCatalogue,
    model: str,
    input_tokens: int,
    max_tokens: int,
    at: dt.datetime | None = None,
) -> Decimal | None:
    """The most a request can cost on ``model``: its input + ``max_tokens`` of output.
    None when the model has no price (a budgeted key is then refused that model)."""
    usage = Usage(input_tokens=max(0, input_tokens), output_tokens=max(0, max_tokens))
    return catalogue.cost(usage, model, at).usd


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money held against a key's budget until settled or released."""

    id: str
    key_name: str
    period: str
    bucket: str
    amount_usd: Decimal
    limited: bool = True


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    key_name: str
    period: str
    budget_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.budget_usd is None:
            return None
        return max(self.budget_usd - self.spent_usd - self.reserved_usd, Decimal(0))


class Budgets(Protocol):
    def reserve(self, key: KeyInfo, amount_usd: Decimal) -> Reservation | BudgetExceeded: ...

    def settle(self, reservation: Reservation, actual_usd: Decimal | None) -> None: ...

    def release(self, reservation: Reservation) -> None: ...

    def status(self, key: KeyInfo) -> BudgetStatus: ...

    def close(self) -> None: ...


def _unlimited(key: KeyInfo, amount: Decimal) -> Reservation:
    return Reservation(f"res_{uuid.uuid4().hex}", key.name, key.period, "-", amount, False)


Seed = Callable[[str, dt.datetime | None], Decimal]


def ledger_seed(store: LedgerStore) -> Seed:
    """What a key spent since a time, from the ledger (used to seed counters)."""
    return store.spent


# -- in one process -----------------------------------------------------------------------
@dataclass
class _Counter:
    spent: Decimal
    reserved: dict[str, Decimal] = field(default_factory=dict)

    @property
    def reserved_total(self) -> Decimal:
        return sum(self.reserved.values(), Decimal(0))


class InProcessBudgets:
    """Counters in this process's memory (one lock; never blocks on I/O after seeding)."""

    def __init__(
        self, seed: Seed | None = None, *, now: Callable[[], dt.datetime] | None = None
    ) -> None:
        self._seed = seed
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], _Counter] = {}

    def _counter(
        self, key_name: str, period: str, bucket: str, start: dt.datetime | None
    ) -> _Counter:
        counter = self._counters.get((key_name, bucket))
        if counter is None:
            spent = self._seed(key_name, start) if self._seed else Decimal(0)
            counter = self._counters[(key_name, bucket)] = _Counter(spent)
        return counter

    def reserve(self, key: KeyInfo, amount_usd: Decimal) -> Reservation | BudgetExceeded:
        if key.budget_usd is None:
            return _unlimited(key, amount_usd)
        bucket, start, _ = period_bounds(key.period, self._now())
        with self._lock:
            c = self._counter(key.name, key.period, bucket, start)
            reserved = c.reserved_total
            if c.spent + reserved + amount_usd > key.budget_usd:
                return BudgetExceeded(
                    key_name=key.name,
                    period=key.period,
                    budget_usd=key.budget_usd,
                    spent_usd=c.spent,
                    reserved_usd=reserved,
                    needed_usd=amount_usd,
                )
            rid = f"res_{uuid.uuid4().hex}"
            c.reserved[rid] = amount_usd
        return Reservation(rid, key.name, key.period, bucket, amount_usd)

    def settle(self, reservation: Reservation, actual_usd: Decimal | None) -> None:
        """Replace the hold by the real cost (None = unpriced: the held amount is kept)."""
        if not reservation.limited:
            return
        with self._lock:
            c = self._counters.get((reservation.key_name, reservation.bucket))
            if c is None:
                return
            c.reserved.pop(reservation.id, None)
            c.spent += reservation.amount_usd if actual_usd is None else actual_usd

    def release(self, reservation: Reservation) -> None:
        if not reservation.limited:
            return
        with self._lock:
            c = self._counters.get((reservation.key_name, reservation.bucket))
            if c is not None:
                c.reserved.pop(reservation.id, None)

    def status(self, key: KeyInfo) -> BudgetStatus:
        bucket, start, _ = period_bounds(key.period, self._now())
        with self._lock:
            c = self._counter(key.name, key.period, bucket, start)
            return BudgetStatus(key.name, key.period, key.budget_usd, c.spent, c.reserved_total)

    def close(self) -> None:
        pass


# -- in Redis, for several replicas ---------------------------------------------------------
# KEYS: spent, holds (hash id → nano), expiries (zset id → expiry ms)
_RESERVE = """
local now = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(expired) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(v) end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[2])
if spent + reserved + amount > tonumber(ARGV[3]) then
  return {0, tostring(spent), tostring(reserved)}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[1])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
return {1, tostring(spent), tostring(reserved)}
"""
_SETTLE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local spent = redis.call('INCRBY', KEYS[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return spent
"""
_RELEASE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


def _to_nano(amount: Decimal) -> int:
    return int((amount / _NANO).to_integral_value(rounding=ROUND_CEILING))


def _from_nano(value: Any) -> Decimal:
    text = value.decode() if isinstance(value, bytes) else str(value)
    usd = Decimal(text) * _NANO
    # 0.600000000 → 0.6, 0E-9 → 0 (same value, tidier in messages)
    return usd.quantize(Decimal(1)) if usd == usd.to_integral_value() else usd.normalize()


class RedisBudgets:
    """Counters in Redis, updated by atomic Lua scripts (several replicas share them)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tierwise:",
        reservation_ttl_s: float = 900.0,
        seed: Seed | None = None,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.prefix = prefix
        self.reservation_ttl_s = reservation_ttl_s
        self._seed = seed
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._release = self._redis.register_script(_RELEASE)
        self._seeded: set[tuple[str, str]] = set()
        self._seed_lock = threading.Lock()

    def _keys(self, key_name: str, bucket: str) -> list[str]:
        base = f"{self.prefix}budget:{key_name}:{bucket}"
        return [f"{base}:spent", f"{base}:holds", f"{base}:expiry"]

    def _ttl_s(self, end: dt.datetime | None) -> int:
        if end is None:
            return 0
        # Keep a period's counters a day past its end (late settlements land there).
        return int((end - self._now()).total_seconds()) + 86_400

    def _ensure_seeded(
        self, key_name: str, bucket: str, start: dt.datetime | None, ttl: int
    ) -> None:
        if (key_name, bucket) in self._seeded:
            return
        with self._seed_lock:
            spent_key = self._keys(key_name, bucket)[0]
            if not self._redis.exists(spent_key):
                seed = self._seed(key_name, start) if self._seed else Decimal(0)
                self._redis.set(spent_key, _to_nano(seed), nx=True, ex=ttl or None)
            self._seeded.add((key_name, bucket))

    def reserve(self, key: KeyInfo, amount_usd: Decimal) -> Reservation | BudgetExceeded:
        if key.budget_usd is None:
            return _unlimited(key, amount_usd)
        bucket, start, end = period_bounds(key.period, self._now())
        ttl = self._ttl_s(end)
        self._ensure_seeded(key.name, bucket, start, ttl)
        rid = f"res_{uuid.uuid4().hex}"
        amount = _to_nano(amount_usd)
        limit = int((key.budget_usd / _NANO).to_integral_value(rounding=ROUND_FLOOR))
        now_ms = int(time.time() * 1000)
        ok, spent, reserved = self._reserve(
            keys=self._keys(key.name, bucket),
            args=[rid, amount, limit, now_ms, int(self.reservation_ttl_s * 1000), ttl],
        )
        if int(ok) != 1:
            return BudgetExceeded(
                key_name=key.name,
                period=key.period,
                budget_usd=key.budget_usd,
                spent_usd=_from_nano(spent),
                reserved_usd=_from_nano(reserved),
                needed_usd=amount_usd,
            )
        return Reservation(rid, key.name, key.period, bucket, amount_usd)

    def settle(self, reservation: Reservation, actual_usd: Decimal | None) -> None:
        if not reservation.limited:
            return
        amount = reservation.amount_usd if actual_usd is None else actual_usd
        _, _, end = period_bounds(reservation.period, self._now())
        self._settle(
            keys=self._keys(reservation.key_name, reservation.bucket),
            args=[reservation.id, _to_nano(amount), self._ttl_s(end)],
        )

    def release(self, reservation: Reservation) -> None:
        if not reservation.limited:
            return
        self._release(
            keys=self._keys(reservation.key_name, reservation.bucket), args=[reservation.id]
        )

    def status(self, key: KeyInfo) -> BudgetStatus:
        bucket, start, end = period_bounds(key.period, self._now())
        self._ensure_seeded(key.name, bucket, start, self._ttl_s(end))
        spent_key, holds, _ = self._keys(key.name, bucket)
        spent = self._redis.get(spent_key) or b"0"
        reserved = sum(int(v) for v in self._redis.hvals(holds))
        return BudgetStatus(
            key.name, key.period, key.budget_usd, _from_nano(spent), _from_nano(reserved)
        )

    def close(self) -> None:
        self._redis.close()


def open_budgets(settings: Settings, store: LedgerStore | None = None) -> Budgets:
    """Redis when ``budgets.redis_url`` is set, else in process; seeded from ``store``."""
    seed = ledger_seed(store) if store is not None else None
    cfg = settings.budgets
    if cfg.redis_url:
        return RedisBudgets(
            cfg.redis_url,
            prefix=cfg.redis_prefix,
            reservation_ttl_s=cfg.reservation_ttl_s,
            seed=seed,
        )
    return InProcessBudgets(seed)


# -- admission ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Admission:
    """The tier a request may use, and the money held for it."""

    tier: str
    model: str
    reservation: Reservation
    downgraded_from: str | None = None


def admit(
    budgets: Budgets,
    key: KeyInfo,
    tiers: Sequence[tuple[str, str]],
    chosen_tier: str,
    input_tokens: int,
    max_tokens: int,
    catalogue: PriceCatalogue,
    *,
    on_exceeded: str = "downgrade",
    at: dt.datetime | None = None,
) -> Admission | BudgetExceeded:
    """Reserve the worst case on ``chosen_tier``; if the budget cannot cover it, walk down to
    the most capable cheaper tier that fits (``on_exceeded="downgrade"``), or refuse
    (``"refuse"``). ``tiers`` is ``[(name, model)]`` cheapest first (``Settings.tiers`` order).

    Returns the :class:`Admission`, or the :class:`BudgetExceeded` of the chosen tier (the
    gateway answers 429 with its message). Unpriced models are skipped for budgeted keys: their
    worst case cannot be bounded.
    """
    names = [name for name, _ in tiers]
    if chosen_tier not in names:
        raise ConfigError(f"unknown tier {chosen_tier!r}; configured: {', '.join(names)}")
    index = names.index(chosen_tier)
    candidates = [tiers[i] for i in range(index, -1, -1)]
    if on_exceeded == "refuse":
        candidates = candidates[:1]
    first_refusal: BudgetExceeded | None = None
    for name, model in candidates:
        amount = worst_case_cost(catalogue, model, input_tokens, max_tokens, at)
        if amount is None:
            if key.budget_usd is None:
                return Admission(name, model, _unlimited(key, Decimal(0)))
            continue
        outcome = budgets.reserve(key, amount)
        if isinstance(outcome, Reservation):
            return Admission(
                name, model, outcome, downgraded_from=None if name == chosen_tier else chosen_tier
            )
        if first_refusal is None:
            outcome.tier = name
            first_refusal = outcome
    if first_refusal is None:  # every candidate was unpriced
        assert key.budget_usd is not None
        return BudgetExceeded(
            key_name=key.name,
            period=key.period,
            budget_usd=key.budget_usd,
            spent_usd=Decimal(0),
            reserved_usd=Decimal(0),
            needed_usd=None,
            tier=chosen_tier,
        )
    return first_refusal
