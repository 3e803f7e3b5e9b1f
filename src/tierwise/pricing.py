"""Prices as data: a catalogue of effective-dated per-model prices, and exact Decimal cost math.

Cost of a call = Σ tokens of each class × the price of that class, per million tokens:
uncached input, output (which includes thinking), cache reads, 5-minute and 1-hour cache writes.
A model the catalogue does not know is *unpriced*: :meth:`PriceCatalogue.cost` returns a
:class:`~tierwise.types.Cost` whose ``usd`` is None, and callers report it as such.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from tierwise.errors import PricingError
from tierwise.types import Cost, Usage

_MILLION = Decimal(1_000_000)
_PRICE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
# A reference mix used for `estimated_cost_ratio`: three input tokens for each output token,
# roughly what chat traffic looks like. Documented in the README.
_REFERENCE_USAGE = Usage(input_tokens=3_000_000, output_tokens=1_000_000)


@dataclass(frozen=True, slots=True)
class PriceRow:
    """USD per million tokens for one model from ``effective_from`` on."""

    model: str
    effective_from: dt.date | None
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    source: str

    @property
    def version(self) -> str:
        since = self.effective_from.isoformat() if self.effective_from else "release"
        return f"{self.model}@{since}"

    def cost(self, usage: Usage) -> Decimal:
        total = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_5m_tokens * self.cache_write_5m
            + usage.cache_write_1h_tokens * self.cache_write_1h
        )
        return total / _MILLION


@dataclass(frozen=True, slots=True)
class Settlement:
    """The answering model's cost, the baseline's cost on the same usage, and the savings
    (net of the classifier). ``None`` money means unpriced."""

    model_cost: Cost
    baseline_model: str
    baseline_usd: Decimal | None
    total_usd: Decimal | None
    saved_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the catalogue knows about one model besides its prices."""

    model: str
    display_name: str
    aliases: tuple[str, ...]
    context_window: int
    max_output_tokens: int
    thinking_types: tuple[str, ...]
    efforts: tuple[str, ...]
    accepts_sampling: bool
    prices: tuple[PriceRow, ...]  # sorted by effective_from, oldest first
    # temperature and top_p cannot both be set (Claude 4.5/4.6 models)
    exclusive_sampling: bool = False
    # the conversation may end with an assistant turn (refused from Claude 4.6 on)
    accepts_prefill: bool = True
    # a prompt prefix shorter than this is never written to (or read from) the prompt cache
    min_cacheable_tokens: int = 1024
    capabilities_source: str = ""

    def names(self) -> tuple[str, ...]:
        """The model's id and its aliases."""
        return (self.model, *self.aliases)


class PriceCatalogue:
    """Per-model prices and capabilities, loaded from a TOML file."""

    def __init__(self, models: dict[str, ModelInfo], version: str, source: str) -> None:
        self._models = models
        self._by_name: dict[str, ModelInfo] = {}
        for info in models.values():
            self._by_name[info.model] = info
            for alias in info.aliases:
                self._by_name[alias] = info
        self.version = version
        self.source = source

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def default(cls) -> PriceCatalogue:
        """The catalogue shipped in the package (``tierwise/prices/anthropic.toml``)."""
        ref = resources.files("tierwise").joinpath("prices/anthropic.toml")
        return cls.from_text(
            ref.read_text(encoding="utf-8"), source="tierwise/prices/anthropic.toml"
        )

    @classmethod
    def from_file(cls, path: Path) -> PriceCatalogue:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PricingError(f"cannot read price catalogue {path}: {exc}") from exc
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str) -> PriceCatalogue:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PricingError(f"{source}: not valid TOML: {exc}") from exc
        version = str(data.get("catalogue_version", "unversioned"))
        raw_models = data.get("models")
        if not isinstance(raw_models, dict) or not raw_models:
            raise PricingError(f'{source}: no [models."<id>"] tables')
        models = {name: _parse_model(name, raw, source) for name, raw in raw_models.items()}
        return cls(models, version, source)

    # -- queries -------------------------------------------------------------------------
    def info(self, model: str) -> ModelInfo | None:
        """The model's entry, by id or alias; None when the catalogue does not know it."""
        return self._by_name.get(model)

    def models(self) -> list[ModelInfo]:
        return list(self._models.values())

    def price(self, model: str, at: dt.datetime | None = None) -> PriceRow | None:
        """The price row in force for ``model`` at ``at`` (default: now, UTC)."""
        info = self.info(model)
        if info is None:
            return None
        day = (at or dt.datetime.now(dt.UTC)).date()
        in_force = [
            row for row in info.prices if row.effective_from is None or row.effective_from <= day
        ]
        return in_force[-1] if in_force else None

    def cost(self, usage: Usage, model: str, at: dt.datetime | None = None) -> Cost:
        row = self.price(model, at)
        if row is None:
            return Cost(usd=None, model=model, price_version=None)
        return Cost(usd=row.cost(usage), model=model, price_version=row.version)

    def settle(
        self,
        usage: Usage,
        model: str,
        baseline_model: str,
        *,
        classifier_cost_usd: Decimal = Decimal(0),
        at: dt.datetime | None = None,
    ) -> Settlement:
        """Everything the ledger needs about one answered request's money."""
        model_cost = self.cost(usage, model, at)
        baseline = self.cost(usage, baseline_model, at)
        total = None if model_cost.usd is None else model_cost.usd + classifier_cost_usd
        saved = None if total is None or baseline.usd is None else baseline.usd - total
        return Settlement(model_cost, baseline_model, baseline.usd, total, saved)

    def cost_ratio(self, model: str, reference_model: str) -> Decimal | None:
        """Cost of ``model`` relative to ``reference_model`` on a 3:1 input:output mix."""
        mine = self.price(model)
        ref = self.price(reference_model)
        if mine is None or ref is None:
            return None
        ref_cost = ref.cost(_REFERENCE_USAGE)
        if ref_cost == 0:
            return None
        return mine.cost(_REFERENCE_USAGE) / ref_cost


