"""tierwise: route each LLM request to the cheapest Claude tier that answers it well enough.

Public names are loaded on first use, so ``import tierwise`` does no network and no heavy
imports (the SDK and pydantic load when a router is first built).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ModelRouter": "tierwise.facade",
    "ModelTier": "tierwise.facade",
    "RoutingDecision": "tierwise.facade",
    "TaskClassifier": "tierwise.facade",
    "RouterMetrics": "tierwise.metrics",
    "RouterQualityMonitor": "tierwise.metrics",
    "Router": "tierwise.router",
    "RouteResult": "tierwise.types",
    "Usage": "tierwise.types",
    "Decision": "tierwise.types",
    "Settings": "tierwise.config",
    "load_settings": "tierwise.config",
    "PriceCatalogue": "tierwise.pricing",
    "TierwiseError": "tierwise.errors",
    "ConfigError": "tierwise.errors",
    "InputError": "tierwise.errors",
    "ProviderError": "tierwise.errors",
}
_RENAMES = {"load_settings": "load"}

__all__ = [
    "ConfigError",
    "Decision",
    "InputError",
    "ModelRouter",
    "ModelTier",
    "PriceCatalogue",
    "ProviderError",
    "RouteResult",
    "Router",
    "RouterMetrics",
    "RouterQualityMonitor",
    "RoutingDecision",
    "Settings",
    "TaskClassifier",
    "TierwiseError",
    "Usage",
    "load_settings",
]

if TYPE_CHECKING:
    from tierwise.config import Settings
    from tierwise.config import load as load_settings
    from tierwise.errors import ConfigError, InputError, ProviderError, TierwiseError
    from tierwise.facade import ModelRouter, ModelTier, RoutingDecision, TaskClassifier
    from tierwise.metrics import RouterMetrics, RouterQualityMonitor
    from tierwise.pricing import PriceCatalogue
    from tierwise.router import Router
    from tierwise.types import Decision, RouteResult, Usage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tierwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
