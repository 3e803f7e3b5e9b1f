"""Prove the fake Anthropic server with the official SDK (sync, async, streams, retries, errors)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message, MessageParam, TextBlock, ThinkingBlock

from tests.fakes.anthropic_server import (
    ADAPTIVE_THINKING_MESSAGE,
    ENABLED_THINKING_MESSAGE,
    PREFILL_MESSAGE,
    THINKING_MODIFIED_MESSAGE,
    FakeAnthropic,
    ManualClock,
    count_input_tokens,
    sign_thinking,
)
from tests.fakes.strict_rules import (
    EXCLUSIVE_SAMPLING_MESSAGE,
    FORCED_TOOL_THINKING_MESSAGE,
    INVALID_SIGNATURE_MESSAGE,
    NO_EFFORT_MESSAGE,
    THINKING_FIRST_MESSAGE,
    THINKING_TEMPERATURE_MESSAGE,
    block_tokens,
    rejection,
)

MODEL = "claude-opus-4-7"
HELLO: list[MessageParam] = [{"role": "user", "content": "Hello there, fake Claude!"}]


@pytest.fixture
def client(fake_anthropic: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_anthropic.base_url, api_key=fake_anthropic.api_key, max_retries=2
    ) as sdk:
        yield sdk


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if isinstance(block, TextBlock))


def raw_post(fake: FakeAnthropic, path: str, content: bytes, **headers: str) -> httpx2.Response:
    base = {
        "x-api-key": fake.api_key,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    return httpx2.post(fake.base_url + path, content=content, headers={**base, **headers})


# --- happy paths ----------------------------------------------------------------------------


def test_sync_create(client: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=200, messages=HELLO)

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    assert text_of(message) == f"Fake reply from {MODEL}: Hello there, fake Claude!"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message._request_id is not None
    assert message._request_id.startswith("req_")
    usage = message.usage
    assert usage.input_tokens == math.ceil(len("Hello there, fake Claude!") / 4)
    assert usage.output_tokens == math.ceil(len(text_of(message)) / 4)
    assert usage.cache_creation_input_tokens == 0
    assert usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert usage.service_tier == "standard"
    assert usage.output_tokens_details is not None
    assert usage.output_tokens_details.thinking_tokens == 0

    (request,) = fake_anthropic.requests
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert request.json_body == {"max_tokens": 200, "messages": HELLO, "model": MODEL}
    assert request.headers["content-type"] == "application/json"


def test_async_create_and_stream(fake_anthropic: FakeAnthropic) -> None:
    async def run() -> tuple[Message, Message, str]:
        async with anthropic.AsyncAnthropic(
            base_url=fake_anthropic.base_url, api_key=fake_anthropic.api_key
        ) as sdk:
            created = await sdk.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
            async with sdk.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
                pieces = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
            return created, final, "".join(pieces)

    created, final, streamed = asyncio.run(run())
    assert text_of(created) == text_of(final) == streamed
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == created.usage.output_tokens
    assert fake_anthropic.requests[0].header("x-stainless-async") == "async:asyncio"


def test_stream_helper_get_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=200, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(pieces) > 1  # text arrives in several text_delta chunks
    assert (
        "".join(pieces) == text_of(final) == f"Fake reply from {MODEL}: Hello there, fake Claude!"
    )
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == math.ceil(len("Hello there, fake Claude!") / 4)
    assert final.usage.output_tokens == math.ceil(len(text_of(final)) / 4)  # from message_delta


def test_raw_stream_event_grammar(client: anthropic.Anthropic) -> None:
    response = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=200, messages=HELLO, stream=True
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    events = list(response.parse())

    types = [event.type for event in events]  # the SDK drops `ping` itself
    assert types[0] == "message_start"
    assert types[1] == "content_block_start"
    assert set(types[2:-3]) == {"content_block_delta"}
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0]
    assert start.type == "message_start"
    assert start.message.content == []
    assert start.message.stop_reason is None
    assert start.message.usage.output_tokens == 1
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens > 1


def test_sse_bytes_on_the_wire(fake_anthropic: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": HELLO}
    response = raw_post(fake_anthropic, "/v1/messages", json.dumps(body).encode())
    frames = [frame for frame in response.text.split("\n\n") if frame]

    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ")
        assert data_line.startswith("data: ")
        assert json.loads(data_line[6:])["type"] == event_line[7:]
    assert 'event: ping\ndata: {"type":"ping"}' in frames


def test_thinking_blocks(client: anthropic.Anthropic) -> None:
    adaptive = client.messages.create(
        model=MODEL, max_tokens=500, messages=HELLO, thinking={"type": "adaptive"}
    )
    thinking, text = adaptive.content
    assert isinstance(thinking, ThinkingBlock)
    assert isinstance(text, TextBlock)
    assert thinking.signature == sign_thinking(thinking.thinking, MODEL)
    assert adaptive.usage.output_tokens_details is not None
    thinking_tokens = adaptive.usage.output_tokens_details.thinking_tokens
    assert thinking_tokens == math.ceil(len(thinking.thinking) / 4)
    assert adaptive.usage.output_tokens == thinking_tokens + math.ceil(len(text.text) / 4)

    enabled = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=2048,
        messages=HELLO,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert [block.type for block in enabled.content] == ["thinking", "text"]

    with client.messages.stream(
        model=MODEL, max_tokens=500, messages=HELLO, thinking={"type": "adaptive"}
    ) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
        streamed = stream.get_final_message()
    assert deltas.index("signature_delta") > deltas.index("thinking_delta")
    assert deltas[deltas.index("signature_delta") + 1] == "text_delta"
    assert isinstance(streamed.content[0], ThinkingBlock)
    assert streamed.content[0].signature == thinking.signature
    assert streamed.usage.output_tokens_details is not None
    assert streamed.usage.output_tokens_details.thinking_tokens == thinking_tokens


def test_thinking_blocks_must_come_back_unmodified(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model=MODEL, max_tokens=500, messages=HELLO, thinking={"type": "adaptive"}
    )
    thinking = first.content[0]
    assert isinstance(thinking, ThinkingBlock)
    intact: MessageParam = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": thinking.thinking, "signature": thinking.signature},
            {"type": "text", "text": text_of(first)},
        ],
    }
    follow_up: MessageParam = {"role": "user", "content": "And then?"}
    client.messages.create(model=MODEL, max_tokens=500, messages=[*HELLO, intact, follow_up])

    tampered: MessageParam = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "edited", "signature": thinking.signature},
            {"type": "text", "text": text_of(first)},
        ],
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=500, messages=[*HELLO, tampered, follow_up])
    assert caught.value.api_message == f"messages.1.content.0: {THINKING_MODIFIED_MESSAGE}"


def test_max_tokens_and_stop_sequences(client: anthropic.Anthropic) -> None:
    cut = client.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 3
    assert text_of(cut) == f"Fake reply from {MODEL}"[:12]

    stopped = client.messages.create(
        model=MODEL, max_tokens=100, messages=HELLO, stop_sequences=["reply"]
    )
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == "reply"
    assert text_of(stopped) == "Fake "


def test_count_tokens(client: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    counted = client.messages.count_tokens(
        model=MODEL,
        system="You are terse.",
        messages=HELLO,
        tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
    )
    (request,) = fake_anthropic.requests
    assert request.path == "/v1/messages/count_tokens"
    assert isinstance(request.json_body, dict)
    assert counted.input_tokens == count_input_tokens(request.json_body)
    assert counted.input_tokens > math.ceil(len("Hello there, fake Claude!") / 4)


def test_models_list_pagination(client: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    first_page = client.models.list(limit=5)
    assert len(first_page.data) == 5
    assert first_page.has_more is True
    assert first_page.first_id == first_page.data[0].id
    assert first_page.last_id == first_page.data[-1].id

    ids = [model.id for model in client.models.list(limit=5)]  # auto-paginates on after_id
    assert len(ids) == len(set(ids)) > 5
    assert {"claude-opus-4-7", "claude-haiku-4-5-20251001", "claude-opus-4-6"} <= set(ids)
    model_calls = fake_anthropic.requests_to("/v1/models")
    assert len(model_calls) == 1 + math.ceil(len(ids) / 5)
    assert "after_id=" + ids[4] in model_calls[2].query

    info = client.models.retrieve("claude-opus-4-6")
    assert info.display_name == "Claude Opus 4.6"
    assert info.capabilities is not None
    assert info.capabilities.thinking.types.adaptive.supported is True
    assert client.models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5-20251001"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nope-1")


# --- headers, auth, routing -----------------------------------------------------------------


def test_sdk2_sends_bearer_and_new_version(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    (request,) = fake_anthropic.requests
    assert request.headers["authorization"] == f"Bearer {fake_anthropic.api_key}"
    assert "x-api-key" not in request.headers
    assert request.headers["anthropic-version"] == "2026-10-21"
    assert request.headers["x-stainless-retry-count"] == "0"


def test_x_api_key_and_old_version(fake_anthropic: FakeAnthropic) -> None:
    # x-api-key wins over a (wrong) Bearer token; 2023-06-01 still allows temperature.
    with anthropic.Anthropic(
        base_url=fake_anthropic.base_url,
        api_key="sk-wrong",
        default_headers={"x-api-key": fake_anthropic.api_key, "anthropic-version": "2023-06-01"},
    ) as old_style:
        message = old_style.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=HELLO, extra_body={"temperature": 0.2}
        )
    assert message.stop_reason in ("end_turn", "max_tokens")
    (request,) = fake_anthropic.requests
    assert request.headers["x-api-key"] == fake_anthropic.api_key
    assert request.headers["anthropic-version"] == "2023-06-01"

    with (
        anthropic.Anthropic(
            base_url=fake_anthropic.base_url,
            api_key=fake_anthropic.api_key,
            default_headers={"x-api-key": "sk-wrong"},
            max_retries=0,
        ) as wrong_key,
        pytest.raises(anthropic.AuthenticationError),
    ):
        wrong_key.messages.create(model=MODEL, max_tokens=10, messages=HELLO)


def test_beta_query_string_is_ignored(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=50, messages=HELLO, extra_query={"beta": "true"}
    )
    assert text_of(message).startswith("Fake reply")
    (request,) = fake_anthropic.requests
    assert (request.path, request.query) == ("/v1/messages", "beta=true")


def test_auth_failure(fake_anthropic: FakeAnthropic) -> None:
    with (
        anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="sk-bad") as bad,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        bad.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")
    assert len(fake_anthropic.requests) == 1  # recorded although rejected; 401 is not retried


def test_version_header_checked(fake_anthropic: FakeAnthropic) -> None:
    body = json.dumps({"model": MODEL, "max_tokens": 5, "messages": HELLO}).encode()
    bad = raw_post(fake_anthropic, "/v1/messages", body, **{"anthropic-version": "2024-01-01"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert raw_post(fake_anthropic, "/v1/messages", body).status_code == 200


# --- scripted failures ----------------------------------------------------------------------


def test_scripted_529_then_success_is_retried(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    # retry-after "0" is ignored by the SDK (it then backs off ~0.5 s); a tiny positive is faster.
    fake_anthropic.script(status=529, retry_after="0.01")
    message = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)

    assert text_of(message).startswith("Fake reply")
    first, second = fake_anthropic.requests
    assert first.headers["x-stainless-retry-count"] == "0"
    assert second.headers["x-stainless-retry-count"] == "1"
    assert fake_anthropic.pending_scripts == 0


def test_scripted_429_without_retries(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(status=429, retry_after="7")
    with (
        anthropic.Anthropic(
            base_url=fake_anthropic.base_url, api_key=fake_anthropic.api_key, max_retries=0
        ) as sdk,
        pytest.raises(anthropic.RateLimitError) as caught,
    ):
        sdk.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    error = caught.value
    assert error.status_code == 429
    assert error.type == "rate_limit_error"
    assert error.response.headers["retry-after"] == "7"
    assert isinstance(error.body, dict)
    assert error.body["request_id"] == error.request_id
    assert len(fake_anthropic.requests) == 1


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
    ],
)
def test_scripted_status_errors(
    fake_anthropic: FakeAnthropic,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    fake_anthropic.script(status=status)
    with (
        anthropic.Anthropic(
            base_url=fake_anthropic.base_url, api_key=fake_anthropic.api_key, max_retries=0
        ) as sdk,
        pytest.raises(error_class) as caught,
    ):
        sdk.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert caught.value.type == error_type


def test_script_model_glob_times_and_reply_text(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(reply_text="Haiku speaking.", model_glob="claude-haiku-*", times=2)
    other = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert text_of(other).startswith("Fake reply")
    for _ in range(2):
        haiku = client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=HELLO)
        assert text_of(haiku) == "Haiku speaking."
    again = client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=HELLO)
    assert text_of(again).startswith("Fake reply")

    fake_anthropic.script(status=529)
    fake_anthropic.reset()
    assert fake_anthropic.pending_scripts == 0
    assert fake_anthropic.requests == []


def test_mid_stream_error_event(client: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(stream_error="overloaded_error")
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model=MODEL, max_tokens=200, messages=HELLO) as stream,
    ):
        received.extend(stream.text_stream)

    error = caught.value
    assert type(error) is anthropic.APIStatusError  # the base class, not OverloadedError
    assert error.status_code == 200
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == "overloaded_error"
    assert received  # some text deltas arrived before the error
    assert len(fake_anthropic.requests) == 1  # not retried


def test_stream_error_script_on_non_stream_request(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(stream_error="overloaded_error", retry_after="0.01")
    message = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert text_of(message).startswith("Fake reply")
    assert len(fake_anthropic.requests) == 2  # a 529 first, then retried


def test_usage_override(client: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    override = {
        "cache_read_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 0},
        "output_tokens_details": {"thinking_tokens": 50},
    }
    fake_anthropic.script(usage=override, times=2)
    message = client.messages.create(model=MODEL, max_tokens=200, messages=HELLO)
    with client.messages.stream(model=MODEL, max_tokens=200, messages=HELLO) as stream:
        streamed = stream.get_final_message()

    for usage in (message.usage, streamed.usage):
        assert usage.cache_read_input_tokens == 1000
        assert usage.cache_creation_input_tokens == 200  # derived from cache_creation
        assert usage.cache_creation is not None
        assert usage.cache_creation.ephemeral_5m_input_tokens == 200
        assert usage.output_tokens_details is not None
        assert usage.output_tokens_details.thinking_tokens == 50
        assert usage.input_tokens == math.ceil(len("Hello there, fake Claude!") / 4)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("param", ["temperature", "top_p", "top_k"])
def test_sampling_params_rejected_on_2026_10_21(client: anthropic.Anthropic, param: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=50, messages=HELLO, extra_body={param: 1}
        )
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == f"{param}: Extra inputs are not permitted"


def test_prefill_rejected(client: anthropic.Anthropic) -> None:
    prefill: list[MessageParam] = [*HELLO, {"role": "assistant", "content": "Sure,"}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-opus-4-6", max_tokens=50, messages=prefill)
    assert caught.value.api_message == PREFILL_MESSAGE
    # Claude <= 4.5 still accepts prefill.
    client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=prefill)


@pytest.mark.parametrize(
    ("model", "thinking_type", "rejection"),
    [
        ("claude-haiku-4-5", "adaptive", ADAPTIVE_THINKING_MESSAGE),
        ("claude-haiku-4-5-20251001", "adaptive", ADAPTIVE_THINKING_MESSAGE),
        ("claude-haiku-4-5", "enabled", None),
        ("claude-sonnet-4-6", "adaptive", None),
        ("claude-sonnet-4-6", "enabled", None),
        ("claude-opus-4-7", "enabled", ENABLED_THINKING_MESSAGE),
        ("claude-opus-4-8", "enabled", ENABLED_THINKING_MESSAGE),
        ("claude-sonnet-5", "enabled", ENABLED_THINKING_MESSAGE),
        ("claude-haiku-5-5", "enabled", ENABLED_THINKING_MESSAGE),
        ("claude-opus-4-7", "adaptive", None),
    ],
)
def test_thinking_type_per_model(
    client: anthropic.Anthropic, model: str, thinking_type: str, rejection: str | None
) -> None:
    thinking = {"type": thinking_type, "budget_tokens": 1024} if thinking_type == "enabled" else {}
    body = {"thinking": thinking or {"type": thinking_type}}
    if rejection is None:
        message = client.messages.create(
            model=model, max_tokens=2048, messages=HELLO, extra_body=body
        )
        assert message.content[0].type == "thinking"
        return
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=model, max_tokens=2048, messages=HELLO, extra_body=body)
    assert caught.value.api_message == rejection


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "There was an error parsing the body of your request: invalid JSON"),
        (b'{"model": "claude-opus-4-7", "messages": []}', 400, "max_tokens: Field required"),
        (b'{"max_tokens": 5, "messages": []}', 400, "model: Field required"),
        (b'{"model": "claude-opus-4-7", "max_tokens": 5}', 400, "messages: Field required"),
        (b'{"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}',
         404, "model: gpt-4o"),
    ],
)  # fmt: skip
def test_malformed_requests(
    fake_anthropic: FakeAnthropic, body: bytes, status: int, message: str
) -> None:
    response = raw_post(fake_anthropic, "/v1/messages", body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["message"] == message
    assert payload["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize(
    "extra",
    [
        {"thinking": {"type": "enabled", "budget_tokens": 512}},
        {"thinking": {"type": "enabled", "budget_tokens": 4096}},  # not < max_tokens
        {"output_config": {"effort": "extreme"}},
        {
            "messages": [
                {"role": "user", "content": "Read this"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                        }
                    ],
                },
                {"role": "user", "content": "Well?"},
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "quoted",
                            "citations": [{"type": "char_location", "cited_text": "q"}],
                        }
                    ],
                }
            ]
        },
    ],
)
def test_other_invalid_requests(client: anthropic.Anthropic, extra: dict[str, object]) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=4096, messages=HELLO, extra_body=extra
        )


def test_validation_does_not_consume_success_scripts(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(reply_text="kept")
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=50, messages=HELLO, extra_body={"top_k": 5})
    assert fake_anthropic.pending_scripts == 1
    assert text_of(client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)) == "kept"


def test_unknown_route(fake_anthropic: FakeAnthropic) -> None:
    response = raw_post(fake_anthropic, "/v1/complete", b"{}")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_prompt_too_long(client: anthropic.Anthropic) -> None:
    huge: list[MessageParam] = [{"role": "user", "content": "x" * (4 * 200_000 + 4)}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.count_tokens(model="claude-haiku-4-5", messages=huge)
    assert caught.value.api_message == "prompt is too long: 200001 tokens > 200000 maximum"
    counted = client.messages.count_tokens(model="claude-opus-4-7", messages=huge)  # 1M window
    assert counted.input_tokens == 200_001


# --- the strict per-model contract ------------------------------------------------------------

TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}


def refused(client: anthropic.Anthropic, **kwargs: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**{"max_tokens": 2048, "messages": HELLO, "timeout": 30, **kwargs})
    assert caught.value.type == "invalid_request_error"
    assert caught.value.status_code == 400
    return str(caught.value.api_message)


@pytest.fixture
def v1_client(fake_anthropic: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    """A client on API version 2023-06-01 (sampling parameters still exist there)."""
    with anthropic.Anthropic(
        base_url=fake_anthropic.base_url,
        api_key=fake_anthropic.api_key,
        default_headers={"anthropic-version": "2023-06-01"},
        max_retries=0,
    ) as sdk:
        yield sdk


def test_unknown_fields_and_models_refused(client: anthropic.Anthropic) -> None:
    assert (
        refused(client, model=MODEL, extra_body={"future_field": 1})
        == "future_field: Extra inputs are not permitted"
    )
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-nope-1", max_tokens=10, messages=HELLO)
    assert caught.value.api_message == "model: claude-nope-1"


def test_lenient_mode_checks_only_the_shape(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.strict = False
    client.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_body={"x": 1})
    client.messages.create(model="claude-nope-1", max_tokens=10, messages=HELLO)
    fake_anthropic.reset()  # back to strict
    assert fake_anthropic.strict


@pytest.mark.lenient_upstream
def test_lenient_marker(client: anthropic.Anthropic) -> None:
    client.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_body={"x": 1})


def test_output_limit_and_effort_per_model(client: anthropic.Anthropic) -> None:
    assert refused(client, model="claude-haiku-4-5", max_tokens=64_001) == (
        "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for "
        "claude-haiku-4-5"
    )
    client.messages.create(model="claude-opus-4-7", max_tokens=64_001, messages=HELLO, stream=True)
    effort: Any = {"effort": "low"}
    assert refused(client, model="claude-haiku-4-5", output_config=effort) == NO_EFFORT_MESSAGE
    assert refused(client, model="claude-sonnet-4-5", output_config=effort) == NO_EFFORT_MESSAGE
    client.messages.create(
        model="claude-opus-4-5", max_tokens=50, messages=HELLO, output_config=effort
    )
    xhigh: Any = {"effort": "xhigh"}
    assert refused(client, model="claude-sonnet-4-6", output_config=xhigh).startswith(
        'output_config.effort: "xhigh" is not supported by claude-sonnet-4-6'
    )


def test_forced_tool_choice_refuses_thinking(client: anthropic.Anthropic) -> None:
    tools: Any = [TOOL]
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}):
        for thinking in ({"type": "adaptive"}, {"type": "enabled", "budget_tokens": 1024}):
            model = "claude-sonnet-4-6"
            message = refused(
                client, model=model, tools=tools, tool_choice=choice, thinking=thinking
            )
            assert message == FORCED_TOOL_THINKING_MESSAGE
    client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=2048,
        messages=HELLO,
        tools=tools,
        tool_choice={"type": "auto"},
        thinking={"type": "adaptive"},
    )
    assert refused(client, model=MODEL, tool_choice={"type": "any"}) == (
        "tool_choice may only be specified while providing tools."
    )


def test_at_most_four_cache_breakpoints(client: anthropic.Anthropic) -> None:
    marked: Any = [
        {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
        for i in range(4)
    ]
    client.messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": marked}]
    )
    message = refused(
        client,
        model=MODEL,
        messages=[{"role": "user", "content": marked}],
        cache_control={"type": "ephemeral"},
        system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
    )
    assert message == "A maximum of 4 blocks with cache_control may be provided. Found 5."


def test_sampling_rules_on_2023_06_01(v1_client: anthropic.Anthropic) -> None:
    both = {"temperature": 0.5, "top_p": 0.9}
    assert refused(v1_client, model="claude-haiku-4-5", extra_body=both) == (
        EXCLUSIVE_SAMPLING_MESSAGE
    )
    v1_client.messages.create(
        model="claude-haiku-4-5", max_tokens=50, messages=HELLO, extra_body={"temperature": 0.5}
    )
    assert refused(v1_client, model="claude-opus-4-7", extra_body={"temperature": 0.5}) == (
        "temperature: only the default value is supported for claude-opus-4-7"
    )
    v1_client.messages.create(
        model="claude-opus-4-7", max_tokens=50, messages=HELLO, extra_body={"temperature": 1}
    )
    hot = {"temperature": 0.5, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert refused(v1_client, model="claude-haiku-4-5", extra_body=hot) == (
        THINKING_TEMPERATURE_MESSAGE
    )


def _loop(answer: list[Any]) -> list[Any]:
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "rain"}
    return [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": [result]},
    ]


def test_tool_use_and_tool_result_must_pair(client: anthropic.Anthropic) -> None:
    tools: Any = [TOOL]
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    client.messages.create(model=MODEL, max_tokens=100, messages=_loop([call]), tools=tools)
    unanswered: Any = [*_loop([call])[:2], {"role": "user", "content": "and?"}]
    assert refused(client, model=MODEL, messages=unanswered, tools=tools).startswith(
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_1."
    )
    orphan: Any = [{"role": "user", "content": _loop([call])[2]["content"]}]
    assert refused(client, model=MODEL, messages=orphan, tools=tools).startswith(
        "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_1."
    )


def test_thinking_blocks_are_bound_to_their_model(client: anthropic.Anthropic) -> None:
    tools: Any = [TOOL]
    first = client.messages.create(
        model="claude-opus-4-6",
        max_tokens=2048,
        messages=[{"role": "user", "content": "Use get_weather for Oslo."}],
        tools=tools,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert [b.type for b in first.content] == ["thinking", "text", "tool_use"]
    answer = [b.model_dump(exclude_none=True) for b in first.content]
    call = first.content[2]
    assert call.type == "tool_use"
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "rain"}
    history: Any = [
        {"role": "user", "content": "Use get_weather for Oslo."},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": [result]},
    ]
    enabled: Any = {"type": "enabled", "budget_tokens": 1024}
    done = client.messages.create(
        model="claude-opus-4-6", max_tokens=2048, messages=history, tools=tools, thinking=enabled
    )
    assert done.stop_reason == "end_turn"
    assert refused(client, model="claude-sonnet-4-6", messages=history, tools=tools) == (
        f"messages.1.content.0: {INVALID_SIGNATURE_MESSAGE}"
    )
    # Enabled thinking needs the last assistant turn to start with its thinking block.
    unthought: Any = [history[0], {"role": "assistant", "content": answer[1:]}, history[2]]
    message = refused(
        client, model="claude-opus-4-6", messages=unthought, tools=tools, thinking=enabled
    )
    assert message == (
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        f"`text`. {THINKING_FIRST_MESSAGE}"
    )
    adaptive: Any = {"type": "adaptive"}
    client.messages.create(
        model="claude-opus-4-6", max_tokens=2048, messages=unthought, tools=tools, thinking=adaptive
    )


def test_rejection_helper_matches_the_server(client: anthropic.Anthropic) -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": HELLO}
    assert rejection(body) is None
    assert rejection({**body, "output_config": {"effort": "low"}}) == NO_EFFORT_MESSAGE


# --- realistic replies ---------------------------------------------------------------------------


def test_forced_and_requested_tool_calls(client: anthropic.Anthropic) -> None:
    tools: Any = [TOOL]
    forced = client.messages.create(
        model=MODEL, max_tokens=200, messages=HELLO, tools=tools, tool_choice={"type": "any"}
    )
    assert forced.stop_reason == "tool_use"
    (call,) = forced.content
    assert call.type == "tool_use"
    assert (call.name, call.input) == ("get_weather", {"city": "fake", "days": 1})
    assert call.id.startswith("toolu_")
    asked = client.messages.create(
        model=MODEL,
        max_tokens=200,
        messages=[{"role": "user", "content": "Please use get_weather for Oslo."}],
        tools=tools,
    )
    assert [b.type for b in asked.content] == ["text", "tool_use"]
    plain = client.messages.create(model=MODEL, max_tokens=200, messages=HELLO, tools=tools)
    assert [b.type for b in plain.content] == ["text"]
    with client.messages.stream(
        model=MODEL, max_tokens=200, messages=HELLO, tools=tools, tool_choice={"type": "any"}
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        streamed = stream.get_final_message()
    assert set(deltas) == {"input_json_delta"}
    assert streamed.content[0].type == "tool_use"
    assert streamed.content[0].input == {"city": "fake", "days": 1}


def test_answer_after_tool_results(client: anthropic.Anthropic) -> None:
    tools: Any = [TOOL]
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    answer = client.messages.create(
        model=MODEL, max_tokens=200, messages=_loop([call]), tools=tools
    )
    assert answer.stop_reason == "end_turn"
    assert text_of(answer) == f"Fake reply from {MODEL} after 1 tool result(s): rain"


def test_structured_output_reply_follows_the_schema(client: anthropic.Anthropic) -> None:
    schema: Any = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["a", "b"]},
            "nested": {"$ref": "#/$defs/N"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "number"}]},
        },
        "$defs": {"N": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    message = client.messages.create(
        model=MODEL,
        max_tokens=500,
        messages=HELLO,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert json.loads(text_of(message)) == {
        "title": "fake",
        "tags": ["fake", "fake"],
        "kind": "a",
        "nested": {"ok": True},
        "maybe": 1.0,
    }


# --- prompt caching ------------------------------------------------------------------------------


def _cached_system(text: str, ttl: str | None = None) -> Any:
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [{"type": "text", "text": text, "cache_control": control}]


BIG = "All about the tierwise gateway. " * 700  # ~5,600 tokens: above every minimum


@pytest.fixture
def clock(fake_anthropic: FakeAnthropic) -> ManualClock:
    manual = ManualClock()
    fake_anthropic.clock = manual
    return manual


def _usage(message: Message) -> tuple[int, int, int, int]:
    usage = message.usage
    assert usage.cache_creation is not None
    return (
        usage.input_tokens,
        usage.cache_read_input_tokens or 0,
        usage.cache_creation.ephemeral_5m_input_tokens,
        usage.cache_creation.ephemeral_1h_input_tokens,
    )


def test_cache_written_then_read_then_expired(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic, clock: ManualClock
) -> None:
    def ask(question: str, model: str = MODEL) -> Message:
        return client.messages.create(
            model=model,
            max_tokens=50,
            system=_cached_system(BIG),
            messages=[{"role": "user", "content": question}],
        )

    prefix = math.ceil(len(BIG) / 4)
    tail = math.ceil(len("What is it?") / 4)
    first = ask("What is it?")
    assert _usage(first) == (tail, 0, prefix, 0)
    assert first.usage.cache_creation_input_tokens == prefix
    second = ask("What is it?")
    assert _usage(second) == (tail, prefix, 0, 0)
    clock.advance(200)
    assert _usage(ask("Why?"))[1] == prefix  # a read refreshes the 5-minute lifetime
    clock.advance(200)
    assert _usage(ask("How?"))[1] == prefix  # 400 s after the write, 200 s after the refresh
    clock.advance(301)
    assert _usage(ask("What is it?")) == (tail, 0, prefix, 0)  # expired: written again
    # An entry belongs to one model: the same prefix on another model is a miss.
    assert _usage(ask("What is it?", model="claude-opus-4-6"))[2] == prefix
    total = count_input_tokens(fake_anthropic.requests[-1].json_body or {})
    assert total == tail + prefix


def test_one_hour_ttl(client: anthropic.Anthropic, clock: ManualClock) -> None:
    def ask() -> Message:
        return client.messages.create(
            model=MODEL, max_tokens=50, system=_cached_system(BIG, "1h"), messages=HELLO
        )

    prefix = math.ceil(len(BIG) / 4)
    assert _usage(ask())[3] == prefix
    clock.advance(1800)
    assert _usage(ask())[1] == prefix
    clock.advance(3601)
    assert _usage(ask())[3] == prefix


def test_minimum_cacheable_length_per_model(
    client: anthropic.Anthropic, clock: ManualClock
) -> None:
    text = "Short but not tiny system prompt. " * 120  # ~1,020 tokens
    prefix = math.ceil(len(text) / 4)
    assert 512 <= prefix < 2048
    for model, cached in (
        ("claude-opus-5", True),
        ("claude-opus-4-7", False),
        ("claude-haiku-4-5", False),
    ):
        for _ in range(2):
            message = client.messages.create(
                model=model, max_tokens=50, system=_cached_system(text), messages=HELLO
            )
        usage = _usage(message)
        assert usage[1] == (prefix if cached else 0), model
        if not cached:
            assert usage[0] == prefix + math.ceil(len("Hello there, fake Claude!") / 4)


def test_automatic_caching_follows_the_conversation(
    client: anthropic.Anthropic, clock: ManualClock
) -> None:
    history: list[Any] = [{"role": "user", "content": BIG}]
    first = client.messages.create(
        model=MODEL, max_tokens=50, messages=history, cache_control={"type": "ephemeral"}
    )
    written = _usage(first)[2]
    assert written == math.ceil(len(BIG) / 4)
    history += [
        {"role": "assistant", "content": text_of(first)},
        {"role": "user", "content": "And the next step?"},
    ]
    second = client.messages.create(
        model=MODEL, max_tokens=50, messages=history, cache_control={"type": "ephemeral"}
    )
    read, wrote = _usage(second)[1], _usage(second)[2]
    assert read == written  # the earlier breakpoint is found within the 20-block lookback
    assert wrote == math.ceil(len(text_of(first)) / 4) + math.ceil(len("And the next step?") / 4)
    assert _usage(second)[0] == 0


def test_lookback_is_twenty_blocks(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic, clock: ManualClock
) -> None:
    head = {"type": "text", "text": BIG, "cache_control": {"type": "ephemeral"}}
    plain = {k: v for k, v in head.items() if k != "cache_control"}

    def ask(blocks: Any) -> Message:
        return client.messages.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": blocks}]
        )

    def after(extra: int) -> Message:
        """The cached block, then ``extra`` more, the breakpoint on the last one."""
        fake_anthropic.cache.clear()
        ask([head])
        blocks: Any = [plain] + [{"type": "text", "text": f"note {i}"} for i in range(extra)]
        blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
        return ask(blocks)

    prefix = math.ceil(len(BIG) / 4)
    assert _usage(after(19))[1] == prefix  # the entry is 19 blocks back: within the lookback
    assert _usage(after(20))[1] == 0  # 20 blocks back: outside it, written anew
    assert _usage(after(20))[2] > prefix


def test_cache_usage_in_the_stream(client: anthropic.Anthropic, clock: ManualClock) -> None:
    for _ in range(2):
        with client.messages.stream(
            model=MODEL, max_tokens=50, system=_cached_system(BIG), messages=HELLO
        ) as stream:
            final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == math.ceil(len(BIG) / 4)


@pytest.mark.parametrize("reason", ["refusal", "pause_turn", "model_context_window_exceeded"])
def test_scripted_stop_reasons(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic, reason: str
) -> None:
    fake_anthropic.script(stop_reason=reason, times=2)
    assert client.messages.create(model=MODEL, max_tokens=50, messages=HELLO).stop_reason == reason
    with client.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:
        assert stream.get_final_message().stop_reason == reason


def test_a_tool_loaded_by_tool_search_does_not_break_the_cache(
    client: anthropic.Anthropic, clock: ManualClock
) -> None:
    """A ``defer_loading`` tool is not in the cached prefix; when tool search loads it, its
    definition comes inline where a ``tool_reference`` names it (as the API documents): the
    request that carries it reads the whole earlier prefix from the cache."""
    notebook: dict[str, Any] = {
        "name": "NotebookEdit",
        "description": "Edit a notebook cell. " * 40,
        "input_schema": {"type": "object"},
        "defer_loading": True,
    }
    search = {
        "name": "ToolSearch",
        "description": "Find tools.",
        "input_schema": {"type": "object"},
    }
    call = {"type": "tool_use", "id": "toolu_1", "name": "ToolSearch", "input": {"query": "nb"}}
    loaded = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [{"type": "tool_reference", "tool_name": "NotebookEdit"}],
    }
    first: list[Any] = [{"role": "user", "content": "Load the notebook tool."}]
    second: list[Any] = [
        *first,
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [loaded]},
    ]

    def ask(messages: list[Any], tools: list[dict[str, Any]]) -> Message:
        return client.messages.create(
            model=MODEL,
            max_tokens=50,
            system=_cached_system(BIG),
            tools=tools,  # type: ignore[arg-type]
            messages=messages,
        )

    before = ask(first, [search])
    after = ask(second, [notebook, search])  # the loaded tool now listed, deferred
    assert _usage(after)[1] == _usage(before)[2]  # the system prefix: read, not written again
    definition = block_tokens(notebook)
    without = count_input_tokens({"messages": second, "tools": [search]})
    assert count_input_tokens({"messages": second, "tools": [notebook, search]}) == (
        without + definition
    )
