"""Ledger rows with the structured decision columns (migration 7), for calibration and
training tests that insert rows directly.

Until :class:`tierwise.types.LedgerEntry` carries the decision fields itself (the lead adds
them: ``decision_score``, ``tier_quality``, ``decision_rule``, ``router_model``,
``route_features``), :class:`RoutedEntry` is a LedgerEntry with those fields; the store writes
them by name either way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.dbs import entry
from tierwise.policy import ledger_fields
from tierwise.types import Decision, LedgerEntry

DECISION_FIELDS = (
    "decision_score",
    "tier_quality",
    "decision_rule",
    "router_model",
    "route_features",
)
ENTRY_HAS_DECISION_FIELDS = all(f in LedgerEntry.__dataclass_fields__ for f in DECISION_FIELDS)


@dataclasses.dataclass(frozen=True, slots=True)
class RoutedEntry(LedgerEntry):
    decision_score: float | None = None
    tier_quality: dict[str, float] | None = None
    decision_rule: str | None = None
    router_model: str | None = None
    route_features: tuple[float, ...] | None = None


def routed_entry(n: int = 0, *, decision: Decision | None = None, **fields: Any) -> LedgerEntry:
    """``tests.dbs.entry`` plus the decision columns (from ``decision`` via
    :func:`tierwise.policy.ledger_fields`, and/or given by name)."""
    decided = {
        **ledger_fields(decision),
        **{k: fields.pop(k) for k in DECISION_FIELDS if k in fields},
    }
    base = entry(n, **fields)
    values = {
        f.name: getattr(base, f.name)
        for f in dataclasses.fields(LedgerEntry)
        if f.name not in DECISION_FIELDS
    }
    cls: Any = LedgerEntry if ENTRY_HAS_DECISION_FIELDS else RoutedEntry
    return cls(**values, **decided)  # type: ignore[no-any-return]