def _parse_model(name: str, raw: Any, source: str) -> ModelInfo:
    where = f'{source}: models."{name}"'
    if not isinstance(raw, dict):
        raise PricingError(f"{where}: must be a table")
    rows_raw = raw.get("prices", [])
    if not isinstance(rows_raw, list):
        raise PricingError(f"{where}.prices: must be an array of tables")
    rows = [_parse_row(name, row, f"{where}.prices[{i}]") for i, row in enumerate(rows_raw)]
    rows.sort(key=lambda r: r.effective_from or dt.date.min)
    dated = [r.effective_from for r in rows]
    if len(set(dated)) != len(dated):
        raise PricingError(f"{where}: two price rows share an effective_from")
    try:
        return ModelInfo(
            model=name,
            display_name=str(raw.get("display_name", name)),
            aliases=tuple(str(a) for a in raw.get("aliases", [])),
            context_window=int(raw.get("context_window", 200_000)),
            max_output_tokens=int(raw.get("max_output_tokens", 8_192)),
            thinking_types=tuple(str(t) for t in raw.get("thinking_types", [])),
            efforts=tuple(str(e) for e in raw.get("efforts", [])),
            accepts_sampling=_flag(raw, "accepts_sampling", False, where),
            prices=tuple(rows),
            exclusive_sampling=_flag(raw, "exclusive_sampling", False, where),
            accepts_prefill=_flag(raw, "accepts_prefill", True, where),
            min_cacheable_tokens=_count(raw, "min_cacheable_tokens", 1024, where),
            capabilities_source=str(raw.get("capabilities_source", "")),
        )
    except (TypeError, ValueError) as exc:
        raise PricingError(f"{where}: {exc}") from exc


def _flag(raw: dict[str, Any], name: str, default: bool, where: str) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise PricingError(f"{where}.{name}: must be true or false, got {value!r}")
    return value


def _count(raw: dict[str, Any], name: str, default: int, where: str) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PricingError(f"{where}.{name}: must be a non-negative integer, got {value!r}")
    return value


def _parse_row(model: str, raw: Any, where: str) -> PriceRow:
    if not isinstance(raw, dict):
        raise PricingError(f"{where}: must be a table")
    values: dict[str, Decimal] = {}
    for field in _PRICE_FIELDS:
        if field not in raw:
            raise PricingError(f"{where}: missing {field!r}")
        value = raw[field]
        if not isinstance(value, str):
            # Floats would silently lose exactness (0.1 is not 0.1); insist on strings.
            raise PricingError(f'{where}.{field}: write prices as strings, e.g. "0.30"')
        try:
            number = Decimal(value)
        except InvalidOperation as exc:
            raise PricingError(f"{where}.{field}: {value!r} is not a number") from exc
        if not number.is_finite() or number < 0:
            raise PricingError(f"{where}.{field}: {value!r} must be a non-negative number")
        values[field] = number
    since = raw.get("effective_from")
    if since is not None:
        try:
            since = dt.date.fromisoformat(str(since))
        except ValueError as exc:
            raise PricingError(f"{where}.effective_from: {since!r} is not YYYY-MM-DD") from exc
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise PricingError(f"{where}: every price row needs a 'source'")
    return PriceRow(model=model, effective_from=since, source=source, **values)
