"""Real databases for tests: SQLite files in tmp_path, the local PostgreSQL and Redis.

PostgreSQL and Redis come from ``TIERWISE_TEST_POSTGRES_URL`` / ``TIERWISE_TEST_REDIS_URL``
(``.ci/run`` exports both); without them, or when the server does not answer, the test is
skipped with the reason. Each test gets its own PostgreSQL schema / Redis key prefix, dropped
afterwards, so parallel runs do not collide.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tierwise.config import Settings, load
from tierwise.types import LedgerEntry, Usage


def postgres_url_or_skip() -> str:
    url = os.environ.get("TIERWISE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("TIERWISE_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at TIERWISE_TEST_POSTGRES_URL is unreachable: {exc}")
    return url


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema; yields a URL whose search_path is that schema."""
    import psycopg

    schema = f"tw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def redis_url_or_skip() -> str:
    url = os.environ.get("TIERWISE_TEST_REDIS_URL")
    if not url:
        pytest.skip("TIERWISE_TEST_REDIS_URL is not set (.ci/run sets it)")
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at TIERWISE_TEST_REDIS_URL is unreachable: {exc}")
    finally:
        client.close()
    return url


def delete_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def settings_for(home: Path, db_url: str | None = None, **ledger: Any) -> Settings:
    env = {"TIERWISE_HOME": str(home), "TIERWISE_PROVIDER": "simulated"}
    if db_url:
        env["TIERWISE_DB"] = db_url
    settings = load(environ=env)
    if ledger:
        from tierwise.config import revalidate

        settings = revalidate(settings, ledger=settings.ledger.model_copy(update=ledger))
    return settings


_T0 = dt.datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=dt.UTC)


def entry(n: int = 0, **fields: Any) -> LedgerEntry:
    """A complete ledger entry; ``fields`` override."""
    base: dict[str, Any] = {
        "request_id": f"tw_test_{uuid.uuid4().hex}",
        "ts": _T0 + dt.timedelta(seconds=n),
        "source": "gateway",
        "status": "ok",
        "api": "messages",
        "key_name": "alice",
        "tags": {"team": "search", "env": "prod"},
        "requested_model": "claude-opus-4-6",
        "tier": "haiku",
        "model": "claude-haiku-4-5",
        "classifier": "rules",
        "confidence": 0.875,
        "reason": "simple formatting",
        "fallbacks": ("opus", "sonnet"),
        "error_type": None,
        "http_status": 200,
        "usage": Usage(
            input_tokens=1200,
            output_tokens=345,
            cache_read_tokens=10_000,
            cache_write_5m_tokens=200,
            cache_write_1h_tokens=300,
            thinking_tokens=100,
        ),
        "cost_usd": Decimal("0.0000003"),
        "classifier_cost_usd": Decimal("0.000000000000000001"),
        "price_version": "claude-haiku-4-5@2025-10-01",
        "baseline_model": "claude-opus-4-6",
        "baseline_cost_usd": Decimal("12345678901234.123456789012"),
        "saved_usd": Decimal("12345678901234.123456488012"),
        "decision_ms": 0.25,
        "upstream_ms": 812.5,
        "total_ms": 813.0,
        "streaming": True,
        "simulated": False,
        "prompt": None,
        "reply": None,
    }
    base.update(fields)
    return LedgerEntry(**base)
