"""The learned classifier: the shipped artifact, its versioning, its decisions, and the
one-featurisation fast path."""

from __future__ import annotations

import asyncio
import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tierwise.classifiers.learned import (
    ARTIFACT_VERSION,
    COMPACT_NAMES,
    LearnedClassifier,
    RouterModel,
    artifact_id,
    decode_array,
    default_model,
    encode_array,
    tier_quality,
)
from tierwise.errors import ConfigError
from tierwise.taxonomy import fingerprint
from tierwise.types import ClassifyInput

ARTIFACT = resources.files("tierwise") / "models" / "router-v2.json"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ARTIFACT.read_text(encoding="utf-8"))
    return data


def classify(prompt: str, system: str = "", tiers: list[str] | None = None) -> Any:
    return asyncio.run(LearnedClassifier(tiers).classify(ClassifyInput(prompt, system)))


def test_shipped_artifact_is_small_versioned_and_has_a_card(raw: dict[str, Any]) -> None:
    assert raw["format"] == "tierwise-router"
    assert raw["format_version"] == ARTIFACT_VERSION
    assert raw["name"] == "router-v2"
    assert raw["taxonomy"] == fingerprint()
    assert raw["id"] == artifact_id(raw)
    assert len(ARTIFACT.read_bytes()) < 4 * 1024 * 1024
    card = raw["card"]
    assert card["data_sha256"] and all(len(h) == 64 for h in card["data_sha256"].values())
    assert "train halves" in card["protocol"]
    # only licence-clean sources trained it; the card names every source's licence
    for name, source in card["sources"].items():
        assert source["licence"]
        assert (source["rows_used"] > 0) == source["trains_shipped_model"], name
    assert card["sources"]["routerbench"]["trains_shipped_model"] is False
    assert (resources.files("tierwise") / "models" / "router-v2.md").is_file()
    model = default_model()
    assert model.name == "router-v2"
    assert {"tier:1", "tier:2", "tier:3"} <= set(model.columns)
    assert set(raw["formats"]) == {"weak", "strong"}


def test_artifact_versioning_is_checked(raw: dict[str, Any], tmp_path: Path) -> None:
    future = copy.deepcopy(raw)
    future["format_version"] = ARTIFACT_VERSION + 1
    with pytest.raises(ConfigError, match="format version 3 is not supported"):
        RouterModel(future, "future.json")
    other_taxonomy = dict(raw, taxonomy="0" * 16)
    with pytest.raises(ConfigError, match="different taxonomy definition"):
        RouterModel(other_taxonomy)
    other = dict(raw, format="something-else")
    with pytest.raises(ConfigError, match="not a tierwise router artifact"):
        RouterModel(other)
    shuffled = dict(raw, dense_names=list(reversed(raw["dense_names"])))
    with pytest.raises(ConfigError, match="dense features differ"):
        RouterModel(shuffled)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RouterModel.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        RouterModel.load(tmp_path / "missing.json")
    good = tmp_path / "copy.json"
    good.write_text(json.dumps(raw))
    assert RouterModel.load(good).predict("hello") == default_model().predict("hello")


