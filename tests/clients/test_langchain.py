"""LangChain (langchain-anthropic, langchain-openai) through the gateway, strict fake upstream.

Each client talks to a real gateway on loopback with ``model="auto"``; the gateway routes to a
single configured tier (sonnet or opus, whose thinking/effort defaults used to break forced tool
choice; haiku, which accepts no effort) and the strict fake upstream refuses anything the real
Messages API would. Installed from PyPI by the dev extra; skipped with the reason when missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.clients.gateway import running_gateway
from tests.conftest import RunningGateway
from tests.fakes.anthropic_server import FakeAnthropic

langchain_anthropic = pytest.importorskip(
    "langchain_anthropic", reason="langchain-anthropic is not installed (pip install -e '.[dev]')"
)
langchain_openai = pytest.importorskip(
    "langchain_openai", reason="langchain-openai is not installed (pip install -e '.[dev]')"
)
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

ChatAnthropic = langchain_anthropic.ChatAnthropic
ChatOpenAI = langchain_openai.ChatOpenAI


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"12 C and rain in {city}"


class Weather(BaseModel):
    """The weather report for a city."""

    city: str = Field(description="the city")
    temperature_c: int = Field(description="temperature in Celsius")
    raining: bool


def sent_bodies(fake: FakeAnthropic) -> list[dict[str, Any]]:
    bodies = [r.json_body for r in fake.requests_to("/v1/messages")]
    assert all(isinstance(b, dict) for b in bodies)
    return bodies  # type: ignore[return-value]


@pytest.fixture(params=["sonnet", "opus"])
def thinking_tier(
    request: pytest.FixtureRequest, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Iterator[RunningGateway]:
    """A gateway whose ``auto`` lands on a tier with thinking and effort defaults."""
    with running_gateway(fake_anthropic, tmp_path, only_tier=request.param) as gw:
        yield gw


@pytest.fixture
def haiku_tier(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(fake_anthropic, tmp_path, only_tier="haiku") as gw:
        yield gw


def anthropic_chat(gw: RunningGateway, **kwargs: Any) -> Any:
    return ChatAnthropic(
        model="auto", base_url=gw.base_url, api_key="client-key", max_retries=0, **kwargs
    )


def openai_chat(gw: RunningGateway, **kwargs: Any) -> Any:
    return ChatOpenAI(
        model="auto", base_url=gw.base_url + "/v1", api_key="client-key", max_retries=0, **kwargs
    )


# --- ChatAnthropic ------------------------------------------------------------------------------


def test_anthropic_invoke_and_stream(thinking_tier: RunningGateway) -> None:
    chat = anthropic_chat(thinking_tier)
    answer = chat.invoke("Say hello to the gateway.")
    assert isinstance(answer, AIMessage)
    assert "Fake reply from claude-" in answer.text
    streamed = "".join(chunk.text for chunk in chat.stream("Say hello again."))
    assert "Fake reply from claude-" in streamed
    # The tier's thinking went upstream (no tool was forced) and came back signed.
    body = sent_bodies(thinking_tier.fake)[-1]
    assert body["thinking"] == {"type": "adaptive"}
    assert thinking_tier.wait_for_entries(2)[-1].status == "ok"


def test_anthropic_forced_tool_choice(thinking_tier: RunningGateway) -> None:
    chat = anthropic_chat(thinking_tier).bind_tools([get_weather], tool_choice="any")
    answer = chat.invoke("What is the weather in Oslo?")
    assert [call["name"] for call in answer.tool_calls] == ["get_weather"]
    assert answer.tool_calls[0]["args"] == {"city": "fake"}
    named = anthropic_chat(thinking_tier).bind_tools([get_weather], tool_choice="get_weather")
    assert named.invoke("Oslo?").tool_calls[0]["name"] == "get_weather"
    for body in sent_bodies(thinking_tier.fake):
        assert body["tool_choice"]["type"] in ("any", "tool")
        assert "thinking" not in body  # the tier's thinking is not added to a forced tool


@pytest.mark.parametrize("method", [None, "function_calling", "json_schema"])
def test_anthropic_structured_output(thinking_tier: RunningGateway, method: str | None) -> None:
    kwargs = {} if method is None else {"method": method}
    chat = anthropic_chat(thinking_tier).with_structured_output(Weather, **kwargs)
    report = chat.invoke("Report the weather in Oslo.")
    assert report == Weather(city="fake", temperature_c=1, raining=True)


def test_anthropic_tool_loop_with_thinking(thinking_tier: RunningGateway) -> None:
    chat = anthropic_chat(thinking_tier).bind_tools([get_weather])
    history: list[Any] = [HumanMessage("Use get_weather to tell me the weather in Oslo.")]
    first = chat.invoke(history)
    assert first.tool_calls, first
    assert isinstance(first.content, list)
    assert first.content[0]["type"] == "thinking"  # the tier thinks; the block must go back
    history.append(first)
    for call in first.tool_calls:
        history.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = chat.invoke(history)
    assert not final.tool_calls
    assert "after 1 tool result(s): 12 C and rain in fake" in final.text
    # The second request carried the first answer's thinking block back, signature intact.
    second = sent_bodies(thinking_tier.fake)[-1]
    assert second["messages"][1]["content"][0]["type"] == "thinking"


# --- ChatOpenAI ---------------------------------------------------------------------------------


def test_openai_invoke_and_stream(thinking_tier: RunningGateway) -> None:
    chat = openai_chat(thinking_tier)
    answer = chat.invoke("Say hello to the gateway.")
    assert "Fake reply from claude-" in answer.text
    streamed = "".join(chunk.text for chunk in chat.stream("Say hello again."))
    assert "Fake reply from claude-" in streamed


def test_openai_tool_choice_required(thinking_tier: RunningGateway) -> None:
    chat = openai_chat(thinking_tier).bind_tools([get_weather], tool_choice="required")
    answer = chat.invoke("What is the weather in Oslo?")
    assert [call["name"] for call in answer.tool_calls] == ["get_weather"]
    named = openai_chat(thinking_tier).bind_tools([get_weather], tool_choice="get_weather")
    assert named.invoke("Oslo?").tool_calls[0]["args"] == {"city": "fake"}
    for body in sent_bodies(thinking_tier.fake):
        assert "thinking" not in body


@pytest.mark.parametrize("method", [None, "function_calling", "json_schema"])
def test_openai_structured_output(thinking_tier: RunningGateway, method: str | None) -> None:
    kwargs = {} if method is None else {"method": method}
    chat = openai_chat(thinking_tier).with_structured_output(Weather, **kwargs)
    report = chat.invoke("Report the weather in Oslo.")
    assert report == Weather(city="fake", temperature_c=1, raining=True)


def test_openai_tool_loop(thinking_tier: RunningGateway) -> None:
    chat = openai_chat(thinking_tier).bind_tools([get_weather])
    history: list[Any] = [HumanMessage("Use get_weather to tell me the weather in Oslo.")]
    first = chat.invoke(history)
    assert first.tool_calls, first
    history.append(first)
    for call in first.tool_calls:
        history.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = chat.invoke(history)
    assert not final.tool_calls
    assert "after 1 tool result(s): 12 C and rain in fake" in final.text
    # The OpenAI dialect cannot carry thinking blocks back, so the tier's thinking is left out
    # of the follow-up (an unthought tool call in the conversation).
    assert "thinking" not in sent_bodies(thinking_tier.fake)[-1]


@pytest.mark.parametrize("effort", ["low", "high"])
def test_openai_reasoning_effort_on_haiku(haiku_tier: RunningGateway, effort: str) -> None:
    chat = openai_chat(haiku_tier, reasoning_effort=effort)
    answer = chat.invoke("Translate 'thank you' into French.")
    assert "Fake reply from claude-haiku-4-5" in answer.text
    body = sent_bodies(haiku_tier.fake)[-1]
    assert body["model"] == "claude-haiku-4-5"
    assert "output_config" not in body  # Haiku 4.5 accepts no effort


def test_openai_reasoning_effort_on_thinking_tiers(thinking_tier: RunningGateway) -> None:
    chat = openai_chat(thinking_tier, reasoning_effort="low")
    assert "Fake reply" in chat.invoke("Explain recursion briefly.").text
    assert sent_bodies(thinking_tier.fake)[-1]["output_config"] == {"effort": "low"}


def test_default_tiers_with_the_shared_fixture(gateway: RunningGateway) -> None:
    """The shipped three tiers, routed by the learned classifier (tests/conftest.py's gateway)."""
    structured = anthropic_chat(gateway).with_structured_output(Weather)
    assert structured.invoke("Report the weather in Oslo.") == Weather(
        city="fake", temperature_c=1, raining=True
    )
    forced = openai_chat(gateway).bind_tools([get_weather], tool_choice="required")
    assert forced.invoke("Weather in Oslo?").tool_calls[0]["name"] == "get_weather"
    for body in sent_bodies(gateway.fake):
        assert "thinking" not in body
    entries = gateway.wait_for_entries(2)
    assert [e.status for e in entries] == ["ok", "ok"]
