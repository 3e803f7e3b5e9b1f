"""The classifier protocol."""

from __future__ import annotations

from typing import Protocol

from tierwise.types import Classification, ClassifyInput

LEVELS = (1, 2, 3)


class Classifier(Protocol):
    """Anything that can say how demanding a request is (level 1–3) and how sure it is."""

    name: str

    async def classify(self, request: ClassifyInput) -> Classification: ...
