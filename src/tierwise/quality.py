"""The quality loop: users' feedback on answers, the lesson's tier quality report from the
ledger, and a proposal for the routing knob that the feedback argues for.

Feedback is one score in [0, 1] per request (the latest wins), stored in the ledger's
``feedback`` table (migration 3) by ``POST /v1/feedback`` and by
:meth:`tierwise.metrics.RouterQualityMonitor.evaluate`.

**Calibration from the ledger** (:func:`propose_from_ledger`, ``tierwise calibrate
--from-ledger``). The knob is ``classifier.quality_tolerance``: the policy sends a request to
the cheapest tier whose predicted quality is within the tolerance of the best tier's
(:func:`tierwise.policy.choose_tier`). For each recorded request that the classifier routed
(answered, and decided by the knob: the ``quality`` rule), the predicted quality of every tier
is read from the ledger's structured ``tier_quality`` column (migration 7; never from the reason
text, never by classifying a prompt again), and the decision is replayed for each candidate
tolerance (0.00 … 1.00 by 0.01). Requests another rule decided (a forced tier, the
low-confidence default, a level) keep their tier. For each candidate:

- **tier shares**: where every request in the window would go (requests the knob does not
  decide keep their tier);
- **cost**: a request that changes tier is re-priced on its new tier's model with its
  recorded usage (the assumption the baseline cost makes too); others keep their cost;
- **satisfaction**: a rated request that stays keeps its score; one that moves up gets the
  better of its score and the new tier's observed average, one that moves down the worse of
  the two (a tier with no ratings leaves the score as it is).

The proposal is the cheapest candidate whose estimated satisfaction meets the target on every
tier with at least ``min_tier_ratings`` ratings and overall (and nothing is proposed from
fewer than ``min_ratings`` ratings in all); so a tier whose users are unhappy gets
fewer requests, and when every tier is comfortably above the target the knob may loosen, by at
most ``max_raise`` per calibration (moving requests down is the less certain estimate). When
no candidate meets the target, the one with the best worst-tier estimate is proposed and the
result says so. Nothing is written here (``tierwise calibrate --from-ledger --write FILE``
does that, with :func:`tierwise.evals.calibrate.write_knob`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.errors import InputError
from tierwise.policy import choose_tier

if TYPE_CHECKING:
    from tierwise.config import Settings
    from tierwise.ledger.store import DecisionRow, LedgerStore

SATISFACTION_FLOOR = 0.7  # the lesson's "below threshold"
KNOB = "classifier.quality_tolerance"
MAX_COMMENT_CHARS = 4000
MAX_REQUEST_ID_CHARS = 200


# -- feedback -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Feedback:
    request_id: str
    score: float
    comment: str | None = None


class FeedbackError(InputError):
    """Bad feedback; ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def check_score(score: Any, name: str = "score") -> float:
    """A satisfaction score: a finite number in [0, 1] (booleans refused)."""
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise FeedbackError(name, f"must be a number between 0 and 1, got {score!r}")
    value = float(score)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise FeedbackError(name, f"must be between 0 and 1, got {score!r}")
    return value


def parse_feedback(body: Mapping[str, Any]) -> Feedback:
    """Validate ``{"request_id", "score", "comment"?}``; errors name the field."""
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise FeedbackError("request_id", "required: the x-tierwise-request-id of the answer")
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise FeedbackError("request_id", f"longer than {MAX_REQUEST_ID_CHARS} characters")
    if "score" not in body:
        raise FeedbackError("score", "required: a number between 0 and 1")
    score = check_score(body["score"])
    comment = body.get("comment")
    if comment is not None:
        if not isinstance(comment, str):
            raise FeedbackError("comment", "must be a string")
        if len(comment) > MAX_COMMENT_CHARS:
            raise FeedbackError("comment", f"longer than {MAX_COMMENT_CHARS} characters")
    return Feedback(request_id.strip(), score, comment)


