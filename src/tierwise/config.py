"""All configuration, read in one place: a TOML file, then environment variables on top.

Where the file comes from, first match wins: the ``path`` argument, ``$TIERWISE_CONFIG``,
``$TIERWISE_HOME/config.toml`` when it exists. Without any, the embedded defaults apply: three
tiers (haiku → claude-haiku-4-5, sonnet → claude-sonnet-4-6, opus → claude-opus-4-6).

Environment variables (each overrides the file):

=============================== ===============================================
``TIERWISE_HOME``               data directory (default ``~/.tierwise``)
``TIERWISE_CONFIG``             path of the TOML file
``TIERWISE_DEFAULT_TIER``       tier used when the classifier is unsure
``TIERWISE_CONFIDENCE_THRESHOLD`` below this confidence the default tier is used
``TIERWISE_BASELINE``           ``top`` or a model id: what savings are measured against
``TIERWISE_CLASSIFIER``         ``learned`` | ``rules`` | ``llm`` | ``cascade``
``TIERWISE_MODEL``              the learned classifier's model: ``active`` | ``shipped`` | a version
``TIERWISE_PROVIDER``           ``auto`` | ``anthropic`` | ``simulated``
``TIERWISE_DB``                 ledger database URL (default: SQLite in the home)
``TIERWISE_REDIS_URL``          budget counters in Redis (several replicas); unset → in process
``TIERWISE_BUDGET_ON_EXCEEDED`` ``downgrade`` | ``refuse``: a key's budget cannot cover the tier
``TIERWISE_SESSIONS_REDIS_URL`` session state in Redis (several replicas); unset → in process
``TIERWISE_SHADOW``             ``true``: shadow evaluation on (``[shadow] enabled``)
``ANTHROPIC_API_KEY``           upstream key; without it ``auto`` means simulated
``ANTHROPIC_BASE_URL``          upstream base URL (a proxy, or the test fake)
=============================== ===============================================

Nothing here runs at import time; :func:`load` reads the environment it is given.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tierwise.errors import ConfigError, PricingError
from tierwise.pricing import PriceCatalogue

EFFORTS = ("low", "medium", "high", "xhigh", "max")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierConfig(_Strict):
    """One tier: a name callers can use, the model that serves it, and its call defaults.

    ``thinking`` is sent as the request's ``thinking`` field when the caller set none;
    ``effort`` becomes ``output_config.effort``.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    model: str = Field(min_length=1)
    thinking: dict[str, Any] | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    description: str = ""


class ClassifierConfig(_Strict):
    """How requests are classified, and the one knob that trades cost for quality.

    ``learned`` (default): the local model shipped in the package; it predicts each tier's
    quality. ``rules``: the local keyword classifier. ``llm``: the lesson's Haiku prompt.
    ``cascade``: the learned classifier first; the LLM is consulted only when its confidence
    is below ``cascade_below``.

    ``quality_tolerance``: with a classifier that predicts per-tier quality, the policy picks
    the cheapest tier whose predicted quality is within this much of the best tier's. 0 → always
    the best predicted tier; 1 → always the cheapest. ``tierwise calibrate`` sets it from a
    sample of your prompts.

    ``model``: what the learned classifier loads — ``active`` (the adapter that ``tierwise
    train --from-ledger`` activated in ``$TIERWISE_HOME/models``, else the shipped prior),
    ``shipped``, a version (``local-0003``) or a file (see :mod:`tierwise.classifiers.adapter`).
    """

    kind: Literal["learned", "rules", "llm", "cascade"] = "learned"
    model: str = Field(default="active", min_length=1)
    llm_model: str = "claude-haiku-4-5"
    llm_timeout_s: float = Field(default=10.0, gt=0)
    llm_max_tokens: int = Field(default=200, ge=16)
    cascade_below: float = Field(default=0.6, ge=0.0, le=1.0)
    quality_tolerance: float = Field(default=0.5, ge=0.0, le=1.0)


