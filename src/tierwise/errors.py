"""The one exception tree of tierwise.

    TierwiseError
    ├── ConfigError          bad configuration file, environment value or tier set-up
    ├── InputError           bad caller input (a prompt file line, a tier name, max_tokens …)
    ├── PricingError         a broken price catalogue (not: a model without a price, which is
    │                        reported as *unpriced*, never raised)
    ├── ClassifierError      a classifier could not produce a decision (the router falls back)
    └── ProviderError        the upstream call failed; ``retryable`` says whether to try again

Each carries a message that says what was wrong and where.
"""

from __future__ import annotations


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
