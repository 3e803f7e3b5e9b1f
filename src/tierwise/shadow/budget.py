"""The shadow budget: what shadow calls and judges may spend per UTC day, never exceeded.

Like the keys' budgets, a comparison *holds* its worst case before its first call and settles
what it really cost afterwards (never more than it held: usage is clamped to the bounds the
hold was computed from). A hold that does not fit in what is left of the day is refused, and
the comparison is skipped. A call whose cost is unknown (an unreadable usage object) keeps its
whole hold as spent.

The counter lives in the process. It starts from what the ledger says was already spent today
(a restarted gateway does not start from zero) and, with ``gateway.workers`` > 1, each worker
gets an equal share of the day's budget and of what was already spent, so together they stay
within it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal


def utc_day(now: dt.datetime) -> dt.date:
    return now.astimezone(dt.UTC).date()


class DailyBudget:
    """``limit_usd`` per UTC day (see the module's docstring). Thread-safe."""

    def __init__(
        self,
        limit_usd: Decimal,
        *,
        spent_today_usd: Decimal = Decimal(0),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        if limit_usd < 0:
            raise ValueError("a shadow budget cannot be negative")
        self.limit_usd = limit_usd
        self._clock = clock
        self._day = utc_day(clock())
        self._spent = max(Decimal(0), spent_today_usd)
        self._held = Decimal(0)
        self._lock = threading.Lock()

    def _roll(self) -> None:
        day = utc_day(self._clock())
        if day != self._day:
            self._day, self._spent = day, Decimal(0)

    @property
    def spent_usd(self) -> Decimal:
        with self._lock:
            self._roll()
            return self._spent

    @property
    def held_usd(self) -> Decimal:
        with self._lock:
            return self._held

    def remaining_usd(self) -> Decimal:
        with self._lock:
            self._roll()
            return max(Decimal(0), self.limit_usd - self._spent - self._held)

    def reserve(self, amount_usd: Decimal) -> bool:
        """Hold ``amount_usd`` if it fits in what is left today."""
        if amount_usd < 0:
            raise ValueError("a hold cannot be negative")
        with self._lock:
            self._roll()
            if self._spent + self._held + amount_usd > self.limit_usd:
                return False
            self._held += amount_usd
            return True

    def settle(self, held_usd: Decimal, spent_usd: Decimal | None) -> Decimal:
        """End a hold of ``held_usd``: ``spent_usd`` was spent (None: unknown, the whole hold
        counts). Returns what was counted (never more than the hold)."""
        counted = held_usd if spent_usd is None else min(max(spent_usd, Decimal(0)), held_usd)
        with self._lock:
            self._roll()
            self._held = max(Decimal(0), self._held - held_usd)
            self._spent += counted
        return counted

    def release(self, held_usd: Decimal) -> None:
        """End a hold (or part of one) with nothing spent."""
        self.settle(held_usd, Decimal(0))
