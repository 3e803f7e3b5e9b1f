"""Migration 7: the routing decision as structured columns, and shadow judge verdicts kept
apart from the traffic's cost — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.dbs import postgres_schema, postgres_url_or_skip, settings_for
from tests.routing_rows import routed_entry
from tierwise.config import Settings
from tierwise.ledger import open_store
from tierwise.ledger.schema import applied_versions
from tierwise.ledger.store import ShadowVerdict
from tierwise.types import Usage

T = dt.datetime(2026, 11, 21, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield settings_for(tmp_path)
        return
    with postgres_schema(postgres_url_or_skip()) as url:
        yield settings_for(tmp_path, url)


def verdict(rid: str, first: str | None, second: str | None, **kw: object) -> ShadowVerdict:
    base: dict[str, object] = {
        "request_id": rid,
        "ts": T + dt.timedelta(minutes=1),
        "tier": "haiku",
        "model": "claude-haiku-4-5",
        "reference_tier": "opus",
        "reference_model": "claude-opus-4-6",
        "judge_model": "claude-sonnet-4-6",
        "rubric": "pairwise-v1",
        "verdict_cheap_first": first,
        "verdict_reference_first": second,
        "shadow_usage": Usage(input_tokens=1000, output_tokens=300),
        "judge_usage": Usage(input_tokens=2500, output_tokens=20),
        "shadow_cost_usd": Decimal("0.0125000000000000000001"),
        "judge_cost_usd": Decimal("0.00831"),
    }
    base.update(kw)
    return ShadowVerdict(**base)  # type: ignore[arg-type]


def test_decision_columns_round_trip(settings: Settings) -> None:
    store = open_store(settings)
    try:
        assert 7 in applied_versions(store.db)
        routed = routed_entry(
            request_id="tw_dec_1",
            ts=T,
            decision_score=-0.125,
            tier_quality={"haiku": 0.62, "sonnet": 0.91, "opus": 1.0},
            decision_rule="quality",
            router_model="router-v2@0123456789ab",
            route_features=(1.23456789, -0.5, 0.0),
        )
        plain = routed_entry(request_id="tw_dec_2", ts=T + dt.timedelta(seconds=1))
        store.insert([routed, plain])
        rows = {r.request_id: r for r in store.decision_rows()}
    finally:
        store.close()
    got = rows["tw_dec_1"]
    assert got.decision_score == -0.125
    assert got.tier_quality == {"haiku": 0.62, "sonnet": 0.91, "opus": 1.0}
    assert (got.decision_rule, got.router_model) == ("quality", "router-v2@0123456789ab")
    assert got.route_features == [1.2346, -0.5, 0.0]  # 4 decimals are what learning needs
    none = rows["tw_dec_2"]
    assert (none.tier_quality, none.decision_rule, none.route_features) == (None, None, None)


def test_verdicts_are_stored_apart_from_traffic_cost(settings: Settings) -> None:
    store = open_store(settings)
    try:
        store.insert([routed_entry(request_id="tw_v_1", ts=T, key_name=None)])
        before = store.aggregate(None)["all"]
        store.add_verdict(verdict("tw_v_1", "reference", "tie"))
        store.add_verdict(verdict("tw_v_2", "cheap", "cheap", tier="sonnet"))
        store.add_verdict(verdict("tw_v_2", "tie", None, error="judge timed out"))  # replaces
        after = store.aggregate(None)["all"]
        got = store.verdicts()
    finally:
        store.close()
    assert (after.cost_usd, after.classifier_cost_usd) == (
        before.cost_usd,
        before.classifier_cost_usd,
    )
    one = got["tw_v_1"]
    assert one.shadow_cost_usd == Decimal("0.0125000000000000000001")  # exact, as text
    assert one.judge_cost_usd == Decimal("0.00831")
    assert one.shadow_usage.input_tokens == 1000 and one.judge_usage.output_tokens == 20
    assert one.cheap_good_enough == 0.5
    two = got["tw_v_2"]
    assert (two.verdict_cheap_first, two.verdict_reference_first) == ("tie", None)
    assert two.error == "judge timed out" and two.cheap_good_enough == 1.0


def test_verdict_values_are_checked() -> None:
    with pytest.raises(ValueError, match="verdict_cheap_first must be one of"):
        verdict("x", "better", None)
    assert verdict("x", None, None).cheap_good_enough is None
    assert verdict("x", "reference", "reference").cheap_good_enough == 0.0


def test_router_records_the_decision_columns(tmp_path: Path) -> None:
    from tierwise.ledger import open_ledger
    from tierwise.router import Router

    settings = settings_for(tmp_path)
    ledger = open_ledger(settings)
    try:
        router = Router(settings, sink=ledger)
        result = asyncio.run(router.run("Translate 'good morning' into French."))
        asyncio.run(router.aclose())
    finally:
        ledger.close()
    store = open_store(settings)
    try:
        row = next(r for r in store.decision_rows() if r.request_id == result.request_id)
    finally:
        store.close()
    assert row.decision_rule == "quality"
    assert row.tier_quality is not None and set(row.tier_quality) == {"haiku", "sonnet", "opus"}
    assert row.route_features is not None and row.router_model is not None
