"""The model card written next to a trained artifact (``router-v2.md``), and the test-split
measurements ``tierwise train`` records in it (measured after training, never used by it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from tierwise.classifiers.learned import DEFAULT_ARTIFACT, LearnedClassifier, RouterModel
from tierwise.evals import datasets as ds
from tierwise.evals import routellm, routerbench

ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager[Callable[[], None]]]
PAIR_KEYS = ("n", "apgr", "apgr_ci", "cpt50", "cpt80", "random_apgr")


def default_artifact_path() -> Path:
    return Path(str(resources.files("tierwise") / "models" / DEFAULT_ARTIFACT))


def holdout_path() -> Path:
    return Path(str(resources.files("tierwise") / "data" / "tier_holdout.jsonl"))


@contextlib.contextmanager
def _no_progress(_label: str, _total: int) -> Iterator[Callable[[], None]]:
    yield lambda: None


def holdout_decisions(model: RouterModel, tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """The whole decision (this model + the policy, default configuration) on the held-out tier
    prompts, as ``tierwise eval tiers`` measures it."""
    from tierwise.config import Settings
    from tierwise.evals import tiers
    from tierwise.providers.simulated import SimulatedProvider
    from tierwise.router import Router

    settings = Settings()
    router = Router(
        settings,
        provider=SimulatedProvider(),
        classifier=LearnedClassifier(settings.tier_names, model=model),
    )
    items = ds.load_tier_file(holdout_path())
    try:
        return tiers.evaluate(router, items, tick)
    finally:
        asyncio.run(router.aclose())


def measure_test_split(
    model: RouterModel, data_dir: Path, progress: ProgressFactory | None = None
) -> dict[str, Any]:
    """Test-split numbers for the card: RouteLLM MMLU/GSM8K, Arena, RouterBench, tiers."""
    bar = progress or _no_progress
    results: dict[str, Any] = {}
    for bench in ("mmlu", "gsm8k"):
        items = ds.load_routellm(data_dir, bench, "test")
        with bar(f"test split: {bench}", len(items)) as tick:
            scores = routellm.score_prompts(model, [i.prompt for i in items], tick)
        r = routellm.evaluate_pairs(items, scores, benchmark=bench, split="test")
        results[f"routellm_{bench}"] = {k: r[k] for k in PAIR_KEYS}
    arena = routellm.arena_pairs(
        data_dir, "test", "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    )
    if len(arena) >= 11:
        with bar("test split: arena", len(arena)) as tick:
            scores = routellm.score_prompts(model, [i.prompt for i in arena], tick)
        r = routellm.evaluate_pairs(arena, scores, benchmark="arena", split="test")
        results["arena"] = {k: r[k] for k in PAIR_KEYS}
    n = len(ds.load_routerbench(data_dir, "train")) + len(ds.load_routerbench(data_dir, "test"))
    with bar("routerbench: heads on train, test split", n) as tick:
        rb = routerbench.evaluate(data_dir, model, split="test", tick=tick)
    results["routerbench"] = {
        k: rb[k]
        for k in (
            "n",
            "top_model",
            "top_accuracy",
            "cost_fraction_at_top_accuracy",
            "cost_fraction_interval",
            "router_best_accuracy",
        )
    }
    held = ds.load_tier_file(holdout_path())
    with bar("held-out tier prompts", len(held)) as tick:
        t = holdout_decisions(model, tick)
    results["tier_holdout"] = {k: t[k] for k in ("n", "accuracy", "accuracy_ci", "severe_errors")}
    return results


def _ci(r: dict[str, Any], key: str = "apgr_ci", fmt: str = ".3f") -> str:
    ci = r.get(key)
    return "" if not ci else f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def summary_lines(artifact: dict[str, Any], results: dict[str, Any]) -> list[str]:
    card = artifact["card"]
    lines = [
        f"{len(artifact['vocab'])} text keys × {len(artifact['columns'])} outputs",
        f"gain heads: {card['spec']['name']}; tier head C={card['tier_head']['C']}",
    ]
    for key in ("routellm_mmlu", "routellm_gsm8k", "arena"):
        if key in results:
            r = results[key]
            lines.append(
                f"test {key}: APGR {r['apgr']:.3f}{_ci(r)}  CPT50 {r['cpt50']}  "
                f"CPT80 {r['cpt80']}  (random {r['random_apgr']:.3f}, n={r['n']})"
            )
    if "routerbench" in results:
        r = results["routerbench"]
        frac = r["cost_fraction_at_top_accuracy"]
        lines.append(
            f"test routerbench: top {r['top_model']} {r['top_accuracy']:.4f}; reached at "
            f"{'never' if frac is None else f'{frac:.1%}'}"
            f"{_ci(r, 'cost_fraction_interval', '.1%')} of its cost"
        )
    if "tier_holdout" in results:
        r = results["tier_holdout"]
        lines.append(
            f"held-out tier prompts (whole decision): accuracy {r['accuracy']:.1%}"
            f"{_ci(r, 'accuracy_ci', '.1%')}, severe errors {r['severe_errors']} (n={r['n']})"
        )
    return lines


def write_card(artifact_path: Path, artifact: dict[str, Any], results: dict[str, Any]) -> Path:
    card = artifact["card"]
    sources = card["sources"]
    lines = [
        f"# Model card: {artifact['name']}",
        "",
        f"Created {artifact['created']} by `tierwise train`; artifact format "
        f"{artifact['format']} v{artifact['format_version']}, id `{artifact['id'][:16]}`; "
        f"{len(artifact['vocab'])} text keys × {len(artifact['columns'])} outputs; taxonomy "
        f"`{artifact['taxonomy']}`.",
        "",
        "## What it is",
        "",
        "One linear model over idf-weighted, L2-normalised keys of the prompt (words, bigrams, "
        "symbols, the system prompt's words) plus "
        f"{len(artifact['dense_names'])} request-shape features. Outputs: the lesson's taxonomy "
        "P(level 1/2/3) (the prior per-tier quality the policy uses) and P(a weak / a strong "
        "reference model answers well) (Mixtral-8x7B, GPT-4-1106), whose difference is the "
        "routing score the benchmarks evaluate. A deployment's own judge verdicts and feedback "
        "can correct the per-tier quality with an adapter (`tierwise train --from-ledger`).",
        "",
        f"Gain heads: **{card['spec']['name']}**, chosen by leave-one-source-out validation "
        "(EVALUATION.md, `docs/eval/selection.json`).",
        "",
        "## Data and licences",
        "",
        "| source | licence | trains this model | rows used |",
        "|---|---|---|---|",
        *(
            f"| {s['title']} | {s['licence']} | {'yes' if s['trains_shipped_model'] else 'no'} "
            f"| {s['rows_used']} |"
            for s in sources.values()
        ),
        "",
        "## How test data was kept out",
        "",
        card["protocol"],
        "",
        "## Choices (train split only)",
        "",
        "```json",
        _json({"spec": card["spec"], "tier_head": card["tier_head"]}),
        "```",
        "",
    ]
    if results:
        lines += [
            "## Test-split results (measured after training; 95 % bootstrap intervals)",
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
    return json.dumps(value, indent=2, sort_keys=True)
