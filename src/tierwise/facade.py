"""The lesson's public API, working: ``ModelTier``, ``RoutingDecision``, ``TaskClassifier``,
``ModelRouter``. Blocking methods over the async core.

The async core runs on one private event-loop thread per object, so the same ``ModelRouter``
can be called from many threads at once (and from inside a running event loop, such as a
notebook), and its SDK client keeps one connection pool.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from tierwise import config as config_mod
from tierwise.classifiers import Classifier
from tierwise.config import Settings
from tierwise.metrics import RouterMetrics
from tierwise.providers import Provider
from tierwise.router import Router
from tierwise.types import RouteResult

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

T = TypeVar("T")


class ModelTier(StrEnum):
    """The lesson's three tiers. Values are tier names (compare equal to plain strings);
    ``.model_id`` gives the model of the embedded default configuration."""

    HAIKU = "haiku"
    SONNET = "sonnet"
    OPUS = "opus"

    @property
    def model_id(self) -> str:
        return {
            "haiku": "claude-haiku-4-5",
            "sonnet": "claude-sonnet-4-6",
            "opus": "claude-opus-4-6",
        }[self.value]


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The lesson's decision record. ``tier`` is the tier name (``ModelTier`` for the three
    default tiers); ``estimated_cost_ratio`` is this tier's price relative to the baseline
    model, from the price catalogue (None if either is unpriced)."""

    tier: str
    confidence: float
    reasoning: str
    estimated_cost_ratio: Decimal | None
    model: str = ""
    classifier: str = ""


class _LoopThread:
    """An event loop on a daemon thread; ``run`` submits a coroutine and waits for it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tierwise-loop", daemon=True
        )
        self._thread.start()
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this router is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self, final: Coroutine[Any, Any, Any] | None = None) -> None:
        if self._closed:
            if final is not None:
                final.close()
            return
        if final is not None:
            asyncio.run_coroutine_threadsafe(final, self._loop).result(timeout=10)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _tier_name(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _as_tier(value: str) -> str:
    try:
        return ModelTier(value)
    except ValueError:
        return value


class _Blocking:
    """Shared plumbing: settings, a router, a loop thread, and closing."""

    def __init__(
        self,
        settings: Settings | None,
        provider: Provider | None,
        classifier: Classifier | None,
        **overrides: Any,
    ) -> None:
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if settings is None:
            settings = config_mod.load(**overrides)
        elif overrides:
            settings = config_mod.revalidate(settings, **overrides)
        self.settings = settings
        # The ledger: every request this object routes is recorded once, in the same database
        # `tierwise report` reads (imported here so `import tierwise` stays light).
        self.ledger: Ledger | None = None
        if settings.ledger.enabled:
            from tierwise.ledger import open_ledger

            self.ledger = open_ledger(settings)
        self._router = Router(
            self.settings, provider=provider, classifier=classifier, sink=self.ledger
        )
        self._loop = _LoopThread()
        atexit.register(self.close)

    @property
    def router(self) -> Router:
        return self._router

    def close(self) -> None:
        """Release the upstream connection pool and the loop thread, and write everything the
        ledger still holds (idempotent)."""
        try:
            self._loop.close(self._router.aclose())
        finally:
            if self.ledger is not None:
                self.ledger.close()
            atexit.unregister(self.close)

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TaskClassifier(_Blocking):
    """Decides a request's tier without calling the model that would answer it."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        provider: Provider | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(settings, provider, classifier)

    def classify(self, prompt: str, system: str = "", override_tier: Any = None) -> RoutingDecision:
        decision = self._loop.run(self._router.decide(prompt, system, force_tier=override_tier))
        return RoutingDecision(
            tier=_as_tier(decision.tier),
            confidence=decision.confidence,
            reasoning=decision.reason,
            estimated_cost_ratio=decision.estimated_cost_ratio,
            model=decision.model,
            classifier=decision.classifier,
        )


class ModelRouter(_Blocking):
    """The lesson's router: classify, call the chosen tier, track cost and savings.

    ``default_tier`` answers when the classifier's confidence is below
    ``confidence_threshold``; both come from the configuration when not given (the embedded
    defaults are the lesson's: ``ModelTier.SONNET`` and 0.7). Without ``ANTHROPIC_API_KEY``
    the simulated provider answers (results say ``simulated=True``).
    """

    def __init__(
        self,
        default_tier: Any = None,
        confidence_threshold: float | None = None,
        *,
        settings: Settings | None = None,
        provider: Provider | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(
            settings,
            provider,
            classifier,
            default_tier=None
            if default_tier is None
            else str(getattr(default_tier, "value", default_tier)),
            confidence_threshold=confidence_threshold,
        )
        baseline = self.settings.baseline_model()
        top = self.settings.top_tier
        label = top.name.capitalize() if baseline == top.model else baseline
        self.metrics = RouterMetrics(tier_order=self.settings.tier_names, baseline_label=label)

    def route(
        self,
        prompt: str,
        system: str = "",
        max_tokens: int = 4096,
        force_tier: Any = None,
        thinking: dict[str, Any] | None = None,
    ) -> RouteResult:
        try:
            result = self._loop.run(
                self._router.run(
                    prompt, system, max_tokens=max_tokens, force_tier=force_tier, thinking=thinking
                )
            )
        except Exception:
            self.metrics.record_error()
            raise
        self.metrics.record(result)
        return result

    def report(self) -> str:
        return self.metrics.report()
