"""Real databases for tests: SQLite files in tmp_path, the local PostgreSQL and Redis.

PostgreSQL and Redis come from ``TIERWISE_TEST_POSTGRES_URL`` / ``TIERWISE_TEST_REDIS_URL``;
when a variable is unset, the service's default address on this machine is tried
(:data:`DEFAULT_POSTGRES_URL`, :data:`DEFAULT_REDIS_URL`), so ``make test`` with the services
running uses them without any set-up. Each service is probed once per test session, with a
short timeout, and pytest's header says which URL is used and whether it answered. A test that
needs a service that does not answer is skipped with the reason. Each test gets its own
PostgreSQL schema / Redis key prefix, dropped afterwards, so parallel runs do not collide.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tierwise.config import Settings, load
from tierwise.ledger.db import redact_url
from tierwise.types import LedgerEntry, Usage

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PROBE_TIMEOUT_S = 1.0  # a service on loopback answers in milliseconds


@dataclass(frozen=True)
class Service:
    """One service as this test session sees it."""

    name: str
    variable: str
    url: str
    from_environment: bool
    problem: str | None  # None: it answered

    def describe(self) -> str:
        source = f"${self.variable}" if self.from_environment else "default, $" + self.variable
        state = "found" if self.problem is None else f"NOT reachable: {self.problem}"
        return f"{self.name} {redact_url(self.url)} ({source}): {state}"

    def url_or_skip(self) -> str:
        if self.problem is not None:
            pytest.skip(
                f"{self.name} at {redact_url(self.url)} is not reachable ({self.problem}); "
                f"start it, or set {self.variable} to one that is"
            )
        return self.url


def _port_open(url: str, default_port: int) -> str | None:
    """A quick TCP connect first: a service that is down is known in milliseconds."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


@functools.cache
def postgres() -> Service:
    url = os.environ.get("TIERWISE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    given = bool(os.environ.get("TIERWISE_TEST_POSTGRES_URL"))
    problem = _port_open(url, 5432)
    if problem is None:
        import psycopg

        try:
            psycopg.connect(url, connect_timeout=2).close()
        except psycopg.Error as exc:
            problem = " ".join(str(exc).split())
    return Service("PostgreSQL", "TIERWISE_TEST_POSTGRES_URL", url, given, problem)


@functools.cache
def redis_service() -> Service:
    url = os.environ.get("TIERWISE_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    given = bool(os.environ.get("TIERWISE_TEST_REDIS_URL"))
    problem = _port_open(url, 6379)
    if problem is None:
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
        )
        try:
            client.ping()
        except redis.RedisError as exc:
            problem = str(exc)
        finally:
            client.close()
    return Service("Redis", "TIERWISE_TEST_REDIS_URL", url, given, problem)


def postgres_url_or_skip() -> str:
    return postgres().url_or_skip()


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
    return redis_service().url_or_skip()


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