# -- the lesson's tier quality report, from the ledger --------------------------------------
def quality_report(
    store: LedgerStore,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    floor: float = SATISFACTION_FLOOR,
    tier_order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per tier, over rated requests made in the window: ``avg_satisfaction``,
    ``below_threshold`` (scores below ``floor``), ``total`` (ratings) and ``avg_cost_usd``
    (exact, as a string; null when none of them was priced) — the lesson's
    ``tier_quality_report()`` — plus the same over all tiers."""
    sums = store.quality_by_tier(since=since, until=until, floor=floor)
    order = list(tier_order or [])
    tiers = [*[t for t in order if t in sums], *sorted(set(sums) - set(order))]

    def row(rated: int, total: float, below: int, priced: int, cost: Decimal) -> dict[str, Any]:
        return {
            "avg_satisfaction": round(total / rated, 4) if rated else None,
            "below_threshold": below,
            "total": rated,
            "avg_cost_usd": format(cost / priced, "f") if priced else None,
        }

    all_rated = sum(s.rated for s in sums.values())
    report = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "threshold": floor,
        "tiers": {
            t: row(
                sums[t].rated,
                sums[t].score_sum,
                sums[t].below_floor,
                sums[t].priced,
                sums[t].cost_usd,
            )
            for t in tiers
        },
        "overall": row(
            all_rated,
            sum(s.score_sum for s in sums.values()),
            sum(s.below_floor for s in sums.values()),
            sum(s.priced for s in sums.values()),
            sum((s.cost_usd for s in sums.values()), Decimal(0)),
        ),
    }
    report["shadow"] = shadow_quality(store, since=since, until=until, tier_order=tier_order)
    return report


# -- quality retained, from shadow verdicts -------------------------------------------------
Z_95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval for a share ``successes / n`` (None when ``n`` is 0).

    ``successes`` may be fractional (a request judged in two orders counts 0, ½ or 1): the
    spread of such scores is at most a 0/1 outcome's with the same mean, so the interval is,
    if anything, wider than it needs to be."""
    if n <= 0:
        return None
    p = min(1.0, max(0.0, successes / n))
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _money(value: Decimal) -> str:
    return format(value, "f")


def _retained(judged: int, good_orders: int) -> dict[str, Any]:
    interval = wilson_interval(good_orders / 2, judged)
    return {
        "judged": judged,
        "quality_retained": round(good_orders / (2 * judged), 4) if judged else None,
        "interval_95": None if interval is None else [round(interval[0], 4), round(interval[1], 4)],
    }


def shadow_quality(
    store: LedgerStore,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    tier_order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """ "Quality retained" per tier from the shadow verdicts of requests made in the window
    (:mod:`tierwise.shadow`), and what shadowing cost against what routing saved.

    A request is *judged* when the judge gave a verdict in both orders. Its score is the share
    of the two orders in which the cheaper tier's answer was at least as good as the reference
    tier's (1, ½ or 0: a judge that changes its mind with the order splits the point);
    ``quality_retained`` is the mean score over judged requests, with a 95% Wilson interval
    (:func:`wilson_interval`). ``orders`` counts the single verdicts (``cheap`` better, ``tie``,
    ``reference`` better). Comparisons with an error (a failed call, a judge reply that did
    not follow the format) count in ``errors``, never as a verdict. Costs are exact: the shadow
    calls' and the judges', kept apart from the traffic's; ``unpriced`` comparisons have a cost
    that is unknown and are left out of the sums. ``saved_usd`` is what routing saved on the
    same window (as ``tierwise report``), and ``net_saved_usd`` that minus the shadow cost.
    """
    from tierwise.ledger.db import to_decimal

    db = store.db
    s = db.money_sum
    # the request's window (and, for a key-scoped store, that key's requests only)
    where, params = store._window(since, until, "r.ts")
    both = "v.verdict_cheap_first IS NOT NULL AND v.verdict_reference_first IS NOT NULL"

    def orders(value: str) -> str:
        return (
            f"SUM(CASE WHEN {both} THEN "
            f"(CASE WHEN v.verdict_cheap_first = '{value}' THEN 1 ELSE 0 END) + "
            f"(CASE WHEN v.verdict_reference_first = '{value}' THEN 1 ELSE 0 END) ELSE 0 END)"
        )

    sql = f"""
        SELECT v.tier, v.reference_tier, COUNT(*),
               SUM(CASE WHEN {both} THEN 1 ELSE 0 END),
               {orders("cheap")}, {orders("tie")}, {orders("reference")},
               SUM(CASE WHEN v.error IS NOT NULL THEN 1 ELSE 0 END),
               {s}(v.shadow_cost_usd), {s}(v.judge_cost_usd),
               SUM(CASE WHEN v.shadow_cost_usd IS NULL OR v.judge_cost_usd IS NULL
                        THEN 1 ELSE 0 END)
        FROM shadow_verdicts v JOIN requests r ON r.request_id = v.request_id
        WHERE {where}
        GROUP BY v.tier, v.reference_tier ORDER BY v.tier, v.reference_tier
    """  # noqa: S608 - fixed fragments; values are parameters
    rows = db.query(sql, params)
    # a tier compared with more than one reference tier (the setting changed): one row each
    several = len(rows) > len({str(r[0]) for r in rows})
    tiers: dict[str, dict[str, Any]] = {}
    total = {"comparisons": 0, "judged": 0, "good": 0, "errors": 0, "unpriced": 0}
    orders_all = {"cheap": 0, "tie": 0, "reference": 0}
    shadow_usd = judge_usd = Decimal(0)
    for row in rows:
        tier, reference = str(row[0]), str(row[1])
        n, judged, cheap, tie, ref, errors = (int(v or 0) for v in row[2:8])
        shadow_c, judge_c, unpriced = row[8], row[9], int(row[10] or 0)
        sc = to_decimal(shadow_c) or Decimal(0)
        jc = to_decimal(judge_c) or Decimal(0)
        key = f"{tier} vs {reference}" if several else str(tier)
        tiers[key] = {
            "tier": str(tier),
            "reference_tier": str(reference),
            "comparisons": n,
            **_retained(judged, cheap + tie),
            "orders": {"cheap": cheap, "tie": tie, "reference": ref},
            "errors": errors,
            "unpriced": unpriced,
            "shadow_cost_usd": _money(sc),
            "judge_cost_usd": _money(jc),
            "cost_usd": _money(sc + jc),
        }
        total["comparisons"] += n
        total["judged"] += judged
        total["good"] += cheap + tie
        total["errors"] += errors
        total["unpriced"] += unpriced
        for name, value in (("cheap", cheap), ("tie", tie), ("reference", ref)):
            orders_all[name] += value
        shadow_usd += sc
        judge_usd += jc
    order = list(tier_order or [])
    rank = {t: i for i, t in enumerate(order)}
    ordered = dict(
        sorted(tiers.items(), key=lambda kv: (rank.get(kv[1]["tier"], len(order)), kv[0]))
    )
    agg = store.aggregate(None, since=since, until=until).get("all")
    saved = (
        Decimal(0)
        if agg is None
        else agg.comparable_baseline_usd - agg.comparable_cost_usd - agg.classifier_cost_usd
    )
    cost = shadow_usd + judge_usd
    return {
        "tiers": ordered,
        "overall": {
            "comparisons": total["comparisons"],
            **_retained(total["judged"], total["good"]),
            "orders": orders_all,
            "errors": total["errors"],
            "unpriced": total["unpriced"],
        },
        "shadow_cost_usd": _money(shadow_usd),
        "judge_cost_usd": _money(judge_usd),
        "cost_usd": _money(cost),
        "saved_usd": _money(saved),
        "net_saved_usd": _money(saved - cost),
    }


# -- calibration from the ledger ------------------------------------------------------------
def current_knob(settings: Settings) -> float | None:
    """The routing knob's value, or None when this configuration has no such knob."""
    value = getattr(settings.classifier, "quality_tolerance", None)
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class _Row:
    tier: int  # index of the tier it went to
    quality: list[float] | None  # per-tier predicted quality when the knob decided it
    cost_by_tier: list[Decimal | None]  # its cost on each tier (its own: the recorded cost)
    score: float | None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One setting of the knob, replayed over the window."""

    value: float
    requests: list[int]  # per tier
    cost_usd: Decimal
    satisfaction: list[float | None]  # estimated average per tier (None: no ratings there)
    ratings: list[int]
    overall: float | None

    def shares(self) -> list[float]:
        total = sum(self.requests)
        return [100.0 * n / total if total else 0.0 for n in self.requests]


@dataclass
class Proposal:
    """What ``tierwise calibrate --from-ledger`` prints (and writes, when asked)."""

    knob: str
    tiers: list[str]
    target: float
    requests: int
    replayed: int
    ratings: int
    current: Candidate | None
    proposed: Candidate | None
    met: bool
    reason: str
    observed: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return (
            self.current is not None
            and self.proposed is not None
            and abs(self.proposed.value - self.current.value) > 1e-9
        )

    def as_dict(self) -> dict[str, Any]:
        def cand(c: Candidate | None) -> dict[str, Any] | None:
            if c is None:
                return None
            shares = c.shares()
            return {
                "value": c.value,
                "cost_usd": format(c.cost_usd, "f"),
                "estimated_satisfaction": c.overall,
                "tiers": {
                    t: {
                        "requests": c.requests[i],
                        "share_pct": round(shares[i], 2),
                        "estimated_satisfaction": c.satisfaction[i],
                        "ratings": c.ratings[i],
                    }
                    for i, t in enumerate(self.tiers)
                },
            }

        cost_change = None
        if self.current is not None and self.proposed is not None and self.current.cost_usd:
            cost_change = round(
                float(
                    100 * (self.proposed.cost_usd - self.current.cost_usd) / self.current.cost_usd
                ),
                2,
            )
        return {
            "knob": self.knob,
            "target_satisfaction": self.target,
            "requests": self.requests,
            "replayed": self.replayed,
            "ratings": self.ratings,
            "current": cand(self.current),
            "proposed": cand(self.proposed),
            "changed": self.changed,
            "cost_change_pct": cost_change,
            "target_met": self.met,
            "reason": self.reason,
            "observed": self.observed,
        }


def _replayable_quality(row: DecisionRow, tiers: list[str]) -> list[float] | None:
    """The row's per-tier predicted quality in tier order, when the knob decided it (the
    ``quality`` rule) and it names every configured tier; else None."""
    given = row.tier_quality
    if row.decision_rule != "quality" or not given or any(t not in given for t in tiers):
        return None
    return [float(given[t]) for t in tiers]


def _replay(rows: Sequence[_Row], value: float, observed: list[float | None]) -> Candidate:
    n = len(observed)
    requests = [0] * n
    cost = Decimal(0)
    sat_sum = [0.0] * n
    ratings = [0] * n
    for row in rows:
        tier = row.tier if row.quality is None else choose_tier(row.quality, value)
        if row.cost_by_tier[tier] is None:  # no price on the new tier: keep where it was
            tier = row.tier
        requests[tier] += 1
        cost += row.cost_by_tier[tier] or Decimal(0)
        if row.score is not None:
            score, mean = row.score, observed[tier]
            if tier > row.tier and mean is not None:
                score = max(score, mean)
            elif tier < row.tier and mean is not None:
                score = min(score, mean)
            sat_sum[tier] += score
            ratings[tier] += 1
    satisfaction = [round(sat_sum[i] / ratings[i], 4) if ratings[i] else None for i in range(n)]
    total_ratings = sum(ratings)
    overall = round(sum(sat_sum) / total_ratings, 4) if total_ratings else None
    return Candidate(value, requests, cost, satisfaction, ratings, overall)


def _build_rows(
    settings: Settings, entries: Sequence[DecisionRow], scores: Mapping[str, float]
) -> list[_Row]:
    tiers = settings.tier_names
    index = {t: i for i, t in enumerate(tiers)}
    models = [t.model for t in settings.tiers]
    catalogue = settings.catalogue()
    rows: list[_Row] = []
    for entry in entries:
        if entry.tier not in index:
            continue
        own = index[entry.tier]
        quality = _replayable_quality(entry, tiers)
        decided = quality is not None
        costs: list[Decimal | None] = []
        for i, model in enumerate(models):
            if i == own:
                costs.append(entry.total_cost_usd)
            elif not decided:
                costs.append(None)
            else:
                price = catalogue.cost(entry.usage, model, entry.ts).usd
                costs.append(None if price is None else price + entry.classifier_cost_usd)
        rows.append(_Row(own, quality if decided else None, costs, scores.get(entry.request_id)))
    return rows


def _meets(c: Candidate, target: float, min_ratings: int) -> bool:
    tiers_ok = all(
        s is None or n < min_ratings or s >= target - 1e-9
        for s, n in zip(c.satisfaction, c.ratings, strict=True)
    )
    return tiers_ok and (c.overall is None or c.overall >= target - 1e-9)


def _worst_tier(c: Candidate) -> float:
    known = [s for s, n in zip(c.satisfaction, c.ratings, strict=True) if s is not None and n]
    return min(known) if known else 0.0


def _select(
    candidates: list[Candidate], current: float, target: float, min_ratings: int, max_raise: float
) -> tuple[Candidate, Candidate, bool]:
    """(the current setting, the proposed one, whether the proposal meets the target)."""
    now = next(c for c in candidates if c.value == current)
    allowed = [c for c in candidates if c.value <= current + max_raise + 1e-9]
    feasible = [c for c in allowed if _meets(c, target, min_ratings)]
    if not feasible:
        best = max(
            allowed,
            key=lambda c: (round(_worst_tier(c), 4), -c.cost_usd, -abs(c.value - current)),
        )
        return now, best, False
    best = min(feasible, key=lambda c: (c.cost_usd, abs(c.value - current)))
    if _meets(now, target, min_ratings) and best.cost_usd >= now.cost_usd:
        best = now
    return now, best, True


def propose_from_ledger(
    settings: Settings,
    store: LedgerStore,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    target: float = SATISFACTION_FLOOR,
    min_ratings: int = 20,
    min_tier_ratings: int = 5,
    max_raise: float = 0.1,
    step: float = 0.01,
    progress: Callable[[int, int], None] | None = None,
) -> Proposal:
    """Replay the window's decisions under candidate settings of the knob and propose one
    (see the module's docstring). ``progress(done, total)`` is called while replaying."""
    check_score(target, "target")
    tiers = settings.tier_names
    current = current_knob(settings)
    entries = [
        e for e in store.decision_rows(since=since, until=until) if e.status == "ok" and e.tier
    ]
    scores = store.feedback_scores(since=since, until=until)
    rated = sum(1 for e in entries if e.request_id in scores)
    observed_report = quality_report(store, since=since, until=until, tier_order=tiers)["tiers"]

    def proposal(
        now: Candidate | None, best: Candidate | None, met: bool, replayed: int, reason: str
    ) -> Proposal:
        return Proposal(
            KNOB,
            tiers,
            target,
            len(entries),
            replayed,
            rated,
            now,
            best,
            met,
            reason,
            observed_report,
        )

    if current is None:
        kind = settings.classifier.kind
        return proposal(
            None,
            None,
            False,
            0,
            f"this configuration has no {KNOB} knob (classifier kind {kind!r}); "
            "nothing to calibrate",
        )
    if rated < min_ratings:
        return proposal(
            None,
            None,
            False,
            0,
            f"{rated} rated request(s) in the window; at least {min_ratings} are needed "
            "(--min-ratings)",
        )
    rows = _build_rows(settings, entries, scores)
    replayed = sum(1 for r in rows if r.quality is not None)
    observed: list[float | None] = []
    for i in range(len(tiers)):
        mine = [r.score for r in rows if r.tier == i and r.score is not None]
        observed.append(sum(mine) / len(mine) if mine else None)
    values = sorted({round(k * step, 6) for k in range(round(1 / step) + 1)} | {current})
    candidates: list[Candidate] = []
    for done, value in enumerate(values, start=1):
        candidates.append(_replay(rows, value, observed))
        if progress is not None:
            progress(done, len(values))
    now, best, met = _select(candidates, current, target, min_tier_ratings, max_raise)
    if replayed == 0:
        return proposal(
            now,
            now,
            _meets(now, target, min_tier_ratings),
            0,
            "no request in the window was decided by the knob with its tiers' predicted "
            "quality recorded (another classifier or rule decided them, or they predate the "
            f"ledger's decision columns), so {KNOB} would change nothing",
        )
    if not met and best is now:
        reason = (
            f"no setting reaches the target {target:.2f} on this data, and none does better "
            "than the current one"
        )
    elif not met:
        reason = (
            f"no setting reaches the target {target:.2f} on every rated tier; this one has the "
            "best worst-tier estimate"
        )
    elif best is now:
        reason = f"the current setting meets the target {target:.2f} at the lowest cost"
    else:
        below = [
            t
            for t, s, n in zip(tiers, now.satisfaction, now.ratings, strict=True)
            if s is not None and n >= min_tier_ratings and s < target
        ]
        reason = (
            f"fewer requests to {', '.join(below)} (satisfaction below {target:.2f})"
            if below
            else f"every tier meets the target {target:.2f}: cheaper tiers can take more"
        )
    return proposal(now, best, met, replayed, reason)
