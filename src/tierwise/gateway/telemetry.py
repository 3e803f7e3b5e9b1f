"""Prometheus metrics for the gateway (``GET /metrics``). Money here is float and for
dashboards only; the ledger holds the exact ``Decimal`` amounts. No label carries a secret,
a prompt or a key's value (key *names* are not labels either: their number is unbounded)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from tierwise.lifecycle import Outcome
    from tierwise.pricing import Settlement

_LATENCY = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)

REQUESTS = Counter(
    "tierwise_requests_total",
    "Model requests through the gateway",
    ["api", "tier", "model", "status"],
)
ERRORS = Counter("tierwise_request_errors_total", "Failed requests by error type", ["error_type"])
COST = Counter("tierwise_cost_usd_total", "Cost of answered requests (incl. classifier)", ["tier"])
BASELINE = Counter(
    "tierwise_baseline_cost_usd_total", "The same usage priced on the baseline model"
)
SAVED = Gauge("tierwise_saved_usd", "Baseline cost minus cost, net of the classifier (cumulative)")
UPSTREAM = Histogram(
    "tierwise_upstream_seconds", "Upstream latency to the reply's headers", buckets=_LATENCY
)
BUDGET = Counter("tierwise_budget_events_total", "Budget refusals and downgrades", ["event"])
UNPRICED = Counter("tierwise_unpriced_requests_total", "Requests whose model has no price")
FALLBACKS = Counter("tierwise_fallbacks_total", "Tiers given up on before an answer", ["tier"])
DECISION = Histogram("tierwise_decision_seconds", "Routing decision latency", buckets=_LATENCY)
TOTAL = Histogram(
    "tierwise_request_seconds",
    "Gateway request latency (to the end of the reply)",
    buckets=_LATENCY,
)
CLAMPED = Counter(
    "tierwise_usage_clamped_total",
    "Replies whose usage exceeded what the request could consume (clamped, flagged in the ledger)",
)
LEDGER_QUEUE = Gauge("tierwise_ledger_queue_depth", "Ledger entries waiting to be written")
LEDGER_REJECTED = Gauge(
    "tierwise_ledger_rejected_total", "Ledger rows the database refused (in ledger_gaps)"
)
LEDGER_OLDEST = Gauge(
    "tierwise_ledger_oldest_queued_seconds", "Age of the oldest entry waiting to be written"
)
LEDGER_STATUS = Gauge(
    "tierwise_ledger_status", "Ledger health: 0 ok, 1 degraded, 2 failing (see /health)"
)
_LEDGER_STATES = {"ok": 0, "degraded": 1, "failing": 2}
LEDGER_DROPPED = Gauge("tierwise_ledger_dropped_total", "Ledger entries dropped on a full queue")


_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
        "connection_error",
        "client_disconnected",
        "internal_error",
        "stream_error",
        "malformed_stream",
        "incomplete_stream",
        "output_overrun",
        "bad_upstream_reply",
        "bad_upstream_usage",
        "interrupted",
    }
)
_APIS = frozenset({"messages", "chat.completions", "responses", "library"})


class MetricsObserver:
    """Counts finished requests for ``/metrics``. Label values come from bounded sets: a model
    the catalogue and the tiers do not know is ``other``, and so is an error type the API does
    not define (an upstream or a client cannot grow the page without limit)."""

    def __init__(self, known_models: set[str], known_tiers: set[str]) -> None:
        self.known_models = frozenset(known_models)
        self.known_tiers = frozenset(known_tiers)
        # Children by label values (bounded sets, see above): ``labels()`` validates and locks
        # on every call, a dict look-up does not.
        self._requests: dict[tuple[str, str, str, str], Any] = {}
        self._cost: dict[str, Any] = {}

    def on_outcome(self, outcome: Outcome) -> None:
        target = outcome.target
        tier = (target.tier if target else None) or "none"
        model = target.model if target else "none"
        if model != "none" and model not in self.known_models:
            model = "other"
        api = outcome.api if outcome.api in _APIS else "other"
        key = (api, tier, model, outcome.status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = REQUESTS.labels(*key)
        counter.inc()
        TOTAL.observe(outcome.total_ms / 1000)
        if outcome.upstream_ms:
            UPSTREAM.observe(outcome.upstream_ms / 1000)
        if outcome.budget_event is not None:
            BUDGET.labels(outcome.budget_event).inc()
        if outcome.error_type:
            kind = outcome.error_type if outcome.error_type in _ERROR_TYPES else "other"
            ERRORS.labels(kind).inc()
        for step in outcome.fallbacks:
            label = step.split(":", 1)[0]
            FALLBACKS.labels(label if label in self.known_tiers else "other").inc()
        if outcome.decision is not None:
            DECISION.observe(outcome.decision.decision_ms / 1000)
        if outcome.usage_flags:
            CLAMPED.inc()
        if outcome.settlement is not None:
            self._money(tier, outcome.settlement)

    def _money(self, tier: str, settlement: Settlement) -> None:
        if settlement.total_usd is None:
            UNPRICED.inc()
            return
        cost = self._cost.get(tier)
        if cost is None:
            cost = self._cost[tier] = COST.labels(tier)
        cost.inc(float(settlement.total_usd))
        if settlement.baseline_usd is not None:
            BASELINE.inc(float(settlement.baseline_usd))
        if settlement.saved_usd is not None:
            SAVED.inc(float(settlement.saved_usd))


def watch_ledger(ledger: Any) -> None:
    """Read the ledger's counters and health at every scrape (``tierwise.ledger.Ledger``)."""
    LEDGER_QUEUE.set_function(lambda: ledger.stats().queued)
    LEDGER_DROPPED.set_function(lambda: ledger.stats().dropped)
    LEDGER_REJECTED.set_function(lambda: ledger.stats().rejected)
    LEDGER_OLDEST.set_function(lambda: ledger.stats().oldest_queued_s)
    LEDGER_STATUS.set_function(lambda: _LEDGER_STATES.get(ledger.health().status, 2))


async def metrics_endpoint(request: Request) -> Response:
    del request
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


__all__: list[Any] = ["MetricsObserver", "metrics_endpoint", "watch_ledger"]
