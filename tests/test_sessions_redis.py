"""Session state in a real Redis, and what a slow or absent Redis does to routing."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.sessions_corpus import claude_code_body
from tierwise import config
from tierwise.sessions import Outcome, RedisStore, SessionRouter, StoreError, ThreadState
from tierwise.types import ClassifyInput, Decision, Usage

REDIS_URL = os.environ.get("TIERWISE_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="TIERWISE_TEST_REDIS_URL is not set (.ci/run sets it)"
)


def _prefix() -> str:
    return f"tierwise-test-{uuid.uuid4().hex[:12]}:"


def _redis_settings() -> config.Settings:
    """Sessions in the test Redis, under a prefix of their own."""
    assert REDIS_URL is not None
    return config.load(
        environ={},
        provider={"kind": "simulated"},
        sessions={"redis_url": REDIS_URL, "redis_prefix": _prefix(), "redis_timeout_s": 1.0},
    )


@needs_redis
@pytest.mark.network
def test_state_round_trips_through_redis_with_a_ttl() -> None:
    assert REDIS_URL is not None

    async def scenario() -> None:
        store = RedisStore(REDIS_URL, prefix=_prefix(), timeout_s=1.0)
        try:
            assert await store.get("k") is None
            await store.put("k", ThreadState(tier="sonnet", turns=2), ttl_s=30)
            back = await store.get("k")
            assert back is not None
            assert (back.tier, back.turns) == ("sonnet", 2)
            ttl = await store._redis.pttl(store.prefix + "k")
            assert 0 < ttl <= 30_000
        finally:
            await store._redis.delete(store.prefix + "k")
            await store.aclose()

    asyncio.run(scenario())


@needs_redis
@pytest.mark.network
def test_two_routers_share_a_session_through_redis() -> None:
    """Two gateway replicas: the second sees the tier the first chose (a continuation)."""
    assert REDIS_URL is not None
    settings = _redis_settings()
    calls: list[ClassifyInput] = []

    async def classify(request: ClassifyInput) -> Decision:
        calls.append(request)
        from tierwise.policy import Policy

        return Policy(settings, settings.catalogue()).decide(None, force_tier="sonnet")

    async def scenario() -> None:
        a, b = SessionRouter(settings), SessionRouter(settings)
        try:
            body = claude_code_body("Fix the failing test")
            first = await a.route(a.identify(body), body, classify)
            await a.observe(first, Outcome(first.model, Usage(cache_write_5m_tokens=18_000)))
            loop = dict(body)
            loop["messages"] = [
                *body["messages"],
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
                },
            ]
            second = await b.route(b.identify(loop), loop, classify)
            assert (second.rule, second.tier) == ("continuation", "sonnet")
            assert len(calls) == 1
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(scenario())


@needs_redis
@pytest.mark.network
def test_a_conversation_compacted_on_one_replica_resumes_on_another() -> None:
    """The compaction's state waits in Redis for the conversation that resumes from it."""
    from tests.test_sessions import COMPACT, RESUME, compacted, turn

    assert REDIS_URL is not None
    settings = _redis_settings()
    tiers = iter(["haiku", "opus"])  # the session's turn, then whatever comes next

    async def classify(request: ClassifyInput) -> Decision:
        from tierwise.policy import Policy

        return Policy(settings, settings.catalogue()).decide(None, force_tier=next(tiers))

    async def scenario() -> None:
        a, b = SessionRouter(settings), SessionRouter(settings)
        try:
            body = claude_code_body("Rename x to count in foo.py", session_id=_prefix())
            first = await a.route(a.identify(body), body, classify)
            await a.observe(first, Outcome(first.model, Usage(cache_write_5m_tokens=18_000)))
            asked = turn(body, COMPACT)
            summary = await a.route(a.identify(asked), asked, classify)
            assert (summary.rule, summary.tier) == ("continuation", "haiku")
            await a.observe(summary, Outcome(summary.model, Usage(cache_read_tokens=18_000)))
            resumed_body = compacted(body, RESUME)
            resumed = await b.route(b.identify(resumed_body), resumed_body, classify)
            assert (resumed.rule, resumed.tier, resumed.classified) == ("resume", "haiku", False)
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(scenario())


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=2)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_hung_redis_is_a_store_error_and_is_not_retried_at_once(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    settings = config.load(
        environ={},
        provider={"kind": "simulated"},
        sessions={
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "redis_timeout_s": 0.05,
            "redis_retry_after_s": 60,
        },
    )

    async def classify(request: ClassifyInput) -> Decision:
        from tierwise.policy import Policy

        return Policy(settings, settings.catalogue()).decide(None, force_tier="haiku")

    async def scenario() -> None:
        router = SessionRouter(settings)
        try:
            body = claude_code_body("Fix it")
            first = await router.route(router.identify(body), body, classify)
            assert first.rule == "per-request"
            assert first.degraded is not None
            assert "session store unavailable" in first.degraded
            connections = len(accepted)
            assert connections >= 1
            second = await router.route(router.identify(body), body, classify)
            assert second.rule == "per-request"
            assert second.degraded is not None
            assert "not retried yet" in second.degraded
            assert len(accepted) == connections  # no new connection while Redis is "down"
        finally:
            await router.aclose()

    asyncio.run(scenario())


def test_no_redis_at_all_is_a_store_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now

    async def scenario() -> None:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
        try:
            with pytest.raises(StoreError, match="GET failed"):
                await store.get("k")
            with pytest.raises(StoreError, match="not retried yet"):
                await store.put("k", ThreadState(), 10)
        finally:
            await store.aclose()

    asyncio.run(scenario())
