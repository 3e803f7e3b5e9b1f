"""The policy: per-tier predicted quality with one knob, for 2, 3 and 5 tiers; the lesson's
threshold rule for every classification; forced tiers; the structured decision data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierwise.config import load
from tierwise.policy import MANUAL_OVERRIDE, Policy, choose_tier, ledger_fields
from tierwise.pricing import PriceCatalogue
from tierwise.types import Classification

FIVE_TIERS = """
default_tier = "t3"
[[tiers]]
name = "t1"
model = "claude-haiku-4-5"
[[tiers]]
name = "t2"
model = "claude-haiku-4-5"
[[tiers]]
name = "t3"
model = "claude-sonnet-4-6"
[[tiers]]
name = "t4"
model = "claude-sonnet-4-6"
[[tiers]]
name = "t5"
model = "claude-opus-4-6"
"""
TWO_TIERS = """
default_tier = "cheap"
[[tiers]]
name = "cheap"
model = "claude-haiku-4-5"
[[tiers]]
name = "top"
model = "claude-opus-4-6"
"""


def policy(tmp_path: Path, toml: str = "", tolerance: float | None = None) -> Policy:
    cfg = tmp_path / "c.toml"
    text = toml
    if tolerance is not None:
        text += f"\n[classifier]\nquality_tolerance = {tolerance}\n"
    cfg.write_text(text)
    settings = load(cfg, environ={})
    return Policy(settings, PriceCatalogue.default())


def verdict(quality: dict[str, float] | None, confidence: float = 0.9) -> Classification:
    return Classification(
        level=2,
        confidence=confidence,
        reasoning="test",
        classifier="learned",
        score=0.5,
        tier_quality=quality,
    )


@pytest.mark.parametrize(
    ("quality", "tolerance", "index"),
    [
        ([0.2, 0.7, 1.0], 0.5, 1),
        ([0.2, 0.7, 1.0], 0.29, 2),
        ([0.2, 0.7, 1.0], 0.3, 1),  # exactly within the knob counts
        ([0.2, 0.7, 1.0], 0.0, 2),
        ([0.2, 0.7, 1.0], 1.0, 0),
        ([0.9, 0.95, 0.9], 0.0, 1),  # the best need not be the top tier
        ([0.5], 0.0, 0),
    ],
)
def test_choose_tier(quality: list[float], tolerance: float, index: int) -> None:
    assert choose_tier(quality, tolerance) == index


def test_three_tiers_and_the_knob(tmp_path: Path) -> None:
    q = {"haiku": 0.55, "sonnet": 0.9, "opus": 1.0}
    assert policy(tmp_path).decide(verdict(q)).tier == "haiku"  # default tolerance 0.5
    assert policy(tmp_path, tolerance=0.2).decide(verdict(q)).tier == "sonnet"
    d = policy(tmp_path, tolerance=0.05).decide(verdict(q))
    assert d.tier == "opus" and d.model == "claude-opus-4-6"
    assert "chose opus" in d.reason and d.classifier == "learned"
    assert d.rule == "quality"


def test_low_confidence_sends_every_classification_to_the_default_tier(tmp_path: Path) -> None:
    """The lesson's rule holds for a classification with per-tier quality too (issue 14: it had
    no effect with the default classifier)."""
    q = {"haiku": 0.97, "sonnet": 0.99, "opus": 1.0}  # the knob alone would pick haiku
    p = policy(tmp_path, 'default_tier = "opus"\nconfidence_threshold = 0.8\n', tolerance=0.5)
    sure = p.decide(verdict(q, confidence=0.9))
    assert (sure.tier, sure.rule) == ("haiku", "quality")
    unsure = p.decide(verdict(q, confidence=0.6))
    assert (unsure.tier, unsure.rule) == ("opus", "low_confidence")
    assert unsure.reason.startswith("Low confidence (0.60 < 0.80); default tier opus")
    # threshold 0: nothing is below it, the knob decides
    zero = policy(tmp_path, "confidence_threshold = 0.0\n", tolerance=0.5)
    assert zero.decide(verdict(q, confidence=0.01)).tier == "haiku"


def test_two_tiers(tmp_path: Path) -> None:
    p = policy(tmp_path, TWO_TIERS, tolerance=0.3)
    assert p.decide(verdict({"cheap": 0.8, "top": 1.0})).tier == "cheap"
    assert p.decide(verdict({"cheap": 0.6, "top": 1.0})).tier == "top"


def test_five_tiers(tmp_path: Path) -> None:
    q = {"t1": 0.1, "t2": 0.4, "t3": 0.75, "t4": 0.95, "t5": 1.0}
    picks = {
        tol: policy(tmp_path, FIVE_TIERS, tolerance=tol).decide(verdict(q)).tier
        for tol in (0.0, 0.05, 0.25, 0.6, 0.9, 1.0)
    }
    assert picks == {0.0: "t5", 0.05: "t4", 0.25: "t3", 0.6: "t2", 0.9: "t1", 1.0: "t1"}


def test_without_per_tier_quality_the_lessons_rules_hold(tmp_path: Path) -> None:
    p = policy(tmp_path)
    low = p.decide(verdict(None, confidence=0.4))
    assert low.tier == "sonnet" and low.reason.startswith("Low confidence (0.40 < 0.70)")
    assert low.rule == "low_confidence"
    high = Classification(level=3, confidence=0.9, reasoning="hard", classifier="rules")
    assert p.decide(high).tier == "opus"
    assert p.decide(high).rule == "level"
    # quality that does not name every configured tier is ignored
    partial = p.decide(verdict({"haiku": 1.0}, confidence=0.4))
    assert partial.reason.startswith("Low confidence")
    five = policy(tmp_path, FIVE_TIERS)
    assert [five.tier_for_level(lv).name for lv in (1, 2, 3)] == ["t1", "t3", "t5"]


def test_forced_tier_wins(tmp_path: Path) -> None:
    p = policy(tmp_path, tolerance=1.0)
    d = p.decide(verdict({"haiku": 1.0, "sonnet": 1.0, "opus": 1.0}), force_tier="opus")
    assert (d.tier, d.confidence, d.reason, d.classifier, d.rule) == (
        "opus",
        1.0,
        MANUAL_OVERRIDE,
        "override",
        "override",
    )


def test_ledger_fields_are_the_structured_decision(tmp_path: Path) -> None:
    q = {"haiku": 0.55, "sonnet": 0.9, "opus": 1.0}
    c = Classification(
        level=2,
        confidence=0.9,
        reasoning="x",
        classifier="learned",
        score=0.25,
        tier_quality=q,
        features=(0.5, -1.0),
        router_model="router-v2@abc",
    )
    d = policy(tmp_path).decide(c)
    assert ledger_fields(d) == {
        "decision_score": 0.25,
        "tier_quality": q,
        "decision_rule": "quality",
        "router_model": "router-v2@abc",
        "route_features": (0.5, -1.0),
    }
    forced = policy(tmp_path).decide(None, force_tier="opus")
    assert ledger_fields(forced)["decision_rule"] == "override"
    assert ledger_fields(forced)["tier_quality"] is None
    assert set(ledger_fields(None).values()) == {None}


def test_knob_is_validated(tmp_path: Path) -> None:
    from tierwise.errors import ConfigError

    with pytest.raises(ConfigError, match="quality_tolerance"):
        policy(tmp_path, tolerance=1.5)
