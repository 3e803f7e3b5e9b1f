"""``tierwise eval routerbench``: routing over many models with their real per-query costs.

The router predicts each model's chance of answering correctly (the learned model's ``rb:*``
heads) and applies tierwise's policy rule with the models ordered by cost as tiers: the cheapest
model whose predicted quality is within a tolerance of the best prediction. Sweeping the
tolerance from 0 to 1 traces the cost–quality curve. A model's expected cost is its mean
per-query cost on the RouterBench *train* files (the router never sees the test costs before
deciding); the points are then measured with the real test costs.

Baselines: every single model, random mixing of single models (the segments between the
cost–accuracy frontier's models, reachable by sending a random share to each), and the oracle
(the cheapest model that answers correctly, else the cheapest model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tierwise.classifiers.learned import RouterModel
from tierwise.errors import InputError
from tierwise.evals import datasets as ds

TOLERANCES = tuple(float(t) for t in np.round(np.linspace(0.0, 1.0, 201), 4))
Tick = Callable[[], None]


def _frontier(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Models on the lower-cost / higher-accuracy frontier, by cost."""
    out: list[tuple[float, float, str]] = []
    for cost, acc, name in sorted(points):
        if not out or acc > out[-1][1]:
            out.append((cost, acc, name))
    # keep only the concave hull (random mixing of two models is a straight segment)
    hull: list[tuple[float, float, str]] = []
    for p in out:
        while len(hull) >= 2:
            (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def cost_to_reach(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """Smallest cost along a cost–accuracy curve (walked by increasing cost, interpolating
    linearly between consecutive operating points) whose accuracy reaches ``target``."""
    ordered = sorted(points)
    prev: tuple[float, float] | None = None
    for cost, acc in ordered:
        if acc >= target - 1e-12:
            if prev is None or acc == prev[1]:
                return cost
            c0, a0 = prev
            return c0 + (target - a0) * (cost - c0) / (acc - a0)
        if prev is None or acc > prev[1]:
            prev = (cost, acc)
    return None


def train_costs(data_dir: Path, models: Sequence[str]) -> dict[str, float]:
    items = ds.load_routerbench(data_dir, "train")
    return {m: float(np.mean([i.cost_usd[m] for i in items if m in i.cost_usd])) for m in models}


def evaluate(
    data_dir: Path,
    model: RouterModel,
    *,
    split: Literal["train", "test"] = "test",
    models: Sequence[str] | None = None,
    tick: Tick | None = None,
) -> dict[str, Any]:
    items_all = ds.load_routerbench(data_dir, split)
    available = [c.removeprefix("rb:") for c in model.columns if c.startswith("rb:")]
    chosen = list(models) if models else available
    missing = [m for m in chosen if m not in available]
    if missing:
        raise InputError(
            f"the model has no quality head for {', '.join(missing)}; "
            f"available: {', '.join(available)}"
        )
    if len(chosen) < 2:
        raise InputError("give at least two models to route between")
    items = [i for i in items_all if all(m in i.quality for m in chosen)]
    expected_cost = train_costs(data_dir, chosen)
    by_cost = sorted(chosen, key=lambda m: expected_cost[m])
    n, k = len(items), len(by_cost)
    quality = np.zeros((n, k))
    cost = np.zeros((n, k))
    pred = np.zeros((n, k))
    for r, item in enumerate(items):
        out = model.predict(item.prompt).outputs
        for c, m in enumerate(by_cost):
            quality[r, c] = item.quality[m]
            cost[r, c] = item.cost_usd[m]
            pred[r, c] = out[f"rb:{m}"]
        if tick is not None:
            tick()
    rows = np.arange(n)
    single_acc = {m: float(quality[:, c].mean()) for c, m in enumerate(by_cost)}
    single_cost = {m: float(cost[:, c].mean()) for c, m in enumerate(by_cost)}
    top = max(by_cost, key=lambda m: (single_acc[m], -single_cost[m]))
    top_acc, top_cost = single_acc[top], single_cost[top]

    def operate(choice: npt.NDArray[np.int64]) -> tuple[float, float]:
        return float(cost[rows, choice].mean()), float(quality[rows, choice].mean())

    best = pred.max(axis=1, keepdims=True)
    curve: list[dict[str, Any]] = []
    for tol in TOLERANCES:
        within = pred >= best - tol - 1e-12
        choice = within.argmax(axis=1)  # first (cheapest) qualifying model
        avg_cost, accuracy = operate(choice)
        shares = np.bincount(choice, minlength=k) / n
        curve.append(
            {
                "tolerance": tol,
                "cost_usd": avg_cost,
                "accuracy": accuracy,
                "shares": {m: round(float(s), 4) for m, s in zip(by_cost, shares, strict=True)},
            }
        )
    # oracle: cheapest correct model, else the cheapest model
    correct = quality > 0.5
    any_correct = correct.any(axis=1)
    oracle_choice = np.where(any_correct, correct.argmax(axis=1), 0)
    oc, oa = operate(oracle_choice)
    frontier = _frontier([(single_cost[m], single_acc[m], m) for m in by_cost])
    reach = cost_to_reach([(p["cost_usd"], p["accuracy"]) for p in curve], top_acc)
    mix_reach = cost_to_reach([(c, a) for c, a, _ in frontier], top_acc)
    return {
        "split": split,
        "n": n,
        "dropped_incomplete_rows": len(items_all) - n,
        "models": by_cost,
        "expected_cost_usd": {m: expected_cost[m] for m in by_cost},
        "top_model": top,
        "top_accuracy": round(top_acc, 5),
        "top_cost_usd": top_cost,
        "cost_fraction_at_top_accuracy": None if reach is None else reach / top_cost,
        "router_best_accuracy": max(float(p["accuracy"]) for p in curve),
        "random_mix_cost_fraction_at_top_accuracy": None
        if mix_reach is None
        else mix_reach / top_cost,
        "singles": [
            {"model": m, "accuracy": single_acc[m], "cost_usd": single_cost[m]} for m in by_cost
        ],
        "random_mix": [{"model": m, "cost_usd": c, "accuracy": a} for c, a, m in frontier],
        "oracle": {"cost_usd": oc, "accuracy": oa},
        "points": curve,
    }
