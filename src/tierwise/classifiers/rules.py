"""The rules classifier: the taxonomy's phrases and the request's shape, no model.

Scores each of the lesson's three levels from the features (the taxonomy categories whose
phrases appear, the system prompt's role, length, code), picks the best, and turns the margin
over the runner-up into a confidence. When no signal matches it says so with a low confidence,
so the policy falls back to the default tier rather than guessing. The conversation's shape
sets a floor under the level (:func:`tierwise.taxonomy.shape_floor`), as for every classifier.
"""

from __future__ import annotations

import time

from tierwise.features import Features, extract
from tierwise.taxonomy import (
    EXPERT_ROLE_WEIGHT,
    LEVEL_NAMES,
    LONG_PROMPT_TOKENS,
    NARROW_ROLE_WEIGHT,
    SHAPE_CONFIDENCE,
    SHORT_PROMPT_TOKENS,
    floor_for,
    shape_floor,
)
from tierwise.types import Classification, ClassifyInput

_NAME = "rules"
NO_SIGNAL_CONFIDENCE = 0.4


def score(features: Features) -> tuple[dict[int, float], list[str]]:
    """Per-level scores and the signals that produced them (for the decision's reason)."""
    scores = {level: sum(found.values()) for level, found in features.signals.items()}
    signals = [name for found in features.signals.values() for name in found]
    if features.system_expert:
        scores[3] += EXPERT_ROLE_WEIGHT
        signals.append("expert system prompt")
    if features.system_narrow:
        scores[1] += NARROW_ROLE_WEIGHT
        signals.append("narrow-task system prompt")
    if features.has_code and scores[1] < scores[2] + 0.5:
        scores[2] += 0.4
        signals.append("code in prompt")
    if features.approx_tokens > LONG_PROMPT_TOKENS:
        scores[2] += 0.3
        signals.append("long prompt")
    elif (
        features.approx_tokens < SHORT_PROMPT_TOKENS
        and scores[1] > 0
        and scores[2] == 0
        and scores[3] == 0
    ):
        scores[1] += 0.3
        signals.append("short")
    return scores, signals


def _confidence(best: float, second: float) -> float:
    if best <= 0:
        return NO_SIGNAL_CONFIDENCE
    margin = (best - second) / best  # 0 (tie) .. 1 (no competitor)
    strength = min(1.0, best / 1.5)  # one weak keyword is not certainty
    return round(0.5 + 0.45 * margin * strength, 3)


class RulesClassifier:
    """Taxonomy phrases and request shape; decides in microseconds, no I/O."""

    name = _NAME

    def classify_now(self, request: ClassifyInput) -> Classification:
        """Synchronous classification (the async protocol method wraps this)."""
        start = time.perf_counter()
        features = extract(request.prompt, request.system)
        scores, signals = score(features)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0] != 2))
        (level, best), (_, second) = ranked[0], ranked[1]
        floor, why = shape_floor(request)
        if best <= 0 and floor == 1:
            return Classification(
                level=2,
                confidence=NO_SIGNAL_CONFIDENCE,
                reasoning="no taxonomy signal matched",
                classifier=_NAME,
                latency_ms=(time.perf_counter() - start) * 1000,
            )
        confidence = _confidence(best, second)
        floor, why = floor_for(level, request) if best > 0 else (floor, why)
        if floor > level or best <= 0:
            level, confidence = max(floor, level), max(confidence, SHAPE_CONFIDENCE)
            signals.append(f"conversation shape: {why}")
        shown = ", ".join(dict.fromkeys(signals))
        return Classification(
            level=level,
            confidence=confidence,
            reasoning=f"{LEVEL_NAMES[level]} task: {shown}",
            classifier=_NAME,
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    async def classify(self, request: ClassifyInput) -> Classification:
        return self.classify_now(request)
