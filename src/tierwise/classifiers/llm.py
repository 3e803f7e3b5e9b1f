"""The lesson's classifier: ask a small model (Haiku) which tier a request needs.

Fixed from the lesson: the reply is parsed robustly (code fences, prose around the JSON,
tier out of range, confidence missing or outside [0, 1] all give a defined fallback with the
reason recorded instead of an exception), the call has a timeout, and its token usage is
returned so the router charges the classifier's own cost to the request.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from tierwise.errors import ClassifierError, ProviderError
from tierwise.providers.base import CallSpec, Provider
from tierwise.taxonomy import SHAPE_CONFIDENCE, floor_for, llm_prompt
from tierwise.types import Classification, ClassifyInput

SYSTEM_CHARS = 200
PROMPT_CHARS = 500
FALLBACK_LEVEL = 2

# The lesson's prompt, built from the one taxonomy definition (tierwise.taxonomy).
CLASSIFIER_PROMPT = llm_prompt()


def build_user_message(request: ClassifyInput) -> str:
    """What the classifier model sees: the system prompt cut to 200 chars, the prompt to 500,
    and the conversation's shape when it has one (turns, tools, attachments, input size)."""
    parts = []
    if request.system:
        parts.append(f"System prompt: {request.system[:SYSTEM_CHARS]}")
    parts.append(f"User request: {request.prompt[:PROMPT_CHARS]}")
    shape = []
    if request.turns > 1:
        shape.append(f"{request.turns} turns")
    if request.tools:
        shape.append(f"{request.tools} tools")
    if request.attachments:
        shape.append(f"{request.attachments} attachments")
    if request.context_tokens is not None:
        shape.append(f"~{request.context_tokens:,} input tokens")
    if shape:
        parts.append(f"Conversation: {', '.join(shape)}")
    return "\n\n".join(parts)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object embedded in ``text`` (inside fences, prose, or alone), in order."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


def _as_tier(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def parse_llm_reply(text: str) -> tuple[int, float | None, str, str | None]:
    """Parse a classifier reply into ``(tier, confidence, reasoning, problem)``.

    Raises :class:`ClassifierError` when no usable tier can be found. A tier with a bad or
    missing confidence is returned with confidence None and ``problem`` saying what was wrong.
    """
    objects = [obj for obj in _json_objects(text) if "tier" in obj]
    if not objects:
        shown = " ".join(text.split())[:80]
        raise ClassifierError(f"no JSON object with a 'tier' in the classifier reply: {shown!r}")
    obj = objects[0]
    tier = _as_tier(obj["tier"])
    if tier is None or tier not in (1, 2, 3):
        raise ClassifierError(f"tier {obj['tier']!r} is not 1, 2 or 3")
    reasoning = obj.get("reasoning")
    reasoning = reasoning.strip() if isinstance(reasoning, str) else ""
    raw_conf = obj.get("confidence")
    if raw_conf is None:
        return tier, None, reasoning, "confidence missing"
    if isinstance(raw_conf, bool) or not isinstance(raw_conf, int | float):
        try:
            raw_conf = float(str(raw_conf))
        except ValueError:
            return tier, None, reasoning, f"confidence {obj['confidence']!r} is not a number"
    conf = float(raw_conf)
    if math.isnan(conf) or not 0.0 <= conf <= 1.0:
        return tier, None, reasoning, f"confidence {obj['confidence']!r} is outside [0, 1]"
    return tier, conf, reasoning, None


class LLMClassifier:
    """Classifies with one call to a small model; never raises for a bad reply or a failed call.

    On a failure it returns level 2 with confidence 0.0 and ``fallback_reason`` set, so the
    policy uses the default tier and the reason is visible in the decision.
    """

    name = "llm"

    def __init__(
        self,
        provider: Provider,
        *,
        model: str = "claude-haiku-4-5",
        timeout_s: float = 10.0,
        max_tokens: int = 200,
    ) -> None:
        self._provider = provider
        self.model = model
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens

    async def classify(self, request: ClassifyInput) -> Classification:
        start = time.perf_counter()
        call = CallSpec(
            model=self.model,
            system=CLASSIFIER_PROMPT,
            messages=[{"role": "user", "content": build_user_message(request)}],
            max_tokens=self.max_tokens,
            timeout_s=self.timeout_s,
        )

        def fallback(reason: str, level: int = FALLBACK_LEVEL, **extra: Any) -> Classification:
            return Classification(
                level=level,
                confidence=0.0,
                reasoning=f"classifier fallback: {reason}",
                classifier=self.name,
                latency_ms=(time.perf_counter() - start) * 1000,
                model=self.model,
                fallback_reason=reason,
                **extra,
            )

        try:
            completion = await asyncio.wait_for(self._provider.complete(call), self.timeout_s)
        except TimeoutError:
            return fallback(f"classifier call timed out after {self.timeout_s:g}s")
        except ProviderError as exc:
            return fallback(f"classifier call failed: {exc}")
        try:
            tier, confidence, reasoning, problem = parse_llm_reply(completion.text)
        except ClassifierError as exc:
            return fallback(str(exc), usage=completion.usage)
        if confidence is None:
            return fallback(problem or "bad confidence", level=tier, usage=completion.usage)
        floor, why = floor_for(tier, request)
        if floor > tier:  # the same floor as every classifier's (tierwise.taxonomy)
            tier, confidence = floor, max(confidence, SHAPE_CONFIDENCE)
            reasoning = f"{reasoning or 'tier'}; conversation shape ({why}) needs tier {floor}"
        return Classification(
            level=tier,
            confidence=confidence,
            reasoning=reasoning or f"tier {tier}",
            classifier=self.name,
            latency_ms=(time.perf_counter() - start) * 1000,
            usage=completion.usage,
            model=self.model,
        )
