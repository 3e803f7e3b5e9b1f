"""The lesson's LLM classifier inside the gateway (issue: every `auto` request was a 500 with
classifier.kind = "llm", and with "cascade" whenever the learned model was unsure). The
classifier call goes through the gateway's own upstream client; its cost is charged to the
request; a failed or slow classifier falls back to the default tier with the reason recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import ListSink
from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import Settings, load, revalidate
from tierwise.gateway import build_app


def settings_with(fake: FakeAnthropic, tmp_path: Path, **classifier: Any) -> Settings:
    settings = load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": fake.api_key,
            "ANTHROPIC_BASE_URL": fake.base_url,
        }
    )
    return revalidate(settings, classifier=settings.classifier.model_copy(update=classifier))


@pytest.fixture
def run_gateway(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Iterator[Any]:
    servers: list[ServerThread] = []

    def start(**classifier: Any) -> tuple[str, ListSink]:
        sink = ListSink()
        server = ServerThread(
            build_app(settings_with(fake_anthropic, tmp_path, **classifier), sink=sink)
        ).start()
        servers.append(server)
        return server.base_url, sink

    yield start
    for server in servers:
        server.stop()


HARD = "Design a lock-free multi-producer queue and prove it linearizable."


def test_llm_classifier_routes_auto_requests(
    run_gateway: Any, fake_anthropic: FakeAnthropic
) -> None:
    base, sink = run_gateway(kind="llm")
    fake_anthropic.script(
        model_glob="claude-haiku-*",
        reply_text='{"tier": 3, "confidence": 0.92, "reasoning": "novel concurrent algorithm"}',
    )
    client = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=200, messages=[{"role": "user", "content": HARD}]
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-tierwise-tier"] == "opus"
    assert raw.headers["x-tierwise-classifier"] == "llm"
    calls = [(r.json_body or {})["model"] for r in fake_anthropic.requests_to("/v1/messages")]
    assert calls == ["claude-haiku-4-5", "claude-opus-4-6"]  # the classifier, then the answer
    (entry,) = sink.entries
    assert entry.classifier == "llm" and entry.status == "ok"
    assert entry.classifier_cost_usd > 0  # the classifier's own call is charged to the request


def test_llm_classifier_timeout_falls_back_to_the_default_tier(
    run_gateway: Any, fake_anthropic: FakeAnthropic
) -> None:
    base, sink = run_gateway(kind="llm", llm_timeout_s=0.5)
    fake_anthropic.script(model_glob="claude-haiku-*", delay_s=3.0, times=4)
    client = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=100, messages=[{"role": "user", "content": HARD}]
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-tierwise-tier"] == "sonnet"  # the default tier
    (entry,) = sink.entries
    assert entry.status == "ok"
    assert "classifier fallback" in (entry.reason or "")


def test_llm_classifier_upstream_error_falls_back(
    run_gateway: Any, fake_anthropic: FakeAnthropic
) -> None:
    base, sink = run_gateway(kind="llm")
    fake_anthropic.script(model_glob="claude-haiku-*", status=400, times=1)
    client = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0)
    message = client.messages.create(
        model="auto", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content
    (entry,) = sink.entries
    assert "classifier call failed" in (entry.reason or "")


def test_cascade_consults_the_llm_when_the_learned_model_is_unsure(
    run_gateway: Any, fake_anthropic: FakeAnthropic
) -> None:
    base, sink = run_gateway(kind="cascade", cascade_below=1.0)  # unsure unless certain
    fake_anthropic.script(
        model_glob="claude-haiku-*",
        reply_text='{"tier": 1, "confidence": 0.95, "reasoning": "simple lookup"}',
    )
    client = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=100, messages=[{"role": "user", "content": HARD}]
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-tierwise-tier"] == "haiku"  # the LLM's verdict, not the learned one
    (entry,) = sink.entries
    assert entry.classifier == "cascade:llm"
    assert entry.status == "ok" and entry.classifier_cost_usd > 0
