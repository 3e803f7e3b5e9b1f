"""The gateway's routing core, shared by both API dialects.

admit  → decide the tier (auto), honour a forced tier, or pass an explicit model through;
         escalate when the input would not fit the tier's context window.
call   → send to the upstream with retries (honouring ``retry-after``, capped), then fall back
         along the tier chain on 429/529/5xx/timeouts/connection errors; models that keep
         failing are cooled down for a while.
record → one ledger entry per request, priced from the usage the upstream reported.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from tierwise import budgets as budgets_mod
from tierwise.adapt import Mode, adapt
from tierwise.config import Settings
from tierwise.errors import BudgetExceeded
from tierwise.gateway import telemetry
from tierwise.gateway.errors import GatewayError
from tierwise.gateway.shape import conversation_input
from tierwise.gateway.sse import MalformedEvent, SSEParser, StreamTracker
from tierwise.gateway.upstream import Upstream, UpstreamError, UpstreamReply
from tierwise.keys import KeyInfo
from tierwise.pricing import Settlement
from tierwise.providers.base import usage_from_api
from tierwise.router import Router
from tierwise.types import Decision, LedgerEntry, LedgerSink, Usage

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Target:
    tier: str | None
    model: str

    @property
    def label(self) -> str:
        return self.tier or self.model


@dataclass
class Admission:
    request_id: str
    ts: dt.datetime
    t0: float
    api: str
    requested_model: str
    mode: str  # "auto" | "tier" | "passthrough"
    decision: Decision | None
    targets: list[Target]
    input_tokens_estimate: int
    stream: bool
    notes: list[str] = field(default_factory=list)
    key_name: str | None = None
    # OpenAI-dialect temperature/top_p: sent only to models that accept them.
    sampling: dict[str, Any] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    recorded: bool = False
    reservation: budgets_mod.Reservation | None = None
    budget_event: str | None = None  # "downgraded" | "refused", for /metrics
    max_tokens: int = 0

    @property
    def reason(self) -> str:
        base = self.decision.reason if self.decision else "model named by the client (not routed)"
        return "; ".join([base, *self.notes])

    @property
    def classifier(self) -> str:
        return self.decision.classifier if self.decision else "none"

    @property
    def confidence(self) -> float | None:
        return self.decision.confidence if self.decision else None


@dataclass
class Attempt:
    """The upstream reply the client gets (success, or the error that ended the attempts)."""

    reply: UpstreamReply
    target: Target
    fallbacks: list[str]
    upstream_ms: float


@dataclass(frozen=True, slots=True)
class _Failure:
    """A failed attempt worth retrying: the upstream's error reply, or no reply at all."""

    label: str  # status code or error kind, as shown in x-tierwise-fallbacks
    reply: UpstreamReply | None
    error: UpstreamError | None
    retry_headers: Mapping[str, str] | None = None


class Cooldowns:
    """Consecutive failures per model; a model past the limit is avoided for a while."""

    def __init__(self, after: int, seconds: float) -> None:
        self.after = after
        self.seconds = seconds
        self._fails: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def cooled(self, model: str) -> bool:
        until = self._until.get(model)
        return until is not None and until > time.monotonic()

    def failed(self, model: str) -> None:
        count = self._fails.get(model, 0) + 1
        self._fails[model] = count
        if count >= self.after:
            self._until[model] = time.monotonic() + self.seconds

    def succeeded(self, model: str) -> None:
        self._fails.pop(model, None)
        self._until.pop(model, None)


def retry_delay(headers: Mapping[str, str] | None, attempt: int, cap_s: float) -> float:
    """``retry-after-ms`` / ``retry-after`` (seconds) if sent, capped; else jittered backoff."""
    if headers:
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = headers.get(name)
            if value:
                try:
                    seconds = float(value) * scale
                except ValueError:
                    continue
                return float(min(max(seconds, 0.0), cap_s))
    return min(0.25 * 2.0**attempt, 2.0, cap_s) * (1 - 0.25 * random.random())


