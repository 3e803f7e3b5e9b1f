"""The one exception tree of tierwise.

    TierwiseError
    ├── ConfigError          bad configuration file, environment value or tier set-up
    ├── InputError           bad caller input (a prompt file line, a tier name, max_tokens …)
    ├── PricingError         a broken price catalogue (not: a model without a price, which is
    │                        reported as *unpriced*, never raised)
    ├── ClassifierError      a classifier could not produce a decision (the router falls back)
    ├── ProviderError        the upstream call failed; ``retryable`` says whether to try again
    ├── BudgetExceeded       a gateway key's budget cannot cover a request (HTTP 429)
    └── BudgetUnavailable    a budget cannot be checked right now (Redis down or slow, or
                             several workers without shared counters): budgeted keys are
                             refused (HTTP 503), never let through unchecked

Each carries a message that says what was wrong and where.
"""

from __future__ import annotations

from decimal import Decimal


class TierwiseError(Exception):
    """Base class of every error tierwise raises on purpose."""


class ConfigError(TierwiseError):
    """The configuration (file or environment) is invalid."""


class InputError(TierwiseError):
    """The caller's input is invalid; the message names the place (file:line, field)."""


class PricingError(TierwiseError):
    """The price catalogue itself is malformed."""


class ClassifierError(TierwiseError):
    """A classifier could not classify; callers fall back and record why."""


class ProviderError(TierwiseError):
    """An upstream model call failed.

    ``retryable`` is true for failures worth another attempt (429, 529, 5xx, timeouts,
    connection errors); ``status`` is the HTTP status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.error_type = error_type


class BudgetExceeded(TierwiseError):
    """A key's budget cannot cover the worst-case cost of a request.

    Says which budget ran out: the key, its period (``day`` | ``month`` | ``total``, UTC), the
    limit, what is spent and reserved in the current period, what is left, and what the request
    needed. :func:`tierwise.budgets.admit` returns it (the gateway answers 429 with its message).
    """

    def __init__(
        self,
        *,
        key_name: str,
        period: str,
        budget_usd: Decimal,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        needed_usd: Decimal | None,
        tier: str | None = None,
    ) -> None:
        super().__init__(key_name, period)
        self.key_name = key_name
        self.period = period
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.needed_usd = needed_usd  # None: no tier within reach has a price
        self.tier = tier
        self.remaining_usd = max(budget_usd - spent_usd - reserved_usd, Decimal(0))

    def __str__(self) -> str:
        window = {"day": "daily", "month": "monthly", "total": "total"}.get(
            self.period, self.period
        )
        head = f"the {window} budget of key {self.key_name!r}"
        if self.needed_usd is None:
            return (
                f"{head} cannot be enforced on tier {self.tier}: its model has no price, so "
                "its worst-case cost is unknown"
            )
        on = f" on tier {self.tier}" if self.tier else ""
        return (
            f"{head} is exhausted: ${self.budget_usd:f} limit, ${self.remaining_usd:f} left "
            f"(spent ${self.spent_usd:f}, ${self.reserved_usd:f} reserved by requests in "
            f"flight); this request needs up to ${self.needed_usd:f}{on}"
        )


class BudgetUnavailable(TierwiseError):
    """A budget cannot be checked now, so a budgeted key is refused (fail closed).

    Raised by :meth:`tierwise.budgets.Budgets.reserve` when the shared counters (Redis) did not
    answer in time, or when budgets are not shared between the processes that serve a key.
    The message says which and what to do.
    """
