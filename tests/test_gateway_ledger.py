"""The full gateway (`make_app`): every request in the SQLite ledger once, gateway keys,
per-key budgets at admission, and /metrics without secrets."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import Settings, load
from tierwise.gateway.server import make_app
from tierwise.keys import KeyStore
from tierwise.ledger import open_store
from tierwise.reports import report


@pytest.fixture
def settings(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Settings:
    return load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": fake_anthropic.api_key,
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        }
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(make_app(settings)) as running:
        yield running


def test_every_request_recorded_once_and_report_matches(
    settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(model_glob="claude-opus-*", status=529, retry_after="0", times=2)
    with ServerThread(make_app(settings)) as running:
        client = anthropic.Anthropic(base_url=running.base_url, api_key="x", max_retries=0)
        ids = []
        for prompt in ("Translate 'hi' to French", "Write a Python function to sum a list"):
            raw = client.messages.with_raw_response.create(
                model="auto", max_tokens=100, messages=[{"role": "user", "content": prompt}]
            )
            ids.append(raw.headers["x-tierwise-request-id"])
        raw = client.messages.with_raw_response.create(
            model="auto",
            max_tokens=300,
            system="You are a principal architect.",
            messages=[
                {
                    "role": "user",
                    "content": "Review this distributed architecture for race conditions",
                }
            ],
        )
        ids.append(raw.headers["x-tierwise-request-id"])
        with client.messages.stream(
            model="sonnet", max_tokens=300, messages=[{"role": "user", "content": "hi"}]
        ) as s:
            s.get_final_message()
        oa = openai.OpenAI(base_url=running.base_url + "/v1", api_key="x", max_retries=0)
        oa.chat.completions.create(model="haiku", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model="auto", max_tokens=-1, messages=[])
    # The server stopped: its shutdown flushed the ledger.
    store = open_store(settings)
    try:
        rows = store.entries()
    finally:
        store.close()
    assert len(rows) == 6
    assert len({r.request_id for r in rows}) == 6
    assert {r.request_id for r in rows} >= set(ids)
    by_id = {r.request_id: r for r in rows}
    fell_back = by_id[ids[2]]
    assert (fell_back.tier, fell_back.fallbacks, fell_back.status) == (
        "sonnet",
        ("opus:529",),
        "ok",
    )
    assert [r.status for r in rows].count("error") == 1
    assert sum(1 for r in rows if r.streaming) == 1
    assert {r.api for r in rows} == {"messages", "chat.completions"}
    data = report(settings)
    assert data["total_requests"] == 6
    assert data["by_status"] == {"ok": 5, "error": 1}
    total = sum((r.total_cost_usd or Decimal(0) for r in rows if r.status == "ok"), Decimal(0))
    assert Decimal(data["total_cost_usd"]) == total


def test_keys_are_required_once_one_exists(settings: Settings) -> None:
    keys = KeyStore(settings)
    raw_key, _ = keys.create("team-a")
    admin_key, _ = keys.create("ops", role="admin")  # /metrics needs an admin key
    keys.close()
    with ServerThread(make_app(settings)) as running:
        base = running.base_url
        body: Any = {
            "model": "auto",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        }
        missing = httpx.post(base + "/v1/messages", json=body)
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        wrong = httpx.post(base + "/v1/messages", json=body, headers={"x-api-key": raw_key + "x"})
        assert wrong.status_code == 401
        oa_missing = httpx.post(base + "/v1/chat/completions", json=body)
        assert oa_missing.status_code == 401 and "error" in oa_missing.json()
        ok = anthropic.Anthropic(base_url=base, api_key=raw_key).messages.create(**body)  # Bearer
        assert ok.content
        ok2 = httpx.post(base + "/v1/messages", json=body, headers={"x-api-key": raw_key})
        assert ok2.status_code == 200
        metrics = httpx.get(base + "/metrics", headers={"x-api-key": admin_key}).text
        assert "tierwise_requests_total" in metrics
        assert raw_key not in metrics
        assert settings.provider.api_key is not None
        assert settings.provider.api_key.get_secret_value() not in metrics
    store = open_store(settings)
    try:
        rows = store.entries()
    finally:
        store.close()
    ok_rows = [r for r in rows if r.status == "ok"]
    assert [r.key_name for r in ok_rows] == ["team-a", "team-a"]
    # Anonymous 401s are not model requests of anyone: counted in /metrics, never written to
    # the ledger (a flood of them must not grow the database).
    assert len(rows) == 2


def test_budget_downgrades_then_refuses(settings: Settings) -> None:
    keys = KeyStore(settings)
    raw_key, _ = keys.create("small", budget_usd="0.01", period="day")
    keys.close()
    with ServerThread(make_app(settings)) as running:
        client = anthropic.Anthropic(base_url=running.base_url, api_key=raw_key, max_retries=0)
        arch = [
            {"role": "user", "content": "Review this distributed architecture for race conditions"}
        ]
        # Worst case at 1,000 output tokens: opus $0.025, sonnet $0.015, haiku $0.005 → haiku.
        raw = client.messages.with_raw_response.create(
            model="auto",
            max_tokens=1000,
            system="You are a principal architect.",
            messages=arch,  # type: ignore[arg-type]
        )
        assert raw.headers["x-tierwise-tier"] == "haiku"
        # 4,096 output tokens cannot fit even on haiku ($0.02): refused with the budget named.
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.create(model="auto", max_tokens=4096, messages=arch)  # type: ignore[arg-type]
        message = str(info.value)
        assert "small" in message and "daily" in message
    store = open_store(settings)
    try:
        rows = store.entries()
    finally:
        store.close()
    assert "downgraded to haiku" in (rows[0].reason or "")
    assert (rows[1].status, rows[1].http_status, rows[1].error_type) == (
        "error",
        429,
        "rate_limit_error",
    )


def test_metrics_parse_and_count(settings: Settings) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(base + "/metrics", headers={"x-api-key": admin_key}).text
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    keys = KeyStore(settings)
    raw_key, _ = keys.create("metered", budget_usd="0.01", period="total")
    admin_key, _ = keys.create("ops", role="admin")  # /metrics needs an admin key
    keys.close()
    with ServerThread(make_app(settings)) as running:
        before = scrape(running.base_url)
        client = anthropic.Anthropic(base_url=running.base_url, api_key=raw_key, max_retries=0)
        arch: Any = [
            {"role": "user", "content": "Review this distributed architecture for race conditions"}
        ]
        client.messages.create(
            model="auto", max_tokens=1000, system="You are a principal architect.", messages=arch
        )
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model="auto", max_tokens=4096, messages=arch)
        after = scrape(running.base_url)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    ok = delta(
        "tierwise_requests_total",
        api="messages",
        tier="haiku",
        model="claude-haiku-4-5",
        status="ok",
    )
    assert ok == 1
    assert delta("tierwise_budget_events_total", event="downgraded") == 1
    assert delta("tierwise_budget_events_total", event="refused") == 1
    assert delta("tierwise_cost_usd_total", tier="haiku") > 0
    assert delta("tierwise_decision_seconds_count") >= 1
    assert delta("tierwise_upstream_seconds_count") >= 1
    assert ("tierwise_ledger_queue_depth", ()) in after


def test_report_after_graceful_stop_matches_hand_computed_costs(
    settings: Settings, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    import json
    import os
    import subprocess
    import sys

    usage = {
        "input_tokens": 1000,
        "output_tokens": 200,
        "output_tokens_details": {"thinking_tokens": 0},
    }
    fake_anthropic.script(usage=usage, times=5)
    # A prompt that can really hold 1,000 input tokens (usage above what a request could
    # consume is clamped as bad upstream data: see test_hostile_usage.py).
    prompt = "Summarise the following notes. " + "note " * 1000
    with ServerThread(make_app(settings)) as running:
        client = anthropic.Anthropic(base_url=running.base_url, api_key="x", max_retries=0)
        for _ in range(5):
            client.messages.create(
                model="haiku", max_tokens=300, messages=[{"role": "user", "content": prompt}]
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env["TIERWISE_HOME"] = str(settings.home)
    tierwise = str(Path(sys.executable).parent / "tierwise")
    out = subprocess.run(
        [tierwise, "report", "--json"], env=env, capture_output=True, text=True, check=True
    )
    data = json.loads(out.stdout)
    # Haiku 4.5: 1000 x $1 + 200 x $5 per million = $0.002 a request; Opus 4.6 on the same
    # usage: 1000 x $5 + 200 x $25 = $0.01. Five requests, no classifier (forced tier).
    assert data["total_requests"] == 5
    assert Decimal(data["total_cost_usd"]) == Decimal("0.010")
    assert Decimal(data["baseline_cost_usd"]) == Decimal("0.050")
    assert Decimal(data["saved_usd"]) == Decimal("0.040")
    assert data["saved_pct"] == 80.0
    assert data["by_tier"]["haiku"]["requests"] == 5


def test_store_prompts_keeps_the_turn_and_the_answer_for_gateway_rows(
    settings: Settings,
) -> None:
    """Opt-in only (`ledger.store_prompts`): the latest user turn and the answer's text,
    streaming and not; off by default (tests/test_security.py checks the default)."""
    from tierwise.config import revalidate

    keep = revalidate(settings, ledger=settings.ledger.model_copy(update={"store_prompts": True}))
    with ServerThread(make_app(keep)) as running:
        client = anthropic.Anthropic(base_url=running.base_url, api_key="x", max_retries=0)
        body: Any = {
            "model": "haiku",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "Spell cat backwards"}],
        }
        answer = client.messages.create(**body)
        with client.messages.stream(**body) as stream:
            streamed = stream.get_final_message()
    store = open_store(keep)
    try:
        rows = store.entries()
    finally:
        store.close()
    assert [r.prompt for r in rows] == ["Spell cat backwards"] * 2
    texts = [answer.content[0].text, streamed.content[0].text]  # type: ignore[union-attr]
    assert [r.reply for r in rows] == texts
