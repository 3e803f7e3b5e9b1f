"""The model card written next to a trained artifact (``router-v1.md``), and the test-split
measurements ``tierwise train`` records in it (measured after training, never used by it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from tierwise.classifiers.learned import DEFAULT_ARTIFACT, LearnedClassifier, RouterModel
from tierwise.evals import datasets as ds
from tierwise.evals import routellm, routerbench
from tierwise.types import ClassifyInput

ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager[Callable[[], None]]]


def default_artifact_path() -> Path:
    return Path(str(resources.files("tierwise") / "models" / DEFAULT_ARTIFACT))


def holdout_path() -> Path:
    return Path(str(resources.files("tierwise") / "data" / "tier_holdout.jsonl"))


@contextlib.contextmanager
def _no_progress(_label: str, _total: int) -> Iterator[Callable[[], None]]:
    yield lambda: None


def holdout_accuracy(model: RouterModel) -> dict[str, Any]:
    """The classifier alone (argmax level) on the held-out tier prompts."""
    items = ds.load_tier_file(holdout_path())
    clf = LearnedClassifier(model=model)
    levels = [asyncio.run(clf.classify(ClassifyInput(i.prompt, i.system))).level for i in items]
    correct = sum(lv == i.tier for lv, i in zip(levels, items, strict=True))
    severe = sum(lv == 1 and i.tier == 3 for lv, i in zip(levels, items, strict=True))
    return {"n": len(items), "accuracy": round(correct / len(items), 4), "severe_errors": severe}


def measure_test_split(
    model: RouterModel, data_dir: Path, progress: ProgressFactory | None = None
) -> dict[str, Any]:
    """Test-split numbers for the card: RouteLLM MMLU/GSM8K, RouterBench, Arena, tiers."""
    bar = progress or _no_progress
    results: dict[str, Any] = {}
    for bench in ("mmlu", "gsm8k"):
        items = ds.load_routellm(data_dir, bench, "test")
        with bar(f"test split: {bench}", len(items)) as tick:
            scores = routellm.score_prompts(model, [i.prompt for i in items], tick)
        r = routellm.evaluate_pairs(items, scores, benchmark=bench, split="test")
        results[f"routellm_{bench}"] = {
            k: r[k] for k in ("n", "apgr", "cpt50", "cpt80", "random_apgr")
        }
    arena = routellm.arena_pairs(
        data_dir, "test", "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    )
    if len(arena) >= 11:
        scores = routellm.score_prompts(model, [i.prompt for i in arena])
        r = routellm.evaluate_pairs(arena, scores, benchmark="arena", split="test")
        results["arena"] = {k: r[k] for k in ("n", "apgr", "cpt50", "cpt80", "random_apgr")}
    n = len(ds.load_routerbench(data_dir, "test"))
    with bar("test split: routerbench", n) as tick:
        rb = routerbench.evaluate(data_dir, model, split="test", tick=tick)
    results["routerbench"] = {
        k: rb[k]
        for k in (
            "n",
            "top_model",
            "top_accuracy",
            "cost_fraction_at_top_accuracy",
            "router_best_accuracy",
        )
    }
    results["tier_holdout"] = holdout_accuracy(model)
    return results


def summary_lines(artifact: dict[str, Any], results: dict[str, Any]) -> list[str]:
    metrics = artifact["card"]["train_metrics"]
    lines = [
        f"{len(artifact['vocab'])} text keys × {len(artifact['columns'])} outputs",
        f"tier head C={metrics['tier']['C']}; pair heads C={metrics['pair']['C']}; "
        f"stack alpha={metrics['stack']['alpha']} ({metrics['stack']['applies_to']})",
    ]
    for key in ("routellm_mmlu", "routellm_gsm8k", "arena"):
        if key in results:
            r = results[key]
            lines.append(
                f"test {key}: APGR {r['apgr']:.3f}  CPT50 {r['cpt50']}  CPT80 {r['cpt80']}  "
                f"(random {r['random_apgr']:.3f}, n={r['n']})"
            )
    if "routerbench" in results:
        r = results["routerbench"]
        frac = r["cost_fraction_at_top_accuracy"]
        lines.append(
            f"test routerbench: top {r['top_model']} {r['top_accuracy']:.4f}; reached at "
            f"{'never' if frac is None else f'{frac:.1%}'} of its cost"
        )
    if "tier_holdout" in results:
        r = results["tier_holdout"]
        lines.append(
            f"held-out tier prompts: accuracy {r['accuracy']:.1%}, severe errors "
            f"{r['severe_errors']} (n={r['n']})"
        )
    return lines


def write_card(artifact_path: Path, artifact: dict[str, Any], results: dict[str, Any]) -> Path:
    card = artifact["card"]
    lines = [
        f"# Model card: {artifact['name']}",
        "",
        f"Created {artifact['created']} by `tierwise train`; artifact format "
        f"{artifact['format']} v{artifact['format_version']}; "
        f"{len(artifact['vocab'])} text keys × {len(artifact['columns'])} outputs.",
        "",
        "## What it is",
        "",
        "One linear model over idf-weighted, L2-normalised word and bigram keys of the prompt "
        "(and the system prompt's words) plus "
        f"{len(artifact['dense_names'])} request-shape features. Outputs: the lesson's taxonomy "
        "(P(level 1/2/3)), P(correct) for a weak and a strong reference model "
        "(Mixtral-8x7B, GPT-4-1106) and a stacked estimate of the strong model's gain "
        "(the RouteLLM score), and P(correct) for 11 RouterBench models.",
        "",
        "## How test data was kept out",
        "",
        card["protocol"],
        "",
        "## Training rows",
        "",
        *(f"- {k}: {v}" for k, v in card["rows"].items()),
        "",
        "## Hyper-parameters and cross-validation (train split only)",
        "",
        "```json",
        _json(card["hyperparameters"]),
        _json(card["train_metrics"]),
        "```",
        "",
    ]
    if results:
        lines += [
            "## Test-split results (measured after training)",
            "",
            *(f"- {line}" for line in summary_lines(artifact, results)[2:]),
            "",
        ]
    lines += [
        "## Data files (SHA-256)",
        "",
        "| file | sha256 |",
        "|---|---|",
        *(f"| {name} | `{digest}` |" for name, digest in sorted(card["data_sha256"].items())),
        "",
    ]
    path = artifact_path.with_suffix(".md")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True)
