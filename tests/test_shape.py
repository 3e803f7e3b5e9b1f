"""The conversation's shape (tools, attachments, long histories, large contexts) sets a floor
under the learned classifier's verdict, which reads only the latest turn's text."""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningGateway
from tierwise.classifiers.learned import LearnedClassifier
from tierwise.types import ClassifyInput

SIMPLE = "Translate 'good morning' into French."


def test_shape_floor_raises_simple_turns() -> None:
    clf = LearnedClassifier()
    plain = clf.classify_now(ClassifyInput(SIMPLE))
    assert plain.level == 1
    with_tools = clf.classify_now(ClassifyInput(SIMPLE, tools=2))
    assert with_tools.level == 2
    assert with_tools.tier_quality is not None and with_tools.tier_quality["haiku"] == 0.0
    assert "conversation shape (2 tools) needs at least sonnet" in with_tools.reasoning
    big = clf.classify_now(ClassifyInput(SIMPLE, context_tokens=80_000, turns=30))
    assert big.level == 3
    assert big.tier_quality is not None and big.tier_quality["sonnet"] == 0.0
    assert big.confidence >= 0.8
    arch = "Review this distributed system architecture for race conditions and consistency issues."
    hard = clf.classify_now(ClassifyInput(arch, "You are a principal software architect.", tools=1))
    assert hard.level == 3  # a floor never lowers a verdict


def test_gateway_routes_tool_conversations_above_haiku(gateway: RunningGateway) -> None:
    tools: Any = [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}]
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="auto", max_tokens=200, tools=tools, messages=[{"role": "user", "content": SIMPLE}]
    )
    assert raw.headers["x-tierwise-tier"] == "sonnet"
    plain = gateway.anthropic().messages.with_raw_response.create(
        model="auto", max_tokens=200, messages=[{"role": "user", "content": SIMPLE}]
    )
    assert plain.headers["x-tierwise-tier"] == "haiku"
