"""The lesson's running totals, made safe under threads and honest about unpriced requests.

These are in-memory counters for one router object (what the lesson's ``report()`` printed).
"""

from __future__ import annotations

import atexit
import datetime as dt
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.types import RouteResult

if TYPE_CHECKING:
    from tierwise.config import Settings
    from tierwise.ledger import LedgerStore


def usd(value: Decimal | None, places: int = 6) -> str:
    """Format money for people; unpriced shows as such, never as $0."""
    if value is None:
        return "unpriced"
    quantum = Decimal(1).scaleb(-places)
    return f"${value.quantize(quantum):,}"


@dataclass
class RouterMetrics:
    """Requests per tier, total cost, baseline ("if all Opus") cost and savings."""

    tier_order: list[str] = field(default_factory=lambda: ["haiku", "sonnet", "opus"])
    baseline_label: str = "Opus"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _by_tier: Counter[str] = field(default_factory=Counter)
    _cost: Decimal = Decimal(0)
    _baseline: Decimal = Decimal(0)
    _classifier_cost: Decimal = Decimal(0)
    _unpriced: int = 0
    _errors: int = 0
    _simulated: int = 0

    def record(self, result: RouteResult) -> None:
        with self._lock:
            self._by_tier[result.tier] += 1
            self._classifier_cost += result.classifier_cost
            if result.simulated:
                self._simulated += 1
            if result.cost is None or result.cost_if_opus is None:
                self._unpriced += 1
                return
            self._cost += result.cost
            self._baseline += result.cost_if_opus

    def record_error(self) -> None:
        with self._lock:
            self._errors += 1

    def summary(self) -> dict[str, Any]:
        with self._lock:
            total = sum(self._by_tier.values())
            saved = self._baseline - self._cost
            tiers = [*self.tier_order, *sorted(set(self._by_tier) - set(self.tier_order))]
            return {
                "total_requests": total,
                "errors": self._errors,
                "simulated_requests": self._simulated,
                "by_tier": {
                    name: {
                        "requests": self._by_tier[name],
                        "pct": (100.0 * self._by_tier[name] / total) if total else 0.0,
                    }
                    for name in tiers
                },
                "total_cost_usd": self._cost,
                "baseline_cost_usd": self._baseline,
                "classifier_cost_usd": self._classifier_cost,
                "saved_usd": saved,
                "saved_pct": float(100 * saved / self._baseline) if self._baseline else 0.0,
                "unpriced_requests": self._unpriced,
            }

    def report(self) -> str:
        s = self.summary()
        lines = ["=== tierwise router report ===", f"Total requests: {s['total_requests']}"]
        if s["simulated_requests"]:
            lines.append(
                f"  (SIMULATED: {s['simulated_requests']} answered offline, no model called)"
            )
        if s["errors"]:
            lines.append(f"Failed requests: {s['errors']}")
        lines.append("Distribution:")
        for name, row in s["by_tier"].items():
            lines.append(f"  {name:<8} {row['requests']:>5}  ({row['pct']:.1f}%)")
        lines += [
            f"Total cost:   {usd(s['total_cost_usd'])}"
            f"  (classifier {usd(s['classifier_cost_usd'])})",
            f"If all {self.baseline_label}: {usd(s['baseline_cost_usd'])}",
            f"Saved:        {usd(s['saved_usd'])} ({s['saved_pct']:.1f}%)",
        ]
        if s["unpriced_requests"]:
            lines.append(
                f"UNPRICED: {s['unpriced_requests']} request(s) used a model with no price; "
                "they are left out of the totals above"
            )
        return "\n".join(lines)


SATISFACTION_FLOOR = 0.7


def _field(result: Any, name: str) -> Any:
    """A field of a result: a :class:`RouteResult` or the lesson's dict."""
    if isinstance(result, Mapping):
        return result.get(name)
    return getattr(result, name, None)


