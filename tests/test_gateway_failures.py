"""Failure paths: retries honouring retry-after (capped), fallback along the tier chain,
cooldowns, timeouts, resets, and streams that break after their first bytes."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway

ARCH: Any = [
    {"role": "user", "content": "Review this distributed system architecture for race conditions."}
]
ARCH_SYSTEM = "You are a principal software architect."


def models_tried(gw: RunningGateway) -> list[str]:
    return [
        r.json_body["model"]
        for r in gw.fake.requests_to("/v1/messages")
        if isinstance(r.json_body, dict)
    ]


def test_overloaded_top_tier_falls_back_to_sonnet(gateway: RunningGateway) -> None:
    gateway.fake.script(model_glob="claude-opus-*", status=529, retry_after="0", times=2)
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="auto", max_tokens=300, system=ARCH_SYSTEM, messages=ARCH
    )
    message = raw.parse()
    assert message.model.startswith("claude-sonnet")
    assert raw.headers["x-tierwise-fallbacks"] == "opus:529"
    assert raw.headers["x-tierwise-tier"] == "sonnet"
    assert models_tried(gateway) == ["claude-opus-4-6", "claude-opus-4-6", "claude-sonnet-4-6"]
    entry = gateway.sink.entries[-1]
    assert entry.status == "ok"
    assert entry.fallbacks == ("opus:529",)
    assert (entry.tier, entry.model) == ("sonnet", "claude-sonnet-4-6")


def test_retry_after_is_honoured_then_succeeds(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(retry_after_cap_s=5)
    gw.fake.script(model_glob="claude-haiku-*", status=429, retry_after="0.3")
    start = time.monotonic()
    message = gw.anthropic(max_retries=0).messages.create(
        model="haiku", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    assert time.monotonic() - start >= 0.3  # it waited as told before the second attempt
    assert message.model == "claude-haiku-4-5"
    assert models_tried(gw) == ["claude-haiku-4-5", "claude-haiku-4-5"]


def test_retry_after_is_capped(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(retry_after_cap_s=0.05)
    gw.fake.script(model_glob="claude-haiku-*", status=429, retry_after="3600")
    start = time.monotonic()
    gw.anthropic(max_retries=0).messages.create(
        model="haiku", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    assert time.monotonic() - start < 30  # not an hour


def test_forced_tier_retries_but_does_not_fall_back(gateway: RunningGateway) -> None:
    gateway.fake.script(model_glob="claude-opus-*", status=529, retry_after="0", times=5)
    with pytest.raises(anthropic.APIStatusError) as info:
        gateway.anthropic(max_retries=0).messages.create(model="opus", max_tokens=50, messages=ARCH)
    assert info.value.status_code == 529
    assert info.value.type == "overloaded_error"
    assert models_tried(gateway) == ["claude-opus-4-6", "claude-opus-4-6"]
    entry = gateway.sink.entries[-1]
    assert (entry.status, entry.error_type, entry.http_status) == ("error", "overloaded_error", 529)


def test_every_tier_down_returns_the_last_error(gateway: RunningGateway) -> None:
    gateway.fake.script(status=500, retry_after="0", times=10)
    with pytest.raises(anthropic.InternalServerError):
        gateway.anthropic(max_retries=0).messages.create(
            model="auto", max_tokens=50, system=ARCH_SYSTEM, messages=ARCH
        )
    assert models_tried(gateway) == ["claude-opus-4-6"] * 2 + ["claude-sonnet-4-6"] * 2
    assert gateway.sink.entries[-1].fallbacks == ("opus:500", "sonnet:500")


def test_connection_reset_is_retried(gateway: RunningGateway) -> None:
    gateway.fake.script(model_glob="claude-haiku-*", disconnect=True)
    message = gateway.anthropic(max_retries=0).messages.create(
        model="haiku", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content
    assert models_tried(gateway) == ["claude-haiku-4-5", "claude-haiku-4-5"]


def test_slow_model_times_out_and_falls_back(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(attempt_timeout_s=0.3, max_attempts=1)
    gw.fake.script(model_glob="claude-opus-*", delay_s=2)
    raw = gw.anthropic(max_retries=0).messages.with_raw_response.create(
        model="auto", max_tokens=300, system=ARCH_SYSTEM, messages=ARCH
    )
    assert raw.parse().model == "claude-sonnet-4-6"
    assert raw.headers["x-tierwise-fallbacks"] == "opus:timeout_error"


def test_request_deadline_gives_a_timeout_error(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(upstream_timeout_s=0.3, max_attempts=1)
    gw.fake.script(model_glob="claude-haiku-*", delay_s=2)
    with pytest.raises(anthropic.APIStatusError) as info:
        gw.anthropic(max_retries=0).messages.create(
            model="haiku", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 504
    assert gw.sink.entries[-1].status == "error"


def test_failing_model_is_cooled_down(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(cooldown_after_failures=2, cooldown_s=60)
    gw.fake.script(model_glob="claude-opus-*", status=529, retry_after="0", times=2)
    client = gw.anthropic(max_retries=0)
    client.messages.create(model="auto", max_tokens=300, system=ARCH_SYSTEM, messages=ARCH)
    before = len(gw.fake.requests_to("/v1/messages"))
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=300, system=ARCH_SYSTEM, messages=ARCH
    )
    # Opus is cooling down: sonnet answers first, without another attempt on opus.
    assert models_tried(gw)[before:] == ["claude-sonnet-4-6"]
    assert raw.headers["x-tierwise-tier"] == "sonnet"
    assert "cooling down: opus" in (gw.sink.entries[-1].reason or "")


def test_stream_error_event_midway_reaches_the_client(gateway: RunningGateway) -> None:
    gateway.fake.script(stream_error="overloaded_error")
    client = gateway.anthropic(max_retries=0)
    seen: list[str] = []

    def consume() -> None:
        with client.messages.stream(
            model="haiku",
            max_tokens=200,
            messages=[{"role": "user", "content": "Tell me a long story"}],
        ) as stream:
            seen.extend(event.type for event in stream)

    with pytest.raises(anthropic.APIStatusError) as info:
        consume()
    assert "message_start" in seen  # it broke after the first bytes
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    entry = gateway.wait_for_entries(1)[-1]
    assert (entry.status, entry.error_type, entry.streaming) == ("error", "overloaded_error", True)
    assert entry.usage.input_tokens > 0  # what was spent is still recorded


def test_stream_cut_without_any_event_gets_an_error_not_a_clean_end(
    gateway: RunningGateway,
) -> None:
    gateway.fake.script(stream_cut=True)
    error = gateway.stream_error(
        model="haiku",
        max_tokens=200,
        messages=[{"role": "user", "content": "Tell me a long story"}],
    )
    assert "ended before message_stop" in str(error)
    entry = gateway.wait_for_entries(1)[-1]
    assert (entry.status, entry.error_type) == ("error", "incomplete_stream")


def test_openai_stream_cut_ends_with_an_error_chunk(gateway: RunningGateway) -> None:
    gateway.fake.script(stream_cut=True)
    client = gateway.openai(max_retries=0)
    with pytest.raises(openai.APIError) as info:
        for _ in client.chat.completions.create(
            model="haiku", stream=True, messages=[{"role": "user", "content": "hi"}]
        ):
            pass
    assert "ended before message_stop" in str(info.value)


def test_stream_failing_before_any_content_is_retried(gateway: RunningGateway) -> None:
    gateway.fake.script(model_glob="claude-haiku-*", early_error=True)
    with gateway.anthropic(max_retries=0).messages.stream(
        model="haiku", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert models_tried(gateway) == ["claude-haiku-4-5", "claude-haiku-4-5"]
    entry = gateway.wait_for_entries(1)[-1]
    assert entry.status == "ok"


def test_a_stream_is_cut_at_the_requests_deadline(make_gateway: GatewayFactory) -> None:
    """The request's deadline covers the whole stream: an upstream that keeps sending (each
    event well within the stall timeout) is cut when the deadline passes, with an error event,
    not relayed for as long as it likes."""
    gw = make_gateway(upstream_timeout_s=2.5)
    gw.fake.script(event_delay_s=0.5)  # 8 events: content at ~1 s, the end at ~4 s
    client = gw.anthropic(max_retries=0)
    start = time.monotonic()
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(
            model="haiku", max_tokens=200, messages=[{"role": "user", "content": "Tell a story"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert "deadline" in str(info.value)
    assert time.monotonic() - start < 30  # cut, not relayed to its end (a generous margin)
    entry = gw.wait_for_entries(1)[-1]
    assert (entry.status, entry.error_type) == ("error", "timeout_error")
    assert entry.usage.input_tokens > 0  # what the upstream reported before the cut is kept