class ProviderConfig(_Strict):
    kind: Literal["auto", "anthropic", "simulated"] = "auto"
    api_key: SecretStr | None = None
    base_url: str | None = None
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_s: float = Field(default=600.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not _URL_SHAPE["http"].match(value):
            raise ValueError("not an HTTP URL; use http://HOST[:PORT] or https://HOST[:PORT]")
        return value


class LedgerConfig(_Strict):
    """Where requests are recorded.

    ``url``: None → SQLite at ``$TIERWISE_HOME/tierwise.db``; ``sqlite:///path`` or
    ``postgresql://…`` otherwise. Writes are queued (``queue_size``) and flushed in batches.
    ``sqlite_journal``: ``wal`` (readers never hold off writes, but a WAL index made
    unwritable or truncated during a write kills the process with SIGBUS) or ``truncate``
    (nothing memory-mapped: no file fault can crash the process; commits sync and wait for
    readers); see :class:`tierwise.ledger.db.SQLiteDatabase`.
    """

    enabled: bool = True
    url: str | None = None
    queue_size: int = Field(default=10_000, ge=1)
    batch_size: int = Field(default=500, ge=1)
    flush_interval_s: float = Field(default=0.2, gt=0)
    store_prompts: bool = False
    sqlite_journal: Literal["wal", "truncate"] = "wal"

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value and not _URL_SHAPE["database"].match(value):
            raise ValueError(
                "not a ledger URL; use sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                "(or leave it unset for SQLite in $TIERWISE_HOME)"
            )
        if value and value.startswith("sqlite:///"):
            db_file = Path(value.removeprefix("sqlite:///")).expanduser()
            problem = _path_problem(db_file, want_dir=False)
            if problem:
                raise ValueError(f"{problem}; point it at a file in a writable directory")
        return value or None


class GatewayConfig(_Strict):
    """The HTTP gateway (``tierwise serve``).

    ``fallback_chain``: per tier, the tiers to try next when it fails with 429/529/5xx, a
    timeout or a connection error before anything was sent to the client. Empty → the default
    chain: the next cheaper tier, then the next more expensive one.
    """

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    upstream_timeout_s: float = Field(default=600.0, gt=0)  # the whole request, all attempts
    attempt_timeout_s: float = Field(default=300.0, gt=0)  # one upstream attempt
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=2, ge=1, le=10)  # per tier, before falling back
    retry_after_cap_s: float = Field(default=10.0, ge=0)
    fallback_chain: dict[str, list[str]] = Field(default_factory=dict)
    cooldown_after_failures: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    body_timeout_s: float = Field(default=30.0, gt=0)  # a client must send its body by then
    rate_limit_rpm: int | None = Field(default=None, ge=1)  # per key (or per client address)
    # Clients (tierwise.gateway.access, tierwise.gateway.connections; RELIABILITY.md):
    auth_failures_per_minute: int = Field(default=30, ge=1)  # per client address, then 429
    max_connections: int | None = Field(default=None, ge=1)  # per process; None → from ulimit -n
    header_timeout_s: float = Field(default=10.0, gt=0)  # a request head must arrive by then
    idle_timeout_s: float = Field(default=5.0, gt=0)  # keep-alive connection with no request
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)  # request line + headers
    send_timeout_s: float = Field(default=60.0, gt=0)  # a client that stops reading its reply
    upstream_anthropic_version: str = "2023-06-01"
    # The upstream client (tierwise.gateway.http1): what one upstream reply may cost.
    upstream_max_header_bytes: int = Field(default=64 * 1024, ge=1024)  # the response head
    upstream_max_headers: int = Field(default=128, ge=8)  # header lines in it
    upstream_max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)  # decoded reply
    upstream_max_stream_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)  # decoded stream
    upstream_max_event_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)  # one SSE event
    # All upstream bytes held at once in this process by replies still being read (bodies read
    # whole, incomplete SSE events): tierwise.gateway.buffers. At least the two limits above.
    upstream_max_buffered_bytes: int = Field(default=96 * 1024 * 1024, ge=1024)
    # Connections per upstream origin: each concurrent stream holds one for its whole length,
    # and one worker is meant to hold 5,000 streams (issue 16); requests beyond wait in FIFO
    # order within their timeout. Two file descriptors per stream: raise `ulimit -n` to match.
    upstream_max_connections: int = Field(default=8192, ge=1, le=1_000_000)
    # An HTTP proxy for the upstream (http://[user:password@]host:port; CONNECT for https).
    # None: HTTPS_PROXY / HTTP_PROXY from the environment; "": none, whatever the environment.
    upstream_proxy: SecretStr | None = None
    # Hosts that bypass the proxy (NO_PROXY syntax); None: NO_PROXY from the environment.
    upstream_no_proxy: str | None = None


