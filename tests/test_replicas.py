"""Two gateway replicas sharing PostgreSQL (ledger, keys) and Redis (budgets): 200 concurrent
requests against one small key budget; together they never overspend it."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import aiohttp

from tests.chaos import start_gateway, stop_gateway
from tests.dbs import delete_redis_prefix, postgres_schema, postgres_url_or_skip, redis_url_or_skip
from tests.fakes.anthropic_server import FakeAnthropic
from tierwise.config import load
from tierwise.keys import KeyStore
from tierwise.ledger import open_store

BUDGET = Decimal("0.002")


async def fire(bases: list[str], key: str, n: int) -> list[int]:
    body = {"model": "haiku", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            async with session.post(bases[i % 2] + "/v1/messages", json=body, headers=headers) as r:
                await r.read()
                return r.status

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_two_replicas_share_one_budget(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    pg = postgres_url_or_skip()
    redis_url = redis_url_or_skip()
    prefix = f"tw_test_{uuid.uuid4().hex[:10]}:"
    with postgres_schema(pg) as db_url:
        toml = (
            f'[ledger]\nurl = "{db_url}"\n'
            f'[budgets]\nredis_url = "{redis_url}"\nredis_prefix = "{prefix}"\n'
        )
        settings = load(environ={"TIERWISE_HOME": str(tmp_path / "admin"), "TIERWISE_DB": db_url})
        keys = KeyStore(settings)
        raw_key, _ = keys.create("shared", budget_usd=str(BUDGET), period="total")
        keys.close()
        try:
            a = start_gateway(fake_anthropic, tmp_path / "a", extra_toml=toml)
            b = start_gateway(fake_anthropic, tmp_path / "b", extra_toml=toml)
            statuses = asyncio.run(fire([a.base_url, b.base_url], raw_key, 200))
            stop_gateway(a)
            stop_gateway(b)
            store = open_store(settings)
            try:
                rows = store.entries(key_name="shared")
            finally:
                store.close()
        finally:
            delete_redis_prefix(redis_url, prefix)
    assert len(statuses) == 200
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) > 0 and statuses.count(429) > 0
    assert len(rows) == 200  # both replicas recorded every request in the shared ledger
    spent = sum((r.total_cost_usd or Decimal(0) for r in rows if r.status == "ok"), Decimal(0))
    assert spent <= BUDGET, spent
    assert sum(1 for r in rows if r.status == "ok") == statuses.count(200)
