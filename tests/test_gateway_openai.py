"""The gateway's OpenAI dialect, driven by the official `openai` SDK."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import RunningGateway


def last_upstream(gw: RunningGateway) -> dict[str, Any]:
    body = gw.fake.requests_to("/v1/messages")[-1].json_body
    assert isinstance(body, dict)
    return body


def test_chat_completion_routes_and_maps_usage(gateway: RunningGateway) -> None:
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[
            {"role": "developer", "content": "Answer in one word."},
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": "Translate 'thank you' into French."},
        ],
        max_completion_tokens=50,
    )
    completion = raw.parse()
    assert completion.model == "claude-haiku-4-5"
    assert raw.headers["x-tierwise-tier"] == "haiku"
    assert float(raw.headers["x-tierwise-cost-usd"]) > 0
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.startswith(
        "Fake reply from claude-haiku-4-5"
    )
    assert choice.finish_reason == "stop"
    sent = last_upstream(gateway)
    assert sent["system"] == "Answer in one word.\n\nBe exact."
    assert sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "user", "content": "Translate 'thank you' into French."}]
    usage = completion.usage
    assert usage is not None
    assert (
        usage.prompt_tokens > 0
        and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    )
    entry = gateway.sink.entries[-1]
    assert (entry.api, entry.status, entry.requested_model) == ("chat.completions", "ok", "auto")


def test_cache_and_reasoning_usage_mapping(gateway: RunningGateway) -> None:
    gateway.fake.script(
        usage={
            "input_tokens": 10,
            "output_tokens": 40,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens_details": {"thinking_tokens": 30},
        }
    )
    # A prompt long enough to hold 1,210 input tokens: usage beyond what the request could
    # have held is clamped to its worst-case bound (accounting.measure_usage).
    prompt = "The quick brown fox jumps over the lazy dog. " * 400
    completion = gateway.openai().chat.completions.create(
        model="opus", messages=[{"role": "user", "content": prompt}], max_tokens=500
    )
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == 1210
    assert usage.completion_tokens == 40
    assert (
        usage.prompt_tokens_details is not None
        and usage.prompt_tokens_details.cached_tokens == 1000
    )
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 30


def test_streaming_with_include_usage(gateway: RunningGateway) -> None:
    stream = gateway.openai().chat.completions.create(
        model="sonnet",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Write a haiku about routers."}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Fake reply from claude-sonnet-4-6")
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    entry = gateway.wait_for_entries(1)[-1]
    assert entry.streaming and entry.status == "ok"
    assert entry.usage.output_tokens == chunks[-1].usage.completion_tokens


def test_tool_calls_both_ways(gateway: RunningGateway) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    gateway.fake.script(
        tool_use={"id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    )
    client = gateway.openai()
    first = client.chat.completions.create(
        model="haiku",
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (  # type: ignore[union-attr]
        "toolu_1",
        "get_weather",
        {"city": "Oslo"},
    )
    sent = last_upstream(gateway)
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather by city",
            "input_schema": tools[0]["function"]["parameters"],
        }
    ]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    # The tool result goes back in the next turn as tool_use / tool_result blocks.
    client.chat.completions.create(
        model="haiku",
        tools=tools,
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "12 C and rain"},
        ],
    )
    sent = last_upstream(gateway)
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
        ],
    }
    assert sent["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 C and rain"}],
    }


def test_streamed_tool_call_arguments(gateway: RunningGateway) -> None:
    gateway.fake.script(
        tool_use={"id": "toolu_9", "name": "lookup", "input": {"q": "tierwise", "n": 3}}
    )
    stream = gateway.openai().chat.completions.create(
        model="haiku",
        stream=True,
        messages=[{"role": "user", "content": "look it up"}],
        tools=[
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ],
    )
    arguments = ""
    names = []
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
                if call.function and call.function.arguments:
                    arguments += call.function.arguments
            finish = choice.finish_reason or finish
    assert names == ["lookup"]
    assert json.loads(arguments) == {"q": "tierwise", "n": 3}
    assert finish == "tool_calls"


def test_length_finish_and_sampling_dropped_where_rejected(gateway: RunningGateway) -> None:
    client = gateway.openai()
    done = client.chat.completions.create(
        model="haiku",
        max_tokens=2,
        temperature=0.2,
        top_p=0.9,
        messages=[{"role": "user", "content": "Say something long please"}],
    )
    assert done.choices[0].finish_reason == "length"
    # Haiku 4.5 accepts temperature or top_p, not both: top_p is dropped.
    assert last_upstream(gateway)["temperature"] == 0.2
    assert "top_p" not in last_upstream(gateway)
    client.chat.completions.create(
        model="claude-opus-4-7", temperature=0.2, messages=[{"role": "user", "content": "hi"}]
    )
    sent = last_upstream(gateway)
    assert sent["model"] == "claude-opus-4-7"
    assert "temperature" not in sent  # Opus 4.7 rejects sampling parameters


def test_reasoning_effort_and_json_schema(gateway: RunningGateway) -> None:
    gateway.openai().chat.completions.create(
        model="opus",
        reasoning_effort="low",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        messages=[{"role": "user", "content": "hi"}],
    )
    sent = last_upstream(gateway)
    assert sent["output_config"] == {
        "effort": "low",
        "format": {"type": "json_schema", "schema": {"type": "object"}},
    }


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "messages.0.content.0.image_url.url",
        ),
    ],
)
def test_bad_requests_get_openai_errors(
    gateway: RunningGateway, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai(max_retries=0).chat.completions.create(model="auto", **kwargs)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert body["type"] == "invalid_request_error"


def test_upstream_failure_in_openai_shape(gateway: RunningGateway) -> None:
    gateway.fake.script(status=529, retry_after="0", times=10)
    with pytest.raises(openai.InternalServerError) as info:
        gateway.openai(max_retries=0).chat.completions.create(
            model="haiku", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 529
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "overloaded_error"


def test_openai_models_list(gateway: RunningGateway) -> None:
    ids = [m.id for m in gateway.openai().models.list()]
    assert ids[:4] == ["auto", "haiku", "sonnet", "opus"]
