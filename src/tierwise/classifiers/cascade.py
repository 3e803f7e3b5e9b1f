"""Local classifier first; the LLM classifier only when the local one is unsure."""

from __future__ import annotations

import dataclasses

from tierwise.classifiers.base import Classifier
from tierwise.types import Classification, ClassifyInput


class CascadeClassifier:
    """Runs ``first``; below ``consult_below`` confidence, asks ``second``.

    The second verdict is used unless it fell back (bad reply, timeout), in which case the
    first verdict stands, with the second's failure noted. The second call's usage is kept
    either way so its cost is charged.
    """

    name = "cascade"

    def __init__(self, first: Classifier, second: Classifier, *, consult_below: float) -> None:
        self.first = first
        self.second = second
        self.consult_below = consult_below

    async def classify(self, request: ClassifyInput) -> Classification:
        local = await self.first.classify(request)
        if local.confidence >= self.consult_below:
            return dataclasses.replace(local, classifier=f"cascade:{local.classifier}")
        remote = await self.second.classify(request)
        latency = local.latency_ms + remote.latency_ms
        if remote.fallback_reason is None:
            return dataclasses.replace(
                remote, classifier=f"cascade:{remote.classifier}", latency_ms=latency
            )
        return dataclasses.replace(
            local,
            classifier=f"cascade:{local.classifier}",
            reasoning=(
                f"{local.reasoning} ({remote.classifier} unavailable: {remote.fallback_reason})"
            ),
            latency_ms=latency,
            usage=remote.usage,
            model=remote.model,
            fallback_reason=remote.fallback_reason,
        )
