"""Who may use the gateway, over real HTTP with the official SDKs: keys stay required once one
existed, an unreadable key table fails closed, failed authentication is throttled per client
address and counted, /metrics needs an admin key, and anonymous refusals leave no ledger row."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest

from tests.dbs import postgres_schema, postgres_url_or_skip
from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import Settings, load, revalidate
from tierwise.gateway.access import RateLimiter
from tierwise.gateway.server import make_app
from tierwise.keys import KeyStore
from tierwise.ledger import open_store

TIERWISE = str(Path(sys.executable).parent / "tierwise")
MSG: dict[str, Any] = {
    "model": "auto",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "Translate 'hi' to German"}],
}


def gateway_settings(
    fake: FakeAnthropic, home: Path, db_url: str | None = None, **gateway: Any
) -> Settings:
    env = {
        "TIERWISE_HOME": str(home),
        "ANTHROPIC_API_KEY": fake.api_key,
        "ANTHROPIC_BASE_URL": fake.base_url,
    }
    if db_url:
        env["TIERWISE_DB"] = db_url
    settings = load(environ=env)
    return revalidate(
        settings,
        keys=settings.keys.model_copy(update={"cache_ttl_s": 0}),  # see revocations at once
        gateway=settings.gateway.model_copy(update=gateway),
    )


@pytest.fixture
def settings(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Settings:
    return gateway_settings(fake_anthropic, tmp_path, auth_failures_per_minute=5)


def make_keys(settings: Settings, *specs: tuple[str, str]) -> dict[str, str]:
    store = KeyStore(settings)
    try:
        return {
            name: (store.create(name, role=role) if role != "user" else store.create(name))[0]
            for name, role in specs
        }
    finally:
        store.close()


def scrape(base: str, admin_key: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(base + "/metrics", headers={"authorization": f"Bearer {admin_key}"})
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def from_address(address: str) -> httpx.Client:
    """An HTTP client whose connections leave from ``address`` (127.0.0.x is all loopback)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


