"""Per-key budgets: hold the worst case at admission, settle the real cost at completion.

The request lifecycle (:mod:`tierwise.lifecycle`), per request on a key with a budget::

    outcome = await admit(budgets, key, tiers, chosen_tier, input_tokens, max_tokens, catalogue)
    if isinstance(outcome, BudgetExceeded):   # → 429 with str(outcome)
        ...
    else:                                     # call outcome.model (maybe downgraded)
        ...
        budgets.settle(outcome.reservation, cost_usd)   # or budgets.release(...): nothing billed

A reservation holds the request's worst case (:func:`worst_case_cost`) against the key's budget
for the current period (``day`` and ``month`` are UTC calendar periods; ``total`` never resets).
``spent + held + amount`` may never exceed the budget, so concurrent requests together never
overspend; the lifecycle never settles more than was held (usage beyond what the request could
physically consume is clamped and flagged, see :mod:`tierwise.accounting`).

``reserve`` is async and **fails closed**: when the counters cannot be reached in time it raises
:class:`~tierwise.errors.BudgetUnavailable` and the budgeted request is refused (503) before any
upstream call. ``settle`` and ``release`` never block and never raise: they apply at once (in
process) or are queued and applied in the background, retried until the counters answer (Redis),
so a counter outage after the upstream answered never turns the answer into an error.

Holds expire after ``hold_ttl_s`` (at least the longest a request may run), so a hold leaked by
a crash or a bug cannot lock a key out for good.

Implementations, chosen by :func:`open_budgets`:

- :class:`InProcessBudgets`: counters in memory under one lock (every call is a few
  microseconds). A period's spent amount is seeded from the ledger (in a worker thread) the first
  time the key is seen in it, so it survives restarts. One process only.
- :class:`RedisBudgets`: for several workers or replicas. Each reserve/settle/release is one Lua
  script, atomic in Redis; amounts are integers of nano-USD, rounded *up*. Calls go through
  ``redis.asyncio`` with a short timeout (``budgets.redis_timeout_s``), so a slow Redis never
  blocks the event loop.
- :class:`UnsharedBudgets`: ``--workers > 1`` without Redis. Counters in one worker's memory
  would let each worker spend the whole budget, so budgeted keys are refused with a message
  that says to configure ``budgets.redis_url``; keys without a budget are unaffected.

Keys without a budget get an unlimited reservation; settle/release on it do nothing.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tierwise.errors import BudgetExceeded, BudgetUnavailable, ConfigError
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
    "BudgetUnavailable",
    "Budgets",
    "InProcessBudgets",
    "RedisBudgets",
    "Reservation",
    "UnsharedBudgets",
    "admit",
    "open_budgets",
    "period_bounds",
    "worst_case_cost",
]

log = logging.getLogger("tierwise.budgets")

_NANO = Decimal("1e-9")
InputClass = Literal["input", "cache_5m", "cache_1h"]


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
    *,
    input_class: InputClass = "input",
) -> Decimal | None:
    """The most a request can cost on ``model``: ``input_tokens`` priced at the dearest input
    class the request can use (uncached input, or a 5-minute / 1-hour cache write when it
    carries ``cache_control``) plus ``max_tokens`` of output. None when the model has no price
    (a budgeted key is then refused that model)."""
    n = max(0, input_tokens)
    if input_class == "cache_1h":
        usage = Usage(cache_write_1h_tokens=n, output_tokens=max(0, max_tokens))
    elif input_class == "cache_5m":
        usage = Usage(cache_write_5m_tokens=n, output_tokens=max(0, max_tokens))
    else:
        usage = Usage(input_tokens=n, output_tokens=max(0, max_tokens))
    cost = catalogue.cost(usage, model, at).usd
    if cost is None or input_class == "input":
        return cost
    # A cache read or uncached input is never dearer than a write, but say so explicitly:
    plain = catalogue.cost(Usage(input_tokens=n, output_tokens=max(0, max_tokens)), model, at).usd
    return max(cost, plain or cost)


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


@dataclass(frozen=True, slots=True)
class BudgetHealth:
    status: str  # "ok" | "degraded"
    reason: str = ""
    pending_settlements: int = 0


class Budgets(Protocol):
    async def reserve(self, key: KeyInfo, amount_usd: Decimal) -> Reservation | BudgetExceeded:
        """Hold ``amount_usd`` or say why not. Raises BudgetUnavailable (fail closed)."""
        ...

    def settle(self, reservation: Reservation, actual_usd: Decimal | None) -> None:
        """Replace the hold by the real cost (None: unknown, the hold is charged). Never
        blocks, never raises."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Drop the hold: nothing was billed. Never blocks, never raises."""
        ...

    async def status(self, key: KeyInfo) -> BudgetStatus: ...

    def health(self) -> BudgetHealth: ...

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until every settlement and release so far is applied (False on timeout)."""
        ...

    async def aclose(self) -> None: ...


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
    holds: dict[str, tuple[Decimal, float]] = field(default_factory=dict)  # id → (usd, expiry)

    def held(self, now: float) -> Decimal:
        expired = [rid for rid, (_, until) in self.holds.items() if until <= now]
        for rid in expired:
            amount, _ = self.holds.pop(rid)
            log.warning(
                "budget hold %s of $%s expired without being settled (a request ran past "
                "budgets.reservation_ttl_s, or its process lost track of it)",
                rid,
                amount,
            )
        return sum((amount for amount, _ in self.holds.values()), Decimal(0))


class InProcessBudgets:
    """Counters in this process's memory (one lock; never blocks on I/O after seeding)."""

    def __init__(
        self,
        seed: Seed | None = None,
        *,
        now: Callable[[], dt.datetime] | None = None,
        hold_ttl_s: float = 3_600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seed = seed
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._clock = clock
        self.hold_ttl_s = hold_ttl_s
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], _Counter] = {}

    async def _counter(self, key_name: str, bucket: str, start: dt.datetime | None) -> _Counter:
        counter = self._counters.get((key_name, bucket))
        if counter is not None:
            return counter
        # The ledger query runs off the event loop; a concurrent first request may race us.
        spent = await asyncio.to_thread(self._seed, key_name, start) if self._seed else Decimal(0)
        with self._lock:
            return self._counters.setdefault((key_name, bucket), _Counter(spent))

    async def reserve(self, key: KeyInfo, amount_usd: Decimal) -> Reservation | BudgetExceeded:
        if key.budget_usd is None:
            return _unlimited(key, amount_usd)
        bucket, start, _ = period_bounds(key.period, self._now())
        c = await self._counter(key.name, bucket, start)
        now = self._clock()
        with self._lock:
            held = c.held(now)
            if c.spent + held + amount_usd > key.budget_usd:
                return BudgetExceeded(
                    key_name=key.name,
                    period=key.period,
                    budget_usd=key.budget_usd,
                    spent_usd=c.spent,
                    reserved_usd=held,
                    needed_usd=amount_usd,
                )
            rid = f"res_{uuid.uuid4().hex}"
            c.holds[rid] = (amount_usd, now + self.hold_ttl_s)
        return Reservation(rid, key.name, key.period, bucket, amount_usd)

    def settle(self, reservation: Reservation, actual_usd: Decimal | None) -> None:
        if not reservation.limited:
            return
        with self._lock:
            c = self._counters.get((reservation.key_name, reservation.bucket))
            if c is None:
                return
            c.holds.pop(reservation.id, None)
            c.spent += reservation.amount_usd if actual_usd is None else actual_usd

    def release(self, reservation: Reservation) -> None:
        if not reservation.limited:
            return
        with self._lock:
            c = self._counters.get((reservation.key_name, reservation.bucket))
            if c is not None:
                c.holds.pop(reservation.id, None)

    async def status(self, key: KeyInfo) -> BudgetStatus:
        bucket, start, _ = period_bounds(key.period, self._now())
        c = await self._counter(key.name, bucket, start)
        with self._lock:
            held = c.held(self._clock())
            return BudgetStatus(key.name, key.period, key.budget_usd, c.spent, held)

    def health(self) -> BudgetHealth:
        return BudgetHealth("ok")

    async def drain(self, timeout_s: float = 5.0) -> bool:
        return True  # applied at once

    async def aclose(self) -> None:
        return None