class BudgetConfig(_Strict):
    """Per-key spending limits (:mod:`tierwise.budgets`).

    ``redis_url``: None → counters in this process (seeded from the ledger on start); set it
    when several gateway replicas share keys, so they reserve against one atomic counter.
    ``on_exceeded``: when the remaining budget cannot cover the chosen tier's worst case,
    ``downgrade`` to the most capable tier that fits, or ``refuse`` (HTTP 429).
    ``reservation_ttl_s``: a hold never settled (a crashed replica, a lost process) stops
    counting after this long; it is never shorter than ``gateway.upstream_timeout_s`` + 60 s,
    the longest a request can run. ``redis_timeout_s``: the deadline of each Redis call (a slow
    or dead Redis refuses budgeted keys instead of stalling requests).
    """

    redis_url: str | None = None
    redis_prefix: str = "tierwise:"
    on_exceeded: Literal["downgrade", "refuse"] = "downgrade"
    reservation_ttl_s: float = Field(default=900.0, gt=0)
    redis_timeout_s: float = Field(default=2.0, gt=0, le=30)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _checked_redis_url(value, unset="counters in the gateway process")


class KeysConfig(_Strict):
    """Gateway keys (:mod:`tierwise.keys`): how long the in-memory copy of the key table is
    trusted before it is read again (a revoked key stops working within this time)."""

    cache_ttl_s: float = Field(default=5.0, ge=0)


class SessionsConfig(_Strict):
    """Session routing (:mod:`tierwise.sessions`): agent- and prompt-cache-aware tiers.

    ``max_threads``: conversation threads remembered in process (least recently used go
    first). ``ttl_s``: how long an idle thread is remembered; extended to cover its longest
    live prompt-cache entry (a 1-hour cache keeps its session for 1 hour + 5 minutes).
    ``redis_url``: share session state between replicas; a Redis failure or a call slower
    than ``redis_timeout_s`` routes that request per request (the reason is recorded), and
    Redis is not tried again for ``redis_retry_after_s``.
    ``tool_error_streak``: tool uses in a row that the model got wrong (for Claude Code, its
    ``<tool_use_error>`` results; for other clients any failed tool result) that move a tool
    loop one tier up. ``escalate_on_max_tokens``: a reply cut at the tier's own output limit
    (below the request's ``max_tokens``) moves the next request to a tier with a higher one.
    ``switch_min_saving_usd``: a cheaper tier is taken at a new turn only when the expected
    saving exceeds the cache it throws away by at least this much.
    ``horizon_turns``: at most how many turns a switch may take to pay for itself (a session
    is expected to run as many more turns as it has run, capped here).
    ``agent_requests_per_turn``: the prior for an agent's requests per turn (tool loops),
    until the session has its own average. ``utility_tier``: where title / summary /
    classification side requests go (default: the cheapest tier).
    """

    enabled: bool = True
    max_threads: int = Field(default=10_000, ge=1, le=10_000_000)
    ttl_s: float = Field(default=1_800.0, gt=0)
    redis_url: str | None = None
    redis_prefix: str = "tierwise:"
    redis_timeout_s: float = Field(default=0.05, gt=0, le=5)
    redis_retry_after_s: float = Field(default=5.0, ge=0)
    tool_error_streak: int = Field(default=3, ge=1, le=100)
    escalate_on_max_tokens: bool = True
    switch_min_saving_usd: Decimal = Field(default=Decimal(0), ge=0)
    horizon_turns: float = Field(default=4.0, ge=1, le=100)
    agent_requests_per_turn: float = Field(default=10.0, ge=1, le=1_000)
    utility_tier: str | None = None
    utility_max_instruction_chars: int = Field(default=4_000, ge=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _checked_redis_url(value, unset="session state in the gateway process")


class ShadowConfig(_Strict):
    """Shadow evaluation (:mod:`tierwise.shadow`): measure, on this deployment's own traffic,
    how often a cheaper tier's answer is as good as the reference tier's.

    Off by default; ``enabled = true`` turns it on. A share ``sample_rate`` of the ``auto``
    requests answered by a tier cheaper than ``reference_tier`` (default: the top tier) is sent
    again to the reference tier after the client has its answer, off the request path, and a
    judge model (``judge_model``, default: the top tier's model) compares the two answers in
    both orders. The verdicts go to the ledger's ``shadow_verdicts`` table with their own cost,
    apart from the traffic's. ``daily_budget_usd`` bounds what shadowing and judging may spend
    per UTC day (the worst case is held before each comparison, so it is never exceeded; with
    ``gateway.workers`` > 1 each worker gets an equal share). ``judge_prompt``: the rubric the
    judge is given (the answer format is always tierwise's own). ``concurrency`` comparisons
    run at once; at most ``queue_size`` wait (more are dropped and counted).
    ``max_prompt_chars`` / ``max_answer_chars``: how much of the conversation and of each
    answer the judge sees (longer text is cut, and the cut is shown to the judge).
    ``max_input_tokens``: requests whose answer read more input than this are not shadowed
    (long agent contexts: costly to replay, and the judge would only see part of them).
    ``timeout_s``: the deadline of one shadow or judge call (retries included);
    ``judge_max_tokens``: the judge's reply; ``shutdown_grace_s``: how long a stopping gateway
    waits for comparisons in progress before cancelling them.
    """

    enabled: bool = False
    sample_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    daily_budget_usd: Decimal = Field(default=Decimal("5"), ge=0, max_digits=20)
    reference_tier: str | None = None
    judge_model: str | None = None
    judge_prompt: str | None = Field(default=None, min_length=1, max_length=20_000)
    judge_max_tokens: int = Field(default=400, ge=16, le=8192)
    concurrency: int = Field(default=2, ge=1, le=64)
    queue_size: int = Field(default=100, ge=1, le=100_000)
    timeout_s: float = Field(default=300.0, gt=0)  # one call (shadow or judge), all attempts
    max_prompt_chars: int = Field(default=24_000, ge=200, le=1_000_000)
    max_answer_chars: int = Field(default=12_000, ge=200, le=1_000_000)
    max_input_tokens: int = Field(default=50_000, ge=1)
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=600)


