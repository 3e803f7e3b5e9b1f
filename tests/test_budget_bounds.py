"""Budgets hold under hostile traffic: 200 concurrent requests of each kind that overspent
before (CJK prompts, usage larger than the request could consume, documents by URL, errors
after admission), several workers without Redis, and Redis that stalls or dies mid-request.
Spend is read from the ledger (what `tierwise report` shows) and from the budget counters.

The bound (RELIABILITY.md): a budgeted key's recorded spend never exceeds its budget. Each
request holds its worst case (tierwise.worstcase) and is never charged more than its hold:
usage beyond what the request can consume is clamped and flagged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx2 as httpx
import pytest

from tests.dbs import delete_redis_prefix, redis_url_or_skip
from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tests.tcpproxy import TcpProxy
from tierwise.config import Settings, load, revalidate
from tierwise.gateway import anthropic_api
from tierwise.gateway.server import make_app
from tierwise.keys import KeyStore
from tierwise.ledger import open_store
from tierwise.types import LedgerEntry


@pytest.fixture
def settings(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Settings:
    return load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": fake_anthropic.api_key,
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        }
    )


def make_key(settings: Settings, name: str, budget: str) -> str:
    keys = KeyStore(settings)
    try:
        raw, _ = keys.create(name, budget_usd=budget, period="day")
    finally:
        keys.close()
    return raw


def rows(settings: Settings) -> list[LedgerEntry]:
    store = open_store(settings)
    try:
        return store.entries()
    finally:
        store.close()


def spent(entries: list[LedgerEntry]) -> Decimal:
    return sum(((e.cost_usd or Decimal(0)) + e.classifier_cost_usd for e in entries), Decimal(0))


async def flood(
    base: str, key: str, bodies: list[dict[str, Any]], path: str = "/v1/messages"
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(path, json=b, headers={"x-api-key": key}) for b in bodies)
        )


def consume(client: anthropic.Anthropic, body: dict[str, Any]) -> None:
    with client.messages.stream(**body) as stream:
        for _ in stream:
            pass


CJK = "请把下面的段落翻译成英文并总结要点：" + "数据库事务的隔离级别决定了并发读写的可见性。" * 12


def test_cjk_flood_never_overspends(settings: Settings, fake_anthropic: FakeAnthropic) -> None:
    """200 concurrent CJK prompts on a $0.01 key: the upstream reports one token per
    character (as a real tokenizer may); the reservation must hold for it."""
    raw = make_key(settings, "cjk", "0.01")
    tokens = len(CJK) + 20
    fake_anthropic.script(usage={"input_tokens": tokens, "output_tokens": 60}, times=200)
    body = {"model": "haiku", "max_tokens": 60, "messages": [{"role": "user", "content": CJK}]}
    with ServerThread(make_app(settings)) as running:
        replies = asyncio.run(flood(running.base_url, raw, [body] * 200))
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= 5  # the budget was really used
    entries = [e for e in rows(settings) if e.key_name == "cjk"]
    assert len(entries) == 200  # every request recorded once
    assert spent(entries) <= Decimal("0.01")
    assert all(not e.usage_flags for e in entries if e.status == "ok")  # real usage, unclamped


def test_lying_usage_is_clamped_and_cannot_overspend(
    settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    """An upstream that reports absurd usage (10**15 and a billion tokens), streaming and not:
    the row is written with the usage clamped to what the request could consume and flagged;
    the key's spend stays within its budget."""
    raw = make_key(settings, "liar", "0.05")
    fake_anthropic.script(
        usage={"input_tokens": 10**15, "output_tokens": 10**9, "cache_read_input_tokens": 10**9},
        times=200,
    )
    bodies = [
        {
            "model": "sonnet",
            "max_tokens": 50,
            "stream": i % 2 == 0,
            "messages": [{"role": "user", "content": f"Say hello number {i}"}],
        }
        for i in range(200)
    ]
    with ServerThread(make_app(settings)) as running:
        replies = asyncio.run(flood(running.base_url, raw, bodies))
    assert {r.status_code for r in replies} <= {200, 429}
    entries = [e for e in rows(settings) if e.key_name == "liar"]
    assert len(entries) == 200
    ok = [e for e in entries if e.status == "ok"]
    assert ok, "some requests must have been admitted"
    for e in ok:
        assert e.usage.output_tokens <= 50
        assert any("clamped" in flag for flag in e.usage_flags)
    assert spent(entries) <= Decimal("0.05")


