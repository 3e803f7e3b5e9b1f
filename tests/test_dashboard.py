"""The dashboard over HTTP: its data equal `tierwise report --json`, access with gateway keys
(header, ``?key=`` once then a signed cookie, the login form), no key in logs or cookies, and
the page's assets with a strict content security policy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx2 as httpx
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import Settings, load, revalidate
from tierwise.gateway.server import make_app
from tierwise.keys import KeyStore

TIERWISE = str(Path(sys.executable).parent / "tierwise")
PROMPTS = [
    "Translate 'good night' into Italian",
    "Write a Python function that merges two sorted lists",
    "Review this distributed architecture for race conditions and consistency issues",
]


@pytest.fixture
def settings(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Settings:
    settings = load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": fake_anthropic.api_key,
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        }
    )
    # the keys' cache: see a revoked key at once
    return revalidate(settings, keys=settings.keys.model_copy(update={"cache_ttl_s": 0}))


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(make_app(settings)) as running:
        yield running


def report_json(settings: Settings, *args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(settings.home)}
    proc = subprocess.run(
        [TIERWISE, "report", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def test_open_dashboard_data_match_the_report(
    settings: Settings, server: ServerThread, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(model_glob="claude-*", status=500, times=2)  # two failed attempts
    client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
    for prompt in PROMPTS * 2:
        client.messages.create(
            model="auto", max_tokens=50, messages=[{"role": "user", "content": prompt}]
        )
    page = httpx.get(server.base_url + "/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "https://" not in page.text and "http://" not in page.text  # nothing from elsewhere
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        got = httpx.get(f"{server.base_url}/dashboard/static/{asset}")
        assert got.status_code == 200 and kind in got.headers["content-type"]
        assert "http://" not in got.text.replace("http://www.w3.org/2000/svg", "")
    assert httpx.get(server.base_url + "/dashboard/static/../keys.py").status_code == 404

    data = httpx.get(server.base_url + "/dashboard/data?since=all").json()
    report = report_json(settings, "--since", "all", "--by", "key")
    shown = data["report"]
    for field in ("total_requests", "by_status", "by_tier", "total_cost_usd", "saved_usd"):
        assert shown[field] == report[field], field
    assert shown["baseline_cost_usd"] == report["baseline_cost_usd"]
    assert shown["total_requests"] == 6
    groups = report["groups"]
    assert isinstance(groups, dict)
    assert {k["name"]: k["cost_usd"] for k in data["keys"]} == {
        name: g["cost_usd"] for name, g in groups.items()
    }
    # the series adds up to the totals
    points = data["series"]["points"]
    assert sum(Decimal(p["cost_usd"]) for p in points) == Decimal(str(report["total_cost_usd"]))
    # "all" on a young ledger: hourly, at least half a day on the axis
    assert data["series"]["bucket"] == "hour" and len(points) >= 12
    # newest first, with what the table shows
    recent = data["recent"]
    assert len(recent) == 6
    assert [r["ts"] for r in recent] == sorted((r["ts"] for r in recent), reverse=True)
    assert {"tier", "model", "classifier", "reason", "cost_usd", "status"} <= set(recent[0])
    assert data["latency"]["decision_ms"]["all"]["n"] == 6
    assert data["latency"]["upstream_ms"]["all"]["n"] >= 6
    assert data["keys_required"] is False and data["viewer"] is None

    day = httpx.get(server.base_url + "/dashboard/data?since=24h").json()
    assert day["series"]["bucket"] == "hour" and len(day["series"]["points"]) in (24, 25)
    assert httpx.get(server.base_url + "/dashboard/data?since=soon").status_code == 400


def test_keys_protect_the_dashboard(
    settings: Settings, server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = KeyStore(settings)
    raw, _ = keys.create("ops", budget_usd="2", period="day")
    other, _ = keys.create("other")
    base = server.base_url
    client = anthropic.Anthropic(base_url=base, api_key=raw, max_retries=0)
    client.messages.create(
        model="auto", max_tokens=50, messages=[{"role": "user", "content": PROMPTS[0]}]
    )

    login = httpx.get(base + "/dashboard")
    assert login.status_code == 401 and 'action="/dashboard/login"' in login.text
    assert httpx.get(base + "/dashboard/data").status_code == 401
    # the API's headers work for the data
    with_header = httpx.get(base + "/dashboard/data", headers={"x-api-key": raw})
    assert with_header.status_code == 200 and with_header.json()["viewer"] == "ops"
    ops = next(k for k in with_header.json()["keys"] if k["name"] == "ops")
    assert ops["budget_usd"] == "2" and ops["period"] == "day"
    assert Decimal(ops["period_spent_usd"]) == Decimal(ops["cost_usd"]) > 0

    # ?key= once: a redirect without the key, and a signed HttpOnly cookie that is not the key
    first = httpx.get(base + f"/dashboard?since=7d&key={raw}")
    assert first.status_code == 303
    assert first.headers["location"] == "/dashboard?since=7d"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert raw not in cookie and raw.removeprefix("tw-")[:12] not in cookie
    browser = httpx.Client(base_url=base, cookies=first.cookies)
    assert browser.get("/dashboard").status_code == 200
    assert browser.get("/dashboard/data").json()["viewer"] == "ops"
    # a wrong key, a forged cookie
    assert httpx.get(base + "/dashboard?key=tw-nope").status_code == 401
    token = first.cookies["tierwise_dashboard"]
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    assert (
        httpx.get(base + "/dashboard/data", cookies={"tierwise_dashboard": forged}).status_code
        == 401
    )
    # the login form
    form = httpx.post(base + "/dashboard/login", data={"key": other})
    assert form.status_code == 303 and form.headers["location"] == "/dashboard"
    assert httpx.post(base + "/dashboard/login", data={"key": "tw-x"}).status_code == 401
    # revoking the key ends its sessions
    keys.revoke("ops")
    keys.close()
    assert browser.get("/dashboard/data").status_code == 401
    out = browser.post("/dashboard/logout")
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    browser.close()
    # the server's logs (the test's own HTTP client logs the URLs it was given)
    logged = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert any(r.name.startswith("httpx") and "key=" in r.getMessage() for r in caplog.records)
    for secret in (raw, other):
        assert secret not in logged


def test_dashboard_without_a_ledger(tmp_path: Path) -> None:
    from tierwise.gateway import build_app

    settings = load(environ={"TIERWISE_HOME": str(tmp_path), "TIERWISE_PROVIDER": "simulated"})
    with ServerThread(build_app(settings)) as srv:
        assert httpx.get(srv.base_url + "/dashboard").status_code == 200
        data = httpx.get(srv.base_url + "/dashboard/data")
    assert data.status_code == 503 and "ledger" in data.json()["error"]


def test_user_keys_see_only_their_own_data_and_admins_see_all(
    settings: Settings, server: ServerThread
) -> None:
    keys = KeyStore(settings)
    alice, _ = keys.create("alice", budget_usd="1", period="day")
    bob, _ = keys.create("bob", budget_usd="2", period="month")
    ops, _ = keys.create("ops", role="admin")
    keys.close()
    base = server.base_url
    ids: dict[str, list[str]] = {"alice": [], "bob": []}
    for name, key, count in (("alice", alice, 2), ("bob", bob, 3)):
        client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
        for i in range(count):
            raw = client.messages.with_raw_response.create(
                model="auto",
                max_tokens=50,
                messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            )
            ids[name].append(raw.headers["x-tierwise-request-id"])
    for name, key in (("alice", alice), ("bob", bob)):
        rated = httpx.post(
            base + "/v1/feedback",
            headers={"x-api-key": key},
            json={"request_id": ids[name][0], "score": 0.8},
        )
        assert rated.status_code == 200
    report = report_json(settings, "--since", "all", "--by", "key")
    groups = report["groups"]
    assert isinstance(groups, dict)

    def data(**kwargs: object) -> dict[str, object]:
        response = httpx.get(base + "/dashboard/data?since=all", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    for name, key, other in (("alice", alice, "bob"), ("bob", bob, "alice")):
        mine = data(headers={"x-api-key": key})
        assert (mine["viewer"], mine["role"]) == (name, "user")
        shown = mine["report"]
        assert isinstance(shown, dict)
        assert shown["total_requests"] == groups[name]["requests"] == len(ids[name])
        assert shown["total_cost_usd"] == groups[name]["cost_usd"]
        assert {r["key"] for r in mine["recent"]} == {name}  # type: ignore[attr-defined]
        assert {r["request_id"] for r in mine["recent"]} == set(ids[name])  # type: ignore[attr-defined]
        assert [k["name"] for k in mine["keys"]] == [name]  # type: ignore[attr-defined]
        points = mine["series"]["points"]  # type: ignore[index]
        assert sum(p["requests"] for p in points) == len(ids[name])
        assert mine["latency"]["decision_ms"]["all"]["n"] == len(ids[name])  # type: ignore[index]
        assert mine["quality"]["overall"]["total"] == 1  # type: ignore[index]
        # nothing of the other key: not its name, not its requests
        text = json.dumps(mine)
        assert other not in text and not any(rid in text for rid in ids[other])
    everything = data(headers={"x-api-key": ops})
    assert (everything["viewer"], everything["role"]) == ("ops", "admin")
    assert everything["report"]["total_requests"] == 5  # type: ignore[index]
    shown_keys = {k["name"]: k for k in everything["keys"]}  # type: ignore[attr-defined]
    assert {"alice", "bob"} <= set(shown_keys)
    assert shown_keys["bob"]["budget_usd"] == "2" and shown_keys["alice"]["period"] == "day"
    assert everything["quality"]["overall"]["total"] == 2  # type: ignore[index]

    # sessions carry the role: a user's cookie shows the user's data, an admin's everything
    for key, expected in ((alice, 2), (ops, 5)):
        login = httpx.post(base + "/dashboard/login", data={"key": key})
        assert login.status_code == 303
        session = data(cookies=login.cookies)
        assert session["report"]["total_requests"] == expected  # type: ignore[index]
    # a user's cookie edited to say "admin" is refused (the role is under the MAC)
    token = httpx.post(base + "/dashboard/login", data={"key": alice}).cookies["tierwise_dashboard"]
    name, role, expires, mac = token.split(".")
    assert role == "user"
    forged = ".".join((name, "admin", expires, mac))
    refused = httpx.get(base + "/dashboard/data", cookies={"tierwise_dashboard": forged})
    assert refused.status_code == 401


def test_wrong_dashboard_keys_are_throttled(settings: Settings) -> None:
    settings = revalidate(
        settings, gateway=settings.gateway.model_copy(update={"auth_failures_per_minute": 3})
    )
    keys = KeyStore(settings)
    good, _ = keys.create("ops", role="admin")
    keys.close()
    with ServerThread(make_app(settings)) as srv:
        base = srv.base_url
        statuses = [
            httpx.post(base + "/dashboard/login", data={"key": f"tw-guess-{i}"}).status_code
            for i in range(3)
        ]
        assert statuses == [401, 401, 401]
        throttled = httpx.get(base + "/dashboard?key=tw-guess-x")
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
        assert "too many failed authentications" in throttled.text
        data = httpx.get(base + "/dashboard/data", headers={"x-api-key": "tw-guess-y"})
        assert data.status_code == 429
        # the right key still logs in from the same address
        assert httpx.post(base + "/dashboard/login", data={"key": good}).status_code == 303
