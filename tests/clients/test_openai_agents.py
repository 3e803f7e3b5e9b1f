"""The OpenAI Agents SDK (``openai-agents``) against the gateway, as its users run it: the SDK's
own default provider and model class (``OpenAIResponsesModel``, which calls ``POST /v1/responses``)
with only the client's base URL pointed at tierwise and ``model="auto"``. A plain answer and a
two-turn tool loop with a ``@function_tool``, through ``Runner.run`` and ``Runner.run_streamed``;
the ledger must hold one ``responses`` row per model call, priced from the usage it recorded.

Needs the ``openai-agents`` package (dev extra). Without it the tests skip with the reason,
except under ``CI=true``, where they fail: CI must run every real client.
"""

from __future__ import annotations

import asyncio
import json
import os
from decimal import Decimal
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.conftest import GatewayFactory, RunningGateway
from tierwise.pricing import PriceCatalogue
from tierwise.types import LedgerEntry

try:
    import agents
except ImportError:  # pragma: no cover - depends on the environment
    agents = None  # type: ignore[assignment]

REASON = "the OpenAI Agents SDK is not installed (pip install -e '.[dev]' installs openai-agents)"


@pytest.fixture(autouse=True)
def _agents_sdk() -> None:
    if agents is not None:
        agents.set_tracing_disabled(True)  # nothing may try to reach OpenAI's trace ingest
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Agents SDK tests: {REASON}")
    pytest.skip(REASON)


def run_config(gateway: RunningGateway) -> Any:
    """The SDK's default provider (Responses API) with a client whose base URL is the gateway."""
    client = AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key="client-key", max_retries=0)
    provider = agents.OpenAIProvider(openai_client=client)
    assert isinstance(provider.get_model("auto"), agents.OpenAIResponsesModel)
    return agents.RunConfig(model_provider=provider, tracing_disabled=True)


def check_rows(gateway: RunningGateway, count: int) -> list[LedgerEntry]:
    """``count`` ledger rows, each a successful ``responses`` call routed by ``auto`` and priced
    exactly from the usage recorded for it."""
    entries = gateway.wait_for_entries(count)
    assert len(entries) == count, entries
    prices = PriceCatalogue.default()
    tiers = {name: gateway.settings.tier(name).model for name in gateway.settings.tier_names}
    upstream = gateway.fake.requests_to("/v1/messages")
    assert len(upstream) == count
    for entry, sent in zip(entries, upstream, strict=True):
        assert (entry.api, entry.status, entry.source) == ("responses", "ok", "gateway")
        assert entry.requested_model == "auto"
        assert entry.tier in tiers and entry.model == tiers[entry.tier]
        assert sent.json_body is not None and sent.json_body["model"] == entry.model
        assert entry.usage.input_tokens > 0 and entry.usage.output_tokens > 0
        assert isinstance(entry.cost_usd, Decimal) and entry.cost_usd > 0
        assert entry.cost_usd == prices.cost(entry.usage, entry.model).usd
        assert entry.baseline_cost_usd is not None and entry.saved_usd is not None
    return entries


def test_runner_run_plain_answer(gateway: RunningGateway) -> None:
    gateway.fake.script(reply_text="The capital of France is Paris.")
    agent = agents.Agent(name="geo", instructions="Answer in one sentence.", model="auto")
    result = asyncio.run(
        agents.Runner.run(agent, "What is the capital of France?", run_config=run_config(gateway))
    )
    assert result.final_output == "The capital of France is Paris."
    (entry,) = check_rows(gateway, 1)
    assert not entry.streaming
    (response,) = result.raw_responses
    assert response.usage.input_tokens == entry.usage.total_input_tokens
    assert response.usage.output_tokens == entry.usage.output_tokens
    sent = gateway.fake.requests_to("/v1/messages")[0].json_body
    assert sent is not None and sent["system"] == "Answer in one sentence."
    assert sent["messages"][-1]["role"] == "user"
    assert "What is the capital of France?" in json.dumps(sent["messages"][-1])


def test_runner_run_streamed_plain_answer(gateway: RunningGateway) -> None:
    gateway.fake.script(reply_text="Bonjour, monde.")
    agent = agents.Agent(name="fr", instructions="Translate to French.", model="auto")

    async def run() -> tuple[Any, list[str]]:
        streamed = agents.Runner.run_streamed(
            agent, "Hello, world.", run_config=run_config(gateway)
        )
        deltas = [
            event.data.delta
            async for event in streamed.stream_events()
            if event.type == "raw_response_event"
            and event.data.type == "response.output_text.delta"
        ]
        return streamed, deltas

    streamed, deltas = asyncio.run(run())
    assert streamed.final_output == "Bonjour, monde."
    assert "".join(deltas) == "Bonjour, monde." and len(deltas) > 1
    (entry,) = check_rows(gateway, 1)
    assert entry.streaming


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
def test_two_turn_tool_loop(make_gateway: GatewayFactory, stream: bool) -> None:
    gateway = make_gateway()
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city.

        Args:
            city: The city's name.
        """
        calls.append(city)
        return f"18C and sunny in {city}"

    gateway.fake.script(
        reply_text="Let me check.", tool_use={"name": "get_weather", "input": {"city": "Paris"}}
    )
    gateway.fake.script(reply_text="It is 18C and sunny in Paris.")
    agent = agents.Agent(
        name="weather",
        instructions="Use the tool to answer weather questions.",
        model="auto",
        tools=[get_weather],
    )
    config = run_config(gateway)
    question = "What's the weather in Paris?"

    async def run() -> tuple[Any, list[str]]:
        if not stream:
            return await agents.Runner.run(agent, question, run_config=config), []
        streamed = agents.Runner.run_streamed(agent, question, run_config=config)
        kinds: list[str] = [
            event.item.type
            async for event in streamed.stream_events()
            if event.type == "run_item_stream_event"
        ]
        return streamed, kinds

    result, item_kinds = asyncio.run(run())
    assert calls == ["Paris"]  # the SDK ran the tool the model asked for, once
    assert result.final_output == "It is 18C and sunny in Paris."
    if stream:
        assert item_kinds == [
            "message_output_item",  # "Let me check."
            "tool_call_item",
            "tool_call_output_item",
            "message_output_item",
        ]

    # Turn 1 offered the tool; turn 2 carried the call and the tool's real output back.
    first, second = (r.json_body for r in gateway.fake.requests_to("/v1/messages"))
    assert first is not None and second is not None
    assert [t["name"] for t in first["tools"]] == ["get_weather"]
    assert first["tools"][0]["input_schema"]["properties"]["city"]["type"] == "string"
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    (call,) = [b for b in second["messages"][1]["content"] if b["type"] == "tool_use"]
    assert (call["name"], call["input"]) == ("get_weather", {"city": "Paris"})
    (returned,) = second["messages"][2]["content"]
    assert returned["type"] == "tool_result" and returned["tool_use_id"] == call["id"]
    assert "18C and sunny in Paris" in json.dumps(returned["content"])

    entries = check_rows(gateway, 2)
    assert all(e.streaming is stream for e in entries)
    assert len(result.raw_responses) == 2
    for response, entry in zip(result.raw_responses, entries, strict=True):
        assert response.usage.output_tokens == entry.usage.output_tokens
