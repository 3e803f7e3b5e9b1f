"""The pipeline in one place: features → classifier → policy → provider → cost.

``Router.decide()`` makes the routing decision (pure and local with the default ``rules``
classifier); ``Router.run()`` also calls the chosen model and prices the result. Both are
async; :mod:`tierwise.facade` offers the lesson's blocking API on top.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any, NoReturn

from tierwise.accounting import UsageBounds, usage_to_api
from tierwise.adapt import adapt
from tierwise.classifiers import (
    CascadeClassifier,
    Classifier,
    LearnedClassifier,
    LLMClassifier,
    RulesClassifier,
)
from tierwise.config import Settings
from tierwise.errors import InputError, ProviderError
from tierwise.lifecycle import Books, Outcome, RequestLife, Target
from tierwise.policy import Policy
from tierwise.pricing import PriceCatalogue, Settlement
from tierwise.providers import Provider, make_provider
from tierwise.providers.base import CallSpec
from tierwise.types import (
    ClassifyInput,
    Completion,
    Decision,
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
        return LearnedClassifier.from_settings(settings)
    llm = LLMClassifier(
        provider, model=cfg.llm_model, timeout_s=cfg.llm_timeout_s, max_tokens=cfg.llm_max_tokens
    )
    if cfg.kind == "llm":
        return llm
    return CascadeClassifier(
        LearnedClassifier.from_settings(settings), llm, consult_below=cfg.cascade_below
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

    @property
    def books(self) -> Books:
        """What closing a request needs (prices, baseline, the ledger sink)."""
        return Books(
            catalogue=self.catalogue,
            baseline_model=self.settings.baseline_model(),
            sink=self.sink,
            simulated=self.provider.simulated,
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

        Every call is recorded exactly once, failures included (with their error type): the
        call is one :class:`~tierwise.lifecycle.RequestLife`.
        """
        life = RequestLife(self.books, request_id=new_request_id(), api=None, source=source)
        life.tags = dict(tags or {})
        store = self.settings.ledger.store_prompts
        life.prompt = prompt if store and isinstance(prompt, str) else None
        async with life:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                self._invalid(life, f"max_tokens must be a positive int, got {max_tokens!r}")
            try:
                decision = await self.decide(
                    prompt, system, force_tier=force_tier, thinking=thinking
                )
                self._check_thinking(decision, max_tokens)
            except InputError as exc:
                self._invalid(life, str(exc), exc)
            target = Target(decision.tier, decision.model)
            life.admitted(decision, "auto" if force_tier is None else "tier", target)
            life.requested_model = None if force_tier is None else decision.model
            life.bounds = UsageBounds(None, max_tokens)
            call = self._call(decision, prompt, system, max_tokens, life)
            upstream_start = time.perf_counter()
            try:
                completion = await self.provider.complete(call)
            except ProviderError as exc:
                life.ended(
                    status="error",
                    target=target,
                    error_type=exc.error_type or "api_error",
                    http_status=exc.status,
                    upstream_ms=(time.perf_counter() - upstream_start) * 1000,
                    billed=False,
                )
                raise
            upstream_ms = (time.perf_counter() - upstream_start) * 1000
            money = life.ended(
                status="ok",
                target=target,
                raw_usage=usage_to_api(completion.usage),
                model=completion.model,
                upstream_ms=upstream_ms,
                stop_reason=completion.stop_reason,
            )
            life.reply = completion.text if store else None
        outcome = life.close()
        return self._result(outcome, decision, completion, money)

    def _call(
        self, decision: Decision, prompt: str, system: str, max_tokens: int, life: RequestLife
    ) -> CallSpec:
        """The call for the decided model, made valid for it by :func:`tierwise.adapt.adapt`
        (the same code the gateway uses); what it changed goes to the ledger row."""
        body: dict[str, Any] = {
            "model": decision.model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        if decision.thinking is not None:
            body["thinking"] = decision.thinking
        if decision.output_config is not None:
            body["output_config"] = decision.output_config
        adapted = adapt(
            body,
            decision.model,
            self.catalogue.info(decision.model),
            mode="passthrough",  # the policy already applied the tier's defaults
        )
        life.adapted = adapted.changes
        out = adapted.body
        return CallSpec(
            model=decision.model,
            messages=out["messages"],
            max_tokens=out["max_tokens"],
            system=system or None,
            thinking=out.get("thinking"),
            output_config=out.get("output_config"),
        )

    @staticmethod
    def _invalid(life: RequestLife, message: str, cause: Exception | None = None) -> NoReturn:
        life.ended(
            status="error",
            target=None,
            error_type="invalid_request_error",
            http_status=400,
            billed=False,
        )
        raise InputError(message) from cause

    def _result(
        self,
        outcome: Outcome,
        decision: Decision,
        completion: Completion,
        money: Settlement | None,
    ) -> RouteResult:
        baseline = self.settings.baseline_model()
        return RouteResult(
            text=completion.text,
            model=completion.model,
            tier=decision.tier,
            routing_reason=decision.reason,
            confidence=decision.confidence,
            cost=money.total_usd if money else None,
            cost_if_opus=money.baseline_usd if money else None,
            savings=money.saved_usd if money else None,
            latency_ms=outcome.total_ms,
            usage=outcome.usage,
            classifier=decision.classifier,
            classifier_cost=decision.classifier_cost_usd,
            model_cost=money.model_cost.usd if money else None,
            baseline_model=money.baseline_model if money else baseline,
            price_version=money.model_cost.price_version if money else None,
            decision_ms=decision.decision_ms,
            upstream_ms=outcome.upstream_ms,
            simulated=completion.simulated,
            stop_reason=completion.stop_reason,
            request_id=outcome.request_id,
            upstream_request_id=completion.request_id,
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