class Engine:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        upstream: Upstream,
        sink: LedgerSink | None,
        budgets: budgets_mod.Budgets | None = None,
    ) -> None:
        self.settings = settings
        self.budgets = budgets
        self.router = router
        self.catalogue = router.catalogue
        self.upstream = upstream
        self.sink = sink
        gw = settings.gateway
        self.cooldowns = Cooldowns(gw.cooldown_after_failures, gw.cooldown_s)
        self._tier_models = {t.model: t.name for t in settings.tiers}
        self._order = {t.name: i for i, t in enumerate(settings.tiers)}

    # -- admission ------------------------------------------------------------------------
    async def admit(
        self, body: dict[str, Any], *, api: str, request_id: str, key: KeyInfo | None = None
    ) -> Admission:
        adm = await self._decide(body, api=api, request_id=request_id, key=key)
        if key is not None and key.budget_usd is not None and self.budgets is not None:
            self._reserve(adm, key)
        return adm

    async def _decide(
        self, body: dict[str, Any], *, api: str, request_id: str, key: KeyInfo | None
    ) -> Admission:
        model = body["model"]
        request = conversation_input(body)
        estimate = request.context_tokens or 0
        common = {
            "request_id": request_id,
            "ts": dt.datetime.now(dt.UTC),
            "t0": time.perf_counter(),
            "api": api,
            "requested_model": model,
            "input_tokens_estimate": estimate,
            "stream": bool(body.get("stream")),
            "key_name": key.name if key else None,
            "max_tokens": int(body.get("max_tokens") or 0),
        }
        if model != AUTO and model not in self._order:
            target = Target(self._tier_models.get(model), model)
            return Admission(mode="passthrough", decision=None, targets=[target], **common)
        force = None if model == AUTO else model
        decision = await self.router.decide(request, force_tier=force)
        adm = Admission(
            mode="auto" if force is None else "tier", decision=decision, targets=[], **common
        )
        chosen = self._fit(decision.tier, estimate, adm)
        adm.targets = self._plan(chosen, adm, body)
        return adm

    def _reserve(self, adm: Admission, key: KeyInfo) -> None:
        """Hold the worst-case cost against the key's budget, or downgrade, or refuse (429)."""
        assert self.budgets is not None
        outcome: budgets_mod.Admission | budgets_mod.Reservation | BudgetExceeded
        if adm.mode == "passthrough":
            model = adm.targets[0].model
            amount = budgets_mod.worst_case_cost(
                self.catalogue, model, adm.input_tokens_estimate, adm.max_tokens
            )
            if amount is None:
                raise self._refuse(adm, f"{model} has no price, so a budgeted key cannot use it")
            outcome = self.budgets.reserve(key, amount)
        else:
            outcome = budgets_mod.admit(
                self.budgets,
                key,
                [(t.name, t.model) for t in self.settings.tiers],
                adm.targets[0].tier or "",
                adm.input_tokens_estimate,
                adm.max_tokens,
                self.catalogue,
                on_exceeded=self.settings.budgets.on_exceeded,
            )
        if isinstance(outcome, BudgetExceeded):
            raise self._refuse(adm, str(outcome))
        if isinstance(outcome, budgets_mod.Admission):
            # Never fall back to a tier dearer than the one the budget was reserved for.
            limit = self._order[outcome.tier]
            adm.targets = [t for t in adm.targets if t.tier and self._order[t.tier] <= limit] or [
                Target(outcome.tier, outcome.model)
            ]
            if outcome.downgraded_from:
                adm.targets.insert(0, Target(outcome.tier, outcome.model))
                adm.targets = list(dict.fromkeys(adm.targets))
                adm.budget_event = "downgraded"
                adm.notes.append(
                    f"budget of key {key.name!r} cannot cover {outcome.downgraded_from}; "
                    f"downgraded to {outcome.tier}"
                )
            adm.reservation = outcome.reservation
        else:
            adm.reservation = outcome

    @staticmethod
    def _refuse(adm: Admission, message: str) -> GatewayError:
        adm.budget_event = "refused"
        adm.notes.append(f"budget refused: {message}")
        error = GatewayError(429, message, error_type="rate_limit_error")
        error.admission = adm
        return error

    def _fits(self, tier: str, estimate: int) -> bool:
        info = self.catalogue.info(self.settings.tier(tier).model)
        return info is None or estimate <= info.context_window

    def _fit(self, tier: str, estimate: int, adm: Admission) -> str:
        if self._fits(tier, estimate):
            return tier
        names = self.settings.tier_names
        for candidate in names[self._order[tier] + 1 :]:
            if self._fits(candidate, estimate):
                window = self.catalogue.info(self.settings.tier(tier).model)
                limit = window.context_window if window else 0
                adm.notes.append(
                    f"escalated from {tier} to {candidate}: ~{estimate} input tokens exceed "
                    f"{tier}'s {limit}-token context window"
                )
                return candidate
        adm.notes.append(f"~{estimate} input tokens may exceed every tier's context window")
        return tier

    def _chain(self, tier: str) -> list[str]:
        configured = self.settings.gateway.fallback_chain.get(tier)
        if configured is not None:
            return [t for t in configured if t in self._order and t != tier]
        names = self.settings.tier_names
        i = self._order[tier]
        chain = []
        if i > 0:
            chain.append(names[i - 1])
        if i + 1 < len(names):
            chain.append(names[i + 1])
        return chain

    def _plan(self, chosen: str, adm: Admission, body: dict[str, Any]) -> list[Target]:
        tiers = [chosen]
        if adm.mode == "auto":
            thinking = body.get("thinking")
            kind = thinking.get("type") if isinstance(thinking, dict) else None
            for name in self._chain(chosen):
                info = self.catalogue.info(self.settings.tier(name).model)
                if not self._fits(name, adm.input_tokens_estimate):
                    continue
                if kind and info is not None and kind not in info.thinking_types:
                    continue
                tiers.append(name)
        targets = [Target(t, self.settings.tier(t).model) for t in tiers]
        fresh = [t for t in targets if not self.cooldowns.cooled(t.model)]
        cooled = [t for t in targets if self.cooldowns.cooled(t.model)]
        if cooled and fresh:
            adm.notes.append("cooling down: " + ", ".join(t.label for t in cooled))
        return fresh + cooled

    # -- the upstream call ----------------------------------------------------------------
    def body_for(self, body: dict[str, Any], target: Target, adm: Admission) -> bytes:
        mode: Mode = "tier" if adm.mode == "tier" else "auto"
        if adm.mode == "passthrough":
            mode = "passthrough"
        tier = self.settings.tier(target.tier) if target.tier is not None else None
        adapted = adapt(
            body,
            target.model,
            self.catalogue.info(target.model),
            mode=mode,
            tier=tier,
            api_version=self.settings.gateway.upstream_anthropic_version,
            sampling=adm.sampling,
        )
        try:
            return orjson.dumps(adapted.body)
        except orjson.JSONEncodeError as exc:  # e.g. nesting deeper than orjson writes
            raise GatewayError(400, f"request body cannot be forwarded: {exc}") from exc

    async def call(
        self,
        adm: Admission,
        body: dict[str, Any],
        headers: Mapping[str, str],
        *,
        path: str = "/v1/messages",
        stream: bool = False,
    ) -> Attempt:
        """Try each target in turn, each up to ``max_attempts`` times, within the deadline.

        Returns the reply the client gets: a success, or a non-retryable upstream error, or
        the last upstream error once everything is exhausted. Raises :class:`GatewayError`
        when no upstream ever answered (connection errors, timeouts)."""
        gw = self.settings.gateway
        deadline = adm.t0 + gw.upstream_timeout_s
        started = time.perf_counter()
        fallbacks: list[str] = []
        last: _Failure | None = None
        target = adm.targets[0]
        for target in adm.targets:
            payload = self.body_for(body, target, adm)
            for attempt in range(gw.max_attempts):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    last = _Failure(
                        "timeout_error", None, UpstreamError("timeout_error", "deadline exceeded")
                    )
                    break
                timeout_s = min(remaining, gw.attempt_timeout_s)
                result = await self._attempt(path, payload, headers, stream, timeout_s)
                if isinstance(result, UpstreamReply):
                    if result.status < 400:
                        self.cooldowns.succeeded(target.model)
                    return Attempt(
                        result, target, fallbacks, (time.perf_counter() - started) * 1000
                    )
                last = result
                self.cooldowns.failed(target.model)
                if attempt + 1 < gw.max_attempts:
                    delay = retry_delay(result.retry_headers, attempt, gw.retry_after_cap_s)
                    if delay >= deadline - time.perf_counter():
                        break
                    await asyncio.sleep(delay)
            fallbacks.append(f"{target.label}:{last.label if last else 'timeout_error'}")
        ms = (time.perf_counter() - started) * 1000
        if last is not None and last.reply is not None:
            return Attempt(last.reply, target, fallbacks, ms)
        kind = last.error.kind if last and last.error else "timeout_error"
        error = GatewayError(
            504 if kind == "timeout_error" else 502,
            f"upstream unavailable after {len(fallbacks)} tier(s) "
            f"({', '.join(fallbacks)}): {last.error if last else 'deadline exceeded'}",
            error_type="timeout_error" if kind == "timeout_error" else "api_error",
        )
        error.admission = adm
        adm.fallbacks = fallbacks
        raise error

    async def _attempt(
        self,
        path: str,
        payload: bytes,
        headers: Mapping[str, str],
        stream: bool,
        timeout_s: float,
    ) -> UpstreamReply | _Failure:
        """One upstream attempt: the final reply, or a failure worth another attempt."""
        try:
            reply = await self.upstream.post(
                path, payload, headers, stream=stream, timeout_s=timeout_s
            )
        except UpstreamError as exc:
            return _Failure(exc.kind, None, exc)
        if reply.status < 400:
            if stream:
                problem = await self._probe(reply, timeout_s)
                if problem is not None:
                    # Nothing reached the client yet: an ordinary failed attempt.
                    return _Failure("stream_error", None, UpstreamError("stream_error", problem))
            return reply
        if reply.status in RETRYABLE_STATUSES and reply.headers.get("x-should-retry") != "false":
            return _Failure(str(reply.status), reply, None, reply.headers)
        return reply

    @staticmethod
    async def _probe(reply: UpstreamReply, timeout_s: float) -> str | None:
        """Read a stream until its first content (or its end) before anything goes to the
        client, so that a stream failing at its start is retried or falls back like any
        other failure. Returns why it failed, or None (the read bytes are put back)."""
        assert reply.chunks is not None
        source = reply.chunks.__aiter__()
        parser, tracker = SSEParser(), StreamTracker()
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    chunk = await anext(source)
                    seen.append(chunk)
                    for name, data in parser.feed(chunk):
                        tracker.observe(name, data)
                        if tracker.error is not None:
                            reply.close()
                            kind = tracker.error.get("type")
                            return f"error event at the start of the stream: {kind}"
                        if name in ("content_block_delta", "message_stop"):
                            reply.chunks = _chain(seen, source)
                            return None
        except StopAsyncIteration:
            reason = "stream ended before any content"
        except MalformedEvent as exc:
            reason = f"malformed event at the start of the stream: {exc}"
        except UpstreamError as exc:
            reason = f"stream broke before any content: {exc}"
        except TimeoutError:
            reason = f"no content within {timeout_s:g}s"
        reply.close()
        return reason

    # -- the ledger -----------------------------------------------------------------------
    def record_answer(
        self, adm: Admission, attempt: Attempt, message: Mapping[str, Any]
    ) -> Settlement | None:
        """A complete non-streaming answer (a Messages API ``message``)."""
        return self.record(
            adm,
            status="ok",
            target=attempt.target,
            usage_raw=message.get("usage") or {},
            model=message.get("model"),
            fallbacks=attempt.fallbacks,
            http_status=200,
            upstream_ms=attempt.upstream_ms,
        )

    def record_upstream_error(self, adm: Admission, attempt: Attempt, error_type: str) -> None:
        """The upstream's error reply that the client gets."""
        self.record(
            adm,
            status="error",
            target=attempt.target,
            fallbacks=attempt.fallbacks,
            error_type=error_type,
            http_status=attempt.reply.status,
            upstream_ms=attempt.upstream_ms,
        )

    def stream_recorder(
        self, adm: Admission, attempt: Attempt, tracker: StreamTracker
    ) -> Callable[[str | None], None]:
        """The callback a relayed stream calls once when it ends (None: it completed)."""

        def finished(outcome: str | None) -> None:
            attempt.reply.close()
            self.record(
                adm,
                status="ok" if outcome is None else "error",
                target=attempt.target,
                usage_raw=tracker.usage or None,
                model=tracker.model,
                fallbacks=attempt.fallbacks,
                error_type=outcome,
                http_status=200,
                upstream_ms=attempt.upstream_ms,
            )

        return finished

    def record_rejected(
        self, request_id: str, api: str, exc: GatewayError, key_name: str | None
    ) -> None:
        """A request that ended in an error before or instead of an upstream reply."""
        adm: Admission | None = exc.admission
        if adm is None:
            adm = Admission(
                request_id=request_id,
                ts=dt.datetime.now(dt.UTC),
                t0=time.perf_counter(),
                api=api,
                requested_model="",
                mode="rejected",
                decision=None,
                targets=[],
                input_tokens_estimate=0,
                stream=False,
                key_name=key_name,
            )
        if adm.recorded:
            return
        self.record(
            adm,
            status="error",
            target=adm.targets[-1] if adm.targets and adm.fallbacks else None,
            fallbacks=adm.fallbacks,
            error_type=exc.error_type,
            http_status=exc.status,
        )

    def settle(self, usage: Usage, target: Target, adm: Admission, model: str | None) -> Settlement:
        price_model = model if model and self.catalogue.info(model) else target.model
        classifier_cost = adm.decision.classifier_cost_usd if adm.decision else Decimal(0)
        return self.catalogue.settle(
            usage,
            price_model,
            self.settings.baseline_model(),
            classifier_cost_usd=classifier_cost,
            at=adm.ts,
        )

    def record(
        self,
        adm: Admission,
        *,
        status: str,
        target: Target | None,
        usage_raw: Mapping[str, Any] | None = None,
        model: str | None = None,
        fallbacks: list[str] | None = None,
        error_type: str | None = None,
        http_status: int | None = None,
        upstream_ms: float = 0.0,
        settlement: Settlement | None = None,
    ) -> Settlement | None:
        adm.recorded = True
        usage = usage_from_api(dict(usage_raw)) if usage_raw else Usage()
        if settlement is None and target is not None and usage_raw:
            settlement = self.settle(usage, target, adm, model)
        if adm.reservation is not None and self.budgets is not None:
            if settlement is not None:
                self.budgets.settle(adm.reservation, settlement.total_usd)
            else:
                self.budgets.release(adm.reservation)
        telemetry.observe(adm, status, target, settlement, error_type, upstream_ms)
        if self.sink is None:
            return settlement
        d = adm.decision
        self.sink.record(
            LedgerEntry(
                request_id=adm.request_id,
                ts=adm.ts,
                source="gateway",
                status=status,
                api=adm.api,
                key_name=adm.key_name,
                requested_model=adm.requested_model,
                tier=target.tier if target else (d.tier if d else None),
                model=model or (target.model if target else None),
                classifier=adm.classifier,
                confidence=adm.confidence,
                reason=adm.reason,
                fallbacks=tuple(fallbacks or ()),
                error_type=error_type,
                http_status=http_status,
                usage=usage,
                cost_usd=settlement.model_cost.usd if settlement else None,
                classifier_cost_usd=d.classifier_cost_usd if d else Decimal(0),
                price_version=settlement.model_cost.price_version if settlement else None,
                baseline_model=settlement.baseline_model if settlement else None,
                baseline_cost_usd=settlement.baseline_usd if settlement else None,
                saved_usd=settlement.saved_usd if settlement else None,
                decision_ms=d.decision_ms if d else 0.0,
                upstream_ms=upstream_ms,
                total_ms=(time.perf_counter() - adm.t0) * 1000,
                streaming=adm.stream,
                simulated=self.upstream.simulated,
            )
        )
        return settlement
