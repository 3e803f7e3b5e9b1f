"""``tierwise eval tiers``: the whole decision (classifier + policy) on tier-labelled prompts.

Labels are the lesson's levels (1–3, or haiku/sonnet/opus); with the configured tiers each
level maps to a tier as the policy maps levels. A *severe* error is a prompt labelled with the
top level that was sent to the cheapest tier.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tierwise.evals.datasets import TierItem
from tierwise.evals.metrics import bootstrap_interval
from tierwise.router import Router

Tick = Callable[[], None]


async def _decide_all(router: Router, items: Sequence[TierItem], tick: Tick | None) -> list[str]:
    out = []
    for item in items:
        decision = await router.decide(item.prompt, item.system)
        out.append(decision.tier)
        if tick is not None:
            tick()
    return out


def evaluate(router: Router, items: Sequence[TierItem], tick: Tick | None = None) -> dict[str, Any]:
    if not items:
        raise ValueError("no labelled prompts")
    names = router.settings.tier_names
    expected = [router.policy.tier_for_level(i.tier).name for i in items]
    predicted = asyncio.run(_decide_all(router, items, tick))
    confusion = {e: dict.fromkeys(names, 0) for e in names}
    for e, p in zip(expected, predicted, strict=True):
        confusion[e][p] += 1
    cheapest = names[0]
    severe = [
        {"prompt": i.prompt[:160], "expected": e, "got": p}
        for i, e, p in zip(items, expected, predicted, strict=True)
        if i.tier == 3 and p == cheapest
    ]
    errors = [
        {"prompt": i.prompt[:160], "category": i.category, "expected": e, "got": p}
        for i, e, p in zip(items, expected, predicted, strict=True)
        if e != p
    ]
    hits = np.array([e == p for e, p in zip(expected, predicted, strict=True)], dtype=np.float64)
    lo, hi = bootstrap_interval(lambda idx: float(hits[idx].mean()), len(hits))
    return {
        "n": len(items),
        "accuracy": round(float(hits.mean()), 4),
        "accuracy_ci": [round(lo, 4), round(hi, 4)],
        "severe_errors": len(severe),
        "severe": severe,
        "confusion": confusion,  # expected tier → predicted tier → count
        "errors": errors,
        "classifier": router.classifier.name,
        "quality_tolerance": router.settings.classifier.quality_tolerance,
    }