class RouterQualityMonitor:
    """The lesson's quality monitor: users' satisfaction per tier, thread-safe.

    ``tier_quality_report()`` is the lesson's in-memory report of what this object saw. Each
    evaluation is also **stored in the ledger** with the request it judges (``feedback``
    table), so ``tierwise report --quality``, the dashboard and ``tierwise calibrate
    --from-ledger`` see it. Which ledger:

    - ``router=``: the one that router records to (none when its ledger is disabled);
    - ``store=``: that :class:`~tierwise.ledger.LedgerStore` (not closed here);
    - ``settings=``: the ledger those settings configure;
    - none of them: the configured ledger (``tierwise.config.load()``), as ``ModelRouter()``
      uses by default. ``persist=False`` keeps everything in memory.

    The ledger is opened on the first evaluation. A result without a ``request_id`` (a
    hand-made dict) is kept in memory only.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        store: LedgerStore | None = None,
        router: Any = None,
        persist: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._scores: dict[str, list[float]] = {}
        self._costs: dict[str, list[Decimal]] = {}
        self._persist = persist
        self._settings = settings
        self._router = router
        self._store = store
        self._owned: LedgerStore | None = None
        self._resolved = store is not None or not persist

    def _ledger(self) -> LedgerStore | None:
        """The store feedback is written to (opened once), or None."""
        with self._lock:
            if not self._resolved:
                if self._router is not None:
                    ledger = getattr(self._router, "ledger", None)
                    self._store = None if ledger is None else ledger.store
                else:
                    from tierwise import config as config_mod

                    settings = self._settings or config_mod.load()
                    if settings.ledger.enabled:
                        from tierwise.ledger import open_store

                        self._owned = self._store = open_store(settings)
                        atexit.register(self.close)
                self._resolved = True
            return self._store

    def evaluate(self, result: Any, user_satisfaction: float) -> None:
        """Record a user's satisfaction (0–1) with one routed result."""
        if isinstance(user_satisfaction, bool) or not isinstance(user_satisfaction, int | float):
            raise ValueError(
                f"user_satisfaction must be a number in [0, 1], got {user_satisfaction!r}"
            )
        if not 0.0 <= float(user_satisfaction) <= 1.0:
            raise ValueError(f"user_satisfaction must be in [0, 1], got {user_satisfaction}")
        tier = str(_field(result, "tier"))
        request_id = _field(result, "request_id")
        store = self._ledger() if self._persist and request_id else None
        if store is not None:
            store.add_feedback(str(request_id), float(user_satisfaction), source="library")
        cost = _field(result, "cost")
        with self._lock:
            self._scores.setdefault(tier, []).append(float(user_satisfaction))
            if cost is not None:
                self._costs.setdefault(tier, []).append(cost)

    def tier_quality_report(self) -> dict[str, dict[str, Any]]:
        """Per tier: average satisfaction, how many below 0.7, total, average cost."""
        with self._lock:
            report: dict[str, dict[str, Any]] = {}
            for tier, scores in self._scores.items():
                costs = self._costs.get(tier, [])
                report[tier] = {
                    "avg_satisfaction": sum(scores) / len(scores),
                    "below_threshold": sum(1 for s in scores if s < SATISFACTION_FLOOR),
                    "total": len(scores),
                    "avg_cost": (sum(costs, Decimal(0)) / len(costs)) if costs else None,
                }
            return report

    def stored_quality_report(self, since: dt.datetime | None = None) -> dict[str, Any]:
        """The same report over everything stored in the ledger (all sources), as
        ``tierwise report --quality --json`` prints it; raises when there is no ledger."""
        from tierwise.quality import quality_report

        store = self._ledger()
        if store is None:
            raise ValueError("this monitor has no ledger (persist=False or ledger disabled)")
        return quality_report(store, since=since)

    def close(self) -> None:
        """Close the ledger connection this monitor opened (idempotent)."""
        with self._lock:
            owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()
            atexit.unregister(self.close)

    def __enter__(self) -> RouterQualityMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
