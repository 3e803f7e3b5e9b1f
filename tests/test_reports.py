"""Reports equal hand sums of the ledger rows, on SQLite and PostgreSQL, and through the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.dbs import entry, postgres_schema, postgres_url_or_skip, settings_for
from tierwise.config import Settings
from tierwise.errors import InputError
from tierwise.ledger import LedgerStore, open_store
from tierwise.ledger.store import Gap
from tierwise.pricing import PriceCatalogue
from tierwise.reports import build_report, parse_since
from tierwise.types import LedgerEntry, Usage

D1 = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
D2 = dt.datetime(2026, 11, 21, 23, 59, 59, tzinfo=dt.UTC)
U = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=2000)


def rows() -> list[LedgerEntry]:
    common: dict[str, Any] = {"usage": U, "requested_model": None, "tags": {}, "fallbacks": ()}
    return [
        entry(ts=D1, tier="haiku", model="claude-haiku-4-5", key_name="alice",
              cost_usd=Decimal("0.001"), classifier_cost_usd=Decimal("0.0001"),
              baseline_cost_usd=Decimal("0.005"), session_id="s-1",
              session_rule="new-session", **common),
        entry(ts=D1, tier="sonnet", model="claude-sonnet-4-6", key_name="bob",
              cost_usd=Decimal("0.003"), classifier_cost_usd=Decimal("0.0001"),
              baseline_cost_usd=Decimal("0.006"),
              **(common | {"requested_model": "claude-sonnet-4-6"})),
        entry(ts=D2, tier="opus", model="claude-opus-4-6", key_name="alice",
              cost_usd=Decimal("0.02"), classifier_cost_usd=Decimal(0),
              baseline_cost_usd=Decimal("0.02"), session_id="s-1",
              session_rule="turn-escalate", **common),
        entry(ts=D2, tier="haiku", model="claude-haiku-4-5", key_name="bob", status="error",
              error_type="overloaded_error", cost_usd=None, baseline_cost_usd=None,
              saved_usd=None, classifier_cost_usd=Decimal("0.0002"), **common),
        entry(ts=D2, tier="haiku", model="claude-unknown-1", key_name=None,
              cost_usd=None, classifier_cost_usd=Decimal("0.0001"),
              baseline_cost_usd=Decimal("0.004"), saved_usd=None, **common),
    ]  # fmt: skip


def hand(es: list[LedgerEntry]) -> dict[str, object]:
    """The report's definitions, computed the slow obvious way."""
    zero = Decimal(0)
    comparable = [e for e in es if e.cost_usd is not None and e.baseline_cost_usd is not None]
    classifier = sum((e.classifier_cost_usd for e in es), zero)
    baseline = sum((e.baseline_cost_usd or zero for e in comparable), zero)
    saved = baseline - sum((e.cost_usd or zero for e in comparable), zero) - classifier
    return {
        "requests": len(es),
        "ok": sum(e.status == "ok" for e in es),
        "error": sum(e.status != "ok" for e in es),
        "cost_usd": sum((e.cost_usd or zero for e in es), zero) + classifier,
        "classifier_cost_usd": classifier,
        "baseline_cost_usd": baseline,
        "saved_usd": saved,
        "unpriced_requests": sum(e.status == "ok" and e not in comparable for e in es),
    }


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    with ExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = stack.enter_context(postgres_schema(postgres_url_or_skip()))
        s = open_store(settings_for(tmp_path, url))
        stack.callback(s.close)
        s.insert(rows(), [Gap(D2, 3, "queue full", "host", 1)])
        yield s


def test_totals_equal_hand_sums(store: LedgerStore) -> None:
    r = build_report(store, tier_order=["haiku", "sonnet", "opus"])
    h = hand(rows())
    assert r["total_requests"] == 5
    assert r["by_status"] == {"ok": 4, "error": 1}
    assert r["total_cost_usd"] == "0.0245" == str(h["cost_usd"])
    assert r["baseline_cost_usd"] == "0.031" == str(h["baseline_cost_usd"])
    assert r["saved_usd"] == "0.0065" == str(h["saved_usd"])
    assert r["classifier_cost_usd"] == "0.0005"
    assert r["saved_pct"] == round(100 * 0.0065 / 0.031, 2)
    assert r["unpriced_requests"] == 1
    assert r["dropped_requests"] == 3
    assert list(r["by_tier"]) == ["haiku", "sonnet", "opus"]
    assert {t: (v["requests"], v["cost_usd"]) for t, v in r["by_tier"].items()} == {
        "haiku": (3, "0.0014"),
        "sonnet": (1, "0.0031"),
        "opus": (1, "0.02"),
    }
    json.dumps(r)  # JSON-ready as is


@pytest.mark.parametrize("by", ["tier", "model", "key", "day", "session", "rule"])
def test_groupings_equal_hand_sums(store: LedgerStore, by: str) -> None:
    key: Callable[[LedgerEntry], str | None] = {
        "tier": lambda e: e.tier,
        "model": lambda e: e.model,
        "key": lambda e: e.key_name or "(none)",
        "day": lambda e: e.ts.date().isoformat(),
        "session": lambda e: e.session_id or "(none)",
        "rule": lambda e: e.session_rule or "(none)",
    }[by]
    expected: dict[str, list[LedgerEntry]] = {}
    for e in rows():
        expected.setdefault(str(key(e)), []).append(e)
    r = build_report(store, by=by)
    assert r["by"] == by
    assert set(r["groups"]) == set(expected)
    for name, es in expected.items():
        g, h = r["groups"][name], hand(es)
        for field in ("requests", "ok", "error", "unpriced_requests"):
            assert g[field] == h[field], (name, field)
        for field in ("cost_usd", "classifier_cost_usd", "baseline_cost_usd", "saved_usd"):
            assert Decimal(g[field]) == h[field], (name, field)


