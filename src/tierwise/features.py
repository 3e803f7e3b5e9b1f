"""Request → the rules classifier's features: the taxonomy's phrases found in the prompt,
the system prompt's role, and the prompt's size and shape.

Cheap on purpose: one precompiled regular expression per taxonomy category
(:data:`tierwise.taxonomy.PHRASE_PATTERNS`) over at most the first ``SCAN_CHARS`` characters
of the prompt, plus lengths. The taxonomy itself (categories, phrases, weights, role words,
limits) is defined once in :mod:`tierwise.taxonomy`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tierwise.taxonomy import (
    EXPERT_ROLE_PATTERN,
    LEVELS,
    NARROW_ROLE_PATTERN,
    PHRASE_PATTERNS,
)

SCAN_CHARS = 8_000
CODE_BLOCK = re.compile(r"```|^(?: {4}|\t)\S", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Features:
    """What the rules classifier looks at, computed once per request."""

    prompt_chars: int
    system_chars: int
    approx_tokens: int
    lines: int
    has_code: bool
    questions: int
    signals: dict[int, dict[str, float]]  # level → {category: weight} of the phrases found
    system_expert: bool
    system_narrow: bool


def extract(prompt: str, system: str = "") -> Features:
    """Compute the features of one request (prompt and optional system prompt)."""
    text = prompt[:SCAN_CHARS]
    sys_text = system[:SCAN_CHARS]
    signals: dict[int, dict[str, float]] = {level: {} for level in LEVELS}
    for category, pattern in PHRASE_PATTERNS:
        if pattern.search(text):
            signals[category.level][category.name] = category.weight
    return Features(
        prompt_chars=len(prompt),
        system_chars=len(system),
        approx_tokens=(len(prompt) + len(system)) // 4 + 1,
        lines=text.count("\n") + 1,
        has_code=bool(CODE_BLOCK.search(text)),
        questions=text.count("?"),
        signals=signals,
        system_expert=bool(sys_text and EXPERT_ROLE_PATTERN.search(sys_text)),
        system_narrow=bool(sys_text and NARROW_ROLE_PATTERN.search(sys_text)),
    )
