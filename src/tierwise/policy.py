"""Classification → decision: which tier, which model, with which thinking/effort settings.

The rules, in order; the one that decided is the decision's ``rule``:

1. ``override``: a forced tier wins with confidence 1.0 and the reason "Manual override".
2. ``low_confidence``: the lesson's rule, for **every** classifier — when the classification's
   confidence is below ``confidence_threshold`` the ``default_tier`` answers. (The learned
   classifier's confidence is the probability of the level it predicts; it abstains with 0.4
   when it knows none of the request's words.)
3. ``quality``: a classifier that predicts each tier's quality (the learned one) gets the
   cheapest tier whose predicted quality is within ``classifier.quality_tolerance`` of the best
   tier's. One knob for any number of tiers: 0 → always the best predicted tier, 1 → always
   the cheapest. :func:`choose_tier` is that rule alone (``tierwise calibrate`` replays it).
4. ``level``: otherwise (rules, llm) the level (1–3) is spread over the ordered tiers: level 1
   → the cheapest, level 3 → the most capable.

A caller's ``thinking`` wins over the tier's default. :func:`ledger_fields` gives the
structured decision data (score, per-tier predicted quality, rule, learning features) the
ledger stores, so nothing downstream parses the reason text.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from tierwise.config import Settings, TierConfig
from tierwise.errors import InputError
from tierwise.pricing import PriceCatalogue
from tierwise.types import Classification, Decision

MANUAL_OVERRIDE = "Manual override"
RULES = ("override", "low_confidence", "quality", "level")


def choose_tier(quality: Sequence[float], tolerance: float) -> int:
    """Index of the cheapest tier (tiers ordered cheapest first) whose predicted quality is
    within ``tolerance`` of the best predicted quality."""
    if not quality:
        raise ValueError("choose_tier needs at least one tier")
    best = max(quality)
    for index, q in enumerate(quality):
        if q >= best - tolerance - 1e-12:
            return index
    return len(quality) - 1  # pragma: no cover - the best tier always qualifies


class Policy:
    def __init__(self, settings: Settings, catalogue: PriceCatalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue
        baseline = settings.baseline_model()
        self._ratios: dict[str, Decimal | None] = {
            t.name: catalogue.cost_ratio(t.model, baseline) for t in settings.tiers
        }

    def tier_for_level(self, level: int) -> TierConfig:
        tiers = self.settings.tiers
        index = round((min(max(level, 1), 3) - 1) * (len(tiers) - 1) / 2)
        return tiers[index]

    def resolve_tier(self, tier: Any) -> TierConfig:
        """A tier given as its name, a ``ModelTier``-like enum, or the lesson's level 1–3."""
        if isinstance(tier, int) and not isinstance(tier, bool):
            if tier not in (1, 2, 3):
                raise InputError(f"tier level must be 1, 2 or 3, got {tier}")
            return self.tier_for_level(tier)
        name = str(getattr(tier, "value", tier)).lower()
        for candidate in self.settings.tiers:
            if name in (candidate.name, candidate.model):
                return candidate
        names = ", ".join(self.settings.tier_names)
        raise InputError(f"unknown tier {tier!r}; configured tiers: {names}")

    def _tier_quality(self, classification: Classification) -> list[float] | None:
        """The classification's predicted quality for every configured tier, in tier order
        (None unless it names every tier)."""
        given = classification.tier_quality
        if not given:
            return None
        names = self.settings.tier_names
        if any(name not in given for name in names):
            return None
        return [float(given[name]) for name in names]

    def decide(
        self,
        classification: Classification | None,
        *,
        force_tier: Any = None,
        thinking: dict[str, Any] | None = None,
        decision_ms: float = 0.0,
        classifier_cost_usd: Decimal = Decimal(0),
    ) -> Decision:
        if force_tier is not None:
            tier = self.resolve_tier(force_tier)
            confidence, reason, classifier, rule = 1.0, MANUAL_OVERRIDE, "override", "override"
        else:
            if classification is None:
                raise ValueError("decide() needs a classification when no tier is forced")
            classifier = classification.classifier
            confidence = classification.confidence
            threshold = self.settings.confidence_threshold
            quality = self._tier_quality(classification)
            if confidence < threshold:
                tier = self.settings.tier(self.settings.default_tier)
                rule = "low_confidence"
                reason = (
                    f"Low confidence ({confidence:.2f} < {threshold:.2f}); default tier "
                    f"{tier.name}. Classifier: {classification.reasoning}"
                )
            elif quality is not None:
                tolerance = self.settings.classifier.quality_tolerance
                tier = self.settings.tiers[choose_tier(quality, tolerance)]
                rule = "quality"
                reason = (
                    f"{classification.reasoning}; chose {tier.name}: the cheapest within "
                    f"{tolerance:.2f} of the best ({max(quality):.2f})"
                )
            else:
                tier = self.tier_for_level(classification.level)
                rule = "level"
                reason = classification.reasoning
        return Decision(
            tier=tier.name,
            model=tier.model,
            confidence=confidence,
            reason=reason,
            classifier=classifier,
            thinking=thinking if thinking is not None else tier.thinking,
            output_config={"effort": tier.effort} if tier.effort else None,
            estimated_cost_ratio=self._ratios[tier.name],
            decision_ms=decision_ms,
            classification=classification,
            classifier_cost_usd=classifier_cost_usd,
            rule=rule,
        )


def ledger_fields(decision: Decision | None) -> dict[str, Any]:
    """The structured decision data a ledger row stores (migration 7's columns), by name:
    ``decision_score``, ``tier_quality`` (tier → predicted quality), ``decision_rule``,
    ``router_model`` and ``route_features`` (the compact learning features, never text).
    Everything is None for a request that was not decided (an explicit model)."""
    c = decision.classification if decision is not None else None
    return {
        "decision_score": None if c is None else c.score,
        "tier_quality": None if c is None or c.tier_quality is None else dict(c.tier_quality),
        "decision_rule": None if decision is None else decision.rule,
        "router_model": None if c is None else c.router_model,
        "route_features": None if c is None else c.features,
    }
