"""The ledger queries behind the dashboard and the quality loop, on SQLite and PostgreSQL:
feedback (migration 3), the tier quality report, spend per hour and tier, latency
percentiles and the newest rows."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

import pytest

from tests.dbs import entry, postgres_schema, postgres_url_or_skip, settings_for
from tierwise.ledger import LedgerStore, open_store
from tierwise.ledger.schema import applied_versions
from tierwise.quality import quality_report
from tierwise.reports import build_report, build_series
from tierwise.types import LedgerEntry

T0 = dt.datetime(2026, 11, 20, 9, 15, tzinfo=dt.UTC)


def rows() -> list[LedgerEntry]:
    out = []
    for i in range(20):
        tier, model = [
            ("haiku", "claude-haiku-4-5"),
            ("sonnet", "claude-sonnet-4-6"),
            ("opus", "claude-opus-4-6"),
        ][i % 3]
        out.append(
            entry(
                request_id=f"tw_r{i:02d}",
                ts=T0 + dt.timedelta(minutes=17 * i),
                tier=tier,
                model=model,
                key_name=None if i % 4 == 0 else "alice",
                cost_usd=Decimal("0.001") * (i + 1),
                classifier_cost_usd=Decimal("0.0001"),
                baseline_cost_usd=Decimal("0.01") * (i + 1),
                saved_usd=None,
                decision_ms=float(i + 1),  # 1 … 20
                upstream_ms=0.0 if i == 0 else 100.0 * i,  # 100 … 1900, one without upstream
                status="error" if i == 19 else "ok",
            )
        )
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    with ExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = stack.enter_context(postgres_schema(postgres_url_or_skip()))
        s = open_store(settings_for(tmp_path, url))
        stack.callback(s.close)
        s.insert(rows())
        yield s


def test_feedback_migration_is_applied(store: LedgerStore) -> None:
    assert 3 in applied_versions(store.db)


def test_feedback_upserts_and_feeds_the_quality_report(store: LedgerStore) -> None:
    scores = {"tw_r00": 0.9, "tw_r03": 0.5, "tw_r01": 0.2, "tw_r02": 1.0}  # haiku ×2, sonnet, opus
    for rid, score in scores.items():
        store.add_feedback(rid, 0.0, comment="first", source="api", key_name="alice")
        store.add_feedback(rid, score, comment="second thoughts", source="library")
    store.add_feedback("tw_not_recorded_yet", 0.1)  # kept, but joins to no request
    rows_ = store.db.query("SELECT request_id, score, comment, source FROM feedback")
    assert len(rows_) == 5
    assert ("tw_r03", 0.5, "second thoughts", "library") in [tuple(r) for r in rows_]
    assert store.feedback_scores() == scores
    assert store.feedback_scores(request_ids=["tw_r00", "tw_r05"]) == {"tw_r00": 0.9}

    report = quality_report(store, tier_order=["haiku", "sonnet", "opus"])
    assert list(report["tiers"]) == ["haiku", "sonnet", "opus"]
    haiku = report["tiers"]["haiku"]
    assert haiku["avg_satisfaction"] == pytest.approx(0.7)
    assert haiku["below_threshold"] == 1
    assert haiku["total"] == 2
    # (0.001 + 0.0001) and (0.004 + 0.0001): model + classifier cost, exactly
    assert haiku["avg_cost_usd"] == "0.0026"
    assert report["tiers"]["sonnet"] == {
        "avg_satisfaction": 0.2,
        "below_threshold": 1,
        "total": 1,
        "avg_cost_usd": "0.0021",
    }
    assert report["overall"]["total"] == 4
    assert report["overall"]["below_threshold"] == 2
    # the window is the request's time
    later = quality_report(store, since=T0 + dt.timedelta(minutes=30))
    assert later["overall"]["total"] == 2  # tw_r02, tw_r03


def test_series_by_hour_and_tier_add_up_to_the_report(store: LedgerStore) -> None:
    end = T0 + dt.timedelta(hours=6)
    series = build_series(store, bucket="hour", tier_order=["haiku", "sonnet", "opus"], now=end)
    report = build_report(store)
    points = series["points"]
    assert series["tiers"] == ["haiku", "sonnet", "opus"]
    assert points[0]["t"] == "2026-11-20T09:00:00+00:00"
    assert [p["t"][11:13] for p in points] == ["09", "10", "11", "12", "13", "14", "15"]
    assert sum(p["requests"] for p in points) == report["total_requests"] == 20
    assert sum(Decimal(p["cost_usd"]) for p in points) == Decimal(report["total_cost_usd"])
    assert sum(Decimal(p["saved_usd"]) for p in points) == Decimal(report["saved_usd"])
    assert sum(Decimal(p["baseline_cost_usd"]) for p in points) == Decimal(
        report["baseline_cost_usd"]
    )
    for tier, expected in report["by_tier"].items():
        got = sum(
            (Decimal(p["by_tier"][tier]["cost_usd"]) for p in points if tier in p["by_tier"]),
            Decimal(0),
        )
        assert got == Decimal(expected["cost_usd"])
    # 09:15, 09:32, 09:49 in the first hour
    assert points[0]["requests"] == 3
    daily = build_series(store, bucket="day", now=end)
    assert [p["requests"] for p in daily["points"]] == [20]
    # a window: empty buckets are filled from its start
    since = T0 - dt.timedelta(hours=2)
    windowed = build_series(store, since=since, bucket="hour", now=end)
    assert windowed["points"][0]["t"] == "2026-11-20T07:00:00+00:00"
    assert windowed["points"][0]["requests"] == 0


def test_latency_percentiles_nearest_rank(store: LedgerStore) -> None:
    decision = store.latency_percentiles("decision_ms")["all"]
    values = sorted(float(i + 1) for i in range(20))

    def rank(p: int, xs: list[float]) -> float:
        return xs[math.ceil(p * len(xs) / 100) - 1]

    assert decision == {"n": 20, "p50": rank(50, values), "p95": rank(95, values), "p99": 20.0}
    upstream = store.latency_percentiles("upstream_ms")["all"]
    ups = [100.0 * i for i in range(1, 20)]  # the row without an upstream call is left out
    assert upstream["n"] == 19
    assert upstream["p50"] == rank(50, ups) and upstream["p99"] == 1900.0
    by_tier = store.latency_percentiles("decision_ms", "tier")
    assert set(by_tier) == {"haiku", "sonnet", "opus"}
    assert by_tier["haiku"]["n"] == 7  # rows 0, 3, …, 18
    assert by_tier["haiku"]["p50"] == rank(50, [float(i + 1) for i in range(0, 20, 3)])
    with pytest.raises(ValueError, match="latency column"):
        store.latency_percentiles("cost_usd")


def test_recent_is_newest_first_and_limited(store: LedgerStore) -> None:
    recent = store.recent(5)
    assert [e.request_id for e in recent] == ["tw_r19", "tw_r18", "tw_r17", "tw_r16", "tw_r15"]
    late = store.recent(3, since=T0 + dt.timedelta(hours=5))  # 17 min × 18 = 5 h 6 min
    assert [e.request_id for e in late] == ["tw_r19", "tw_r18"]
    got = store.get("tw_r07")
    assert got is not None and got.tier == "sonnet"
    assert store.get("tw_missing") is None
