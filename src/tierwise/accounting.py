"""Money for one request, in one place: the usage the upstream reported, checked against what
the request could physically consume; its cost on the model that answered; the baseline's cost
on the same usage; the savings; and the ledger row. The library's ``Router.run`` and both
gateway dialects use it through :mod:`tierwise.lifecycle`.

Usage is upstream data, so it is validated like any other input:

- not an object of non-negative integers (negative, strings, floats, booleans): the reply is
  bad upstream data (:class:`BadUsage`), an error, never a success;
- larger than the request can consume (output above ``max_tokens``, input above the bound of
  :mod:`tierwise.worstcase`): clamped to that bound and flagged in the ledger row
  (``usage_flags``). The real API cannot report such numbers; an upstream that does is lying or
  broken, and a lie must not overspend a budget or poison the ledger (10**30 tokens does not fit
  a database integer).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierwise.policy import ledger_fields
from tierwise.pricing import PriceCatalogue, Settlement
from tierwise.types import LedgerEntry, Usage

if TYPE_CHECKING:
    from tierwise.lifecycle import Outcome


class BadUsage(ValueError):
    """The upstream's ``usage`` is not an object of non-negative integers."""


@dataclass(frozen=True, slots=True)
class UsageBounds:
    """The most a request can consume: total input tokens (all classes) and output tokens.
    None: no bound known (the value is then only type-checked)."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class MeasuredUsage:
    usage: Usage
    flags: tuple[str, ...] = ()


def _count(raw: Mapping[str, Any], name: str, where: str) -> int:
    value = raw.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadUsage(f"{where}{name} is {value!r}, not a non-negative integer")
    return value


def measure_usage(raw: Any, bounds: UsageBounds = UsageBounds()) -> MeasuredUsage:
    """Read a Messages API ``usage`` object into token classes, checked and clamped.

    Cache writes are split by TTL when ``cache_creation`` is present (any part of
    ``cache_creation_input_tokens`` the split does not cover counts as 5-minute writes, the
    API's default TTL).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise BadUsage(f"usage is {type(raw).__name__}, not an object")
    uncached = _count(raw, "input_tokens", "usage.")
    output = _count(raw, "output_tokens", "usage.")
    cache_read = _count(raw, "cache_read_input_tokens", "usage.")
    writes = _count(raw, "cache_creation_input_tokens", "usage.")
    creation = raw.get("cache_creation")
    write_5m = write_1h = 0
    if creation is not None:
        if not isinstance(creation, Mapping):
            raise BadUsage("usage.cache_creation is not an object")
        write_5m = _count(creation, "ephemeral_5m_input_tokens", "usage.cache_creation.")
        write_1h = _count(creation, "ephemeral_1h_input_tokens", "usage.cache_creation.")
    write_5m += max(writes - write_5m - write_1h, 0)
    details = raw.get("output_tokens_details")
    thinking = 0
    if details is not None:
        if not isinstance(details, Mapping):
            raise BadUsage("usage.output_tokens_details is not an object")
        thinking = _count(details, "thinking_tokens", "usage.output_tokens_details.")
    flags: list[str] = []
    if bounds.output_tokens is not None and output > bounds.output_tokens:
        flags.append(
            f"output_tokens reported {output} > max_tokens {bounds.output_tokens}: clamped"
        )
        output = bounds.output_tokens
    if thinking > output:  # thinking is part of output, never more
        flags.append(f"thinking_tokens reported {thinking} > output_tokens {output}: clamped")
        thinking = output
    parts = [uncached, cache_read, write_5m, write_1h]
    total = sum(parts)
    if bounds.input_tokens is not None and total > bounds.input_tokens:
        limit = bounds.input_tokens
        scaled = [p * limit // total for p in parts]
        flags.append(f"input tokens reported {total} > this request's bound {limit}: clamped")
        uncached, cache_read, write_5m, write_1h = scaled
    usage = Usage(
        input_tokens=uncached,
        output_tokens=output,
        cache_read_tokens=cache_read,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        thinking_tokens=thinking,
    )
    return MeasuredUsage(usage, tuple(flags))


def settle(
    catalogue: PriceCatalogue,
    usage: Usage,
    *,
    model: str | None,
    planned_model: str,
    baseline_model: str,
    classifier_cost_usd: Decimal,
    at: dt.datetime,
) -> Settlement:
    """Price ``usage`` on the model that answered (the planned one when the reply named a
    model the catalogue does not know), with the baseline and the savings."""
    price_model = model if model and catalogue.info(model) else planned_model
    return catalogue.settle(
        usage, price_model, baseline_model, classifier_cost_usd=classifier_cost_usd, at=at
    )


def usage_to_api(usage: Usage) -> dict[str, Any]:
    """A :class:`Usage` as the Messages API reports it (the inverse of :func:`measure_usage`)."""
    writes = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": writes,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
        "output_tokens_details": {"thinking_tokens": usage.thinking_tokens},
    }


def ledger_entry(outcome: Outcome) -> LedgerEntry:
    """One finished request as its ledger row."""
    d = outcome.decision
    s = outcome.settlement
    return LedgerEntry(
        request_id=outcome.request_id,
        ts=outcome.ts,
        source=outcome.source,
        status=outcome.status,
        api=outcome.api,
        key_name=outcome.key_name,
        tags=dict(outcome.tags),
        requested_model=outcome.requested_model,
        tier=outcome.target.tier if outcome.target else (d.tier if d else None),
        model=outcome.model or (outcome.target.model if outcome.target else None),
        classifier=d.classifier if d else "none",
        confidence=d.confidence if d else None,
        reason=outcome.reason,
        fallbacks=outcome.fallbacks,
        error_type=outcome.error_type,
        http_status=outcome.http_status,
        usage=outcome.usage,
        cost_usd=s.model_cost.usd if s else None,
        classifier_cost_usd=d.classifier_cost_usd if d else Decimal(0),
        price_version=s.model_cost.price_version if s else None,
        baseline_model=s.baseline_model if s else None,
        baseline_cost_usd=s.baseline_usd if s else None,
        saved_usd=s.saved_usd if s else None,
        decision_ms=outcome.decision_ms,
        upstream_ms=outcome.upstream_ms,
        total_ms=outcome.total_ms,
        streaming=outcome.stream,
        simulated=outcome.simulated,
        prompt=outcome.prompt,
        reply=outcome.reply,
        usage_flags=outcome.usage_flags,
        adapted=outcome.adapted,
        stop_reason=outcome.stop_reason,
        **dict(outcome.session or {}),
        **ledger_fields(d),
    )