# The shapes URL settings must have (checked when the configuration is read, so a typo is an
# error naming the setting instead of a failure at the first request that needs the service).
_URL_SHAPE = {
    "http": re.compile(r"^https?://[^/\s:]+(:\d+)?(/\S*)?$"),
    "database": re.compile(r"^(sqlite:///\S+|postgres(ql)?://\S+)$"),
    "redis": re.compile(r"^(rediss?://\S+|unix://\S+)$"),
}


def _checked_redis_url(value: str | None, *, unset: str) -> str | None:
    """``value`` if it has a Redis URL's shape (None for empty); ``unset``: what no URL means."""
    if value and not _URL_SHAPE["redis"].match(value):
        raise ValueError(
            "not a Redis URL; use redis://HOST:PORT/DB, rediss://HOST:PORT/DB or "
            f"unix:///PATH (or leave it unset for {unset})"
        )
    return value or None


def _path_problem(path: Path, *, want_dir: bool) -> str | None:
    """Why ``path`` cannot be (or be created as) a directory, or a file in one: an existing
    non-directory on the way. Checked without creating anything."""
    if path.exists():
        if want_dir and not path.is_dir():
            return f"{path} exists and is not a directory"
        if not want_dir and path.is_dir():
            return f"{path} is a directory, not a database file"
        return None
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, not a directory"
    return None


def _default_tiers() -> list[TierConfig]:
    return [
        TierConfig(
            name="haiku",
            model="claude-haiku-4-5",
            description="formatting, extraction, classification, simple Q&A, translation",
        ),
        TierConfig(
            name="sonnet",
            model="claude-sonnet-4-6",
            thinking={"type": "adaptive"},
            effort="medium",
            description="standard code, summaries, bug fixes, moderate writing",
        ),
        TierConfig(
            name="opus",
            model="claude-opus-4-6",
            thinking={"type": "adaptive"},
            effort="high",
            description="architecture, security audits, novel algorithms, deep reasoning",
        ),
    ]


