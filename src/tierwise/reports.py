"""Cost and savings reports from the ledger: one function, used by ``tierwise report`` (table
and ``--json``) and by the gateway's dashboard.

Definitions (all money exact ``Decimal``; JSON carries it as strings):

- ``total_cost_usd``: everything known to be spent: the answering models' cost on every row
  that has one, plus the classifier's cost on every row (failed requests included).
- ``baseline_cost_usd``: what the *comparable* rows (a model cost and a baseline cost both
  known) would have cost on the baseline model, on the same usage.
- ``saved_usd`` = ``baseline_cost_usd`` − the comparable rows' model cost − **all** classifier
  cost (savings are net of the classifier). When ``unpriced_requests`` is 0, this is exactly
  ``baseline_cost_usd − total_cost_usd``.
- ``unpriced_requests``: answered requests left out of the savings because their model or
  their baseline has no price. Never counted as $0.
- ``dropped_requests``: requests the write-behind queue could not take (see
  :mod:`tierwise.ledger.writer`): the report is missing them, and says so.

The baseline (``baseline=``):

- ``"stored"`` (default): the baseline each row was recorded with, which is
  ``Settings.baseline`` at the time (the top tier, the lesson's "if all Opus", or a model id).
- ``"requested"``: for rows where the client named a model (``requested_model``: the gateway's
  ``model`` field, or the tier forced on the CLI/library), the cost of the same usage on that
  model, at the price in force when the request ran. A tier name (``"opus"``) stands for its
  tier's model (``tier_models``, from the configuration); ``"auto"`` (the client let tierwise
  choose) and rows without a requested model keep their stored baseline.
- a model id (``"claude-opus-4-6"``): every row re-priced on that model.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.errors import InputError
from tierwise.ledger.store import GROUPS, Aggregate, LedgerStore

if TYPE_CHECKING:
    from tierwise.config import Settings
    from tierwise.pricing import PriceCatalogue

AUTO = "auto"  # the gateway's model name for "let tierwise choose"
_SINCE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """``7d``, ``24h``, ``30m``, ``2w``, an ISO date/time (UTC when naive), or ``all``/None."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    match = _SINCE.match(text.lower())
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(**{unit: amount})
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(
            f"--since {text!r}: expected a duration (30m, 24h, 7d, 2w), a date "
            "(2026-11-01), a date-time, or 'all'"
        ) from exc
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def money(value: Decimal) -> str:
    """Exact, no exponent (``3E-7`` → ``0.0000003``)."""
    return format(value, "f")


@dataclass
class _Group:
    agg: Aggregate = field(default_factory=Aggregate)

    def saved(self) -> Decimal:
        a = self.agg
        return a.comparable_baseline_usd - a.comparable_cost_usd - a.classifier_cost_usd

    def total(self) -> Decimal:
        return self.agg.cost_usd + self.agg.classifier_cost_usd

    def as_dict(self) -> dict[str, Any]:
        a = self.agg
        saved = self.saved()
        return {
            "requests": a.requests,
            "ok": a.ok,
            "error": a.errors,
            "cost_usd": money(self.total()),
            "classifier_cost_usd": money(a.classifier_cost_usd),
            "baseline_cost_usd": money(a.comparable_baseline_usd),
            "saved_usd": money(saved),
            "saved_pct": _pct(saved, a.comparable_baseline_usd),
            "unpriced_requests": a.unpriced,
        }


def _pct(part: Decimal, whole: Decimal) -> float:
    return round(float(100 * part / whole), 2) if whole else 0.0


def _stored_baseline_rows(baseline: str, catalogue: PriceCatalogue | None) -> str:
    """SQL for the rows that keep the baseline they were recorded with."""
    if baseline == "stored":
        return "1=1"
    if baseline == "requested":
        where = f"requested_model IS NULL OR requested_model IN ('', '{AUTO}')"
    elif catalogue is None or catalogue.info(baseline) is None:
        raise InputError(
            f"--baseline {baseline!r}: expected 'stored', 'requested' or a model id the "
            "price catalogue knows (`tierwise prices` lists them)"
        )
    else:
        where = "1=0"
    if catalogue is None:
        raise InputError(f"baseline {baseline!r} needs the price catalogue")
    return where


