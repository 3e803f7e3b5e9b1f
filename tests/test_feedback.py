"""Feedback through the API (``POST /v1/feedback``) and the library
(``RouterQualityMonitor.evaluate``), stored with the request, and the lesson's tier quality
report from the ledger (``tierwise report --quality``), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import pytest

from tests.dbs import postgres_schema, postgres_url_or_skip
from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise import ModelRouter, RouterQualityMonitor
from tierwise.config import Settings, load
from tierwise.gateway.server import make_app
from tierwise.keys import KeyStore
from tierwise.ledger import open_store
from tierwise.quality import quality_report

TIERWISE = str(Path(sys.executable).parent / "tierwise")
HAIKU_PROMPT = "Translate 'good night' into Italian"
OPUS_PROMPT = "Review this distributed architecture for race conditions and consistency issues"


@pytest.fixture(params=["sqlite", "postgres"])
def settings(
    request: pytest.FixtureRequest, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Iterator[Settings]:
    env = {
        "TIERWISE_HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": fake_anthropic.api_key,
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
    }
    with ExitStack() as stack:
        if request.param == "postgres":
            env["TIERWISE_DB"] = stack.enter_context(postgres_schema(postgres_url_or_skip()))
        yield load(environ=env)


def cli(*args: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(settings.home), "COLUMNS": "120"}
    if settings.ledger.url:
        env["TIERWISE_DB"] = settings.ledger.url
    return subprocess.run(
        [TIERWISE, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def ask(client: anthropic.Anthropic, prompt: str) -> str:
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    )
    return raw.headers["x-tierwise-request-id"]


def post(base: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    if isinstance(body, bytes):
        return httpx.post(base + "/v1/feedback", content=body, headers=headers)
    return httpx.post(base + "/v1/feedback", json=body, headers=headers)


def test_feedback_api_stores_scores_and_the_quality_report_follows(settings: Settings) -> None:
    with ServerThread(make_app(settings)) as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key="x", max_retries=0)
        cheap = [ask(client, HAIKU_PROMPT) for _ in range(3)]
        dear = ask(client, OPUS_PROMPT)
        # asked and rated at once: the row may still be in the write-behind queue
        reply = post(srv.base_url, {"request_id": cheap[0], "score": 0.2, "comment": "wrong"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["type"] == "feedback" and body["request_id"] == cheap[0]
        assert body["score"] == 0.2 and body["tier"] == "haiku"
        assert post(srv.base_url, {"request_id": cheap[1], "score": 1}).status_code == 200
        assert post(srv.base_url, {"request_id": dear, "score": 0.9}).status_code == 200
        # a second opinion replaces the first
        assert post(srv.base_url, {"request_id": cheap[1], "score": 0.6}).status_code == 200

        bad: list[tuple[Any, str]] = [
            ({"score": 0.5}, "request_id"),
            ({"request_id": "", "score": 0.5}, "request_id"),
            ({"request_id": 42, "score": 0.5}, "request_id"),
            ({"request_id": cheap[2]}, "score"),
            ({"request_id": cheap[2], "score": 1.5}, "score"),
            ({"request_id": cheap[2], "score": -0.1}, "score"),
            ({"request_id": cheap[2], "score": True}, "score"),
            ({"request_id": cheap[2], "score": "0.5"}, "score"),
            ({"request_id": cheap[2], "score": 0.5, "comment": 7}, "comment"),
            ({"request_id": cheap[2], "score": 0.5, "comment": "x" * 5000}, "comment"),
        ]
        for payload, field in bad:
            reply = post(srv.base_url, payload)
            assert reply.status_code == 400, (payload, reply.text)
            error = reply.json()
            assert error["type"] == "error"
            assert error["error"]["type"] == "invalid_request_error"
            assert error["error"]["message"].startswith(f"{field}:"), error
        assert post(srv.base_url, b"not json").status_code == 400
        assert post(srv.base_url, [1, 2]).status_code == 400
        missing = post(srv.base_url, {"request_id": "tw_never_seen", "score": 0.5})
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"
        assert "request_id" in missing.json()["error"]["message"]
    # the server stopped: its ledger is flushed; feedback is not a request of its own
    store = open_store(settings)
    try:
        assert store.count() == 4
        scores = store.feedback_scores()
        report = quality_report(store, tier_order=settings.tier_names)
    finally:
        store.close()
    assert scores == {cheap[0]: 0.2, cheap[1]: 0.6, dear: 0.9}
    assert report["tiers"]["haiku"]["total"] == 2
    assert report["tiers"]["haiku"]["avg_satisfaction"] == pytest.approx(0.4)
    assert report["tiers"]["haiku"]["below_threshold"] == 2
    assert report["tiers"]["opus"]["below_threshold"] == 0

    proc = cli("report", "--quality", "--json", "--since", "all", settings=settings)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == report
    table = cli("report", "--quality", "--since", "all", settings=settings)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    haiku = next(line for line in lines if line.startswith("│ haiku"))
    cells = [c.strip() for c in haiku.strip("│").split("│")]
    assert cells[:4] == ["haiku", "0.40", "2", "2"]
    assert "all tiers" in table.stdout


def test_feedback_needs_the_key_that_made_the_request(settings: Settings) -> None:
    keys = KeyStore(settings)
    alice, _ = keys.create("alice")
    bob, _ = keys.create("bob")
    keys.close()
    with ServerThread(make_app(settings)) as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=alice, max_retries=0)
        rid = ask(client, HAIKU_PROMPT)
        rating = {"request_id": rid, "score": 0.5}
        assert post(srv.base_url, rating).status_code == 401
        assert post(srv.base_url, rating, key="tw-wrong").status_code == 401
        # another key cannot see (or rate) alice's request
        assert post(srv.base_url, rating, key=bob).status_code == 404
        reply = post(srv.base_url, {"request_id": rid, "score": 0.75}, key=alice)
        assert reply.status_code == 200, reply.text
    store = open_store(settings)
    try:
        rows = store.db.query("SELECT score, key_name, source FROM feedback")
    finally:
        store.close()
    assert [tuple(r) for r in rows] == [(0.75, "alice", "api")]


def test_feedback_without_a_ledger_is_503(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    from tierwise.gateway import build_app

    settings = load(environ={"TIERWISE_HOME": str(tmp_path), "TIERWISE_PROVIDER": "simulated"})
    with ServerThread(build_app(settings)) as srv:
        reply = post(srv.base_url, {"request_id": "tw_x", "score": 0.5})
    assert reply.status_code == 503
    assert "ledger" in reply.json()["error"]["message"]


def test_library_monitor_persists_to_the_routers_ledger(tmp_path: Path) -> None:
    settings = load(environ={"TIERWISE_HOME": str(tmp_path), "TIERWISE_PROVIDER": "simulated"})
    with ModelRouter(settings=settings) as router:
        monitor = RouterQualityMonitor(router=router)
        a = router.route(HAIKU_PROMPT)
        b = router.route(OPUS_PROMPT)
        monitor.evaluate(a, 0.9)
        monitor.evaluate(a, 0.5)  # the latest judgement of a request is the one stored
        monitor.evaluate(b, 1.0)
        memory = monitor.tier_quality_report()  # the lesson's in-memory report, unchanged
        assert memory["haiku"]["total"] == 2
        assert memory["haiku"]["avg_satisfaction"] == pytest.approx(0.7)
    store = open_store(settings)
    try:
        stored = quality_report(store, tier_order=settings.tier_names)
        assert store.feedback_scores() == {a.request_id: 0.5, b.request_id: 1.0}
    finally:
        store.close()
    assert stored["tiers"]["haiku"]["avg_satisfaction"] == 0.5
    assert stored["tiers"]["haiku"]["avg_cost_usd"] == str(a.cost)
    assert stored["tiers"]["opus"]["avg_cost_usd"] == str(b.cost)


def test_library_monitor_defaults_to_the_configured_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_HOME", str(tmp_path))
    monkeypatch.setenv("TIERWISE_PROVIDER", "simulated")
    with ModelRouter() as router:
        result = router.route(HAIKU_PROMPT)
    with RouterQualityMonitor() as monitor:
        monitor.evaluate(result, 0.3)
        assert monitor.stored_quality_report()["tiers"]["haiku"]["below_threshold"] == 1
    # and without persistence, nothing is written
    with RouterQualityMonitor(persist=False) as quiet:
        quiet.evaluate(result, 1.0)
        with pytest.raises(ValueError, match="no ledger"):
            quiet.stored_quality_report()
    store = open_store(load())
    try:
        assert store.feedback_scores() == {result.request_id: 0.3}
    finally:
        store.close()
