"""The local, network-free default classifier: taxonomy signals + request shape.

Scores each of the lesson's three levels from the features (keyword signals of the taxonomy's
categories, the system prompt's role, length, code), picks the best, and turns the margin over
the runner-up into a confidence. When no signal matches it says so with a low confidence, so
the policy falls back to the default tier rather than guessing.
"""

from __future__ import annotations

import time

from tierwise.features import Features, extract
from tierwise.types import Classification, ClassifyInput

_NAME = "rules"


def score_shape(request: ClassifyInput, scores: dict[int, float], signals: list[str]) -> None:
    """Conversation shape (from the gateway): tools, attachments, long histories, big inputs."""
    if request.tools:
        scores[2] += 0.3
        signals.append("tools")
    if request.attachments:
        scores[2] += 0.3
        signals.append("attachments")
    if request.turns > 12:
        scores[2] += 0.2
        signals.append("long conversation")
    if request.context_tokens is not None and request.context_tokens > 20_000:
        scores[3] += 0.6
        signals.append("large conversation context")


def score(features: Features) -> tuple[dict[int, float], list[str]]:
    """Per-level scores and the signals that produced them (for the decision's reason)."""
    scores = {
        1: sum(features.simple.values()),
        2: sum(features.standard.values()),
        3: sum(features.hard.values()),
    }
    signals = [*features.simple, *features.standard, *features.hard]
    if features.system_hard:
        scores[3] += 0.8
        signals.append("expert system prompt")
    if features.system_simple:
        scores[1] += 0.8
        signals.append("narrow-task system prompt")
    if features.has_code and scores[1] < scores[2] + 0.5:
        scores[2] += 0.4
        signals.append("code in prompt")
    if features.approx_tokens > 4_000:
        scores[3] += 0.6
        signals.append("large context")
    elif features.approx_tokens > 800:
        scores[2] += 0.3
        signals.append("long prompt")
    elif features.approx_tokens < 40 and scores[1] > 0 and scores[2] == 0 and scores[3] == 0:
        scores[1] += 0.3
        signals.append("short")
    return scores, signals


def _confidence(best: float, second: float) -> float:
    if best <= 0:
        return 0.4
    margin = (best - second) / best  # 0 (tie) .. 1 (no competitor)
    strength = min(1.0, best / 1.5)  # one weak keyword is not certainty
    return round(0.5 + 0.45 * margin * strength, 3)


_LEVEL_NAMES = {1: "simple", 2: "standard", 3: "complex"}


class RulesClassifier:
    """Taxonomy keyword signals and request shape; decides in microseconds, no I/O."""

    name = _NAME

    def classify_now(self, request: ClassifyInput) -> Classification:
        """Synchronous classification (the async protocol method wraps this)."""
        start = time.perf_counter()
        features = extract(request.prompt, request.system)
        scores, signals = score(features)
        score_shape(request, scores, signals)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0] != 2))
        (level, best), (_, second) = ranked[0], ranked[1]
        if best <= 0:
            return Classification(
                level=2,
                confidence=_confidence(0, 0),
                reasoning="no taxonomy signal matched",
                classifier=_NAME,
                latency_ms=(time.perf_counter() - start) * 1000,
            )
        shown = ", ".join(dict.fromkeys(s.replace("_", " ") for s in signals))
        return Classification(
            level=level,
            confidence=_confidence(best, second),
            reasoning=f"{_LEVEL_NAMES[level]} task: {shown}",
            classifier=_NAME,
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    async def classify(self, request: ClassifyInput) -> Classification:
        return self.classify_now(request)