def build_report(
    store: LedgerStore,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    by: str | None = None,
    baseline: str = "stored",
    catalogue: PriceCatalogue | None = None,
    tier_order: list[str] | None = None,
    tier_models: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report as a JSON-ready dict (money as exact decimal strings). ``tier_models``
    (tier name → model) resolves tier names in ``requested_model`` for ``baseline="requested"``."""
    if by is not None and by not in GROUPS:
        raise InputError(f"--by {by!r}: choose one of {', '.join(GROUPS)}")
    stored_where = _stored_baseline_rows(baseline, catalogue)

    groups_needed = {None, "tier", by}
    sums = {
        g: {
            k: _Group(v)
            for k, v in store.aggregate(
                g, since=since, until=until, stored_baseline_where=stored_where
            ).items()
        }
        for g in groups_needed
    }
    if stored_where != "1=1":
        assert catalogue is not None
        for row in store.rows_for_baseline(by, f"NOT ({stored_where})", since=since, until=until):
            model: str | None = baseline
            if baseline == "requested":
                named = row.requested_model
                model = (tier_models or {}).get(named, named) if named else None
            price = None if model is None else catalogue.cost(row.usage, model, row.ts).usd
            keys = {None: "all", "tier": row.tier, by: row.group}
            for g in groups_needed:
                target = sums[g].setdefault(keys[g], _Group()).agg
                if row.cost_usd is None or price is None:
                    target.unpriced += row.status == "ok"
                else:
                    target.comparable_baseline_usd += price
                    target.comparable_cost_usd += row.cost_usd

    total = sums[None].get("all", _Group())
    order = list(tier_order or [])
    tiers = [*[t for t in order if t in sums["tier"]], *sorted(set(sums["tier"]) - set(order))]
    a = total.agg
    saved = total.saved()
    out: dict[str, Any] = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "baseline": baseline,
        "total_requests": a.requests,
        "by_status": {"ok": a.ok, "error": a.errors},
        "simulated_requests": a.simulated,
        "by_tier": {
            t: {
                "requests": sums["tier"][t].agg.requests,
                "pct": _pct(Decimal(sums["tier"][t].agg.requests), Decimal(a.requests)),
                "cost_usd": money(sums["tier"][t].total()),
            }
            for t in tiers
        },
        "total_cost_usd": money(total.total()),
        "baseline_cost_usd": money(a.comparable_baseline_usd),
        "saved_usd": money(saved),
        "saved_pct": _pct(saved, a.comparable_baseline_usd),
        "classifier_cost_usd": money(a.classifier_cost_usd),
        "unpriced_requests": a.unpriced,
        "dropped_requests": store.dropped(since, until),
    }
    if by is not None:
        out["by"] = by
        out["groups"] = {k: g.as_dict() for k, g in sorted(sums[by].items())}
    return out


def report(
    settings: Settings,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    by: str | None = None,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Open the configured ledger and build the report (see :func:`build_report`)."""
    from tierwise.ledger import open_store

    store = open_store(settings)
    try:
        return build_report(
            store,
            since=since,
            until=until,
            by=by,
            baseline=baseline or "stored",
            catalogue=settings.catalogue(),
            tier_order=settings.tier_names,
            tier_models={t.name: t.model for t in settings.tiers},
        )
    finally:
        store.close()


_BUCKET_FORMATS = {"hour": "%Y-%m-%d %H", "day": "%Y-%m-%d"}
_BUCKET_STEPS = {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}
MAX_BUCKETS = 1000


def build_series(
    store: LedgerStore,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    bucket: str = "hour",
    tier_order: list[str] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Spend over time: per ``hour`` or ``day`` (UTC), each tier's requests and cost, and the
    bucket's cost, stored-baseline cost and savings, with the definitions of
    :func:`build_report` (the buckets add up to its totals with the stored baseline). Empty
    buckets between the window's start (or the first row) and its end are filled with zeros;
    at most the last :data:`MAX_BUCKETS`."""
    if bucket not in _BUCKET_FORMATS:
        raise InputError(f"bucket {bucket!r}: choose hour or day")
    pairs = store.aggregate_pairs(bucket, "tier", since=since, until=until)
    cells: dict[str, dict[str, _Group]] = {}
    for (when, tier), agg in pairs.items():
        cells.setdefault(when, {})[tier] = _Group(agg)
    fmt, step = _BUCKET_FORMATS[bucket], _BUCKET_STEPS[bucket]
    end = until or now or dt.datetime.now(dt.UTC)
    start = since
    if start is None and cells:
        start = dt.datetime.strptime(min(cells), fmt).replace(tzinfo=dt.UTC)
    keys: list[str] = []
    if start is not None:
        start = max(start.astimezone(dt.UTC), end - step * MAX_BUCKETS)
        cursor = dt.datetime.strptime(start.strftime(fmt), fmt).replace(tzinfo=dt.UTC)
        while cursor <= end:
            keys.append(cursor.strftime(fmt))
            cursor += step
    keys = sorted(set(keys) | set(cells))[-MAX_BUCKETS:]
    order = list(tier_order or [])
    seen = {t for by_tier in cells.values() for t in by_tier}
    tiers = [*[t for t in order if t in seen], *sorted(seen - set(order))]
    points: list[dict[str, Any]] = []
    for key in keys:
        by_tier = cells.get(key, {})
        total = _Group()
        for group in by_tier.values():
            total.agg.add(group.agg)
        points.append(
            {
                "t": dt.datetime.strptime(key, fmt).replace(tzinfo=dt.UTC).isoformat(),
                "requests": total.agg.requests,
                "cost_usd": money(total.total()),
                "baseline_cost_usd": money(total.agg.comparable_baseline_usd),
                "saved_usd": money(total.saved()),
                "by_tier": {
                    t: {"requests": g.agg.requests, "cost_usd": money(g.total())}
                    for t, g in by_tier.items()
                },
            }
        )
    return {"bucket": bucket, "tiers": tiers, "points": points}
