"""The lesson's API end to end on the simulated provider: decisions, costs, metrics, quality."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tierwise
from tierwise import ModelRouter, ModelTier, RouterQualityMonitor, TaskClassifier
from tierwise.config import load
from tierwise.errors import InputError
from tierwise.pricing import PriceCatalogue
from tierwise.router import Router
from tierwise.types import LedgerEntry, Usage

from .stubs import ScriptedProvider

ARCH_SYSTEM = "You are a principal software architect."
ARCH = "Review this distributed system architecture for race conditions and consistency issues."


@pytest.fixture
def router(tmp_path: Path) -> Iterator[ModelRouter]:
    settings = load(environ={"TIERWISE_HOME": str(tmp_path)})
    r = ModelRouter(settings=settings)
    yield r
    r.close()


def test_lesson_example_decisions(router: ModelRouter) -> None:
    a = router.route("Format this record as JSON: name Ann, age 31")
    b = router.route("Write a Python function that merges two sorted lists.")
    c = router.route(ARCH, system=ARCH_SYSTEM)
    d = router.route("Audit this login code for vulnerabilities.", force_tier=ModelTier.OPUS)
    assert [a.tier, b.tier, c.tier, d.tier] == ["haiku", "sonnet", "opus", "opus"]
    assert [a.model, b.model, c.model] == [
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
        "claude-opus-4-6",
    ]
    assert (d.confidence, d.routing_reason, d.classifier) == (1.0, "Manual override", "override")
    assert all(r.simulated and r.text.startswith("[SIMULATED]") for r in (a, b, c, d))
    report = router.report()
    for line in (
        "Total requests: 4",
        "haiku        1  (25.0%)",
        "opus         2  (50.0%)",
        "Total cost:",
        "If all Opus:",
        "Saved:",
        "SIMULATED",
    ):
        assert line in report


def test_result_costs_are_exact_and_consistent(router: ModelRouter) -> None:
    result = router.route("Format this record as JSON: name Ann, age 31")
    catalogue = PriceCatalogue.default()
    assert result.cost == catalogue.cost(result.usage, "claude-haiku-4-5").usd
    assert result.cost_if_opus == catalogue.cost(result.usage, "claude-opus-4-6").usd
    assert result.savings == result.cost_if_opus - result.cost  # type: ignore[operator]
    assert result.savings is not None and result.savings > 0
    assert isinstance(result.cost, Decimal)
    assert result["tier"] == "haiku"  # the lesson's dict-style access still works
    assert result.as_dict()["cost"] == str(result.cost)
    assert result.latency_ms >= result.decision_ms >= 0
    assert result.price_version == "claude-haiku-4-5@2025-10-01"


def test_low_confidence_uses_default_tier(tmp_path: Path) -> None:
    settings = load(environ={"TIERWISE_HOME": str(tmp_path)})
    with ModelRouter(ModelTier.HAIKU, 0.7, settings=settings) as r:
        result = r.route("hmm")
        assert result.tier == "haiku"
        assert result.routing_reason.startswith("Low confidence (0.40 < 0.70); default tier haiku")
    with ModelRouter(confidence_threshold=0.0, settings=settings) as r:
        assert r.route("hmm").tier == "sonnet"  # nothing under 0.0: the classifier's own verdict


def test_thinking_defaults_and_caller_override(tmp_path: Path) -> None:
    settings = load(environ={"TIERWISE_HOME": str(tmp_path)})
    provider = ScriptedProvider("ok")
    with ModelRouter(settings=settings, provider=provider) as r:
        r.route("hi", force_tier="haiku")
        r.route("hi", force_tier="sonnet")
        r.route("hi", force_tier="opus")
        r.route("hi", force_tier="opus", thinking={"type": "disabled"})
        r.route("hi", force_tier="haiku", thinking={"type": "enabled", "budget_tokens": 2048})
    sent = [(c.model, c.thinking, c.output_config) for c in provider.calls]
    assert sent == [
        ("claude-haiku-4-5", None, None),
        ("claude-sonnet-4-6", {"type": "adaptive"}, {"effort": "medium"}),
        ("claude-opus-4-6", {"type": "adaptive"}, {"effort": "high"}),
        ("claude-opus-4-6", {"type": "disabled"}, {"effort": "high"}),
        ("claude-haiku-4-5", {"type": "enabled", "budget_tokens": 2048}, None),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"force_tier": "haiku", "thinking": {"type": "adaptive"}},
            "not accepted by claude-haiku-4-5",
        ),
        (
            {"force_tier": "opus", "thinking": {"type": "enabled", "budget_tokens": 9000}},
            "< max_tokens",
        ),
        ({"force_tier": "gigantic"}, "unknown tier 'gigantic'"),
        ({"force_tier": 5}, "tier level must be 1, 2 or 3"),
        ({"max_tokens": 0}, "max_tokens must be a positive int"),
    ],
)
def test_bad_route_arguments_are_input_errors(
    router: ModelRouter, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        router.route("hi", **kwargs)
    assert router.metrics.summary()["errors"] == 1


def test_classifier_cost_is_charged_to_the_request(tmp_path: Path) -> None:
    settings = load(environ={"TIERWISE_HOME": str(tmp_path), "TIERWISE_CLASSIFIER": "llm"})
    provider = ScriptedProvider(
        '{"tier": 1, "confidence": 0.9, "reasoning": "format"}',
        usage=Usage(input_tokens=400, output_tokens=20),
    )
    with ModelRouter(settings=settings, provider=provider) as r:
        result = r.route("Format this")
    # Classifier call on Haiku: 400*1 + 20*5 = 500 per million = $0.0005.
    assert result.classifier == "llm"
    assert result.classifier_cost == Decimal("0.0005")
    # Answer on Haiku with the same scripted usage: another $0.0005.
    assert result.model_cost == Decimal("0.0005")
    assert result.cost == Decimal("0.001")
    # Opus on the answer's usage: 400*5 + 20*25 = 2500 per million; savings net of the classifier.
    assert result.cost_if_opus == Decimal("0.0025")
    assert result.savings == Decimal("0.0015")
    assert r.metrics.summary()["classifier_cost_usd"] == Decimal("0.0005")


def test_unpriced_model_is_reported_not_zero(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[tiers]]\nname = "sonnet"\nmodel = "claude-sonnet-9-9"\n')
    with ModelRouter(settings=load(cfg, environ={})) as r:
        result = r.route("hello")
        assert result.cost is None and result.savings is None
        assert result.price_version is None
        assert "UNPRICED: 1 request(s)" in r.report()
        assert r.metrics.summary()["unpriced_requests"] == 1


def test_metrics_are_safe_under_threads(router: ModelRouter) -> None:
    prompts = ["Translate 'hi' to French.", "Write a Python function to reverse a list.", ARCH]
    results = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(20):
            r = router.route(prompts[(i + j) % 3], system=ARCH_SYSTEM if (i + j) % 3 == 2 else "")
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = router.metrics.summary()
    assert summary["total_requests"] == 160 == len(results)
    assert summary["total_cost_usd"] == sum((r.cost or Decimal(0) for r in results), Decimal(0))
    assert summary["baseline_cost_usd"] == sum(
        (r.cost_if_opus or Decimal(0) for r in results), Decimal(0)
    )
    by_tier = {name: row["requests"] for name, row in summary["by_tier"].items()}
    assert sum(by_tier.values()) == 160


def test_task_classifier_lesson_api(tmp_path: Path) -> None:
    with TaskClassifier(settings=load(environ={"TIERWISE_HOME": str(tmp_path)})) as c:
        d = c.classify("Translate 'good night' into Italian.")
        assert d.tier == ModelTier.HAIKU and d.tier == "haiku"
        assert d.estimated_cost_ratio == Decimal("0.2")
        o = c.classify("anything", override_tier=ModelTier.SONNET)
        assert (o.tier, o.confidence, o.reasoning) == ("sonnet", 1.0, "Manual override")
        assert o.estimated_cost_ratio == Decimal("0.6")


def test_quality_monitor(router: ModelRouter) -> None:
    monitor = RouterQualityMonitor()
    a = router.route("Translate 'hi' to French.")
    b = router.route(ARCH, system=ARCH_SYSTEM)
    monitor.evaluate(a, 0.9)
    monitor.evaluate(a, 0.5)
    monitor.evaluate(b, 1.0)
    report = monitor.tier_quality_report()
    assert report["haiku"]["avg_satisfaction"] == pytest.approx(0.7)
    assert report["haiku"]["below_threshold"] == 1
    assert report["haiku"]["total"] == 2
    assert report["haiku"]["avg_cost"] == a.cost
    assert report["opus"] == {
        "avg_satisfaction": 1.0,
        "below_threshold": 0,
        "total": 1,
        "avg_cost": b.cost,
    }
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        monitor.evaluate(a, 1.2)


def test_public_names() -> None:
    for name in tierwise.__all__:
        assert getattr(tierwise, name) is not None
    with pytest.raises(AttributeError):
        _ = tierwise.NotAThing


class ListSink:
    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []

    def record(self, entry: LedgerEntry) -> None:
        self.entries.append(entry)


def test_router_records_exactly_one_entry_per_request(tmp_path: Path) -> None:
    settings = load(environ={"TIERWISE_HOME": str(tmp_path)})
    sink = ListSink()
    router = Router(settings, sink=sink)
    ok = asyncio.run(router.run("Translate 'dog' into French.", tags={"team": "a"}))
    with pytest.raises(InputError):
        asyncio.run(router.run("hi", force_tier="nope"))
    with pytest.raises(InputError):
        asyncio.run(router.run("hi", max_tokens=0))
    assert [e.status for e in sink.entries] == ["ok", "error", "error"]
    first = sink.entries[0]
    assert first.request_id == ok.request_id
    assert (first.tier, first.model, first.source, first.tags) == (
        "haiku",
        "claude-haiku-4-5",
        "library",
        {"team": "a"},
    )
    assert first.total_cost_usd == ok.cost
    assert first.baseline_cost_usd == ok.cost_if_opus
    assert first.saved_usd == ok.savings
    assert first.usage == ok.usage
    assert first.price_version == ok.price_version
    assert first.prompt is None and first.reply is None  # not stored unless opted in
    assert sink.entries[1].error_type == "invalid_request_error"
    assert len({e.request_id for e in sink.entries}) == 3
