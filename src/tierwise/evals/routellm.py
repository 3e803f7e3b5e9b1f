"""``tierwise eval routellm`` and ``tierwise eval arena``: two-model routing, the paper's metric.

The router's score is the learned prior's estimate of how much the strong model gains over the
weak one on the prompt: P(strong answers well) − P(weak answers well). The random router is the
mean over several seeded random scorings; the oracle scores each prompt by the strong model's
actual gain on it. APGR comes with a 95 % bootstrap interval (prompts resampled).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tierwise.classifiers.learned import RouterModel
from tierwise.evals import datasets as ds
from tierwise.evals.metrics import (
    RouterResult,
    Ties,
    apgr_interval,
    evaluate_router,
    oracle_scores,
    random_scores,
    tiebreak_key,
)

# RouteLLM paper v4, Tables 1–3 (best router per benchmark), for the report and the plots.
PAPER: dict[str, dict[str, Any]] = {
    "mmlu": {"apgr": 0.603, "cpt50": 35.40, "cpt80": 71.55, "router": "SW ranking (+golden)"},
    "gsm8k": {"apgr": 0.622, "cpt50": 33.64, "cpt80": None, "router": "causal LLM (+judge)"},
    "random": {"apgr": 0.50},
}
RANDOM_SEEDS = 20

Tick = Callable[[], None]


def score_prompts(
    model: RouterModel, prompts: Sequence[str], tick: Tick | None = None
) -> list[float]:
    out = []
    for p in prompts:
        out.append(model.predict(p).gain)
        if tick is not None:
            tick()
    return out


def _summary(res: RouterResult) -> dict[str, Any]:
    return {
        "apgr": round(res.apgr, 4),
        "cpt50": None if res.cpt50 is None else round(res.cpt50, 2),
        "cpt80": None if res.cpt80 is None else round(res.cpt80, 2),
        "points": [
            {
                "threshold": round(p.threshold, 6),
                "strong_pct": round(p.strong_pct, 3),
                "quality": round(p.quality, 5),
            }
            for p in res.points
        ],
    }


def evaluate_pairs(
    items: Sequence[ds.PairItem],
    scores: Sequence[float],
    *,
    benchmark: str,
    split: str,
    ties: Ties = "break",
    tick: Tick | None = None,
) -> dict[str, Any]:
    """Router, random router and oracle on one two-model benchmark, as a JSON-able dict.
    ``tick()`` is called after each of the interval's bootstrap resamples."""
    if len(items) < 11:
        raise ValueError(f"{benchmark}: {len(items)} prompts is too few for an 11-point sweep")
    weak = [i.weak for i in items]
    strong = [i.strong for i in items]
    keys = [tiebreak_key(i.prompt) for i in items]
    router = evaluate_router(scores, weak, strong, ties=ties, keys=keys)
    randoms = [
        evaluate_router(random_scores(len(items), seed), weak, strong, ties=ties, keys=keys)
        for seed in range(RANDOM_SEEDS)
    ]
    oracle = evaluate_router(oracle_scores(weak, strong), weak, strong, ties=ties, keys=keys)
    lo, hi = apgr_interval(scores, weak, strong, keys=keys, ties=ties, tick=tick)

    def mean_opt(values: list[float | None]) -> float | None:
        real = [v for v in values if v is not None]
        return round(float(np.mean(real)), 2) if len(real) == len(values) else None

    return {
        "benchmark": benchmark,
        "split": split,
        "n": len(items),
        "ties": ties,
        "weak_quality": round(router.weak_quality, 5),
        "strong_quality": round(router.strong_quality, 5),
        **_summary(router),
        "apgr_ci": [round(lo, 4), round(hi, 4)],
        "random_apgr": round(float(np.mean([r.apgr for r in randoms])), 4),
        "random_apgr_std": round(float(np.std([r.apgr for r in randoms])), 4),
        "random_seeds": RANDOM_SEEDS,
        "random_cpt50": mean_opt([r.cpt50 for r in randoms]),
        "random_cpt80": mean_opt([r.cpt80 for r in randoms]),
        "random_points": _summary(randoms[0])["points"],
        "oracle": _summary(oracle),
        "paper": PAPER.get(benchmark),
    }


def write_scores(path: Path, items: Sequence[ds.PairItem], scores: Sequence[float]) -> None:
    """``prompt,score`` per prompt, so anyone can recompute the metric independently."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "score"])
        for item, score in zip(items, scores, strict=True):
            writer.writerow([item.prompt, repr(float(score))])


def arena_pairs(data_dir: Path, split: ds.Split, weak: str, strong: str) -> list[ds.PairItem]:
    """Arena-bench prompts with both models' judge scores, as two-model items."""
    items = []
    for it in ds.load_arena(data_dir, split):
        if weak in it.quality and strong in it.quality:
            items.append(ds.PairItem(it.prompt, it.quality[weak], it.quality[strong], "arena"))
    return items