def test_usage_too_large_for_a_database_integer_is_clamped_and_the_ledger_keeps_going(
    settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    """10**30 tokens (once an OverflowError that stalled the ledger for good): the count is
    clamped to what the request could consume and the row flagged, streaming and not; the next
    request is recorded normally."""
    raw = make_key(settings, "huge", "1.00")
    fake_anthropic.script(usage={"input_tokens": 10**30}, times=2)
    body: dict[str, Any] = {
        "model": "haiku",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with ServerThread(make_app(settings)) as running:
        client = anthropic.Anthropic(base_url=running.base_url, api_key=raw, max_retries=0)
        assert client.messages.create(**body).content
        consume(client, body)
        assert client.messages.create(**body).content
    entries = [e for e in rows(settings) if e.key_name == "huge"]
    assert [e.status for e in entries] == ["ok", "ok", "ok"]
    for e in entries[:2]:
        assert e.usage.total_input_tokens < 10_000
        assert any("clamped" in flag for flag in e.usage_flags)
    assert not entries[2].usage_flags
    assert spent(entries) <= Decimal("1.00")


def test_negative_usage_in_a_stream_is_an_error_with_the_hold_kept(
    settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    raw = make_key(settings, "neg", "1.00")
    fake_anthropic.script(usage={"output_tokens": -5})
    with ServerThread(make_app(settings)) as running:
        client = anthropic.Anthropic(base_url=running.base_url, api_key=raw, max_retries=0)
        with (
            pytest.raises(anthropic.APIStatusError) as info,
            client.messages.stream(
                model="haiku", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
            ) as stream,
        ):
            for _ in stream:
                pass
        assert "malformed event" in str(info.value)
    (entry,) = [e for e in rows(settings) if e.key_name == "neg"]
    assert (entry.status, entry.error_type) == ("error", "malformed_stream")
    assert entry.usage_flags and "usage unknown" in entry.usage_flags[0]


def test_documents_by_url_are_held_at_the_context_window(
    settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    """A document the API fetches itself has no size in the body: its hold is the model's
    context window, so a small budget refuses it rather than guess (and a big one pays it)."""
    small = make_key(settings, "small", "0.05")
    big = make_key(settings, "big", "50")
    doc = {
        "role": "user",
        "content": [
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            {"type": "text", "text": "Summarise this document."},
        ],
    }
    body = {"model": "haiku", "max_tokens": 100, "messages": [doc]}
    with ServerThread(make_app(settings)) as running:
        replies = asyncio.run(flood(running.base_url, small, [body] * 200))
        assert {r.status_code for r in replies} == {429}
        ok = httpx.post(running.base_url + "/v1/messages", json=body, headers={"x-api-key": big})
        assert ok.status_code == 200
    entries = rows(settings)
    assert len([e for e in entries if e.key_name == "small"]) == 200
    (paid,) = [e for e in entries if e.key_name == "big"]
    assert "context window" in (paid.reason or "")


def test_errors_after_admission_release_the_hold(
    settings: Settings, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An internal error after the budget was held (here: building the response fails), 200
    times at once: every request is recorded once as internal_error and no hold is left,
    so the key is not locked out."""
    raw = make_key(settings, "unlucky", "0.02")

    def broken(*args: Any, **kwargs: Any) -> dict[str, str]:
        raise RuntimeError("injected fault after admission")

    body = {"model": "haiku", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    with ServerThread(make_app(settings)) as running:
        monkeypatch.setattr(anthropic_api, "decision_headers", broken)
        replies = asyncio.run(flood(running.base_url, raw, [body] * 200))
        assert {r.status_code for r in replies} <= {500, 429}
        monkeypatch.undo()
        # Nothing is held any more: a request needing most of the budget is admitted.
        after = httpx.post(
            running.base_url + "/v1/messages",
            json={**body, "max_tokens": 3000},
            headers={"x-api-key": raw},
        )
        assert after.status_code == 200, after.text
    entries = [e for e in rows(settings) if e.key_name == "unlucky"]
    assert len(entries) == 201
    assert {e.error_type for e in entries[:-1]} <= {"internal_error", "rate_limit_error"}


def test_several_workers_without_redis_refuse_budgeted_keys(
    settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    """Even for a key created after start-up: a worker's own counters would let every worker
    spend the whole budget."""
    multi = revalidate(settings, gateway=settings.gateway.model_copy(update={"workers": 2}))
    with ServerThread(make_app(multi)) as running:
        raw = make_key(settings, "late", "1.00")
        reply = httpx.post(
            running.base_url + "/v1/messages",
            json={
                "model": "haiku",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "x"}],
            },
            headers={"x-api-key": raw},
        )
    assert reply.status_code == 503
    assert "budgets.redis_url" in reply.json()["error"]["message"]


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    target = urlsplit(redis_url_or_skip())
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        yield proxy


def with_redis(settings: Settings, url: str, prefix: str, timeout_s: float = 0.3) -> Settings:
    budgets = settings.budgets.model_copy(
        update={"redis_url": url, "redis_prefix": prefix, "redis_timeout_s": timeout_s}
    )
    return revalidate(settings, budgets=budgets)


def test_redis_dying_mid_request_never_fails_a_billed_answer(
    settings: Settings, fake_anthropic: FakeAnthropic, redis_proxy: TcpProxy
) -> None:
    """Redis dies after the hold and before the settlement: the client still gets its answer,
    the ledger has its cost, and the settlement lands once Redis is back."""
    prefix = "tierwise-test-mid:"
    s = with_redis(settings, redis_proxy.url, prefix)
    raw = make_key(s, "mid", "1.00")
    fake_anthropic.script(delay_s=0.6, times=2)
    body: dict[str, Any] = {
        "model": "haiku",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    try:
        with ServerThread(make_app(s)) as running:
            client = anthropic.Anthropic(base_url=running.base_url, api_key=raw, max_retries=0)

            async def kill_soon() -> None:
                await asyncio.sleep(0.3)
                redis_proxy.kill()

            async def both() -> Any:
                async_client = anthropic.AsyncAnthropic(
                    base_url=running.base_url, api_key=raw, max_retries=0
                )
                _, message = await asyncio.gather(kill_soon(), async_client.messages.create(**body))
                return message

            message = asyncio.run(both())
            assert message.content[0].text
            with pytest.raises(anthropic.APIStatusError) as info:  # fail closed meanwhile
                client.messages.create(**body)
            assert info.value.status_code == 503
            redis_proxy.revive()
            health = httpx.get(running.base_url + "/health").json()
            assert health["status"] in ("ok", "degraded")
        entries = [e for e in rows(s) if e.key_name == "mid"]
        assert [e.status for e in entries] == ["ok", "error"]
        assert entries[0].cost_usd is not None and entries[0].cost_usd > 0
        # The settlement was applied when Redis came back (at the latest at shutdown).
        import redis

        client_r = redis.Redis.from_url(redis_url_or_skip())
        try:
            values = [client_r.get(k) for k in client_r.scan_iter(match=f"{prefix}*:spent")]
        finally:
            client_r.close()
        assert values and int(values[0] or 0) > 0
    finally:
        delete_redis_prefix(redis_url_or_skip(), prefix)


def test_slow_redis_refuses_budgeted_keys_fast_and_health_stays_fast(
    settings: Settings, redis_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = "tierwise-test-slow:"
    s = with_redis(settings, redis_proxy.url, prefix, timeout_s=2.0)
    raw = make_key(s, "slow", "1.00")
    body: dict[str, Any] = {
        "model": "haiku",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    try:
        with ServerThread(make_app(s)) as running:
            redis_proxy.stall()

            async def probe() -> tuple[list[httpx.Response], list[float]]:
                async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as c:
                    requests = asyncio.gather(
                        *(c.post("/v1/messages", json=body, headers={"x-api-key": raw})
                          for _ in range(20))
                    )  # fmt: skip
                    times = []
                    for _ in range(10):
                        start = asyncio.get_running_loop().time()
                        assert (await c.get("/health")).status_code == 200
                        times.append(asyncio.get_running_loop().time() - start)
                        await asyncio.sleep(0.03)
                    return await requests, times

            with caplog.at_level(logging.ERROR):
                replies, health_times = asyncio.run(probe())
            redis_proxy.resume()
        assert {r.status_code for r in replies} == {503}
        assert "did not answer within" in replies[0].json()["error"]["message"]
        # The loop was never blocked: /health answered well within Redis's 2 s deadline each
        # time (a loop blocked on Redis would hold every /health for up to 2 s).
        assert max(health_times) < 1.0
        ours = [r for r in caplog.records if r.name.startswith("tierwise")]
        assert not [r for r in ours if r.exc_info], "a Redis failure must not log a traceback"
    finally:
        delete_redis_prefix(redis_url_or_skip(), prefix)


def test_an_unpriced_model_on_a_budgeted_key_is_a_400_naming_it(
    settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    """Not a 429: nothing is wrong with the budget; the model has no price to bound it."""
    raw = make_key(settings, "typo", "1.00")
    with ServerThread(make_app(settings)) as running:
        reply = httpx.post(
            running.base_url + "/v1/messages",
            json={
                "model": "claude-sonet-4-6",  # a typo: unknown to the catalogue
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"x-api-key": raw},
        )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "claude-sonet-4-6" in error["message"] and "prices_file" in error["message"]
