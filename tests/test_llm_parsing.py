"""The LLM classifier's reply parser: every way a model's answer can be off."""

from __future__ import annotations

import pytest

from tierwise.classifiers.llm import build_user_message, parse_llm_reply
from tierwise.errors import ClassifierError
from tierwise.types import ClassifyInput


@pytest.mark.parametrize(
    ("reply", "tier", "confidence"),
    [
        ('{"tier": 1, "confidence": 0.9, "reasoning": "format"}', 1, 0.9),
        ('```json\n{"tier": 3, "confidence": 0.8, "reasoning": "audit"}\n```', 3, 0.8),
        ('```\n{"tier": 2, "confidence": 1, "reasoning": "x"}\n```', 2, 1.0),
        (
            'Sure! Here is my answer: {"tier": 2, "confidence": 0.75, "reasoning": "code"} Hope '
            "it helps.",
            2,
            0.75,
        ),
        ('{"tier": "3", "confidence": "0.6", "reasoning": "strings"}', 3, 0.6),
        ('{"tier": 2.0, "confidence": 0, "reasoning": "float tier"}', 2, 0.0),
        ('Thinking {about it}... {"note": 1} then {"tier": 1, "confidence": 0.99}', 1, 0.99),
        ('{"tier": 3, "confidence": 0.9, "reasoning": "has {braces} inside"}', 3, 0.9),
    ],
)
def test_good_replies_parse(reply: str, tier: int, confidence: float) -> None:
    got_tier, got_conf, _reasoning, problem = parse_llm_reply(reply)
    assert (got_tier, got_conf, problem) == (tier, confidence, None)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("I think this is a tier 2 task.", "no JSON object"),
        ('{"confidence": 0.9}', "no JSON object with a 'tier'"),
        ('{"tier": 4, "confidence": 0.9}', "not 1, 2 or 3"),
        ('{"tier": 0, "confidence": 0.9}', "not 1, 2 or 3"),
        ('{"tier": true, "confidence": 0.9}', "not 1, 2 or 3"),
        ('{"tier": "opus", "confidence": 0.9}', "not 1, 2 or 3"),
        ('{"tier": 2.5, "confidence": 0.9}', "not 1, 2 or 3"),
        ("", "no JSON object"),
        ('{"tier": 1, "confidence": 0.9', "no JSON object"),
    ],
)
def test_unusable_replies_raise_with_the_reason(reply: str, message: str) -> None:
    with pytest.raises(ClassifierError, match=message):
        parse_llm_reply(reply)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ('{"tier": 3}', "confidence missing"),
        ('{"tier": 3, "confidence": null}', "confidence missing"),
        ('{"tier": 3, "confidence": 1.5}', "outside [0, 1]"),
        ('{"tier": 3, "confidence": -0.1}', "outside [0, 1]"),
        ('{"tier": 3, "confidence": 85}', "outside [0, 1]"),
        ('{"tier": 3, "confidence": "high"}', "not a number"),
        ('{"tier": 3, "confidence": NaN}', "outside [0, 1]"),
    ],
)
def test_bad_confidence_keeps_the_tier_and_names_the_problem(reply: str, problem: str) -> None:
    tier, confidence, _reasoning, got = parse_llm_reply(reply)
    assert tier == 3
    assert confidence is None
    assert got is not None and problem in got


def test_classifier_sees_system_cut_to_200_and_prompt_cut_to_500() -> None:
    message = build_user_message(ClassifyInput(prompt="p" * 1000, system="s" * 1000))
    assert "s" * 200 in message and "s" * 201 not in message
    assert "p" * 500 in message and "p" * 501 not in message
    assert build_user_message(ClassifyInput(prompt="hi")) == "User request: hi"
