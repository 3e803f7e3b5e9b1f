"""``model_map``: what a requested model id means to the gateway.

Claude Code resolves its own model aliases before a request leaves it. ``--model haiku`` and
its small fast model arrive as ``claude-haiku-4-5-20251001`` (with
``thinking: {type: enabled, budget_tokens: 31999}``), and its default main model as a
current Opus id. ``model_map`` maps such ids (or glob patterns of them) to a tier name, or to
``auto`` to route them as if the client had asked for ``auto``::

    [model_map]
    "claude-haiku-4-5-20251001" = "haiku"
    "claude-sonnet-*" = "sonnet"
    "claude-opus-4-8" = "auto"

How a requested model resolves (:func:`resolve`), first match wins:

1. ``auto`` → routed;
2. a tier name → that tier;
3. an exact ``model_map`` key, then the catalogue's canonical id of the model (its dated
   alias maps like the undated id), then glob keys in file order → the mapped tier or
   ``auto``;
4. anything else → passed through to that model unchanged (the tier whose model it is, if
   any, is reported).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from tierwise.config import Settings
from tierwise.pricing import PriceCatalogue

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ModelRoute:
    mode: Literal["auto", "tier", "passthrough"]
    tier: str | None
    via: str  # how it was resolved: "auto", "tier name", "model_map[<key>]", "passthrough"


def resolve(settings: Settings, model: str, catalogue: PriceCatalogue | None = None) -> ModelRoute:
    if model == AUTO:
        return ModelRoute("auto", None, "auto")
    names = settings.tier_names
    if model in names:
        return ModelRoute("tier", model, "tier name")
    mapping = settings.model_map
    candidates = [model]
    if catalogue is not None:
        info = catalogue.info(model)
        if info is not None and info.model != model:
            candidates.append(info.model)
    for candidate in candidates:
        target = mapping.get(candidate)
        if target is not None:
            return _mapped(target, candidate)
    for key, target in mapping.items():
        if any(ch in key for ch in "*?[") and fnmatch.fnmatchcase(model, key):
            return _mapped(target, key)
    owner = next((t.name for t in settings.tiers if t.model == model), None)
    return ModelRoute("passthrough", owner, "passthrough")


def _mapped(target: str, key: str) -> ModelRoute:
    via = f"model_map[{key!r}]"
    if target == AUTO:
        return ModelRoute("auto", None, via)
    return ModelRoute("tier", target, via)
