"""Plain value types that flow through the pipeline (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one model call, by price class.

    ``input_tokens`` counts only uncached input (as the Messages API reports it);
    ``output_tokens`` includes thinking, and ``thinking_tokens`` is the part of it that was
    thinking (informational: thinking is billed as output).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    thinking_tokens: int = 0

    def __post_init__(self) -> None:
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "thinking_tokens",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Usage.{name} must be a non-negative int, got {value!r}")
        if self.thinking_tokens > self.output_tokens:
            raise ValueError(
                f"Usage.thinking_tokens ({self.thinking_tokens}) cannot exceed "
                f"output_tokens ({self.output_tokens}): thinking is part of output"
            )

    @property
    def total_input_tokens(self) -> int:
        """All input the model read: uncached + cache reads + cache writes."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_5m_tokens": self.cache_write_5m_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "thinking_tokens": self.thinking_tokens,
        }


@dataclass(frozen=True, slots=True)
class Cost:
    """The price of some usage on one model. ``usd`` is None when the model has no price."""

    usd: Decimal | None
    model: str
    price_version: str | None

    @property
    def priced(self) -> bool:
        return self.usd is not None


@dataclass(frozen=True, slots=True)
class ClassifyInput:
    """What a classifier sees of a request.

    ``prompt`` is the latest user turn's text and ``system`` the system prompt. For a
    conversation (the gateway), the shape comes along: how many turns, tools and attachments
    (images, documents), and an estimate of the whole input in tokens.
    """

    prompt: str
    system: str = ""
    turns: int = 1
    tools: int = 0
    attachments: int = 0
    context_tokens: int | None = None
    # Set for a turn inside a known agent's envelope (Claude Code): its history is the agent's
    # work, so the conversation's shape may raise the text's tier by one, never more.
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    """A classifier's verdict.

    ``level`` is the lesson's taxonomy: 1 = simple (Haiku-class), 2 = standard (Sonnet-class),
    3 = hard (Opus-class). ``usage``/``model`` are set when the classifier itself called a model,
    so its cost can be charged to the request. ``score`` (higher = more in need of the strongest
    model; the learned classifier's is P(a strong reference model answers well) − P(a weak one
    does), −1 … 1) and ``tier_quality`` (each configured tier's predicted quality, by tier name)
    are set by classifiers that predict them (the learned one); the policy then picks a tier from
    them. ``features`` are the numbers a deployment's adapter learns from (never the text) and
    ``router_model`` names the model (and adapter) that computed them.
    """

    level: int
    confidence: float
    reasoning: str
    classifier: str
    latency_ms: float = 0.0
    usage: Usage | None = None
    model: str | None = None
    fallback_reason: str | None = None
    score: float | None = None
    tier_quality: dict[str, float] | None = None
    features: tuple[float, ...] | None = None
    router_model: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Which tier answers a request, and with which call settings.

    ``rule`` names the policy rule that decided (:mod:`tierwise.policy`: ``override``,
    ``quality``, ``level``, ``low_confidence``).
    """

    tier: str
    model: str
    confidence: float
    reason: str
    classifier: str
    thinking: dict[str, Any] | None
    output_config: dict[str, Any] | None
    estimated_cost_ratio: Decimal | None
    decision_ms: float
    classification: Classification | None = None
    classifier_cost_usd: Decimal = Decimal(0)
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A provider's answer to one call."""

    text: str
    model: str
    usage: Usage
    stop_reason: str | None
    simulated: bool
    request_id: str | None = None
    content: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RouteResult:
    """What ``route()`` returns: the lesson's fields, plus usage by class and the classifier's cost.

    Money is ``Decimal`` USD; ``None`` means *unpriced* (the model has no price in the
    catalogue), never zero. ``cost`` includes the classifier's own cost; ``cost_if_opus`` is the
    same usage priced on the baseline model (the top tier unless configured otherwise), and
    ``savings`` is their difference. Also readable as a mapping (``result["cost"]``), as the
    lesson's dict was.
    """

    text: str
    model: str
    tier: str
    routing_reason: str
    confidence: float
    cost: Decimal | None
    cost_if_opus: Decimal | None
    savings: Decimal | None
    latency_ms: float
    usage: Usage
    classifier: str
    classifier_cost: Decimal
    model_cost: Decimal | None
    baseline_model: str
    price_version: str | None
    decision_ms: float
    upstream_ms: float
    simulated: bool
    stop_reason: str | None
    request_id: str
    upstream_request_id: str | None

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, Usage):
                value = value.as_dict()
            out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One request as the ledger records it: exactly one per request, success or failure.

    Money is ``Decimal`` USD; ``None`` means unpriced (or, for a failed request, not incurred).
    ``cost_usd`` is the answering model's cost; ``classifier_cost_usd`` the classifier's; the
    request's total is their sum. ``saved_usd`` = baseline − total, net of the classifier.
    Prompts and replies are only present when the operator opted in.
    """

    request_id: str
    ts: datetime
    source: str  # "library" | "cli" | "gateway"
    status: str  # "ok" | "error"
    api: str | None = None  # "messages" | "chat.completions" | None for the library
    key_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    requested_model: str | None = None
    tier: str | None = None
    model: str | None = None
    classifier: str | None = None
    confidence: float | None = None
    reason: str | None = None
    fallbacks: tuple[str, ...] = ()
    error_type: str | None = None
    http_status: int | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None
    classifier_cost_usd: Decimal = Decimal(0)
    price_version: str | None = None
    baseline_model: str | None = None
    baseline_cost_usd: Decimal | None = None
    saved_usd: Decimal | None = None
    decision_ms: float = 0.0
    upstream_ms: float = 0.0
    total_ms: float = 0.0
    streaming: bool = False
    simulated: bool = False
    prompt: str | None = None
    reply: str | None = None
    usage_flags: tuple[str, ...] = ()  # why usage differs from what the upstream reported
    adapted: tuple[str, ...] = ()  # what tierwise changed in the body for the model
    stop_reason: str | None = None
    # Session routing (tierwise.sessions): the session, the rule that chose the tier, and the
    # request's shape without any text (sizes, cache breakpoints, counts).
    session_id: str | None = None
    session_rule: str | None = None
    session_shape: dict[str, Any] | None = None
    # The routing decision as data (tierwise.policy.ledger_fields): the classifier's score,
    # each tier's predicted quality, the rule that decided, the router model's version and its
    # compact features (never text). None for a request that was not routed.
    decision_score: float | None = None
    tier_quality: dict[str, float] | None = None
    decision_rule: str | None = None
    router_model: str | None = None
    route_features: tuple[float, ...] | None = None

    @property
    def total_cost_usd(self) -> Decimal | None:
        return None if self.cost_usd is None else self.cost_usd + self.classifier_cost_usd


class LedgerSink(Protocol):
    """Where finished requests go. ``record`` must not block on I/O (write-behind)."""

    def record(self, entry: LedgerEntry) -> None: ...
