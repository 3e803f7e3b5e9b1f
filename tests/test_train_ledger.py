"""`tierwise train --from-ledger`: an adapter fitted on this deployment's judge verdicts and
feedback, regularised towards the shipped prior, validated on the newest slice, written as a
version under $TIERWISE_HOME/models, loaded by setting, and rolled back.

The ledger rows are inserted directly (the shadow runner that fills them comes later): each is
the real decision of the shipped prior and the policy on a real prompt, with a judge verdict
that prefers the reference tier on a hidden class of prompts only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.routing_rows import routed_entry
from tierwise.classifiers import adapter as adapter_mod
from tierwise.classifiers.learned import COMPACT_NAMES, LearnedClassifier, default_model
from tierwise.config import Settings, load
from tierwise.errors import ConfigError, InputError
from tierwise.evals.ledger_train import train_from_ledger
from tierwise.ledger import open_store
from tierwise.ledger.store import ShadowVerdict
from tierwise.policy import Policy
from tierwise.types import ClassifyInput, Usage

TIERWISE = str(Path(sys.executable).parent / "tierwise")
T0 = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
U = Usage(input_tokens=300, output_tokens=200)
FIELDS = ["name", "city", "email", "team", "plan", "status"]
VALUES = ["Ann", "Lisbon", "ann@example.com", "search", "pro", "active", "Osaka", "Tom"]


def plain(i: int) -> str:
    """Formatting requests the cheap tier answers as well as the top one."""
    a, b = FIELDS[i % len(FIELDS)], FIELDS[(i + 2) % len(FIELDS)]
    return f"Format this record as JSON: {a} {VALUES[i % 8]}, {b} {VALUES[(i + 3) % 8]}"


def numeric(i: int) -> str:
    """The hidden class: formatting requests full of arithmetic, where the cheap tier fails."""
    return (
        f"Format this as JSON: total = {i + 12} * {i % 7 + 3} + {i * 13 % 97} / 4, "
        f"tax = {i % 9 + 1}.5 * 3 - 2, net = {i + 40} - {i % 5} * 6 = ?"
    )


def settings_for(home: Path, **classifier: Any) -> Settings:
    settings = load(environ={"TIERWISE_HOME": str(home), "TIERWISE_PROVIDER": "simulated"})
    if classifier:
        from tierwise.config import revalidate

        settings = revalidate(
            settings, classifier=settings.classifier.model_copy(update=classifier)
        )
    return settings


def fill_ledger(settings: Settings, n: int = 80, *, prompts: bool = False) -> dict[str, int]:
    """``n`` requests of each class, decided by the shipped prior + policy, with verdicts."""
    clf = LearnedClassifier(settings.tier_names)
    policy = Policy(settings, settings.catalogue())
    store = open_store(settings)
    counts = {"haiku": 0}
    try:
        rows, verdicts = [], []
        for i in range(n):
            for kind, prompt in (("plain", plain(i)), ("numeric", numeric(i))):
                decision = policy.decide(clf.classify_now(ClassifyInput(prompt)))
                rid = f"tw_{kind}_{i:03d}"
                ts = T0 + dt.timedelta(minutes=2 * i + (kind == "numeric"))
                rows.append(
                    routed_entry(
                        request_id=rid,
                        ts=ts,
                        tier=decision.tier,
                        model=decision.model,
                        classifier="learned",
                        decision=decision,
                        prompt=prompt if prompts else None,
                    )
                )
                if decision.tier == "haiku":
                    counts["haiku"] += 1
                    bad = "reference" if kind == "numeric" else "tie"
                    verdicts.append(
                        ShadowVerdict(
                            request_id=rid,
                            ts=ts + dt.timedelta(seconds=30),
                            tier="haiku",
                            model=decision.model,
                            reference_tier="opus",
                            reference_model="claude-opus-4-6",
                            judge_model="claude-sonnet-4-6",
                            rubric="pairwise-v1",
                            verdict_cheap_first=bad,
                            verdict_reference_first=bad,
                            shadow_usage=U,
                            judge_usage=U,
                        )
                    )
        store.insert(rows)
        for v in verdicts:
            store.add_verdict(v)
    finally:
        store.close()
    return counts


def haiku_share(clf: LearnedClassifier, settings: Settings, make: Any, n: int = 40) -> float:
    """Share of fresh prompts of one class (not in the ledger) the decision sends to haiku."""
    policy = Policy(settings, settings.catalogue())
    got = [
        policy.decide(clf.classify_now(ClassifyInput(make(i)))).tier for i in range(500, 500 + n)
    ]
    return got.count("haiku") / n


def test_adapter_learns_the_hidden_class_and_loads_by_setting(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    counts = fill_ledger(settings)
    prior = LearnedClassifier(settings.tier_names)
    before_numeric = haiku_share(prior, settings, numeric)
    before_plain = haiku_share(prior, settings, plain)
    assert before_numeric >= 0.8 and before_plain >= 0.8  # the prior sends both to haiku
    assert counts["haiku"] >= 120

    store = open_store(settings)
    try:
        result = train_from_ledger(settings, store, default_model(), min_examples=20)
    finally:
        store.close()
    assert result.accepted, result.reason
    haiku = result.fits[0]
    assert haiku.tier == "haiku" and haiku.held_out >= 20
    assert haiku.adapted_log_loss is not None and haiku.prior_log_loss is not None
    assert haiku.adapted_log_loss < haiku.prior_log_loss
    assert result.path == tmp_path / "models" / "local-0001.json"
    assert result.data.verdicts == counts["haiku"] and result.data.feedback == 0

    adapted = LearnedClassifier(settings.tier_names, adapter=adapter_mod.Adapter.load(result.path))
    after_numeric = haiku_share(adapted, settings, numeric)
    after_plain = haiku_share(adapted, settings, plain)
    assert after_numeric <= 0.2  # the hidden class now goes to a stronger tier
    assert after_plain >= before_plain - 0.1  # the rest stays cheap
    c = adapted.classify_now(ClassifyInput(numeric(999)))
    assert c.router_model == f"{default_model().tag}+local-0001"
    assert "(local-0001)" in c.reasoning

    # loaded by setting: "active" follows the active file, "shipped" ignores it
    assert adapter_mod.active(tmp_path) == "shipped"
    assert LearnedClassifier.from_settings(settings).adapter is None
    adapter_mod.set_active(tmp_path, "local-0001")
    assert LearnedClassifier.from_settings(settings).adapter is not None
    shipped = settings_for(tmp_path, model="shipped")
    assert LearnedClassifier.from_settings(shipped).adapter is None
    pinned = settings_for(tmp_path, model="local-0001")
    assert LearnedClassifier.from_settings(pinned).router_model.endswith("+local-0001")
    by_path = settings_for(tmp_path, model=str(result.path))
    assert LearnedClassifier.from_settings(by_path).adapter is not None


def test_stored_prompts_let_the_adapter_learn_words(tmp_path: Path) -> None:
    """With ledger.store_prompts the adapter also learns from the words: a hidden class that
    only a word marks (not the request's shape) is learned."""

    def invoice(i: int) -> str:
        return plain(i).replace("Format this record", "Format this invoice record")

    settings = settings_for(tmp_path)
    clf = LearnedClassifier(settings.tier_names)
    policy = Policy(settings, settings.catalogue())
    store = open_store(settings)
    try:
        rows, verdicts = [], []
        for i in range(90):
            for kind, prompt in (("plain", plain(i)), ("invoice", invoice(i))):
                d = policy.decide(clf.classify_now(ClassifyInput(prompt)))
                rid = f"tw_{kind}_{i:03d}"
                ts = T0 + dt.timedelta(minutes=2 * i + (kind == "invoice"))
                rows.append(
                    routed_entry(
                        request_id=rid, ts=ts, tier=d.tier, model=d.model, decision=d, prompt=prompt
                    )
                )
                if d.tier == "haiku":
                    said = "reference" if kind == "invoice" else "tie"
                    verdicts.append(
                        ShadowVerdict(
                            rid,
                            ts,
                            "haiku",
                            d.model,
                            "opus",
                            "claude-opus-4-6",
                            "judge",
                            "pairwise-v1",
                            said,
                            said,
                        )
                    )
        store.insert(rows)
        for verdict in verdicts:
            store.add_verdict(verdict)
        result = train_from_ledger(settings, store, default_model(), min_examples=20)
    finally:
        store.close()
    assert result.accepted, result.reason
    a = adapter_mod.Adapter.load(result.path)
    assert a.text_weights is not None
    adapted = LearnedClassifier(settings.tier_names, adapter=a)
    assert haiku_share(adapted, settings, invoice) <= 0.2
    assert haiku_share(adapted, settings, plain) >= 0.8


def test_feedback_counts_and_too_little_data_keeps_the_prior(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = open_store(settings)
    try:
        with pytest.raises(InputError, match="no examples to learn from"):
            train_from_ledger(settings, store, default_model())
        clf = LearnedClassifier(settings.tier_names)
        policy = Policy(settings, settings.catalogue())
        d = policy.decide(clf.classify_now(ClassifyInput(plain(1))))
        store.insert(
            [
                routed_entry(request_id=f"tw_fb_{i}", ts=T0, tier=d.tier, model=d.model, decision=d)
                for i in range(5)
            ]
        )
        for i in range(5):
            store.add_feedback(f"tw_fb_{i}", 0.2)
        result = train_from_ledger(settings, store, default_model(), min_examples=30)
    finally:
        store.close()
    assert result.data.feedback == 5 and result.data.verdicts == 0
    assert not result.accepted and "no tier has 30 examples" in result.reason
    haiku = result.artifact["weights"][0]
    assert all(w == 0.0 for w in haiku)  # the prior stands


def test_adapter_files_are_checked(tmp_path: Path) -> None:
    good = {
        "format": "tierwise-adapter",
        "format_version": 1,
        "name": "local-0001",
        "prior": default_model().tag,
        "tiers": ["haiku", "sonnet", "opus"],
        "feature_names": list(COMPACT_NAMES),
        "mean": [0.0] * len(COMPACT_NAMES),
        "scale": [1.0] * len(COMPACT_NAMES),
        "weights": [[0.0] * len(COMPACT_NAMES)] * 2,
        "bias": [0.0, 0.0],
    }
    assert adapter_mod.Adapter.from_dict(good).name == "local-0001"
    with pytest.raises(ConfigError, match="not a tierwise adapter"):
        adapter_mod.Adapter.from_dict({**good, "format": "x"})
    with pytest.raises(ConfigError, match="weight shapes"):
        adapter_mod.Adapter.from_dict({**good, "bias": [0.0]})
    other = adapter_mod.Adapter.from_dict({**good, "prior": "router-v0@000"})
    with pytest.raises(ConfigError, match="trained on the prior router-v0@000"):
        LearnedClassifier(adapter=other)
    with pytest.raises(ConfigError, match="trained for tiers"):
        LearnedClassifier(["small", "large"], adapter=adapter_mod.Adapter.from_dict(good))
    with pytest.raises(ConfigError, match=r"no such trained version|no adapter local-0009"):
        LearnedClassifier.from_settings(settings_for(tmp_path, model="local-0009"))
    with pytest.raises(ConfigError, match="not 'active', 'shipped', a"):
        LearnedClassifier.from_settings(settings_for(tmp_path, model="nope.json"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "active").write_text("../../etc/passwd\n")
    with pytest.raises(ConfigError, match="not an adapter version"):
        adapter_mod.active(tmp_path)


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(home), "COLUMNS": "120"}
    return subprocess.run(
        [TIERWISE, "train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def test_cli_trains_activates_lists_and_rolls_back(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    fill_ledger(settings, 60)
    first = cli("--from-ledger", "--min-examples", "20", "--json", home=tmp_path)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["version"] == "local-0001" and data["accepted"]
    assert data["activated"] == {"active": "local-0001", "previous": "shipped"}
    assert data["tiers"]["haiku"]["adapted_log_loss"] < data["tiers"]["haiku"]["prior_log_loss"]

    second = cli("--from-ledger", "--min-examples", "20", home=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "held-out validation" in second.stdout and "active: local-0002" in second.stdout

    listed = json.loads(cli("--list", "--json", home=tmp_path).stdout)
    assert listed["active"] == "local-0002"
    assert [v["version"] for v in listed["versions"]] == ["local-0001", "local-0002"]

    back = cli("--rollback", home=tmp_path)
    assert back.returncode == 0 and "active: local-0001 (was local-0002)" in back.stdout
    assert adapter_mod.active(tmp_path) == "local-0001"
    again = cli("--rollback", home=tmp_path)
    assert "active: shipped (was local-0001)" in again.stdout
    nothing = cli("--rollback", home=tmp_path)
    assert nothing.returncode == 2 and "nothing to roll back" in nothing.stderr

    bad = cli("--from-ledger", "--list", home=tmp_path)
    assert bad.returncode == 2 and "exactly one of" in bad.stderr


def test_a_router_uses_the_active_adapter(tmp_path: Path) -> None:
    from tierwise.router import Router

    settings = settings_for(tmp_path)
    fill_ledger(settings, 60)
    store = open_store(settings)
    try:
        result = train_from_ledger(settings, store, default_model(), min_examples=20)
    finally:
        store.close()
    adapter_mod.set_active(tmp_path, result.name)
    router = Router(settings, classifier=LearnedClassifier.from_settings(settings))
    decision = asyncio.run(router.decide(numeric(777)))
    assert decision.tier != "haiku"
    assert decision.classification is not None
    assert decision.classification.router_model is not None
    assert decision.classification.router_model.endswith("+local-0001")
