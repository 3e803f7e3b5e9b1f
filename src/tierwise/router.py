"""The pipeline in one place: features → classifier → policy → provider → cost.

``Router.decide()`` makes the routing decision (pure and local with the default ``rules``
classifier); ``Router.run()`` also calls the chosen model and prices the result. Both are
async; :mod:`tierwise.facade` offers the lesson's blocking API on top.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any

from tierwise.classifiers import (
    CascadeClassifier,
    Classifier,
    LearnedClassifier,
    LLMClassifier,
    RulesClassifier,
)
from tierwise.config import Settings
from tierwise.errors import InputError, ProviderError
from tierwise.policy import Policy
from tierwise.pricing import PriceCatalogue
from tierwise.providers import Provider, make_provider
from tierwise.providers.base import CallSpec
from tierwise.types import (
    ClassifyInput,
    Completion,
    Decision,
    LedgerEntry,
    LedgerSink,
    RouteResult,
)


def new_request_id() -> str:
    """tierwise's own request id (also the gateway's ``x-tierwise-request-id``)."""
    return f"tw_{uuid.uuid4().hex}"


def make_classifier(settings: Settings, provider: Provider) -> Classifier:
    cfg = settings.classifier
    if cfg.kind == "rules":
        return RulesClassifier()
    if cfg.kind == "learned":
        return LearnedClassifier(settings.tier_names)
    llm = LLMClassifier(
        provider, model=cfg.llm_model, timeout_s=cfg.llm_timeout_s, max_tokens=cfg.llm_max_tokens
    )
    if cfg.kind == "llm":
        return llm
    return CascadeClassifier(
        LearnedClassifier(settings.tier_names), llm, consult_below=cfg.cascade_below
    )


class Router:
    """Decides and runs requests under one :class:`~tierwise.config.Settings`."""

    def __init__(
        self,
        settings: Settings,
        *,
        provider: Provider | None = None,
        classifier: Classifier | None = None,
        catalogue: PriceCatalogue | None = None,
        sink: LedgerSink | None = None,
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue or settings.catalogue()
        self.provider = provider or make_provider(settings)
        self.classifier = classifier or make_classifier(settings, self.provider)
        self.policy = Policy(settings, self.catalogue)
        self.sink = sink

    async def decide(
        self,
        prompt: str | ClassifyInput,
        system: str = "",
        *,
        force_tier: Any = None,
        thinking: dict[str, Any] | None = None,
    ) -> Decision:
        """Decide the tier for a prompt (or a conversation's :class:`ClassifyInput`)."""
        if isinstance(prompt, ClassifyInput):
            request = prompt
        else:
            if not isinstance(prompt, str):
                raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
            if not isinstance(system, str):
                raise InputError(f"system must be a string, got {type(system).__name__}")
            request = ClassifyInput(prompt, system)
        start = time.perf_counter()
        classification = None
        classifier_cost = Decimal(0)
        if force_tier is None:
            classification = await self.classifier.classify(request)
            if classification.usage is not None and classification.model is not None:
                priced = self.catalogue.cost(classification.usage, classification.model)
                # An unpriced classifier model is reported by the ledger; its cost is unknown,
                # so it is not added (rather than pretending it is 0 somewhere it matters).
                classifier_cost = priced.usd if priced.usd is not None else Decimal(0)
        return self.policy.decide(
            classification,
            force_tier=force_tier,
            thinking=thinking,
            decision_ms=(time.perf_counter() - start) * 1000,
            classifier_cost_usd=classifier_cost,
        )

    async def run(
        self,
        prompt: str,
        system: str = "",
        *,
        max_tokens: int = 4096,
        force_tier: Any = None,
        thinking: dict[str, Any] | None = None,
        source: str = "library",
        tags: dict[str, str] | None = None,
    ) -> RouteResult:
        """Decide, call the chosen model, price the result, and record it in the ledger sink.

        Every call is recorded exactly once, failures included (with their error type).
        """
        start = time.perf_counter()
        request_id = new_request_id()
        ts = dt.datetime.now(dt.UTC)
        decision: Decision | None = None
        upstream_ms = 0.0
        try:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise InputError(f"max_tokens must be a positive int, got {max_tokens!r}")
            decision = await self.decide(prompt, system, force_tier=force_tier, thinking=thinking)
            self._check_thinking(decision, max_tokens)
            call = CallSpec(
                model=decision.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                system=system or None,
                thinking=decision.thinking,
                output_config=decision.output_config,
            )
            upstream_start = time.perf_counter()
            try:
                completion = await self.provider.complete(call)
            finally:
                upstream_ms = (time.perf_counter() - upstream_start) * 1000
        except Exception as exc:
            self._record_failure(
                request_id, ts, exc, decision, start, upstream_ms, source, tags, prompt
            )
            raise
        result = self._price(request_id, decision, completion, start, upstream_ms, ts)
        if self.sink is not None:
            self.sink.record(
                LedgerEntry(
                    request_id=request_id,
                    ts=ts,
                    source=source,
                    status="ok",
                    tags=dict(tags or {}),
                    requested_model=None if force_tier is None else decision.model,
                    tier=result.tier,
                    model=result.model,
                    classifier=result.classifier,
                    confidence=result.confidence,
                    reason=result.routing_reason,
                    usage=result.usage,
                    cost_usd=result.model_cost,
                    classifier_cost_usd=result.classifier_cost,
                    price_version=result.price_version,
                    baseline_model=result.baseline_model,
                    baseline_cost_usd=result.cost_if_opus,
                    saved_usd=result.savings,
                    decision_ms=result.decision_ms,
                    upstream_ms=result.upstream_ms,
                    total_ms=result.latency_ms,
                    simulated=result.simulated,
                    prompt=prompt if self.settings.ledger.store_prompts else None,
                    reply=result.text if self.settings.ledger.store_prompts else None,
                )
            )
        return result

    def _price(
        self,
        request_id: str,
        decision: Decision,
        completion: Completion,
        start: float,
        upstream_ms: float,
        at: dt.datetime,
    ) -> RouteResult:
        price_model = completion.model if self.catalogue.info(completion.model) else decision.model
        money = self.catalogue.settle(
            completion.usage,
            price_model,
            self.settings.baseline_model(),
            classifier_cost_usd=decision.classifier_cost_usd,
            at=at,
        )
        return RouteResult(
            text=completion.text,
            model=completion.model,
            tier=decision.tier,
            routing_reason=decision.reason,
            confidence=decision.confidence,
            cost=money.total_usd,
            cost_if_opus=money.baseline_usd,
            savings=money.saved_usd,
            latency_ms=(time.perf_counter() - start) * 1000,
            usage=completion.usage,
            classifier=decision.classifier,
            classifier_cost=decision.classifier_cost_usd,
            model_cost=money.model_cost.usd,
            baseline_model=money.baseline_model,
            price_version=money.model_cost.price_version,
            decision_ms=decision.decision_ms,
            upstream_ms=upstream_ms,
            simulated=completion.simulated,
            stop_reason=completion.stop_reason,
            request_id=request_id,
            upstream_request_id=completion.request_id,
        )

    def _record_failure(
        self,
        request_id: str,
        ts: dt.datetime,
        exc: Exception,
        decision: Decision | None,
        start: float,
        upstream_ms: float,
        source: str,
        tags: dict[str, str] | None,
        prompt: str,
    ) -> None:
        if self.sink is None:
            return
        if isinstance(exc, ProviderError):
            error_type, status = exc.error_type or "api_error", exc.status
        elif isinstance(exc, InputError):
            error_type, status = "invalid_request_error", 400
        else:
            error_type, status = type(exc).__name__, None
        self.sink.record(
            LedgerEntry(
                request_id=request_id,
                ts=ts,
                source=source,
                status="error",
                tags=dict(tags or {}),
                tier=decision.tier if decision else None,
                model=decision.model if decision else None,
                classifier=decision.classifier if decision else None,
                confidence=decision.confidence if decision else None,
                reason=decision.reason if decision else None,
                error_type=error_type,
                http_status=status,
                classifier_cost_usd=decision.classifier_cost_usd if decision else Decimal(0),
                decision_ms=decision.decision_ms if decision else 0.0,
                upstream_ms=upstream_ms,
                total_ms=(time.perf_counter() - start) * 1000,
                simulated=self.provider.simulated,
                prompt=prompt
                if self.settings.ledger.store_prompts and isinstance(prompt, str)
                else None,
            )
        )

    def _check_thinking(self, decision: Decision, max_tokens: int) -> None:
        thinking = decision.thinking
        if thinking is None:
            return
        if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
            raise InputError(f"thinking must be a dict with a 'type', got {thinking!r}")
        kind = thinking["type"]
        info = self.catalogue.info(decision.model)
        if info is not None and kind not in info.thinking_types:
            accepted = ", ".join(info.thinking_types) or "none"
            raise InputError(
                f"thinking type {kind!r} is not accepted by {decision.model} "
                f"(tier {decision.tier}; accepted: {accepted})"
            )
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or not 1024 <= budget < max_tokens:
                raise InputError(
                    f"thinking.budget_tokens must be an int >= 1024 and < max_tokens "
                    f"({max_tokens}), got {budget!r}"
                )

    async def aclose(self) -> None:
        await self.provider.aclose()