def test_since_filters_rows(store: LedgerStore) -> None:
    r = build_report(store, since=dt.datetime(2026, 11, 21, tzinfo=dt.UTC))
    h = hand([e for e in rows() if e.ts >= dt.datetime(2026, 11, 21, tzinfo=dt.UTC)])
    assert r["total_requests"] == 3
    assert Decimal(r["total_cost_usd"]) == h["cost_usd"]
    assert Decimal(r["saved_usd"]) == h["saved_usd"]


def test_requested_and_named_model_baselines(store: LedgerStore) -> None:
    cat = PriceCatalogue.default()
    r = build_report(store, baseline="requested", catalogue=cat, by="key")
    # bob's answered request named sonnet: its baseline is the same usage on sonnet.
    on_sonnet = cat.cost(U, "claude-sonnet-4-6", D1).usd
    assert on_sonnet is not None
    assert Decimal(r["baseline_cost_usd"]) == Decimal("0.005") + on_sonnet + Decimal("0.02")
    assert Decimal(r["groups"]["bob"]["baseline_cost_usd"]) == on_sonnet
    named = build_report(store, baseline="claude-opus-4-6", catalogue=cat)
    on_opus = cat.cost(U, "claude-opus-4-6", D1).usd
    assert on_opus is not None
    assert Decimal(named["baseline_cost_usd"]) == 3 * on_opus
    assert named["unpriced_requests"] == 1
    with pytest.raises(InputError):
        build_report(store, baseline="no-such-model", catalogue=cat)
    with pytest.raises(InputError):
        build_report(store, by="colour")


def test_requested_baseline_resolves_auto_and_tier_names(tmp_path: Path) -> None:
    """The gateway records the client's `model` as sent: "auto" (let tierwise choose) keeps the
    stored baseline, a tier name stands for its tier's model; neither is "unpriced"."""
    cat = PriceCatalogue.default()
    common: dict[str, Any] = {"usage": U, "tags": {}, "fallbacks": (), "ts": D1}
    es = [
        entry(tier="haiku", model="claude-haiku-4-5", requested_model="auto",
              cost_usd=Decimal("0.001"), classifier_cost_usd=Decimal(0),
              baseline_cost_usd=Decimal("0.005"), **common),
        entry(tier="opus", model="claude-opus-4-6", requested_model="opus",
              cost_usd=Decimal("0.02"), classifier_cost_usd=Decimal(0),
              baseline_cost_usd=Decimal("0.02"), **common),
        entry(tier="sonnet", model="claude-sonnet-4-6", requested_model="sonnet",
              cost_usd=Decimal("0.003"), classifier_cost_usd=Decimal(0),
              baseline_cost_usd=Decimal("0.006"), **common),
        entry(tier="haiku", model="claude-haiku-4-5", requested_model="claude-sonnet-4-5",
              cost_usd=Decimal("0.001"), classifier_cost_usd=Decimal(0),
              baseline_cost_usd=Decimal("0.005"), **common),
    ]  # fmt: skip
    settings = settings_for(tmp_path)
    s = open_store(settings)
    try:
        s.insert(es)
        r = build_report(
            s,
            baseline="requested",
            catalogue=cat,
            tier_models={t.name: t.model for t in settings.tiers},
        )
    finally:
        s.close()
    on = {m: cat.cost(U, m, D1).usd or Decimal(0) for m in ("claude-opus-4-6", "claude-sonnet-4-6",
                                                           "claude-sonnet-4-5")}  # fmt: skip
    assert r["unpriced_requests"] == 0
    expected = Decimal("0.005") + on["claude-opus-4-6"] + on["claude-sonnet-4-6"]
    assert Decimal(r["baseline_cost_usd"]) == expected + on["claude-sonnet-4-5"]
    # `tierwise report` passes the configured tiers: the same numbers, through the CLI
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERWISE_", "ANTHROPIC_"))}
    env |= {"TIERWISE_HOME": str(tmp_path), "TIERWISE_PROVIDER": "simulated"}
    tw = str(Path(sys.executable).parent / "tierwise")
    proc = subprocess.run(
        [tw, "report", "--since", "all", "--baseline", "requested", "--json"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(proc.stdout) == r


def test_parse_since() -> None:
    now = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
    assert parse_since("7d", now) == now - dt.timedelta(days=7)
    assert parse_since("24h", now) == now - dt.timedelta(hours=24)
    assert parse_since("all") is None
    assert parse_since("2026-11-01") == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with pytest.raises(InputError):
        parse_since("last tuesday")


def test_cli_report_json_and_table(tmp_path: Path) -> None:
    settings: Settings = settings_for(tmp_path)
    s = open_store(settings)
    s.insert(rows())
    s.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERWISE_", "ANTHROPIC_"))}
    env |= {"TIERWISE_HOME": str(tmp_path), "COLUMNS": "150"}
    tw = str(Path(sys.executable).parent / "tierwise")
    proc = subprocess.run(
        [tw, "report", "--since", "all", "--by", "key", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(proc.stdout)
    s = open_store(settings)
    try:
        assert data == build_report(s, by="key", tier_order=settings.tier_names)
    finally:
        s.close()
    table = subprocess.run(
        [tw, "report", "--since", "all", "--by", "day"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "2026-11-20" in table and "UNPRICED" in table and "$0.006500" in table
    bad = subprocess.run(
        [tw, "report", "--since", "soon"], env=env, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "--since" in bad.stderr
