"""The gateway's Anthropic dialect, driven by the official `anthropic` SDK on loopback, in
front of the fake upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx2 as httpx
import pytest

from tests.conftest import GatewayFactory, RunningGateway

LESSON = [
    (
        "Format this customer record as JSON: name Ann Lee, age 31, city Oslo",
        "",
        "claude-haiku-4-5",
    ),
    (
        "Write a Python function that merges two sorted lists into one sorted list.",
        "",
        "claude-sonnet-4-6",
    ),
    (
        "Review this distributed system architecture for race conditions and consistency issues.",
        "You are a principal software architect.",
        "claude-opus-4-6",
    ),
]


def upstream_bodies(gw: RunningGateway) -> list[dict[str, Any]]:
    return [
        r.json_body for r in gw.fake.requests_to("/v1/messages") if isinstance(r.json_body, dict)
    ]


def test_lesson_prompts_route_with_the_decision_in_headers(gateway: RunningGateway) -> None:
    client = gateway.anthropic()
    for prompt, system, model in LESSON:
        kwargs: dict[str, Any] = {"system": system} if system else {}
        raw = client.messages.with_raw_response.create(
            model="auto", max_tokens=256, messages=[{"role": "user", "content": prompt}], **kwargs
        )
        message = raw.parse()
        assert message.model == model
        h = raw.headers
        assert h["x-tierwise-model"] == model
        assert h["x-tierwise-tier"] == model.split("-")[1]
        assert h["x-tierwise-classifier"] == "learned"
        assert 0.7 <= float(h["x-tierwise-confidence"]) <= 1
        assert h["x-tierwise-request-id"].startswith("tw_")
        assert float(h["x-tierwise-cost-usd"]) > 0
        assert "x-tierwise-simulated" not in h
        assert message.content[-1].type == "text"
    entries = gateway.sink.entries
    assert [e.model for e in entries] == [m for _, _, m in LESSON]
    assert all(e.status == "ok" and e.source == "gateway" and e.api == "messages" for e in entries)
    assert all(e.requested_model == "auto" for e in entries)
    assert all(e.cost_usd is not None and e.cost_usd > 0 for e in entries)


@pytest.mark.lenient_upstream  # "future_field" is unknown to the real API (it would refuse it)
def test_faithful_pass_through_of_fields_headers_and_blocks(gateway: RunningGateway) -> None:
    client = gateway.anthropic(
        default_headers={"anthropic-beta": "files-api-2025-04-14,new-beta-2099"}
    )
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "What is in this image?",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "image", "source": image},
            ],
        },
    ]
    client.messages.create(
        model="haiku",
        max_tokens=100,
        system=[
            {
                "type": "text",
                "text": "Be brief.",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
        messages=messages,
        metadata={"user_id": "u-1"},
        stop_sequences=["\n\nHuman:"],
        extra_body={
            "diagnostics": {"previous_message_id": None},
            "future_field": {"x": [1, 2.5, "é"]},
        },
    )
    sent = gateway.fake.requests_to("/v1/messages")[-1]
    body = sent.json_body
    assert isinstance(body, dict)
    assert body["model"] == "claude-haiku-4-5"
    assert body["messages"] == messages
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["future_field"] == {"x": [1, 2.5, "é"]}
    assert body["diagnostics"] == {"previous_message_id": None}
    assert sent.header("anthropic-beta") == "files-api-2025-04-14,new-beta-2099"
    assert sent.header("anthropic-version") == "2026-10-21"
    assert sent.header("x-api-key") == gateway.fake.api_key  # the gateway's upstream key
    assert sent.header("authorization") is None  # the client's credentials never go upstream


def test_tier_defaults_only_where_the_client_set_none(gateway: RunningGateway) -> None:
    client = gateway.anthropic()
    msgs: Any = [{"role": "user", "content": "hi"}]
    client.messages.create(model="opus", max_tokens=300, messages=msgs)
    client.messages.create(
        model="opus", max_tokens=300, messages=msgs, thinking={"type": "disabled"}
    )
    client.messages.create(
        model="opus", max_tokens=300, messages=msgs, output_config={"effort": "low"}
    )
    client.messages.create(model="claude-opus-4-6", max_tokens=300, messages=msgs)  # pass-through
    a, b, c, d = upstream_bodies(gateway)
    assert (a["thinking"], a["output_config"]) == ({"type": "adaptive"}, {"effort": "high"})
    assert (b["thinking"], b["output_config"]) == ({"type": "disabled"}, {"effort": "high"})
    assert (c["thinking"], c["output_config"]) == ({"type": "adaptive"}, {"effort": "low"})
    assert "thinking" not in d and "output_config" not in d
    passthrough = gateway.sink.entries[-1]
    assert (passthrough.tier, passthrough.classifier, passthrough.requested_model) == (
        "opus",
        "none",
        "claude-opus-4-6",
    )


def test_thinking_stream_round_trip(gateway: RunningGateway) -> None:
    client = gateway.anthropic()
    with client.messages.stream(
        model="opus",
        max_tokens=2000,
        messages=[{"role": "user", "content": "Prove there are infinitely many primes."}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].type == "thinking"
    assert final.content[0].signature  # signature_delta relayed
    assert text == final.content[-1].text  # type: ignore[union-attr]
    # The thinking block goes back unmodified in the next turn and the fake accepts it.
    history: Any = [b.model_dump(exclude_none=True) for b in final.content]
    follow = client.messages.create(
        model="opus",
        max_tokens=2000,
        messages=[
            {"role": "user", "content": "Prove there are infinitely many primes."},
            {
                "role": "assistant",
                "content": history,
            },
            {"role": "user", "content": "Shorter, please."},
        ],
    )
    assert follow.stop_reason in ("end_turn", "max_tokens")
    entries = gateway.wait_for_entries(2)
    assert entries[0].streaming and entries[0].status == "ok"
    assert entries[0].usage.thinking_tokens > 0
    assert entries[0].usage.output_tokens == final.usage.output_tokens


def test_tool_use_stream_with_input_json_delta(gateway: RunningGateway) -> None:
    gateway.fake.script(tool_use={"name": "get_weather", "input": {"city": "Oslo", "unit": "c"}})
    client = gateway.anthropic()
    tools: Any = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    with client.messages.stream(
        model="haiku",
        max_tokens=200,
        tools=tools,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()
    call = final.content[-1]
    assert call.type == "tool_use"
    assert call.input == {"city": "Oslo", "unit": "c"}
    assert final.stop_reason == "tool_use"


def test_async_client_and_raw_stream(gateway: RunningGateway) -> None:
    async def run() -> list[str]:
        client = gateway.async_anthropic()
        message = await client.messages.create(
            model="auto",
            max_tokens=50,
            messages=[{"role": "user", "content": "Translate 'cat' to German"}],
        )
        assert message.model == "claude-haiku-4-5"
        events: list[str] = []
        stream = await client.messages.create(
            model="sonnet",
            max_tokens=500,
            stream=True,
            messages=[{"role": "user", "content": "hi"}],
        )
        async for event in stream:
            events.append(event.type)
        await client.close()
        return events

    events = asyncio.run(run())
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "message_delta" in events


def test_count_tokens_and_models(gateway: RunningGateway) -> None:
    client = gateway.anthropic()
    count = client.messages.count_tokens(
        model="auto", messages=[{"role": "user", "content": "Hello there, how are you?"}]
    )
    assert count.input_tokens > 0
    sent = gateway.fake.requests_to("/v1/messages/count_tokens")[-1].json_body
    assert isinstance(sent, dict) and sent["model"].startswith("claude-")
    ids = [m.id for m in client.models.list()]
    assert ids[:4] == ["auto", "haiku", "sonnet", "opus"]
    assert {"claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"} <= set(ids)
    assert client.models.retrieve("opus").display_name.startswith("tierwise tier opus")


def test_old_sdk_headers_and_beta_query_string(gateway: RunningGateway) -> None:
    response = httpx.post(
        gateway.base_url + "/v1/messages?beta=true",
        headers={
            "x-api-key": "k",
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
        json={
            "model": "auto",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "Extract the year: born 1984"}],
        },
    )
    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "haiku"
    assert gateway.fake.requests_to("/v1/messages")[-1].header("anthropic-version") == "2023-06-01"


def test_context_window_escalation(gateway: RunningGateway) -> None:
    big = "word " * 200_000  # ~250k tokens: over Haiku 4.5's 200k window, within Sonnet's 1M
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="haiku", max_tokens=10, messages=[{"role": "user", "content": big}]
    )
    assert raw.headers["x-tierwise-tier"] == "sonnet"
    entry = gateway.sink.entries[-1]
    assert "escalated from haiku to sonnet" in (entry.reason or "")


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        (b"{not json", 400, "invalid_request_error", "not valid JSON"),
        (b"[1, 2]", 400, "invalid_request_error", "must be a JSON object"),
        (
            b'{"model": "auto", "messages": []}',
            400,
            "invalid_request_error",
            "max_tokens: Field required",
        ),
        (
            b'{"model": "auto", "max_tokens": "9", "messages": []}',
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            b'{"max_tokens": 9, "messages": []}',
            400,
            "invalid_request_error",
            "model: Field required",
        ),
        (
            b'{"model": "auto", "max_tokens": 9, "messages": "hi"}',
            400,
            "invalid_request_error",
            "messages: Input should be a valid list",
        ),
        (
            b'{"model": "auto", "max_tokens": 9, "messages": [{"role": "user"}]}',
            400,
            "invalid_request_error",
            "messages.0.content",
        ),
    ],
)
def test_bad_requests_get_anthropic_errors(
    gateway: RunningGateway, body: bytes, status: int, kind: str, message: str
) -> None:
    response = httpx.post(
        gateway.base_url + "/v1/messages",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status
    data = response.json()
    assert data["type"] == "error"
    assert data["error"]["type"] == kind
    assert message in data["error"]["message"]
    assert data["request_id"] == response.headers["x-tierwise-request-id"]
    assert gateway.fake.requests_to("/v1/messages") == []


def test_sdk_sees_typed_errors(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(max_body_bytes=4096)
    client = gw.anthropic(max_retries=0)
    with pytest.raises(anthropic.RequestTooLargeError):
        client.messages.create(
            model="auto", max_tokens=5, messages=[{"role": "user", "content": "x" * 10_000}]
        )
    with pytest.raises(anthropic.NotFoundError):
        client.get("/v1/nothing-here", cast_to=object)
    gw.fake.script(status=400, error_type="invalid_request_error")
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="haiku", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.response.headers["x-tierwise-tier"] == "haiku"
    assert len(gw.fake.requests_to("/v1/messages")) == 1  # a 400 is not retried
    assert gw.sink.entries[-1].status == "error"
    assert gw.sink.entries[-1].http_status == 400
