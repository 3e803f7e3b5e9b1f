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
``ANTHROPIC_API_KEY``           upstream key; without it ``auto`` means simulated
``ANTHROPIC_BASE_URL``          upstream base URL (a proxy, or the test fake)
=============================== ===============================================

Nothing here runs at import time; :func:`load` reads the environment it is given.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from tierwise.errors import ConfigError
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


class LedgerConfig(_Strict):
    """Where requests are recorded.

    ``url``: None → SQLite at ``$TIERWISE_HOME/tierwise.db``; ``sqlite:///path`` or
    ``postgresql://…`` otherwise. Writes are queued (``queue_size``) and flushed in batches.
    """

    enabled: bool = True
    url: str | None = None
    queue_size: int = Field(default=10_000, ge=1)
    batch_size: int = Field(default=500, ge=1)
    flush_interval_s: float = Field(default=0.2, gt=0)
    store_prompts: bool = False


class GatewayConfig(_Strict):
    """The HTTP gateway (``tierwise serve``).

    ``fallback_chain``: per tier, the tiers to try next when it fails with 429/529/5xx, a
    timeout or a connection error before anything was sent to the client. Empty → the default
    chain: the next cheaper tier, then the next more expensive one.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
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
    upstream_anthropic_version: str = "2023-06-01"


class BudgetConfig(_Strict):
    """Per-key spending limits (:mod:`tierwise.budgets`).

    ``redis_url``: None → counters in this process (seeded from the ledger on start); set it
    when several gateway replicas share keys, so they reserve against one atomic counter.
    ``on_exceeded``: when the remaining budget cannot cover the chosen tier's worst case,
    ``downgrade`` to the most capable tier that fits, or ``refuse`` (HTTP 429).
    ``reservation_ttl_s``: a reservation never settled (a crashed replica) stops counting
    after this long.
    """

    redis_url: str | None = None
    redis_prefix: str = "tierwise:"
    on_exceeded: Literal["downgrade", "refuse"] = "downgrade"
    reservation_ttl_s: float = Field(default=900.0, gt=0)


class KeysConfig(_Strict):
    """Gateway keys (:mod:`tierwise.keys`): how long the in-memory copy of the key table is
    trusted before it is read again (a revoked key stops working within this time)."""

    cache_ttl_s: float = Field(default=5.0, ge=0)


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
    home: Path = Field(default_factory=lambda: Path("~/.tierwise").expanduser())
    prices_file: Path | None = None

    @model_validator(mode="after")
    def _check_tiers(self) -> Settings:
        names = [t.name for t in self.tiers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tier names must be unique; repeated: {', '.join(duplicates)}")
        if self.default_tier not in names:
            raise ValueError(
                f"default_tier {self.default_tier!r} is not a configured tier ({', '.join(names)})"
            )
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
    Raises :class:`ConfigError` naming the file and the field that is wrong.
    """
    env = os.environ if environ is None else environ
    source = "embedded defaults"
    data: dict[str, Any] = {}
    config_path = _config_path(path, env)
    if config_path is not None:
        source = str(config_path)
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {config_path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    for var, keys in _ENV_MAP.items():
        value = env.get(var)
        if value:
            _set(data, keys, value)
            source += f" + ${var}"
    for key, value in overrides.items():
        data[key] = value
    if "home" in data:
        data["home"] = Path(str(data["home"])).expanduser()
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from exc
    validate_tiers(settings, settings.catalogue())
    return settings


def revalidate(settings: Settings, **overrides: Any) -> Settings:
    """A copy of ``settings`` with top-level fields replaced, validated like :func:`load`."""
    try:
        current = {name: getattr(settings, name) for name in Settings.model_fields}
        updated = Settings.model_validate({**current, **overrides})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, "overrides")) from exc
    validate_tiers(updated, updated.catalogue())
    return updated


def validate_tiers(settings: Settings, catalogue: PriceCatalogue) -> None:
    """Check each tier's thinking/effort defaults against what its model accepts."""
    for tier in settings.tiers:
        info = catalogue.info(tier.model)
        where = f"tiers.{tier.name}"
        if tier.thinking is not None:
            kind = tier.thinking.get("type")
            if not isinstance(kind, str):
                raise ConfigError(f"{where}.thinking: needs a 'type' (adaptive, enabled, disabled)")
            if info is not None and kind not in info.thinking_types:
                allowed = ", ".join(info.thinking_types) or "none"
                raise ConfigError(
                    f"{where}.thinking: {tier.model} does not accept thinking type {kind!r} "
                    f"(accepted: {allowed})"
                )
            if kind == "enabled":
                budget = tier.thinking.get("budget_tokens")
                if not isinstance(budget, int) or budget < 1024:
                    raise ConfigError(f"{where}.thinking: 'enabled' needs budget_tokens >= 1024")
        if tier.effort is not None and info is not None and tier.effort not in info.efforts:
            allowed = ", ".join(info.efforts) or "none"
            raise ConfigError(
                f"{where}.effort: {tier.model} does not accept effort {tier.effort!r} "
                f"(accepted: {allowed})"
            )


def _config_path(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path).expanduser()
    if env.get("TIERWISE_CONFIG"):
        return Path(env["TIERWISE_CONFIG"]).expanduser()
    home = Path(env.get("TIERWISE_HOME") or "~/.tierwise").expanduser()
    candidate = home / "config.toml"
    return candidate if candidate.is_file() else None


def _set(data: dict[str, Any], keys: tuple[str, ...], value: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[:-1])} must be a table to set {keys[-1]}")
        node = child
    node[keys[-1]] = value


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)
