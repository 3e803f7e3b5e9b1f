"""``POST /v1/responses`` (OpenAI's Responses API, what the OpenAI Agents SDK calls) through
the gateway, driven by the official openai SDK: text, streaming, a function-tool loop,
structured output, reasoning effort, usage, and errors in the dialect's exact shape."""

from __future__ import annotations

import json
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.conftest import RunningGateway


def test_create_returns_a_response_the_sdk_parses(gateway: RunningGateway) -> None:
    client = gateway.openai(max_retries=0)
    response = client.responses.create(
        model="auto", instructions="Answer briefly.", input="What is the capital of France?"
    )
    assert response.object == "response" and response.status == "completed"
    assert response.output_text.startswith("Fake reply from claude-")
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    sent = gateway.fake.requests_to("/v1/messages")[-1].json_body
    assert sent is not None
    assert sent["system"] == "Answer briefly."
    assert sent["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is the capital of France?"}]}]  # fmt: skip
    (entry,) = gateway.wait_for_entries(1)
    assert entry.api == "responses" and entry.status == "ok" and entry.cost_usd


def test_stream_follows_the_responses_event_grammar(gateway: RunningGateway) -> None:
    client = gateway.openai(max_retries=0)
    events = list(client.responses.create(model="haiku", input="Say hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == text and final.usage is not None
    entry = gateway.wait_for_entries(1)[-1]
    assert entry.status == "ok" and entry.streaming


TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_loop(gateway: RunningGateway, stream: bool) -> None:
    gateway.fake.script(tool_use={"name": "get_weather", "input": {"city": "Paris"}})
    client = gateway.openai(max_retries=0)
    items: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        events = list(client.responses.create(model="haiku", input=items, tools=TOOLS, stream=True))
        kinds = [e.type for e in events]
        assert "response.function_call_arguments.delta" in kinds
        first = events[-1].response  # type: ignore[union-attr]
    else:
        first = client.responses.create(model="haiku", input=items, tools=TOOLS)
    calls = [o for o in first.output if isinstance(o, ResponseFunctionToolCall)]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    # Second turn: the call and its output go back as items, as the Agents SDK sends them.
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C"})
    second = client.responses.create(model="haiku", input=items, tools=TOOLS)
    assert second.status == "completed" and second.output_text
    sent = gateway.fake.requests_to("/v1/messages")[-1].json_body
    assert sent is not None
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][-1]["type"] == "tool_use"
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": calls[0].call_id, "content": "18C"}
    ]


def test_structured_output_and_reasoning_effort_are_translated(gateway: RunningGateway) -> None:
    client = gateway.openai(max_retries=0)
    schema: Any = {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
    }
    client.responses.create(
        model="opus",
        input="Title for a story about a lighthouse",
        reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "t", "schema": schema}},
        max_output_tokens=300,
    )
    sent = gateway.fake.requests_to("/v1/messages")[-1].json_body
    assert sent is not None
    assert sent["output_config"] == {
        "effort": "low",
        "format": {"type": "json_schema", "schema": schema},
    }
    assert sent["max_tokens"] == 300


def test_errors_have_the_openai_shape(gateway: RunningGateway) -> None:
    client = gateway.openai(max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="auto", input="hi", previous_response_id="resp_x")
    assert "previous_response_id" in str(info.value)
    gateway.fake.script(status=529, times=10)
    with pytest.raises(openai.APIStatusError) as upstream:
        client.responses.create(model="haiku", input="hi")
    body = upstream.value.body
    assert isinstance(body, dict) and body.get("code") == "overloaded_error"


def test_stream_failure_ends_with_response_failed(gateway: RunningGateway) -> None:
    gateway.fake.script(stream_cut=True)
    client = gateway.openai(max_retries=0)
    events = list(client.responses.create(model="haiku", input="Tell me a story", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    entry = gateway.wait_for_entries(1)[-1]
    assert (entry.status, entry.error_type) == ("error", "incomplete_stream")


def test_root_answers_get_and_head(gateway: RunningGateway) -> None:
    assert httpx.get(gateway.base_url + "/").status_code == 200
    assert httpx.head(gateway.base_url + "/").status_code == 200
    wrong = httpx.get(gateway.base_url + "/v1/responses")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
