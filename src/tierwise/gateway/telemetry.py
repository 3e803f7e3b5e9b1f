"""Prometheus metrics for the gateway (``GET /metrics``). Money here is float and for
dashboards only; the ledger holds the exact ``Decimal`` amounts. No label carries a secret,
a prompt or a key's value (key *names* are not labels either: their number is unbounded)."""

from __future__ import annotations

import time
from collections.abc import Callable
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
    from tierwise.gateway.engine import Admission, Target
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
LEDGER_QUEUE = Gauge("tierwise_ledger_queue_depth", "Ledger entries waiting to be written")
LEDGER_DROPPED = Gauge("tierwise_ledger_dropped_total", "Ledger entries dropped on a full queue")


def observe(
    adm: Admission,
    status: str,
    target: Target | None,
    settlement: Settlement | None,
    error_type: str | None,
    upstream_ms: float = 0.0,
) -> None:
    tier = (target.tier if target else None) or "none"
    model = target.model if target else "none"
    REQUESTS.labels(adm.api, tier, model, status).inc()
    TOTAL.observe(time.perf_counter() - adm.t0)
    if upstream_ms:
        UPSTREAM.observe(upstream_ms / 1000)
    if adm.budget_event is not None:
        BUDGET.labels(adm.budget_event).inc()
    if error_type:
        ERRORS.labels(error_type).inc()
    for step in adm.fallbacks:
        FALLBACKS.labels(step.split(":", 1)[0]).inc()
    if adm.decision is not None:
        DECISION.observe(adm.decision.decision_ms / 1000)
    if settlement is not None:
        if settlement.total_usd is None:
            UNPRICED.inc()
        else:
            COST.labels(tier).inc(float(settlement.total_usd))
            if settlement.baseline_usd is not None:
                BASELINE.inc(float(settlement.baseline_usd))
            if settlement.saved_usd is not None:
                SAVED.inc(float(settlement.saved_usd))


def watch_ledger(depth: Callable[[], float], dropped: Callable[[], float]) -> None:
    LEDGER_QUEUE.set_function(depth)
    LEDGER_DROPPED.set_function(dropped)


async def metrics_endpoint(request: Request) -> Response:
    del request
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


__all__: list[Any] = ["metrics_endpoint", "observe", "watch_ledger"]
