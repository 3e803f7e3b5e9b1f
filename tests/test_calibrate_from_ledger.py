"""`tierwise calibrate --from-ledger`: users' feedback in the ledger moves the routing knob
(classifier.quality_tolerance), printed before anything is written; the library function and
the CLI (a subprocess). The per-tier predicted quality comes from the ledger's structured
columns (migration 7), never from the reason text."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.routing_rows import routed_entry
from tierwise.config import Settings, load
from tierwise.ledger import open_store
from tierwise.quality import propose_from_ledger
from tierwise.types import LedgerEntry, Usage

TIERWISE = str(Path(sys.executable).parent / "tierwise")
NOW = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
U = Usage(input_tokens=800, output_tokens=400)
MODELS = {"haiku": "claude-haiku-4-5", "sonnet": "claude-sonnet-4-6", "opus": "claude-opus-4-6"}
# (tier it went to at tolerance 0.5, predicted quality haiku/sonnet/opus, rows, rated, score)
KINDS = [
    ("haiku", (0.60, 0.95, 1.00), 10, 6, 0.30),  # borderline for haiku: users unhappy
    ("haiku", (0.97, 0.99, 1.00), 10, 6, 0.90),  # clearly simple: users happy
    ("sonnet", (0.20, 0.90, 1.00), 10, 6, 0.90),
    ("opus", (0.10, 0.30, 1.00), 6, 4, 0.95),
]


def reason(q: tuple[float, float, float]) -> str:
    shown = " / ".join(f"{t} {v:.2f}" for t, v in zip(MODELS, q, strict=True))
    return f"some task (cues); predicted quality {shown}; chose the cheapest within 0.50"


def ledger_rows(settings: Settings) -> tuple[list[LedgerEntry], dict[str, float]]:
    catalogue = settings.catalogue()
    rows: list[LedgerEntry] = []
    scores: dict[str, float] = {}
    n = 0
    for tier, q, count, rated, score in KINDS:
        for i in range(count):
            cost = catalogue.cost(U, MODELS[tier], NOW).usd
            rid = f"tw_cal_{n:03d}"
            rows.append(
                routed_entry(
                    request_id=rid,
                    ts=NOW + dt.timedelta(seconds=n),
                    tier=tier,
                    model=MODELS[tier],
                    classifier="learned",
                    reason=reason(q),
                    usage=U,
                    cost_usd=cost,
                    classifier_cost_usd=Decimal(0),
                    key_name=None,
                    tier_quality=dict(zip(MODELS, q, strict=True)),
                    decision_rule="quality",
                    decision_score=0.1,
                )
            )
            if i < rated:
                scores[rid] = score
            n += 1
    # a forced request: the knob does not move it
    rows.append(
        routed_entry(
            request_id="tw_cal_forced",
            ts=NOW,
            tier="haiku",
            model=MODELS["haiku"],
            classifier="override",
            reason="Manual override",
            usage=U,
            cost_usd=catalogue.cost(U, MODELS["haiku"], NOW).usd,
            decision_rule="override",
        )
    )
    return rows, scores


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(
        '# my settings\ndefault_tier = "sonnet"\n\n[classifier]\nquality_tolerance = 0.5\n',
        encoding="utf-8",
    )
    settings = load(config, environ={"TIERWISE_HOME": str(tmp_path)})
    store = open_store(settings)
    try:
        rows, scores = ledger_rows(settings)
        store.insert(rows)
        for rid, score in scores.items():
            store.add_feedback(rid, score)
    finally:
        store.close()
    return settings


def test_reason_text_is_never_parsed(tmp_path: Path) -> None:
    """A row whose reason shows predicted qualities but which lacks the structured columns (or
    was decided by another rule) is not replayed: calibration reads columns, not prose."""
    settings = load(environ={"TIERWISE_HOME": str(tmp_path)})
    store = open_store(settings)
    try:
        catalogue = settings.catalogue()
        rows = []
        for i in range(30):
            rule = "low_confidence" if i % 2 else None
            rows.append(
                routed_entry(
                    request_id=f"tw_prose_{i}",
                    ts=NOW + dt.timedelta(seconds=i),
                    tier="haiku",
                    model=MODELS["haiku"],
                    classifier="learned",
                    reason=reason((0.6, 0.95, 1.0)),
                    usage=U,
                    cost_usd=catalogue.cost(U, MODELS["haiku"], NOW).usd,
                    decision_rule=rule,
                    tier_quality=None
                    if rule is None
                    else {"haiku": 0.6, "sonnet": 0.95, "opus": 1},
                )
            )
        store.insert(rows)
        for i in range(30):
            store.add_feedback(f"tw_prose_{i}", 0.1)
        p = propose_from_ledger(settings, store, target=0.7, min_ratings=20)
    finally:
        store.close()
    assert p.replayed == 0 and not p.changed
    assert "would change nothing" in p.reason


def test_unhappy_tier_gets_fewer_requests(settings: Settings) -> None:
    store = open_store(settings)
    try:
        calls: list[tuple[int, int]] = []
        p = propose_from_ledger(
            settings, store, target=0.7, min_ratings=20, progress=lambda d, t: calls.append((d, t))
        )
    finally:
        store.close()
    assert calls and calls[-1][0] == calls[-1][1]
    assert p.current is not None and p.proposed is not None
    assert p.current.value == 0.5
    # the borderline haiku requests go to sonnet below 0.40; the clear ones stay down to 0.03:
    # the cheapest setting that meets the target, nearest to the current one
    assert p.proposed.value == pytest.approx(0.39)
    assert p.met and p.changed
    assert p.requests == 37 and p.ratings == 22 and p.replayed == 36
    assert p.current.requests == [21, 10, 6]  # the forced request stays on haiku
    assert p.proposed.requests == [11, 20, 6]
    # observed: haiku 0.60 (6 × 0.3, 6 × 0.9); moved requests get sonnet's 0.90
    assert p.current.satisfaction[0] == pytest.approx(0.6)
    assert p.proposed.satisfaction == [pytest.approx(0.9), pytest.approx(0.9), 0.95]
    # cost: the 10 moved requests re-priced on sonnet with their own usage
    catalogue = settings.catalogue()
    haiku = catalogue.cost(U, MODELS["haiku"], NOW).usd
    sonnet = catalogue.cost(U, MODELS["sonnet"], NOW).usd
    assert haiku is not None and sonnet is not None
    assert p.proposed.cost_usd - p.current.cost_usd == 10 * (sonnet - haiku)
    assert "fewer requests to haiku" in p.reason
    data = p.as_dict()
    assert data["proposed"]["tiers"]["haiku"]["share_pct"] == round(100 * 11 / 37, 2)
    assert data["cost_change_pct"] > 0
    json.dumps(data)


def test_happy_users_may_loosen_the_knob_a_little(settings: Settings) -> None:
    store = open_store(settings)
    try:
        store.add_feedback("tw_cal_000", 0.9)  # now every borderline haiku answer was fine
        for n in range(1, 6):
            store.add_feedback(f"tw_cal_{n:03d}", 0.9)
        p = propose_from_ledger(settings, store, target=0.7, min_ratings=20, max_raise=0.1)
    finally:
        store.close()
    assert p.current is not None and p.proposed is not None
    # at 0.5 sonnet's requests stay; past 0.7 they would go to haiku, but one calibration
    # loosens by at most max_raise, and nothing changes between 0.5 and 0.6
    assert p.proposed.value == 0.5 and not p.changed
    assert "current setting" in p.reason


def test_too_little_feedback_proposes_nothing(settings: Settings) -> None:
    store = open_store(settings)
    try:
        p = propose_from_ledger(settings, store, min_ratings=500)
    finally:
        store.close()
    assert p.proposed is None and not p.changed
    assert "22 rated request(s)" in p.reason


def cli(
    *args: str, settings: Settings, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(settings.home), "COLUMNS": "120"}
    extra = ["--config", str(config)] if config else []
    return subprocess.run(
        [TIERWISE, "calibrate", *args, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_prints_the_change_before_writing(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    original = config.read_text(encoding="utf-8")
    shown = cli("--from-ledger", "--since", "7d", settings=settings, config=config)
    assert shown.returncode == 0, shown.stderr
    assert config.read_text(encoding="utf-8") == original  # nothing written without --write
    out = shown.stdout
    assert "classifier.quality_tolerance: 0.50 → 0.39" in out
    haiku = next(line for line in out.splitlines() if line.startswith("│ haiku"))
    cells = [c.strip() for c in haiku.strip("│").split("│")]
    assert cells[:4] == ["haiku", f"{100 * 21 / 37:.1f}%", f"{100 * 11 / 37:.1f}%", "-27.0 pp"]
    assert "Cost of these requests:" in out and "Nothing written" in out

    as_json = cli("--from-ledger", "--json", settings=settings, config=config)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["current"]["value"] == 0.5 and data["proposed"]["value"] == pytest.approx(0.39)
    assert data["written_to"] is None
    assert data["proposed"]["tiers"]["haiku"]["requests"] == 11

    wrote = cli("--from-ledger", "--write", str(config), settings=settings)
    assert wrote.returncode == 0, wrote.stderr
    # the proposal is printed first, then written
    assert wrote.stdout.index("0.50 → 0.39") < wrote.stdout.index("wrote classifier")
    text = config.read_text(encoding="utf-8")
    assert text.startswith("# my settings\n") and 'default_tier = "sonnet"' in text
    assert load(config, environ={}).classifier.quality_tolerance == pytest.approx(0.39)

    again = cli("--from-ledger", settings=settings, config=config)
    assert again.returncode == 0
    assert "No change" in again.stdout  # at 0.39 the target is met at the lowest cost

    few = cli("--from-ledger", "--min-ratings", "100", settings=settings, config=config)
    assert few.returncode == 0 and "No proposal" in few.stdout
    bad = cli("--from-ledger", "--since", "soon", settings=settings, config=config)
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_one_calibrate_command_with_two_sources(settings: Settings, tmp_path: Path) -> None:
    both = cli("--from-ledger", "--target", "30% top", settings=settings)
    assert both.returncode == 2 and "give one of the two" in both.stderr
    neither = cli(settings=settings)
    assert neither.returncode == 2 and "missing --target and --prompts" in neither.stderr
    half = cli("--target", "30% top", settings=settings)
    assert half.returncode == 2 and "missing --prompts" in half.stderr
    helped = cli("--help", settings=settings)
    for option in ("--target", "--prompts", "--from-ledger", "--target-satisfaction", "--write"):
        assert option in helped.stdout
