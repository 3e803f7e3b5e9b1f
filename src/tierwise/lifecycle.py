"""One request's life, the same for the library and both gateway dialects::

    admit (decide, plan, reserve) → call → settle → record

:class:`RequestLife` is that life as one object. Whoever starts a request opens one and closes
it exactly once, on every path: success, upstream error, bad upstream data, client disconnect,
internal error, cancellation. Closing settles the budget hold (the real cost, never more than
was held) or releases it, and hands one :class:`Outcome` to the ledger and to the observers
(``/metrics``, sessions, shadow evaluation): they read what happened from that plain record and
never import the code that served the request.

Closing is synchronous and never raises, so it is safe in ``finally`` blocks, in stream
generators and while a task is being cancelled; budget settlements that need the network are
queued by the budgets and applied in the background.

    async with RequestLife(books, request_id=..., api="messages", key=key) as life:
        ...                        # decide; life.admitted(decision, mode); life.held(reservation)
        life.ended(status="ok", target=target, raw_usage=message["usage"], ...)
    # exit: settled and recorded; an exception escaping the block is recorded as the error
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol

from tierwise.accounting import (
    BadUsage,
    MeasuredUsage,
    UsageBounds,
    ledger_entry,
    measure_usage,
    settle,
)
from tierwise.budgets import Budgets, Reservation
from tierwise.pricing import PriceCatalogue, Settlement
from tierwise.types import Decision, LedgerEntry, LedgerSink, Usage

log = logging.getLogger("tierwise.lifecycle")


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt goes: a tier (None for a model named by the client) and its model."""

    tier: str | None
    model: str

    @property
    def label(self) -> str:
        return self.tier or self.model


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one request: the ledger row and every observer read this."""

    request_id: str
    ts: dt.datetime
    source: str  # "library" | "cli" | "gateway"
    api: str | None
    key_name: str | None
    requested_model: str | None
    mode: str  # "auto" | "tier" | "passthrough" | "rejected" (ended before a decision)
    decision: Decision | None
    status: str  # "ok" | "error"
    target: Target | None
    model: str | None
    usage: Usage
    usage_flags: tuple[str, ...]
    settlement: Settlement | None
    charged_usd: Decimal | None  # what the key's budget was charged (None: no budget)
    fallbacks: tuple[str, ...]
    error_type: str | None
    http_status: int | None
    notes: tuple[str, ...]
    adapted: tuple[str, ...]
    budget_event: str | None  # "downgraded" | "refused" | "unavailable"
    stop_reason: str | None
    decision_ms: float
    upstream_ms: float
    total_ms: float
    stream: bool
    simulated: bool
    tags: Mapping[str, str] = field(default_factory=dict)
    prompt: str | None = None
    reply: str | None = None
    session: Mapping[str, Any] | None = None  # session_id, session_rule, session_shape
    # Kept in memory only for requests an observer asked to capture (shadow evaluation):
    # the Messages body routing decided on and the answer's text. Never logged or stored here.
    request_body: Mapping[str, Any] | None = None
    answer_text: str | None = None

    @property
    def reason(self) -> str:
        base = self.decision.reason if self.decision else "model named by the client (not routed)"
        return "; ".join([base, *self.notes])

    def entry(self) -> LedgerEntry:
        """This outcome as the ledger row (built in :mod:`tierwise.accounting`)."""
        return ledger_entry(self)


class Observer(Protocol):
    """Told about every finished request (must be quick and must not block)."""

    def on_outcome(self, outcome: Outcome) -> None: ...


class Capture(Protocol):
    """Asked once per routed request, after the decision: keep its body and answer text in
    memory for the observers (shadow evaluation samples this way)? Must be quick."""

    def wants(self, life: RequestLife) -> bool: ...


@dataclass
class Books:
    """What closing a request needs: prices, the baseline, budgets, the ledger, observers."""

    catalogue: PriceCatalogue
    baseline_model: str
    budgets: Budgets | None = None
    sink: LedgerSink | None = None
    observers: list[Observer] = field(default_factory=list)
    simulated: bool = False
    capture: Capture | None = None


@dataclass
class _End:
    status: str
    target: Target | None
    measured: MeasuredUsage | None
    settlement: Settlement | None
    model: str | None
    error_type: str | None
    http_status: int | None
    fallbacks: tuple[str, ...]
    upstream_ms: float
    stop_reason: str | None
    usage_known: bool


def _error_of(exc: BaseException) -> tuple[str, int | None]:
    """(error type, HTTP status) of an exception that ended a request."""
    status = getattr(exc, "status", None)
    kind = getattr(exc, "error_type", None)
    if isinstance(kind, str) and (status is None or isinstance(status, int)):
        return kind, status
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "client_disconnected", 499
    if type(exc).__name__ == "ClientDisconnected":
        return "client_disconnected", 499
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "interrupted", None
    return "internal_error", 500


class RequestLife:
    """One request from admission to its ledger row. Set what happened with :meth:`admitted`,
    :meth:`held`, :meth:`ended`; :meth:`close` (or leaving ``async with``) finishes it once."""

    def __init__(
        self,
        books: Books,
        *,
        request_id: str,
        api: str | None,
        source: str = "gateway",
        key_name: str | None = None,
        requested_model: str | None = None,
        stream: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.books = books
        self.request_id = request_id
        self.api = api
        self.source = source
        self.key_name = key_name
        self.requested_model = requested_model
        self.stream = stream
        self.tags = dict(tags or {})
        self.ts = dt.datetime.now(dt.UTC)
        self.t0 = time.perf_counter()
        self.mode = "rejected"
        self.decision: Decision | None = None
        self.notes: list[str] = []
        self.adapted: tuple[str, ...] = ()
        self.reservation: Reservation | None = None
        self.budget_event: str | None = None
        self.bounds = UsageBounds()
        self.planned: Target | None = None
        self.prompt: str | None = None
        self.reply: str | None = None
        self._end: _End | None = None
        self._outcome: Outcome | None = None
        self.silent = False  # not a model request (count_tokens): no ledger row, no observers
        self.session: dict[str, Any] | None = None  # session_id, session_rule, session_shape
        self.baseline_usage: Usage | None = None  # the baseline's own usage (sessions)
        self.request_body: Mapping[str, Any] | None = None  # captured (see Books.capture)
        self.answer_text: str | None = None
        self.store_reply = False  # ledger.store_prompts: the answer's text goes in the row
        self._measured: tuple[Any, UsageBounds, MeasuredUsage] | None = None

    # -- admission ----------------------------------------------------------------------
    def admitted(self, decision: Decision | None, mode: str, planned: Target | None) -> None:
        self.decision = decision
        self.mode = mode
        self.planned = planned

    def held(self, reservation: Reservation) -> None:
        self.reservation = reservation

    def maybe_capture(self, body: Mapping[str, Any]) -> None:
        """Keep ``body`` (and later the answer's text) if the books' capture asks for it."""
        capture = self.books.capture
        if capture is not None and not self.silent and capture.wants(self):
            self.request_body = body

    @property
    def capturing(self) -> bool:
        return self.request_body is not None

    @property
    def closed(self) -> bool:
        return self._outcome is not None

    def recorded_usage(self) -> Usage | None:
        """The usage as it will be recorded (checked and clamped), once :meth:`ended` ran."""
        end = self._end
        return end.measured.usage if end is not None and end.measured is not None else None

    @property
    def settlement(self) -> Settlement | None:
        """The settlement made by :meth:`ended` (rebased when a session priced its baseline)."""
        return self._end.settlement if self._end is not None else None

    @property
    def failed(self) -> bool:
        """True once :meth:`ended` said (or found) that the request failed."""
        return self._end is not None and self._end.status != "ok"

    # -- the end ------------------------------------------------------------------------
    def ended(
        self,
        *,
        status: str,
        target: Target | None,
        raw_usage: Any = None,
        model: str | None = None,
        error_type: str | None = None,
        http_status: int | None = None,
        fallbacks: Sequence[str] = (),
        upstream_ms: float = 0.0,
        stop_reason: str | None = None,
        billed: bool = True,
    ) -> Settlement | None:
        """Say how the request ended (the last call wins until :meth:`close`).

        ``raw_usage`` is the upstream's ``usage`` object (None when there was no billed reply,
        e.g. an upstream error status). It is checked and clamped here; if it is not valid,
        the request is an error (``bad_upstream_usage``) whose cost is unknown, and the budget
        keeps the whole hold. Raises nothing; returns the settlement (None when unpriced or
        nothing was billed).
        """
        measured: MeasuredUsage | None = None
        usage_known = True
        if raw_usage is not None:
            try:
                measured = self.measure(raw_usage)
            except BadUsage as exc:
                measured = MeasuredUsage(Usage(), (f"usage unknown: {exc}",))
                usage_known = False
                status, error_type = "error", error_type or "bad_upstream_usage"
                http_status = http_status or 502
        elif billed:
            measured = MeasuredUsage(
                Usage(), ("usage unknown: the upstream's reply did not say what it billed",)
            )
            usage_known = False
        settlement = None
        if measured is not None and usage_known and target is not None:
            classifier = self.decision.classifier_cost_usd if self.decision else Decimal(0)
            settlement = settle(
                self.books.catalogue,
                measured.usage,
                model=model,
                planned_model=target.model,
                baseline_model=self.books.baseline_model,
                classifier_cost_usd=classifier,
                at=self.ts,
            )
            settlement = self._rebased(settlement)
        self._end = _End(
            status=status,
            target=target,
            measured=measured,
            settlement=settlement,
            model=model,
            error_type=error_type,
            http_status=http_status,
            fallbacks=tuple(fallbacks),
            upstream_ms=upstream_ms,
            stop_reason=stop_reason,
            usage_known=usage_known,
        )
        return settlement

    def measure(self, raw_usage: Any) -> MeasuredUsage:
        """``raw_usage`` checked and clamped to this request's bounds
        (:func:`~tierwise.accounting.measure_usage`; raises :class:`BadUsage`), measured once
        for the same object."""
        memo = self._measured
        if memo is not None and memo[0] is raw_usage and memo[1] == self.bounds:
            return memo[2]
        measured = measure_usage(raw_usage, self.bounds)
        self._measured = (raw_usage, self.bounds, measured)
        return measured

    def rebase(self, baseline_usage: Usage) -> None:
        """Price the baseline on ``baseline_usage`` instead of this request's own usage (a
        session's baseline: the baseline model with its own cache history). Applies to the
        settlement already made, or to the one :meth:`ended` makes later."""
        self.baseline_usage = baseline_usage
        end = self._end
        if end is not None and end.settlement is not None:
            if end.measured is not None and end.measured.usage == baseline_usage:
                return  # the baseline was priced on this very usage already
            end.settlement = self._rebased(end.settlement)

    def _rebased(self, s: Settlement) -> Settlement:
        if self.baseline_usage is None:
            return s
        baseline = self.books.catalogue.cost(self.baseline_usage, s.baseline_model, self.ts).usd
        saved = None if baseline is None or s.total_usd is None else baseline - s.total_usd
        return Settlement(s.model_cost, s.baseline_model, baseline, s.total_usd, saved)

    def close(self, exc: BaseException | None = None) -> Outcome:
        """Settle and record, once. Later calls return the same outcome."""
        if self._outcome is not None:
            return self._outcome
        end = self._end
        if end is None or (exc is not None and end.status == "ok"):
            kind, status = _error_of(exc) if exc is not None else ("internal_error", 500)
            if exc is None:
                log.error("request %s closed without an outcome", self.request_id)
            base = end
            end = _End(
                status="error",
                target=base.target if base else None,
                measured=base.measured if base else None,
                settlement=base.settlement if base else None,
                model=base.model if base else None,
                error_type=kind,
                http_status=status,
                fallbacks=base.fallbacks if base else (),
                upstream_ms=base.upstream_ms if base else 0.0,
                stop_reason=base.stop_reason if base else None,
                usage_known=base.usage_known if base else True,
            )
        charged = self._settle_budget(end)
        d = self.decision
        measured = end.measured or MeasuredUsage(Usage())
        outcome = Outcome(
            request_id=self.request_id,
            ts=self.ts,
            source=self.source,
            api=self.api,
            key_name=self.key_name,
            requested_model=self.requested_model,
            mode=self.mode,
            decision=d,
            status=end.status,
            target=end.target,
            model=end.model,
            usage=measured.usage,
            usage_flags=measured.flags,
            settlement=end.settlement,
            charged_usd=charged,
            fallbacks=end.fallbacks,
            error_type=end.error_type,
            http_status=end.http_status,
            notes=tuple(self.notes),
            adapted=self.adapted,
            budget_event=self.budget_event,
            stop_reason=end.stop_reason,
            decision_ms=d.decision_ms if d else 0.0,
            upstream_ms=end.upstream_ms,
            total_ms=(time.perf_counter() - self.t0) * 1000,
            stream=self.stream,
            simulated=self.books.simulated,
            tags=self.tags,
            prompt=self.prompt,
            reply=self.answer_text if self.store_reply and self.reply is None else self.reply,
            session=self.session,
            request_body=self.request_body,
            answer_text=self.answer_text,
        )
        self._outcome = outcome
        self._publish(outcome)
        return outcome

    def _settle_budget(self, end: _End) -> Decimal | None:
        reservation, budgets = self.reservation, self.books.budgets
        if reservation is None or budgets is None:
            return None
        if end.settlement is not None and end.settlement.total_usd is not None:
            # Never more than was held: usage was clamped to the request's bounds, so the
            # cost is within the hold; min() only guards the invariant.
            charged = min(end.settlement.total_usd, reservation.amount_usd)
            if charged < end.settlement.total_usd:
                log.error(
                    "request %s cost $%s, more than its $%s hold: charged the hold",
                    self.request_id,
                    end.settlement.total_usd,
                    reservation.amount_usd,
                )
        elif end.measured is not None and end.usage_known and end.target is not None:
            charged = reservation.amount_usd  # billed on an unpriced model: keep the hold
        elif not end.usage_known:
            charged = reservation.amount_usd  # billed, usage unknown: keep the whole hold
        else:
            budgets.release(reservation)  # nothing billed
            return Decimal(0)
        budgets.settle(reservation, charged)
        return charged

    def _publish(self, outcome: Outcome) -> None:
        if self.silent:
            return
        sink = self.books.sink
        if sink is not None:
            try:
                sink.record(outcome.entry())
            except Exception:  # the sink is write-behind and must not fail; never lose quietly
                log.exception("ledger: could not queue request %s", outcome.request_id)
        for observer in self.books.observers:
            try:
                observer.on_outcome(outcome)
            except Exception:
                log.exception("observer %r failed on request %s", observer, outcome.request_id)

    # -- context manager ----------------------------------------------------------------
    async def __aenter__(self) -> RequestLife:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.detached or exc is not None:
            self.close(exc)

    detached = False

    def detach(self) -> RequestLife:
        """Hand the request to whoever finishes it later (a stream relay), which must call
        :meth:`close`; leaving ``async with`` then no longer closes it (unless by an error)."""
        self.detached = True
        return self
