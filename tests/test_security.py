"""Secrets never leak: a canary upstream key and a canary gateway key through every path
(answers, streams, both dialects, upstream auth failures, connection failures, bad requests),
then searched for in responses, the gateway's log, the ledger files and /metrics. Prompts are
not logged or stored by default."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.chaos import start_gateway, stop_gateway
from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import load
from tierwise.gateway.server import make_app
from tierwise.keys import KeyStore

CANARY = "sk-ant-CANARY-7f3a9c1e5b2d4f6a8c0e"
PROMPT = "PROMPT-CANARY-do-not-log-this-text"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exercise(base: str, gateway_key: str | None) -> list[str]:
    """Send requests down every path; return everything that came back (bodies + headers)."""
    seen: list[str] = []
    headers = {"anthropic-version": "2023-06-01"}
    if gateway_key:
        headers["x-api-key"] = gateway_key
    msg = {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": PROMPT}]}
    calls = [
        ("/v1/messages", msg),
        ("/v1/messages", {**msg, "stream": True}),
        ("/v1/messages", {**msg, "model": "opus"}),
        ("/v1/chat/completions", msg),
        ("/v1/chat/completions", {**msg, "stream": True}),
        ("/v1/messages/count_tokens", {"model": "auto", "messages": msg["messages"]}),
        ("/v1/messages", {"model": "auto"}),  # bad request
        ("/v1/messages", {**msg, "model": "claude-unknown-model"}),
    ]
    with httpx.Client(timeout=30) as client:
        first_id = "tw_none"
        for path, body in calls:
            response = client.post(base + path, json=body, headers=headers)
            seen.append(response.text + str(dict(response.headers)))
            if first_id == "tw_none":
                first_id = response.headers.get("x-tierwise-request-id", first_id)
        for path in (
            "/metrics",
            "/health",
            "/v1/models",
            "/openapi.json",
            "/nowhere",
            "/dashboard",
            "/dashboard/data?since=all",
        ):
            response = client.get(base + path, headers=headers)
            seen.append(response.text + str(dict(response.headers)))
        # feedback on the first answer (its comment is stored: that is what it is for)
        rating = {"request_id": first_id, "score": 0.5, "comment": "too long"}
        response = client.post(base + "/v1/feedback", json=rating, headers=headers)
        seen.append(response.text + str(dict(response.headers)))
    return seen


def leaks(home: Path, texts: list[str], secret: str) -> list[str]:
    found = [t[:120] for t in texts if secret in t]
    for path in home.rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_upstream_key_never_leaks(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with FakeAnthropic(api_key=CANARY) as good, FakeAnthropic(api_key="sk-ant-other") as wrong:
        texts: list[str] = []
        # 1. an upstream that accepts the key (answers, streams, errors of our own)
        gw = start_gateway(good, home)
        texts += exercise(gw.base_url, None)
        stop_gateway(gw)
        texts.append(gw.stderr())
        # 2. an upstream that rejects it (401 relayed), and 3. one that cannot be reached
        unreachable = FakeAnthropic(api_key=CANARY)
        unreachable._port = closed_port()  # never started: nothing listens there
        for upstream_home, fake in ((tmp_path / "h2", wrong), (tmp_path / "h3", unreachable)):
            gw = start_gateway(fake, upstream_home)
            texts += exercise(gw.base_url, None)
            stop_gateway(gw)
            texts.append(gw.stderr())
        # The upstream did receive it (so the test would notice if it were never sent).
        assert any(r.header("x-api-key") == CANARY for r in good.requests)
    assert leaks(tmp_path, texts, "tierwise_requests_total")  # the search does find things
    assert not leaks(tmp_path, texts, CANARY)
    # Prompts are neither logged (the gateway's log files are under tmp_path) nor stored.
    assert not leaks(tmp_path, [], PROMPT)


def test_gateway_keys_are_stored_hashed_and_never_echoed(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    settings = load(environ={"TIERWISE_HOME": str(home)})
    keys = KeyStore(settings)
    raw_key, _ = keys.create("canary-team")
    keys.close()
    gw = start_gateway(fake_anthropic, home)
    texts = exercise(gw.base_url, raw_key)
    texts += exercise(gw.base_url, raw_key + "-wrong")
    stop_gateway(gw)
    texts.append(gw.stderr())
    assert not leaks(home, texts, raw_key)
    assert any('"type":"authentication_error"' in t or '"authentication_error"' in t for t in texts)


def test_refusals_never_echo_the_key(
    fake_anthropic: FakeAnthropic, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood of wrong keys in every place a key goes (x-api-key, Bearer, the dashboard's
    ?key= and login form), past the failed-authentication limit: 401s then 429s, none of which
    (nor the log) repeats what the client sent."""
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "home"
    settings = load(
        environ={
            "TIERWISE_HOME": str(home),
            "ANTHROPIC_API_KEY": fake_anthropic.api_key,
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        }
    )
    keys = KeyStore(settings)
    keys.create("someone")
    keys.close()
    wrong = "tw-CANARY-wrong-key-9f8e7d6c5b4a"
    texts: list[str] = []
    statuses: set[int] = set()
    with ServerThread(make_app(settings)) as srv, httpx.Client(base_url=srv.base_url) as client:
        msg = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        for _ in range(10):
            for response in (
                client.post("/v1/messages", json=msg, headers={"x-api-key": wrong}),
                client.post(
                    "/v1/chat/completions", json=msg, headers={"authorization": f"Bearer {wrong}"}
                ),
                client.get("/metrics", headers={"x-api-key": wrong}),
                client.get(f"/dashboard?key={wrong}"),
                client.post("/dashboard/login", data={"key": wrong}),
                client.get("/dashboard/data", headers={"x-api-key": wrong}),
            ):
                statuses.add(response.status_code)
                texts.append(response.text + str(dict(response.headers)))
    assert statuses == {401, 429}
    logged = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert not leaks(home, [*texts, logged], wrong)
    assert not leaks(home, [], wrong.removeprefix("tw-"))