class Settings(_Strict):
    """The validated configuration. Tiers are ordered cheapest → most capable."""

    tiers: list[TierConfig] = Field(default_factory=_default_tiers, min_length=1)
    default_tier: str = "sonnet"
    confidence_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    baseline: str = "top"
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)
    keys: KeysConfig = Field(default_factory=KeysConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    # requested model id or glob → tier name or "auto" (tierwise.sessions.modelmap)
    model_map: dict[str, str] = Field(default_factory=dict)
    home: Path = Field(default_factory=lambda: Path("~/.tierwise").expanduser())
    prices_file: Path | None = None

    @field_validator("home")
    @classmethod
    def _home_is_a_directory(cls, value: Path) -> Path:
        problem = _path_problem(value, want_dir=True)
        if problem:
            raise ValueError(f"{problem}; point it at a directory (created when missing)")
        return value

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        problems = reference_problems(self)
        if problems:
            raise ValueError("\n".join(f"{where}: {what}" for where, what in problems))
        return self

    # -- lookups -------------------------------------------------------------------------
    def tier(self, name: str) -> TierConfig:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise ConfigError(f"unknown tier {name!r}; configured tiers: {', '.join(self.tier_names)}")

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    @property
    def top_tier(self) -> TierConfig:
        return self.tiers[-1]

    def baseline_model(self) -> str:
        """The model savings are measured against (the lesson's "if all Opus")."""
        return self.top_tier.model if self.baseline == "top" else self.baseline

    def use_simulated_provider(self) -> bool:
        if self.provider.kind == "simulated":
            return True
        if self.provider.kind == "anthropic":
            return False
        return self.provider.api_key is None

    def catalogue(self) -> PriceCatalogue:
        if self.prices_file is not None:
            return PriceCatalogue.from_file(self.prices_file)
        return PriceCatalogue.default()


def _gateway_limit_problems(gw: GatewayConfig) -> list[tuple[str, str]]:
    """Gateway limits that must agree with each other."""
    largest = max(gw.upstream_max_body_bytes, gw.upstream_max_event_bytes)
    if gw.upstream_max_buffered_bytes >= largest:
        return []
    return [
        (
            "gateway.upstream_max_buffered_bytes",
            f"{gw.upstream_max_buffered_bytes} is less than one reply may hold ({largest}: "
            "upstream_max_body_bytes / upstream_max_event_bytes); raise it or lower those",
        )
    ]


def reference_problems(settings: Settings) -> list[tuple[str, str]]:
    """Settings that name other settings: ``(setting, what is wrong and how to fix it)``.

    The tier names must be unique, and ``default_tier`` and every tier in
    ``gateway.fallback_chain`` must be one of them.
    """
    problems: list[tuple[str, str]] = []
    names = [t.name for t in settings.tiers]
    known = ", ".join(names)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(("tiers", f"tier names must be unique; repeated: {', '.join(duplicates)}"))
    if settings.default_tier not in names:
        problems.append(
            (
                "default_tier",
                f"{settings.default_tier!r} is not a configured tier; use one of: {known}",
            )
        )
    for tier, chain in settings.gateway.fallback_chain.items():
        where = f"gateway.fallback_chain.{tier}"
        if tier not in names:
            problems.append((where, f"{tier!r} is not a configured tier; use one of: {known}"))
        unknown = [t for t in chain if t not in names]
        if unknown:
            listed = ", ".join(repr(t) for t in unknown)
            problems.append((where, f"{listed}: not a configured tier; use any of: {known}"))
    for model, target in settings.model_map.items():
        if target != "auto" and target not in names:
            problems.append(
                (f"model_map.{model}", f"{target!r} is neither 'auto' nor a tier: {known}")
            )
    problem = _router_model_problem(settings.classifier.model, Path(settings.home))
    if problem:
        problems.append(("classifier.model", problem))
    problems.extend(_gateway_limit_problems(settings.gateway))
    shadow = settings.shadow
    if shadow.enabled and not settings.ledger.enabled:
        problems.append(
            (
                "shadow.enabled",
                "shadow evaluation records its verdicts in the ledger, which is off "
                "(ledger.enabled = false); turn the ledger on or shadowing off",
            )
        )
    if shadow.reference_tier is not None and shadow.reference_tier not in names:
        problems.append(
            (
                "shadow.reference_tier",
                f"{shadow.reference_tier!r} is not a configured tier; use one of: {known}",
            )
        )
    elif shadow.enabled and (shadow.reference_tier or names[-1]) == names[0]:
        problems.append(
            (
                "shadow.reference_tier",
                f"{names[0]!r} is the cheapest tier: no request is answered by a cheaper one, "
                "so there is nothing to compare; use a costlier tier (default: the top tier)",
            )
        )
    utility = settings.sessions.utility_tier
    if utility is not None and utility not in names:
        problems.append(
            ("sessions.utility_tier", f"{utility!r} is not a configured tier; use one of: {known}")
        )
    return problems


def _router_model_problem(spec: str, home: Path) -> str | None:
    """Whether ``classifier.model`` names something that exists: ``active``, ``shipped``, a
    trained version under ``$TIERWISE_HOME/models`` (``local-0001``), or a readable file."""
    spec = spec.strip()
    if spec in ("active", "shipped"):
        return None
    if re.fullmatch(r"local-\d{4,}", spec):
        path = home.expanduser() / "models" / f"{spec}.json"
        if not path.is_file():
            return f"{spec!r}: no such trained version in {path.parent} (tierwise train --list)"
        return None
    if not Path(spec).expanduser().is_file():
        return (
            f"{spec!r} is not 'active', 'shipped', a trained version (local-0001) or a "
            "readable file"
        )
    return None


def catalogue_problems(settings: Settings, catalogue: PriceCatalogue) -> list[tuple[str, str]]:
    """Settings checked against the price catalogue: each tier's thinking and effort
    defaults must be ones its model accepts, and the baseline must have a price (savings are
    measured against it)."""
    problems: list[tuple[str, str]] = []
    for tier in settings.tiers:
        info = catalogue.info(tier.model)
        where = f"tiers.{tier.name}"
        if tier.thinking is not None:
            kind = tier.thinking.get("type")
            if not isinstance(kind, str):
                problems.append(
                    (f"{where}.thinking", "needs a 'type' (adaptive, enabled, disabled)")
                )
            elif info is not None and kind not in info.thinking_types:
                allowed = ", ".join(info.thinking_types) or "none"
                problems.append(
                    (
                        f"{where}.thinking",
                        f"{tier.model} does not accept thinking type {kind!r} "
                        f"(accepted: {allowed})",
                    )
                )
            elif kind == "enabled":
                budget = tier.thinking.get("budget_tokens")
                if not isinstance(budget, int) or budget < 1024:
                    problems.append((f"{where}.thinking", "'enabled' needs budget_tokens >= 1024"))
        if tier.effort is not None and info is not None and tier.effort not in info.efforts:
            allowed = ", ".join(info.efforts) or "none"
            problems.append(
                (
                    f"{where}.effort",
                    f"{tier.model} does not accept effort {tier.effort!r} (accepted: {allowed})",
                )
            )
    shadow = settings.shadow
    if shadow.enabled:
        names = [t.name for t in settings.tiers]
        reference = shadow.reference_tier or names[-1]
        if reference in names:
            model = settings.tier(reference).model
            if catalogue.price(model) is None:
                problems.append(
                    (
                        "shadow.reference_tier",
                        f"{reference}'s model {model!r} has no price, so the shadow budget "
                        "cannot bound its cost; add it to a prices file (prices_file)",
                    )
                )
        judge = shadow.judge_model or settings.top_tier.model
        if catalogue.price(judge) is None:
            problems.append(
                (
                    "shadow.judge_model",
                    f"no price for {judge!r}, so the shadow budget cannot bound the judge's "
                    "cost; use a priced model id (`tierwise prices` lists them)",
                )
            )
    if settings.baseline != "top" and catalogue.price(settings.baseline) is None:
        problems.append(
            (
                "baseline",
                f"no price for {settings.baseline!r}, so no savings could be measured "
                "against it; use 'top' (the top tier's model) or a priced model id "
                "(`tierwise prices` lists them; more come from prices_file)",
            )
        )
    return problems


# Where each setting can be given besides the file: for messages that name the setting.
_ENV_MAP: dict[str, tuple[str, ...]] = {
    "TIERWISE_HOME": ("home",),
    "TIERWISE_DEFAULT_TIER": ("default_tier",),
    "TIERWISE_CONFIDENCE_THRESHOLD": ("confidence_threshold",),
    "TIERWISE_BASELINE": ("baseline",),
    "TIERWISE_CLASSIFIER": ("classifier", "kind"),
    "TIERWISE_MODEL": ("classifier", "model"),
    "TIERWISE_PROVIDER": ("provider", "kind"),
    "TIERWISE_PRICES_FILE": ("prices_file",),
    "TIERWISE_DB": ("ledger", "url"),
    "TIERWISE_REDIS_URL": ("budgets", "redis_url"),
    "TIERWISE_BUDGET_ON_EXCEEDED": ("budgets", "on_exceeded"),
    "TIERWISE_SESSIONS_REDIS_URL": ("sessions", "redis_url"),
    "TIERWISE_SHADOW": ("shadow", "enabled"),
    "ANTHROPIC_API_KEY": ("provider", "api_key"),
    "ANTHROPIC_BASE_URL": ("provider", "base_url"),
}


def load(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read the configuration file (if any), apply the environment, validate everything.

    ``overrides`` are top-level fields given by code (they win over file and environment).
    Raises :class:`ConfigError`: one line per wrong setting, naming the setting, where its
    value came from (the file, an environment variable) and what would be accepted.
    """
    env = os.environ if environ is None else environ
    origins = _Origins()
    data: dict[str, Any] = {}
    config_path, named_by = _config_path(path, env)
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"cannot read configuration file {config_path} ({named_by}): "
                f"{exc.strerror or exc}; fix the path or create the file"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{config_path}: not UTF-8 text ({named_by})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
        origins.file = str(config_path)
        origins.file_data = data
    for var, keys in _ENV_MAP.items():
        value = env.get(var)
        if value:
            _set(data, keys, value)
            origins.env[keys] = var
    for key, value in overrides.items():
        data[key] = value
        origins.code.add(key)
    if "home" in data and isinstance(data["home"], str | Path):
        data["home"] = Path(str(data["home"])).expanduser()
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origins)) from exc
    _check_catalogue(settings, origins)
    return settings


def revalidate(settings: Settings, **overrides: Any) -> Settings:
    """A copy of ``settings`` with top-level fields replaced, validated like :func:`load`
    (sections changed with ``model_copy(update=...)`` are validated again too)."""
    origins = _Origins(code=set(overrides))
    current = {name: getattr(settings, name) for name in Settings.model_fields}
    try:
        updated = Settings.model_validate({**current, **_plain(overrides)})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origins)) from exc
    _check_catalogue(updated, origins)
    return updated


def _plain(value: Any) -> Any:
    """Models as dicts, so that validating them again checks every field."""
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _check_catalogue(settings: Settings, origins: _Origins) -> None:
    try:
        catalogue = settings.catalogue()
    except PricingError as exc:
        raise ConfigError(f"prices_file ({origins.of(('prices_file',))}): {exc}") from exc
    problems = catalogue_problems(settings, catalogue)
    if problems:
        raise ConfigError(
            "\n".join(f"{where} ({origins.of(_loc(where))}): {what}" for where, what in problems)
        )


def validate_tiers(settings: Settings, catalogue: PriceCatalogue) -> None:
    """Check the settings against the catalogue (:func:`catalogue_problems`); raise
    :class:`ConfigError` naming each setting that is wrong."""
    problems = catalogue_problems(settings, catalogue)
    if problems:
        raise ConfigError("\n".join(f"{where}: {what}" for where, what in problems))


def setting_label(*keys: str) -> str:
    """``ledger.url ($TIERWISE_DB)``: a setting's name and the variable that sets it."""
    dotted = ".".join(keys)
    env = [var for var, path in _ENV_MAP.items() if path == keys]
    return f"{dotted} (${env[0]})" if env else dotted


def prepare_paths(settings: Settings) -> None:
    """Create the directories tierwise writes to: ``home``, and the SQLite ledger's
    directory. Raises :class:`ConfigError` naming the setting when one cannot be created."""
    targets: list[tuple[str, Path]] = [(setting_label("home"), settings.home)]
    url = settings.ledger.url
    if settings.ledger.enabled and url and url.startswith("sqlite:///"):
        db_file = Path(url.removeprefix("sqlite:///")).expanduser()
        targets.append((setting_label("ledger", "url"), db_file.parent))
    for label, directory in targets:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{label}: cannot create directory {directory}: {exc.strerror or exc}; "
                "point it at a writable place"
            ) from exc


def check_services(settings: Settings, *, redis: bool = False, timeout_s: float = 5.0) -> None:
    """Before work that needs them: the directories tierwise writes to can be created
    (:func:`prepare_paths`), the PostgreSQL ledger answers when configured and, with ``redis``,
    so do the Redis budget counters. Each failure is a :class:`ConfigError` naming the setting
    and the address (password hidden)."""
    from tierwise.ledger.db import redact_url

    prepare_paths(settings)
    url = settings.ledger.url
    if settings.ledger.enabled and url and url.startswith(("postgresql://", "postgres://")):
        import psycopg

        try:
            psycopg.connect(url, connect_timeout=max(1, int(timeout_s))).close()
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise ConfigError(
                f"{setting_label('ledger', 'url')}: PostgreSQL at {redact_url(url)} does not "
                f"answer ({reason}); start it, or fix the URL"
            ) from exc
    redis_url = settings.budgets.redis_url
    if redis and redis_url:
        import redis as redis_lib

        client = redis_lib.Redis.from_url(
            redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        try:
            client.ping()
        except (redis_lib.RedisError, OSError) as exc:
            raise ConfigError(
                f"{setting_label('budgets', 'redis_url')}: Redis at {redact_url(redis_url)} "
                f"does not answer ({exc}); start it, fix the URL, or unset it for budget "
                "counters in the gateway process"
            ) from exc
        finally:
            client.close()


def _config_path(path: str | Path | None, env: Mapping[str, str]) -> tuple[Path | None, str]:
    """The configuration file to read, and what named it (for messages)."""
    if path is not None:
        return Path(path).expanduser(), "--config"
    if env.get("TIERWISE_CONFIG"):
        return Path(env["TIERWISE_CONFIG"]).expanduser(), "$TIERWISE_CONFIG"
    home = Path(env.get("TIERWISE_HOME") or "~/.tierwise").expanduser()
    candidate = home / "config.toml"
    return (candidate, "$TIERWISE_HOME/config.toml") if candidate.is_file() else (None, "")


def _set(data: dict[str, Any], keys: tuple[str, ...], value: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[:-1])} must be a table to set {keys[-1]}")
        node = child
    node[keys[-1]] = value


class _Origins:
    """Where each setting's value came from: the file, an environment variable, or code."""

    def __init__(self, code: set[str] | None = None) -> None:
        self.file: str | None = None
        self.file_data: dict[str, Any] = {}
        self.env: dict[tuple[str, ...], str] = {}
        self.code: set[str] = code or set()

    def of(self, loc: tuple[str | int, ...]) -> str:
        for keys, var in self.env.items():
            if tuple(loc[: len(keys)]) == keys:
                return f"from ${var}"
        if loc and loc[0] in self.code:
            return "set by code"
        if loc and self.file is not None and loc[0] in self.file_data:
            return f"in {self.file}"
        return "default"


def _loc(dotted: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(loc: tuple[str | int, ...]) -> list[str] | None:
    """The setting names the table at ``loc`` accepts (None: not a settings table)."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None) or (annotation,)
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return list(model.model_fields)


def _shown(loc: tuple[str | int, ...], value: Any) -> str:
    if any(part == "api_key" for part in loc):
        return "'***'"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and "@" in value and "://" in value:
        from tierwise.ledger.db import redact_url

        value = redact_url(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _explain(exc: ValidationError, origins: _Origins) -> str:
    """One line per problem: the setting, its value and origin, and what is accepted."""
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = str(err["msg"])
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        if not loc and err["type"] == "value_error":
            # whole-model checks: one "setting: problem" per line
            for line in msg.splitlines():
                where, _, what = line.partition(": ")
                lines.append(f"{where} ({origins.of(_loc(where))}): {what}")
            continue
        name = _dotted(loc) or "configuration"
        if err["type"] == "extra_forbidden":
            known = _fields_at(loc[:-1])
            section = f"[{_dotted(loc[:-1])}]" if loc[:-1] else "the top level"
            hint = f"; {section} takes: {', '.join(known)}" if known else ""
            lines.append(f"{name} ({origins.of(loc)}): unknown setting{hint}")
            continue
        if err["type"] == "missing":
            lines.append(f"{name} ({origins.of(loc[:-1])}): required, but not set")
            continue
        if err["type"] in ("model_type", "dict_type") and _fields_at(loc) is not None:
            msg = f"must be a table ([{name}])"
        msg = msg.replace("Input should be", "must be", 1).replace("String should", "must", 1)
        lines.append(f"{name} = {_shown(loc, err.get('input'))} ({origins.of(loc)}): {msg}")
    return "\n".join(lines)