def test_array_round_trip() -> None:
    import numpy as np

    a = np.arange(12, dtype=np.float16).reshape(3, 4) / 7
    b = decode_array(encode_array(a))
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [1.0]),
        (2, [0.5, 1.0]),
        (3, [0.5, 0.8, 1.0]),
        (5, [0.5, 0.65, 0.8, 0.9, 1.0]),
    ],
)
def test_tier_quality_for_any_number_of_tiers(n: int, expected: list[float]) -> None:
    assert tier_quality((0.5, 0.3, 0.2), n) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prompt", "system", "level"),
    [
        ("Format this customer record as JSON: name John Smith, age 34, city Portland", "", 1),
        ("Translate 'good morning' into French.", "", 1),
        ("Extract all email addresses from the text below.", "", 1),
        ("Write a Python function that merges two sorted lists into one sorted list.", "", 2),
        ("Fix this bug: TypeError: 'NoneType' object is not subscriptable in line 12", "", 2),
        ("Summarize this document in five bullet points: ...", "", 2),
        ("Design a distributed, fault-tolerant architecture for a payments platform.", "", 3),
        ("Perform a security audit of this OAuth flow and list vulnerabilities.", "", 3),
        ("Review this design for race conditions.", "You are a principal architect.", 3),
    ],
)
def test_taxonomy_levels(prompt: str, system: str, level: int) -> None:
    c = classify(prompt, system)
    assert c.level == level, c.reasoning
    assert c.classifier == "learned"
    assert c.usage is None  # no model call, no cost
    assert c.tier_quality is not None and c.score is not None
    assert -1.0 <= c.score <= 1.0
    q = c.tier_quality
    assert q["haiku"] <= q["sonnet"] <= q["opus"] == 1.0
    # the structured data the ledger stores: the learning features, never the text
    assert c.features is not None and len(c.features) == len(COMPACT_NAMES)
    assert c.router_model == default_model().tag


def test_abstains_without_evidence() -> None:
    c = classify("qwxz")
    assert (c.level, c.confidence, c.tier_quality) == (2, 0.4, None)
    assert "abstaining" in c.reasoning


def test_tier_names_follow_the_configuration() -> None:
    c = classify("Translate 'cat' into German.", tiers=["small", "medium", "large", "xl", "max"])
    assert c.tier_quality is not None
    assert list(c.tier_quality) == ["small", "medium", "large", "xl", "max"]
    assert c.tier_quality["max"] == 1.0


def test_fast_path_matches_a_plain_dot_product() -> None:
    """The decision's single gather equals the textbook computation: idf-weighted,
    L2-normalised key vector times the weights, plus the standardised dense features."""
    import numpy as np

    from tierwise.textfeatures import featurize

    model = default_model()
    for prompt, system in [
        ("Write a haiku about autumn", ""),
        ("Review the consistency model", "You are a staff engineer"),
        ("x" * 9000, ""),
        ("What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", ""),
    ]:
        keys, dense = featurize(prompt, system)
        x = np.zeros(len(model.vocab))
        known = [model.index[k] for k in keys if k in model.index]
        idf = np.sqrt(model.idf2)
        if known:
            x[known] = idf[known] / np.sqrt((idf[known] ** 2).sum())
        text_coef = model.text_weights / idf[:, None]
        expected = (
            x @ text_coef
            + ((np.asarray(dense) - model.dense_mean) / model.dense_scale) @ model.dense_weights
            + model.bias
        )
        z, _ = model.raw_logits(model.lookup(keys), dense)
        assert z == pytest.approx(expected.tolist(), abs=1e-6)


def test_gain_score_is_finite_for_odd_input() -> None:
    model = default_model()
    for prompt in ["", " ", "🙂" * 50, "a" * 20_000, "\n".join(["1 + 1 ="] * 500)]:
        gain = model.predict(prompt).gain
        assert -1.0 <= gain <= 1.0


def test_make_classifier_uses_the_learned_one_by_default_and_first_in_cascade(
    tmp_path: Path,
) -> None:
    from tierwise.classifiers import CascadeClassifier, RulesClassifier
    from tierwise.config import load
    from tierwise.providers.simulated import SimulatedProvider
    from tierwise.router import make_classifier

    provider = SimulatedProvider()
    default = make_classifier(load(environ={"TIERWISE_HOME": str(tmp_path)}), provider)
    assert isinstance(default, LearnedClassifier)
    assert default.tiers == ["haiku", "sonnet", "opus"]
    cascade = make_classifier(
        load(environ={"TIERWISE_HOME": str(tmp_path), "TIERWISE_CLASSIFIER": "cascade"}), provider
    )
    assert isinstance(cascade, CascadeClassifier)
    assert isinstance(cascade.first, LearnedClassifier)
    rules = make_classifier(
        load(environ={"TIERWISE_HOME": str(tmp_path), "TIERWISE_CLASSIFIER": "rules"}), provider
    )
    assert isinstance(rules, RulesClassifier)