class UnsharedBudgets(InProcessBudgets):
    """Several worker processes and no shared counters: budgeted keys are refused (each
    worker would otherwise enforce the whole budget on its own)."""

    def __init__(self, workers: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workers = workers

    async def reserve(self, key: KeyInfo, amount_usd: Decimal) -> Reservation | BudgetExceeded:
        if key.budget_usd is None:
            return _unlimited(key, amount_usd)
        raise BudgetUnavailable(
            f"key {key.name!r} has a budget, and this gateway runs {self.workers} worker "
            "processes without shared budget counters: set budgets.redis_url "
            "(TIERWISE_REDIS_URL) or run --workers 1"
        )


# -- in Redis, for several workers and replicas --------------------------------------------
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
_WARN_EVERY_S = 10.0


def _to_nano(amount: Decimal) -> int:
    return int((amount / _NANO).to_integral_value(rounding=ROUND_CEILING))


def _from_nano(value: Any) -> Decimal:
    text = value.decode() if isinstance(value, bytes) else str(value)
    usd = Decimal(text) * _NANO
    # 0.600000000 → 0.6, 0E-9 → 0 (same value, tidier in messages)
    return usd.quantize(Decimal(1)) if usd == usd.to_integral_value() else usd.normalize()


@dataclass(frozen=True, slots=True)
class _Pending:
    """A settlement or release that Redis has not acknowledged yet."""

    reservation: Reservation
    nano: int | None  # None: release
    queued_at: float


class RedisBudgets:
    """Counters in Redis, updated by atomic Lua scripts (several workers and replicas share
    them). Every Redis call has a deadline of ``timeout_s``; reserve fails closed, settle and
    release are applied in the background and retried until Redis answers."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tierwise:",
        hold_ttl_s: float = 3_600.0,
        timeout_s: float = 2.0,
        max_connections: int = 256,
        seed: Seed | None = None,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        import redis.asyncio

        self.url = url
        # A blocking pool: a burst of budgeted requests waits (within the deadline) for a free
        # connection instead of failing at once when the pool is full (redis-py's default
        # pool raises MaxConnectionsError at 100).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        self._redis: Any = redis.asyncio.Redis(connection_pool=pool)
        self.prefix = prefix
        self.hold_ttl_s = hold_ttl_s
        self.timeout_s = timeout_s
        self._seed = seed
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._release = self._redis.register_script(_RELEASE)
        self._seeded: set[tuple[str, str]] = set()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None
        self._last_failure: tuple[float, str] | None = None
        self._last_warning = 0.0

    # -- plumbing -----------------------------------------------------------------------
    def _keys(self, key_name: str, bucket: str) -> list[str]:
        base = f"{self.prefix}budget:{key_name}:{bucket}"
        return [f"{base}:spent", f"{base}:holds", f"{base}:expiry"]

    def _ttl_s(self, end: dt.datetime | None) -> int:
        if end is None:
            return 0
        # Keep a period's counters a day past its end (late settlements land there).
        return int((end - self._now()).total_seconds()) + 86_400

    def _where(self) -> str:
        from tierwise.ledger.db import redact_url

        return redact_url(self.url)

    async def _call(self, what: str, coro: Any) -> Any:
        """One Redis round trip within ``timeout_s``; BudgetUnavailable otherwise."""
        import redis

        try:
            async with asyncio.timeout(self.timeout_s):
                return await coro
        except (TimeoutError, redis.RedisError, OSError) as exc:
            reason = (
                f"Redis at {self._where()} did not answer within {self.timeout_s:g}s"
                if isinstance(exc, TimeoutError | redis.TimeoutError)
                else f"Redis at {self._where()} failed: {type(exc).__name__}"
            )
            self._last_failure = (time.monotonic(), reason)
            raise BudgetUnavailable(
                f"budget counters unavailable ({what}): {reason}; budgeted keys are refused "
                "until it answers again"
            ) from exc

    async def _ensure_seeded(
        self, key_name: str, bucket: str, start: dt.datetime | None, ttl: int
    ) -> None:
        if (key_name, bucket) in self._seeded:
            return
        spent_key = self._keys(key_name, bucket)[0]
        if not await self._call("seed", self._redis.exists(spent_key)):
            seed = await asyncio.to_thread(self._seed, key_name, start) if self._seed else None
            value = _to_nano(seed if seed is not None else Decimal(0))
            await self._call("seed", self._redis.set(spent_key, value, nx=True, ex=ttl or None))
        self._seeded.add((key_name, bucket))

    # -- the lifecycle's calls ------------------------------------------------------------
    async def reserve(self, key: KeyInfo, amount_usd: Decimal) -> Reservation | BudgetExceeded:
        if key.budget_usd is None:
            return _unlimited(key, amount_usd)
        bucket, start, end = period_bounds(key.period, self._now())
        ttl = self._ttl_s(end)
        await self._ensure_seeded(key.name, bucket, start, ttl)
        rid = f"res_{uuid.uuid4().hex}"
        amount = _to_nano(amount_usd)
        limit = int((key.budget_usd / _NANO).to_integral_value(rounding=ROUND_FLOOR))
        now_ms = int(time.time() * 1000)
        ok, spent, reserved = await self._call(
            "reserve",
            self._reserve(
                keys=self._keys(key.name, bucket),
                args=[rid, amount, limit, now_ms, int(self.hold_ttl_s * 1000), ttl],
            ),
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
        self._queue(_Pending(reservation, _to_nano(amount), time.monotonic()))

    def release(self, reservation: Reservation) -> None:
        if reservation.limited:
            self._queue(_Pending(reservation, None, time.monotonic()))

    def _queue(self, op: _Pending) -> None:
        self._pending.append(op)
        if self._drainer is None or self._drainer.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): aclose() drains it
                return
            self._drainer = loop.create_task(self._drain())

    async def _apply(self, op: _Pending) -> None:
        r = op.reservation
        keys = self._keys(r.key_name, r.bucket)
        if op.nano is None:
            await self._call("release", self._release(keys=keys, args=[r.id]))
        else:
            _, _, end = period_bounds(r.period, self._now())
            await self._call(
                "settle", self._settle(keys=keys, args=[r.id, op.nano, self._ttl_s(end)])
            )

    async def _drain(self) -> None:
        backoff = 0.05
        while self._pending:
            op = self._pending[0]
            try:
                await self._apply(op)
            except BudgetUnavailable as exc:
                now = time.monotonic()
                if now - self._last_warning >= _WARN_EVERY_S:
                    self._last_warning = now
                    log.warning(
                        "%d budget settlement(s) waiting for Redis (%s); retrying",
                        len(self._pending),
                        exc,
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._pending.popleft()
            backoff = 0.05

    async def status(self, key: KeyInfo) -> BudgetStatus:
        bucket, start, end = period_bounds(key.period, self._now())
        await self._ensure_seeded(key.name, bucket, start, self._ttl_s(end))
        spent_key, holds, _ = self._keys(key.name, bucket)
        spent = await self._call("status", self._redis.get(spent_key)) or b"0"
        values = await self._call("status", self._redis.hvals(holds))
        reserved = sum(int(v) for v in values)
        return BudgetStatus(
            key.name, key.period, key.budget_usd, _from_nano(spent), _from_nano(reserved)
        )

    async def ping(self) -> None:
        """Raise BudgetUnavailable unless Redis answers within the timeout."""
        await self._call("ping", self._redis.ping())

    def health(self) -> BudgetHealth:
        pending = len(self._pending)
        failure = self._last_failure
        if failure is not None and time.monotonic() - failure[0] < 30.0:
            return BudgetHealth("degraded", failure[1], pending)
        if pending:
            return BudgetHealth("degraded", "settlements waiting for Redis", pending)
        return BudgetHealth("ok", "", 0)

    async def drain(self, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            if self._drainer is None or self._drainer.done():
                self._drainer = asyncio.get_running_loop().create_task(self._drain())
            await asyncio.sleep(0.01)
        return not self._pending

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Apply what is still queued (within ``timeout_s``), then close the connection."""
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            try:
                await self._apply(self._pending[0])
            except BudgetUnavailable:
                await asyncio.sleep(0.1)
                continue
            self._pending.popleft()
        if self._pending:
            total = sum(op.nano or 0 for op in self._pending)
            log.error(
                "closing with %d budget settlement(s) Redis never acknowledged ($%s in all); "
                "their holds expire after budgets.hold_ttl_s",
                len(self._pending),
                _from_nano(total),
            )
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
        await self._redis.aclose()


def hold_ttl_s(settings: Settings) -> float:
    """How long a hold lives: at least the longest a request may run, plus a minute."""
    return max(settings.budgets.reservation_ttl_s, settings.gateway.upstream_timeout_s + 60.0)


def open_budgets(
    settings: Settings, store: LedgerStore | None = None, *, workers: int = 1
) -> Budgets:
    """Redis when ``budgets.redis_url`` is set; in process for one worker; otherwise budgeted
    keys are refused (:class:`UnsharedBudgets`). Seeded from ``store``."""
    seed = ledger_seed(store) if store is not None else None
    cfg = settings.budgets
    ttl = hold_ttl_s(settings)
    if cfg.redis_url:
        return RedisBudgets(
            cfg.redis_url,
            prefix=cfg.redis_prefix,
            hold_ttl_s=ttl,
            timeout_s=cfg.redis_timeout_s,
            seed=seed,
        )
    if workers > 1:
        return UnsharedBudgets(workers, seed=seed, hold_ttl_s=ttl)
    return InProcessBudgets(seed, hold_ttl_s=ttl)


# -- admission ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Admission:
    """The tier a request may use, and the money held for it."""

    tier: str
    model: str
    reservation: Reservation
    downgraded_from: str | None = None


async def admit(
    budgets: Budgets,
    key: KeyInfo,
    tiers: Sequence[tuple[str, str]],
    chosen_tier: str,
    cost_of: Callable[[str], Decimal | None],
    *,
    on_exceeded: str = "downgrade",
) -> Admission | BudgetExceeded:
    """Reserve the worst case on ``chosen_tier``; if the budget cannot cover it, walk down to
    the most capable cheaper tier that fits (``on_exceeded="downgrade"``), or refuse
    (``"refuse"``). ``tiers`` is ``[(name, model)]`` cheapest first (``Settings.tiers`` order);
    ``cost_of(model)`` is the request's worst case on a model (None: unpriced).

    Returns the :class:`Admission`, or the :class:`BudgetExceeded` of the chosen tier (the
    gateway answers 429 with its message). Unpriced models are skipped for budgeted keys: their
    worst case cannot be bounded. Raises BudgetUnavailable when the counters cannot be reached.
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
        amount = cost_of(model)
        if amount is None:
            if key.budget_usd is None:
                return Admission(name, model, _unlimited(key, Decimal(0)))
            continue
        outcome = await budgets.reserve(key, amount)
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
