"""The Anthropic provider and the LLM classifier end to end: the official SDK on loopback
against the fake Anthropic server, checking what goes over the wire and what comes back."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tierwise import ModelRouter
from tierwise.config import Settings, load
from tierwise.errors import ProviderError


def settings_for(fake: FakeAnthropic, home: Path, **env: str) -> Settings:
    environ = {
        "TIERWISE_HOME": str(home),
        "ANTHROPIC_API_KEY": fake.api_key,
        "ANTHROPIC_BASE_URL": fake.base_url,
        **env,
    }
    return load(environ=environ)


@pytest.fixture
def router(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Iterator[ModelRouter]:
    with ModelRouter(settings=settings_for(fake_anthropic, tmp_path)) as r:
        yield r


def bodies(fake: FakeAnthropic) -> list[dict[str, Any]]:
    found = [r.json_body for r in fake.requests_to("/v1/messages")]
    assert all(isinstance(b, dict) for b in found)
    return [b for b in found if isinstance(b, dict)]


def test_per_tier_thinking_and_effort_as_sent_on_the_wire(
    router: ModelRouter, fake_anthropic: FakeAnthropic
) -> None:
    results = [router.route("Say hi", force_tier=t) for t in ("haiku", "sonnet", "opus")]
    sent = bodies(fake_anthropic)
    assert [b["model"] for b in sent] == [
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
        "claude-opus-4-6",
    ]
    assert "thinking" not in sent[0] and "output_config" not in sent[0]
    assert sent[1]["thinking"] == {"type": "adaptive"}
    assert sent[1]["output_config"] == {"effort": "medium"}
    assert sent[2]["thinking"] == {"type": "adaptive"}
    assert sent[2]["output_config"] == {"effort": "high"}
    for body in sent:
        assert body["messages"] == [{"role": "user", "content": "Say hi"}]
        assert body["max_tokens"] == 4096
        assert not {"temperature", "top_p", "top_k"} & set(body)  # rejected on 2026-10-21
    request = fake_anthropic.requests_to("/v1/messages")[0]
    assert request.header("authorization") == f"Bearer {fake_anthropic.api_key}"
    assert request.header("anthropic-version") == "2026-10-21"
    for result in results:
        assert not result.simulated
        assert result.text.startswith("Fake reply from")
        assert result.upstream_request_id is not None
        assert result.upstream_request_id.startswith("req_")
        assert result.request_id.startswith("tw_")
    # Thinking tiers really thought (the fake returns a thinking block and counts its tokens).
    assert results[0].usage.thinking_tokens == 0
    assert results[2].usage.thinking_tokens > 0


def test_caller_thinking_wins_on_the_wire(
    router: ModelRouter, fake_anthropic: FakeAnthropic
) -> None:
    router.route("Plan it", force_tier="opus", thinking={"type": "disabled"}, max_tokens=300)
    router.route(
        "Plan it",
        force_tier="haiku",
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2048,
    )
    sent = bodies(fake_anthropic)
    assert sent[0]["thinking"] == {"type": "disabled"}
    assert sent[0]["max_tokens"] == 300
    assert sent[1]["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_cache_and_thinking_usage_priced_exactly(
    router: ModelRouter, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        usage={
            "input_tokens": 1_200,
            "output_tokens": 900,
            "cache_read_input_tokens": 50_000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 2_000,
                "ephemeral_1h_input_tokens": 8_000,
            },
            "output_tokens_details": {"thinking_tokens": 600},
        }
    )
    result = router.route("Summarize the cached handbook.", force_tier="sonnet")
    u = result.usage
    assert (u.input_tokens, u.output_tokens, u.thinking_tokens) == (1_200, 900, 600)
    assert (u.cache_read_tokens, u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (
        50_000,
        2_000,
        8_000,
    )
    # Sonnet 4.6 per million: 1200*3 + 900*15 + 50000*0.30 + 2000*3.75 + 8000*6
    #   = 3600 + 13500 + 15000 + 7500 + 48000 = 87600  → $0.0876
    assert result.cost == Decimal("0.0876")
    # Opus 4.6 on the same usage: 1200*5 + 900*25 + 50000*0.5 + 2000*6.25 + 8000*10
    #   = 6000 + 22500 + 25000 + 12500 + 80000 = 146000 → $0.146
    assert result.cost_if_opus == Decimal("0.146")
    assert result.savings == Decimal("0.0584")


def test_llm_classifier_end_to_end_and_its_cost(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    fake_anthropic.script(
        model_glob="claude-haiku-*",
        reply_text=(
            'Here you go:\n```json\n{"tier": 3, "confidence": 0.91, "reasoning": "security audit"}'
            "\n```"
        ),
        usage={"input_tokens": 400, "output_tokens": 25},
    )
    settings = settings_for(fake_anthropic, tmp_path, TIERWISE_CLASSIFIER="llm")
    with ModelRouter(settings=settings) as r:
        result = r.route("Check this login handler for SQL injection.", system="S" * 300)
    classifier_call, answer_call = bodies(fake_anthropic)
    assert classifier_call["model"] == "claude-haiku-4-5"
    assert "TIER 3 (Opus)" in classifier_call["system"]
    assert "thinking" not in classifier_call
    assert classifier_call["messages"][0]["content"] == (
        "System prompt: "
        + "S" * 200
        + "\n\nUser request: Check this login handler for SQL injection."
    )
    assert answer_call["model"] == "claude-opus-4-6"
    assert (result.tier, result.confidence, result.routing_reason) == (
        "opus",
        0.91,
        "security audit",
    )
    assert result.classifier == "llm"
    # 400 * $1 + 25 * $5 per million on Haiku 4.5.
    assert result.classifier_cost == Decimal("0.000525")
    assert result.model_cost is not None
    assert result.cost == result.model_cost + Decimal("0.000525")


def test_llm_classifier_chatty_reply_falls_back_to_default_tier(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    fake_anthropic.script(model_glob="claude-haiku-*", reply_text="It depends on many factors.")
    settings = settings_for(fake_anthropic, tmp_path, TIERWISE_CLASSIFIER="llm")
    with ModelRouter(settings=settings) as r:
        result = r.route("Do the thing.")
    assert result.tier == "sonnet"
    assert "classifier fallback: no JSON object" in result.routing_reason
    assert result.classifier_cost > 0  # the failed classification still cost tokens


def test_llm_classifier_upstream_error_falls_back(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    fake_anthropic.script(
        model_glob="claude-haiku-*", status=400, error_type="invalid_request_error"
    )
    settings = settings_for(fake_anthropic, tmp_path, TIERWISE_CLASSIFIER="llm")
    with ModelRouter(settings=settings) as r:
        result = r.route("Do the thing.")
    assert result.tier == "sonnet"
    assert "classifier call failed" in result.routing_reason
    assert result.classifier_cost == 0


def test_sdk_retries_then_succeeds(router: ModelRouter, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(status=529, retry_after="0.01", times=2)
    result = router.route("Say hi", force_tier="haiku")
    assert result.text.startswith("Fake reply")
    retries = [
        r.header("x-stainless-retry-count") for r in fake_anthropic.requests_to("/v1/messages")
    ]
    assert retries == ["0", "1", "2"]


def test_exhausted_retries_raise_a_retryable_provider_error(
    router: ModelRouter, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(status=529, retry_after="0.01", times=3)
    with pytest.raises(ProviderError) as info:
        router.route("Say hi", force_tier="opus")
    assert info.value.retryable
    assert (info.value.status, info.value.error_type) == (529, "overloaded_error")
    assert "claude-opus-4-6" in str(info.value)
    assert fake_anthropic.api_key not in str(info.value)
    assert router.metrics.summary()["errors"] == 1
    assert router.metrics.summary()["total_requests"] == 0


def test_client_error_is_not_retryable(router: ModelRouter, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(status=400, error_type="invalid_request_error")
    with pytest.raises(ProviderError) as info:
        router.route("Say hi", force_tier="haiku")
    assert not info.value.retryable
    assert len(fake_anthropic.requests_to("/v1/messages")) == 1


def test_wrong_key_is_an_authentication_error_without_the_key(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    environ = {
        "TIERWISE_HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": "sk-ant-wrong-canary",
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
    }
    with ModelRouter(settings=load(environ=environ)) as r, pytest.raises(ProviderError) as info:
        r.route("Say hi", force_tier="haiku")
    assert (info.value.status, info.value.error_type) == (401, "authentication_error")
    assert "sk-ant-wrong-canary" not in str(info.value)


def test_unreachable_upstream_is_a_retryable_connection_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    environ = {
        "TIERWISE_HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    settings = load(environ=environ)
    settings = settings.model_copy(
        update={"provider": settings.provider.model_copy(update={"max_retries": 0})}
    )
    with ModelRouter(settings=settings) as r, pytest.raises(ProviderError) as info:
        r.route("Say hi", force_tier="haiku")
    assert info.value.retryable
    assert info.value.error_type == "connection_error"
