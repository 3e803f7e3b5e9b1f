"""Is a tier change worth the prompt cache it throws away? The break-even arithmetic.

At the start of a turn the classifier may pick a cheaper tier than the one the session is on.
The session's prompt cache belongs to the current model. Switching means this request
re-writes the prefix on the new model (cache write price) instead of reading it (cache read
price). Later requests then read it on the cheaper model. With the catalogue's prices, for
one request of a session with ``N`` tokens of context:

- now, on each tier: the simulated cache use of *this* request on that model (read / write /
  uncached, :mod:`~tierwise.sessions.cachesim`) plus the expected output;
- later, per request, on each tier: ``N`` tokens read from the cache, ``growth`` new tokens
  written (5-minute price), and the expected output.

Over ``R`` expected requests (this one included)::

    stay   = now(current) + (R − 1) · later(current)
    switch = now(cheaper) + (R − 1) · later(cheaper)
    saving = stay − switch

The switch is taken when ``saving`` exceeds ``switch_min_saving_usd``. The break-even point
(:attr:`BreakEven.breakeven_requests`) is the number of requests after which the cheaper tier
has paid back its extra cost now. Money is exact :class:`~decimal.Decimal` at catalogue
prices. The expectations (``R``, ``growth``, output) are estimates from the session's own
history, pulled toward priors while it is young.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from tierwise.pricing import PriceCatalogue
from tierwise.sessions.cachesim import CacheUse
from tierwise.types import Usage

_CENT_MICROS = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class BreakEven:
    """The numbers behind one switch-or-stay decision (USD, tokens, requests)."""

    from_tier: str
    to_tier: str
    now_stay_usd: Decimal  # this request on the current tier
    now_switch_usd: Decimal  # this request on the other tier
    later_stay_usd: Decimal  # a later request on the current tier
    later_switch_usd: Decimal  # a later request on the other tier
    expected_requests: float
    saving_usd: Decimal  # expected total saving of switching (negative: switching costs more)
    warm_tokens: int  # tokens this request would read from the current tier's cache
    rewrite_tokens: int  # tokens the other tier must write now

    @property
    def extra_now_usd(self) -> Decimal:
        return self.now_switch_usd - self.now_stay_usd

    @property
    def per_request_saving_usd(self) -> Decimal:
        return self.later_stay_usd - self.later_switch_usd

    @property
    def breakeven_requests(self) -> float | None:
        """Requests (this one included) after which switching has paid for itself; None when
        it never does, 1.0 when it pays from the first request."""
        if self.extra_now_usd <= 0:
            return 1.0
        per = self.per_request_saving_usd
        if per <= 0:
            return None
        return 1.0 + float(self.extra_now_usd / per)

    def summary(self) -> str:
        be = self.breakeven_requests
        shown = "never" if be is None else f"{be:.1f}"
        return (
            f"{self.from_tier}→{self.to_tier}: now +${_q(self.extra_now_usd)} "
            f"({self.warm_tokens} warm tokens, {self.rewrite_tokens} to write), "
            f"then -${_q(self.per_request_saving_usd)}/request; break-even {shown} requests, "
            f"expected {self.expected_requests:.1f}; net ${_q(self.saving_usd)}"
        )

    def as_json(self) -> dict[str, object]:
        be = self.breakeven_requests
        return {
            "from": self.from_tier,
            "to": self.to_tier,
            "extra_now_usd": str(_q(self.extra_now_usd)),
            "per_request_saving_usd": str(_q(self.per_request_saving_usd)),
            "breakeven_requests": None if be is None else round(be, 2),
            "expected_requests": round(self.expected_requests, 2),
            "saving_usd": str(_q(self.saving_usd)),
            "warm_tokens": self.warm_tokens,
            "rewrite_tokens": self.rewrite_tokens,
        }


def _q(value: Decimal) -> Decimal:
    return value.quantize(_CENT_MICROS, rounding=ROUND_HALF_EVEN)


def _price(catalogue: PriceCatalogue, model: str, usage: Usage) -> Decimal | None:
    return catalogue.cost(usage, model).usd


def break_even(
    catalogue: PriceCatalogue,
    *,
    from_tier: str,
    from_model: str,
    to_tier: str,
    to_model: str,
    now_from: CacheUse,
    now_to: CacheUse,
    context_tokens: int,
    growth_tokens: float,
    output_tokens: float,
    expected_requests: float,
) -> BreakEven | None:
    """The break-even of moving from ``from_model`` to ``to_model`` (None: a model unpriced)."""
    out = max(0, round(output_tokens))
    growth = max(0, round(growth_tokens))
    now_stay = _price(catalogue, from_model, now_from.usage(out))
    now_switch = _price(catalogue, to_model, now_to.usage(out))
    later = Usage(cache_read_tokens=context_tokens, cache_write_5m_tokens=growth, output_tokens=out)
    later_stay = _price(catalogue, from_model, later)
    later_switch = _price(catalogue, to_model, later)
    if now_stay is None or now_switch is None or later_stay is None or later_switch is None:
        return None
    rest = Decimal(str(round(max(expected_requests - 1.0, 0.0), 3)))
    saving = (now_stay + rest * later_stay) - (now_switch + rest * later_switch)
    return BreakEven(
        from_tier=from_tier,
        to_tier=to_tier,
        now_stay_usd=now_stay,
        now_switch_usd=now_switch,
        later_stay_usd=later_stay,
        later_switch_usd=later_switch,
        expected_requests=expected_requests,
        saving_usd=saving,
        warm_tokens=now_from.read,
        rewrite_tokens=now_to.written + now_to.uncached,
    )