# -- keys stay required -------------------------------------------------------------------------
def test_revoking_the_last_key_leaves_the_gateway_closed(settings: Settings) -> None:
    keys = make_keys(settings, ("only", "user"))
    with ServerThread(make_app(settings)) as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=keys["only"], max_retries=0)
        assert client.messages.create(**MSG).content
        store = KeyStore(settings)
        assert store.revoke("only")
        store.close()
        for api_key in (keys["only"], "anything"):
            with pytest.raises(anthropic.AuthenticationError):
                anthropic.Anthropic(
                    base_url=srv.base_url, api_key=api_key, max_retries=0
                ).messages.create(**MSG)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0).models.list()
        bare = httpx.post(srv.base_url + "/v1/messages", json=MSG)
        assert bare.status_code == 401
        # the dashboard and /metrics are closed too
        assert httpx.get(srv.base_url + "/dashboard/data").status_code == 401
        assert httpx.get(srv.base_url + "/metrics").status_code == 401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_on_all_interfaces_stays_closed_after_the_last_revocation(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    """The case from the field: `tierwise serve --host 0.0.0.0`, the last key revoked with the
    CLI while it runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {
        "TIERWISE_HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": fake_anthropic.api_key,
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
    }
    config = tmp_path / "config.toml"
    config.write_text("[keys]\ncache_ttl_s = 0\n")

    def tw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TIERWISE, *args, "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    key = tw("keys", "create", "--name", "edge").stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [TIERWISE, "serve", "--host", "0.0.0.0", "--port", str(port), "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        ok = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
        assert ok.messages.create(**MSG).content
        tw("keys", "revoke", "edge")
        for api_key in (key, "no-key-at-all"):
            with pytest.raises(anthropic.AuthenticationError):
                anthropic.Anthropic(base_url=base, api_key=api_key, max_retries=0).messages.create(
                    **MSG
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- fail closed ----------------------------------------------------------------------------------
def test_a_deleted_database_fails_closed(settings: Settings) -> None:
    keys = make_keys(settings, ("app", "user"))
    with ServerThread(make_app(settings)) as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=keys["app"], max_retries=0)
        assert client.messages.create(**MSG).content
        for f in settings.home.glob("tierwise.db*"):
            f.unlink()
        with pytest.raises(anthropic.InternalServerError) as info:
            client.messages.create(**MSG)
        assert info.value.status_code == 503
        assert "key table cannot be read" in str(info.value) and "deleted" in str(info.value)
        anonymous = httpx.post(srv.base_url + "/v1/messages", json=MSG)
        assert anonymous.status_code == 503
        assert anonymous.json()["error"]["type"] == "api_error"
        page = httpx.get(srv.base_url + "/dashboard/data", headers={"x-api-key": keys["app"]})
        assert page.status_code == 503 and "deleted" in page.json()["error"]
        assert httpx.get(srv.base_url + "/metrics").status_code == 503
        assert httpx.get(srv.base_url + "/health").status_code == 200


def test_a_failing_postgresql_fails_closed(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    import psycopg

    base_url = postgres_url_or_skip()
    with postgres_schema(base_url) as url:
        settings = gateway_settings(fake_anthropic, tmp_path, db_url=url)
        keys = make_keys(settings, ("app", "user"))
        app = make_app(settings)
        with ServerThread(app) as srv:
            client = anthropic.Anthropic(base_url=srv.base_url, api_key=keys["app"], max_retries=0)
            assert client.messages.create(**MSG).content
            # the gateway's database connection dies (a restart, a failover, a DBA's kill)
            pid = app.state.gateway.keys.store.db._conn.info.backend_pid
            with psycopg.connect(base_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(anthropic.InternalServerError) as info:
                client.messages.create(**MSG)
            assert info.value.status_code == 503
            assert "key table cannot be read" in str(info.value)


# -- failed authentication ------------------------------------------------------------------------
def test_failed_authentication_is_throttled_per_address_and_counted(settings: Settings) -> None:
    keys = make_keys(settings, ("app", "user"), ("ops", "admin"))
    with ServerThread(make_app(settings)) as srv:
        before = scrape(srv.base_url, keys["ops"])
        wrong = anthropic.Anthropic(base_url=srv.base_url, api_key="tw-guess", max_retries=0)
        for _ in range(4):
            with pytest.raises(anthropic.AuthenticationError):
                wrong.messages.create(**MSG)
        missing = httpx.post(srv.base_url + "/v1/messages", json=MSG)  # the 5th failure
        assert missing.status_code == 401
        # the bucket (5 a minute) is empty: 429 with retry-after, in either dialect
        with pytest.raises(anthropic.RateLimitError) as info:
            wrong.messages.create(**MSG)
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert "too many failed authentications" in str(info.value)
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(
                base_url=srv.base_url + "/v1", api_key="tw-guess", max_retries=0
            ).chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
        # a key that works is never locked out by failures from its address
        good = anthropic.Anthropic(base_url=srv.base_url, api_key=keys["app"], max_retries=0)
        assert good.messages.create(**MSG).content
        # another address has its own bucket
        with from_address("127.0.0.2") as other:
            assert other.post(srv.base_url + "/v1/messages", json=MSG).status_code == 401
        after = scrape(srv.base_url, keys["ops"])

    def delta(reason: str) -> float:
        key = ("tierwise_auth_failures_total", (("reason", reason),))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("invalid") == 4
    assert delta("missing") == 2  # the bare request, and the one from 127.0.0.2
    assert delta("throttled") == 2
    # one fixed label set: no address, key or path in the labels
    labels = {dict(k[1]).get("reason") for k in after if k[0] == "tierwise_auth_failures_total"}
    assert labels == {"missing", "invalid", "throttled", "keys_unavailable"}


def test_failed_authentication_buckets_are_bounded_and_keep_active_clients() -> None:
    from tierwise.gateway.access import MAX_TRACKED_CLIENTS, TokenBuckets

    now = [0.0]
    buckets = TokenBuckets(3, max_names=MAX_TRACKED_CLIENTS, clock=lambda: now[0])
    for _ in range(3):
        assert buckets.take("attacker") == 0
    assert buckets.take("attacker") > 0
    for i in range(3 * MAX_TRACKED_CLIENTS):  # a sweep through many addresses
        buckets.take(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        if i % 1000 == 0:
            assert buckets.take("attacker") > 0  # still throttled: nothing was cleared
    assert len(buckets) == MAX_TRACKED_CLIENTS


def test_request_rate_buckets_are_never_all_forgotten_at_once() -> None:
    """The old limiter emptied its whole table past 100,000 names: a throttled client got a
    fresh bucket as soon as enough other addresses had come by."""
    limiter = RateLimiter(1)
    limiter.check("client:203.0.113.9")
    for i in range(100_500):
        limiter.check(f"client:198.51.{i >> 8 & 255}.{i & 255}-{i}")
        if i % 500 == 0:
            with pytest.raises(Exception, match="rate limit"):
                limiter.check("client:203.0.113.9")
    assert len(limiter) <= 16_384


def test_ipv6_clients_are_bucketed_per_64() -> None:
    from tierwise.gateway.access import address_bucket

    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:ffff::7")
    assert address_bucket("2001:db8:1:3::1") != address_bucket("2001:db8:1:2::1")
    assert address_bucket("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_bucket("192.0.2.7") == "192.0.2.7"


# -- /metrics -----------------------------------------------------------------------------------
def test_metrics_need_an_admin_key_once_keys_exist(settings: Settings) -> None:
    keys = make_keys(settings, ("app", "user"), ("ops", "admin"))
    with ServerThread(make_app(settings)) as srv:
        url = srv.base_url + "/metrics"
        anonymous = httpx.get(url)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "authentication_error"
        assert "tierwise_" not in anonymous.text
        user = httpx.get(url, headers={"x-api-key": keys["app"]})
        assert user.status_code == 403
        assert user.json()["error"]["type"] == "permission_error"
        assert "admin" in user.json()["error"]["message"] and "tierwise_" not in user.text
        for headers in ({"x-api-key": keys["ops"]}, {"authorization": f"Bearer {keys['ops']}"}):
            admin = httpx.get(url, headers=headers)
            assert admin.status_code == 200 and "tierwise_auth_failures_total" in admin.text
            assert keys["ops"] not in admin.text


def test_metrics_are_open_while_the_gateway_is(settings: Settings) -> None:
    with ServerThread(make_app(settings)) as srv:
        assert httpx.get(srv.base_url + "/metrics").status_code == 200


# -- the ledger ---------------------------------------------------------------------------------
def test_anonymous_refusals_write_no_ledger_rows(settings: Settings) -> None:
    keys = make_keys(settings, ("app", "user"))
    with ServerThread(make_app(settings)) as srv:
        for i in range(12):  # 401s, then 429s past the 5-a-minute budget
            httpx.post(srv.base_url + "/v1/messages", json=MSG, headers={"x-api-key": f"tw-{i}"})
            httpx.post(srv.base_url + "/v1/chat/completions", json=MSG)
        good = anthropic.Anthropic(base_url=srv.base_url, api_key=keys["app"], max_retries=0)
        good.messages.create(**MSG)
    store = open_store(settings)
    try:
        rows = store.entries()
    finally:
        store.close()
    assert [(r.key_name, r.status) for r in rows] == [("app", "ok")]
