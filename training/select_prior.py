"""Model selection for the shipped prior by leave-one-source-out (LOSO) validation.

Each candidate (features + heads, a :class:`tierwise.evals.train.PriorSpec`, plus the issue's
scikit-learn TF-IDF baseline) is trained on the train halves of all licence-clean sources but
one and scored on the train half of the one left out, by APGR (the RouteLLM paper's metric,
:mod:`tierwise.evals.metrics`). RouterBench, whose licence is not stated, never trains a
candidate: it is scored out of source by the candidate trained on all clean sources. A
candidate's figure of merit is the mean of the five out-of-source APGRs; each figure has a 95 %
bootstrap interval, and every candidate's mean is compared with the baseline's and the best
one's on the same resamples (paired). No test half is read.

**Selection rule** (the one-standard-error rule of Breiman et al. / Hastie et al.): the
differences between candidates are of the order of the resampling noise, so among the candidates
whose mean is within one paired standard error of the best mean, the one with the fewest
parameters is selected (fewer feature copies, no shape features, fewer key kinds); ties go to
the higher mean.

Run (≈ 15 min on one core of a quiet machine; features are cached under .cache/):

    .venv/bin/python training/select_prior.py --data ../shared/data --out docs/eval/selection.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tierwise.evals.metrics import apgr, sweep, tiebreak_key
from tierwise.evals.train import (
    ALL_SOURCES,
    CLEAN,
    FeatureCache,
    PriorSpec,
    Source,
    fit_gain_heads,
    load_sources,
)

ROOT = Path(__file__).resolve().parents[1]
RESAMPLES = 1000


@dataclass(frozen=True)
class Baseline:
    """The issue's baseline: scikit-learn's TfidfVectorizer (word unigrams, min_df 2) and two
    logistic heads, every row weighted 1, score = P(strong good) − P(weak good)."""

    name: str = "baseline: scikit-learn TF-IDF + 2 logistic heads"
    sources: tuple[str, ...] = CLEAN

    def fit(self, train: list[Source]) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        from tierwise.evals.linear import fit_logistic, sigmoid

        vec = TfidfVectorizer(min_df=2)
        x = vec.fit_transform([p for s in train for p in s.prompts])
        weak = fit_logistic(x, np.concatenate([s.weak for s in train]), l2=1.0)
        strong = fit_logistic(x, np.concatenate([s.strong for s in train]), l2=1.0)

        def score(s: Source, _feats: Any) -> np.ndarray:
            xt = vec.transform(s.prompts)
            return sigmoid(strong.decision(xt)) - sigmoid(weak.decision(xt))

        return score


KEYS = PriorSpec(name="keys (words, bigrams, symbols, system words) + 2 logistic heads")
CANDIDATES: list[Any] = [
    Baseline(),
    KEYS,
    replace(KEYS, name="word unigrams only + 2 logistic heads", features="uni"),
    replace(KEYS, name="keys + shape features + 2 logistic heads", dense=True),
    replace(KEYS, name="keys + 2 logistic heads, sources weighted equally", balance=True),
    replace(
        KEYS,
        name="keys + shape, format-augmented (shared / multiple-choice / free-form)",
        dense=True,
        augment=True,
    ),
    replace(KEYS, name="keys, format-augmented", augment=True),
    replace(
        KEYS, name="keys + 2 logistic heads, Arena labelled by model classes", arena_multi=True
    ),
    replace(KEYS, name="keys + 2 logistic heads, C = 0.25", c=0.25),
    replace(KEYS, name="keys + 2 logistic heads, C = 4", c=4.0),
    replace(KEYS, name="keys + 2 logistic heads, without the tier corpus", sources=CLEAN[:-1]),
    replace(KEYS, name="keys + 2 logistic heads, an intercept per source", source_bias=True),
    replace(
        KEYS,
        name="keys + shape, format-augmented, an intercept per source",
        dense=True,
        augment=True,
        source_bias=True,
    ),
    replace(KEYS, name="shape features only + 2 logistic heads", features="none", dense=True),
]


def complexity(cand: Any) -> int:
    """A candidate's size in parameters per head, roughly: ~10,000 per kind of text key (word
    unigrams; bigrams, symbols and system words), 19 shape features, times the copies."""
    if isinstance(cand, Baseline):
        return 10_000
    kinds = {"none": 0, "uni": 1, "keys": 2}[cand.features]
    return (3 if cand.augment else 1) * (kinds * 10_000 + (19 if cand.dense else 0))


def scorer(cand: Any, train: list[Source], feats: Any) -> Any:
    if isinstance(cand, Baseline):
        return cand.fit(train)
    heads = fit_gain_heads(cand, train, feats)
    return heads.score


def out_of_source_scores(
    cand: Any, sources: dict[str, Source], feats: Any
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for held in cand.sources:
        train = [sources[n] for n in cand.sources if n != held]
        out[held] = scorer(cand, train, feats)(sources[held], feats)
    full = scorer(cand, [sources[n] for n in cand.sources], feats)
    for other in ALL_SOURCES:
        if other not in cand.sources:
            out[other] = full(sources[other], feats)
    return out


class Judge:
    """APGR of scores on each source, and bootstrap resamples shared by every candidate."""

    def __init__(self, sources: dict[str, Source]) -> None:
        self.sources = sources
        rng = np.random.default_rng(0)
        self.keys = {
            n: np.array([tiebreak_key(p) for p in s.prompts], dtype=np.float64)
            for n, s in sources.items()
        }
        self.draws = {
            n: [rng.integers(0, len(s.prompts), len(s.prompts)) for _ in range(RESAMPLES)]
            for n, s in sources.items()
        }

    def apgr(self, name: str, scores: np.ndarray, idx: np.ndarray | None = None) -> float:
        s = self.sources[name]
        if idx is None:
            idx = np.arange(len(scores))
        w, g = s.weak[idx], s.strong[idx]
        points = sweep(scores[idx], w, g, keys=self.keys[name][idx])
        return apgr(points, float(w.mean()), float(g.mean()))

    def resampled(self, name: str, scores: np.ndarray) -> np.ndarray:
        return np.array([self.apgr(name, scores, idx) for idx in self.draws[name]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", help="comma-separated candidate numbers")
    args = ap.parse_args()
    os.nice(10)
    sources = load_sources(args.data)
    cache = FeatureCache(ROOT / ".cache" / "tierwise-train")
    cache.fill([p for s in sources.values() for p in zip(s.prompts, s.systems, strict=True)])
    judge = Judge(sources)
    chosen = CANDIDATES if not args.only else [CANDIDATES[int(i)] for i in args.only.split(",")]
    rows: list[dict[str, Any]] = []
    boots: list[np.ndarray] = []
    base_boot: np.ndarray | None = None
    for cand in chosen:
        t0 = time.time()
        scores = out_of_source_scores(cand, sources, cache.data)
        point = {n: judge.apgr(n, scores[n]) for n in ALL_SOURCES}
        boot = np.array([judge.resampled(n, scores[n]) for n in ALL_SOURCES])  # sources × B
        mean_boot = boot.mean(axis=0)
        if base_boot is None:
            base_boot = mean_boot
        diff = mean_boot - base_boot
        row = {
            "candidate": cand.name,
            "spec": asdict(cand),
            "mean": round(float(np.mean(list(point.values()))), 4),
            "mean_ci": [round(float(v), 4) for v in np.percentile(mean_boot, [2.5, 97.5])],
            "vs_baseline_ci": [round(float(v), 4) for v in np.percentile(diff, [2.5, 97.5])],
            "sources": {
                n: {
                    "apgr": round(point[n], 4),
                    "ci": [round(float(v), 4) for v in np.percentile(boot[i], [2.5, 97.5])],
                    "out_of_source": "left out" if n in cand.sources else "never trained on",
                }
                for i, n in enumerate(ALL_SOURCES)
            },
            "seconds": round(time.time() - t0, 1),
        }
        rows.append(row)
        boots.append(mean_boot)
        print(
            f"{row['mean']:.4f} {row['mean_ci']}  Δ {row['vs_baseline_ci']}  "
            + "  ".join(f"{n} {point[n]:.3f}" for n in ALL_SOURCES)
            + f"  {cand.name} ({row['seconds']:.0f}s)",
            flush=True,
        )
    best = max(range(len(rows)), key=lambda i: rows[i]["mean"])
    eligible = []
    for i, row in enumerate(rows):
        se = float(np.std(boots[i] - boots[best]))
        row["vs_best_se"] = round(se, 4)
        row["within_one_se_of_best"] = bool(row["mean"] >= rows[best]["mean"] - se)
        row["complexity"] = complexity(chosen[i])
        if row["within_one_se_of_best"]:
            eligible.append(i)
    pick = min(eligible, key=lambda i: (complexity(chosen[i]), -rows[i]["mean"]))
    for i, row in enumerate(rows):
        row["selected"] = i == pick
        row["best_mean"] = i == best
    print(
        f"best mean: {rows[best]['candidate']}; selected (one-SE rule): {rows[pick]['candidate']}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
