"""``tierwise eval routerbench``: routing over many models with their real per-query costs.

RouterBench's models are not tierwise's tiers, and its data has no licence that would let it
train the shipped model, so it is used the way RouterBench is meant to be used — and the way a
deployment uses its own ledger: a head per model (P(correct)) is fitted on the benchmark's
*train* files on top of the shipped prior's features (its text keys and its compact features:
the prior's logits and the request's shape), at evaluation time, and never shipped. The router
then applies tierwise's policy rule with the models ordered by cost as tiers: the cheapest model
whose predicted quality is within a tolerance of the best prediction. Sweeping the tolerance
from 0 to 1 traces the cost–quality curve. A model's expected cost is its mean per-query cost on
the *train* files (the router never sees the test costs before deciding); the points are then
measured with the real test costs. The cost needed to reach the top model's accuracy gets a
95 % bootstrap interval (test prompts resampled, the whole curve recomputed).

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
from tierwise.evals.linear import fit_logistic, log_loss, sigmoid
from tierwise.evals.metrics import bootstrap_interval

# the per-model heads' L2 penalty: chosen per model by 5-fold CV log loss on the train files
HEAD_L2_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
CV_FOLDS = 5
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


def _design(model: RouterModel, prompts: Sequence[str], tick: Tick | None) -> Any:
    from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

    x, compact = model.design([(p, "") for p in prompts], tick)
    return x, compact, sparse


def fit_heads(
    model: RouterModel,
    train: Sequence[ds.MultiItem],
    models: Sequence[str],
    tick: Tick | None = None,
) -> tuple[dict[str, Any], Any]:
    """P(correct) heads per model on the prior's features; returns (heads, a scorer)."""
    x, compact, sparse = _design(model, [i.prompt for i in train], tick)
    mean, scale = compact.mean(axis=0), compact.std(axis=0)
    scale[scale < 1e-6] = 1.0  # constant (up to rounding): left unscaled
    full = sparse.hstack([x, sparse.csr_matrix((compact - mean) / scale)]).tocsr()
    heads: dict[str, Any] = {}
    fold = np.random.default_rng(0).permutation(len(train)) % CV_FOLDS
    for m in models:
        rows = np.array([m in i.quality for i in train])
        y = np.array([i.quality.get(m, 0.0) for i in train])
        losses = {}
        for l2 in HEAD_L2_GRID:
            loss = 0.0
            for f in range(CV_FOLDS):
                fit_rows, held = rows & (fold != f), rows & (fold == f)
                fit = fit_logistic(full[fit_rows], y[fit_rows], l2=l2)
                loss += log_loss(y[held], sigmoid(fit.decision(full[held]))) * held.sum()
            losses[l2] = loss
        best = min(losses, key=lambda k: losses[k])
        heads[m] = fit_logistic(full[rows], y[rows], l2=best)
        heads[m] = (heads[m], best)

    def score(prompts: Sequence[str], tick: Tick | None = None) -> npt.NDArray[np.float64]:
        xt, ct, _ = _design(model, prompts, tick)
        ft = sparse.hstack([xt, sparse.csr_matrix((ct - mean) / scale)]).tocsr()
        return np.column_stack([sigmoid(heads[m][0].decision(ft)) for m in models])

    return heads, score


def _fraction_interval(
    quality: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
    choices: list[npt.NDArray[np.int64]],
) -> tuple[float, float] | None:
    """95 % bootstrap interval of the cost fraction at the top model's accuracy: test prompts
    resampled, the top model, its accuracy and the router's curve recomputed each time."""
    n, k = quality.shape
    rows = np.arange(n)
    chosen_cost = np.array([cost[rows, c] for c in choices])  # tolerances × prompts
    chosen_acc = np.array([quality[rows, c] for c in choices])

    def fraction(idx: npt.NDArray[np.int64]) -> float | None:
        accs = quality[idx].mean(axis=0)
        costs = cost[idx].mean(axis=0)
        j = max(range(k), key=lambda c: (accs[c], -costs[c]))
        pts = list(
            zip(chosen_cost[:, idx].mean(axis=1), chosen_acc[:, idx].mean(axis=1), strict=True)
        )
        got = cost_to_reach(pts, float(accs[j]))
        return None if got is None else got / float(costs[j])

    try:
        return bootstrap_interval(fraction, n)
    except ValueError:
        return None


def evaluate(
    data_dir: Path,
    model: RouterModel,
    *,
    split: Literal["train", "test"] = "test",
    models: Sequence[str] | None = None,
    tick: Tick | None = None,
) -> dict[str, Any]:
    items_all = ds.load_routerbench(data_dir, split)
    train_items = ds.load_routerbench(data_dir, "train")
    available = sorted({m for i in train_items for m in i.quality})
    chosen = list(models) if models else available
    missing = [m for m in chosen if m not in available]
    if missing:
        raise InputError(
            f"no RouterBench train data for {', '.join(missing)}; available: {', '.join(available)}"
        )
    if len(chosen) < 2:
        raise InputError("give at least two models to route between")
    items = [i for i in items_all if all(m in i.quality for m in chosen)]
    expected_cost = train_costs(data_dir, chosen)
    by_cost = sorted(chosen, key=lambda m: expected_cost[m])
    n, k = len(items), len(by_cost)
    heads, scorer = fit_heads(model, train_items, by_cost, tick)
    pred = scorer([i.prompt for i in items], tick)
    quality = np.array([[item.quality[m] for m in by_cost] for item in items])
    cost = np.array([[item.cost_usd[m] for m in by_cost] for item in items])
    rows = np.arange(n)
    single_acc = {m: float(quality[:, c].mean()) for c, m in enumerate(by_cost)}
    single_cost = {m: float(cost[:, c].mean()) for c, m in enumerate(by_cost)}
    top = max(by_cost, key=lambda m: (single_acc[m], -single_cost[m]))
    top_acc, top_cost = single_acc[top], single_cost[top]

    def operate(choice: npt.NDArray[np.int64]) -> tuple[float, float]:
        return float(cost[rows, choice].mean()), float(quality[rows, choice].mean())

    best = pred.max(axis=1, keepdims=True)
    curve: list[dict[str, Any]] = []
    choices = []
    for tol in TOLERANCES:
        within = pred >= best - tol - 1e-12
        choice = within.argmax(axis=1)  # first (cheapest) qualifying model
        choices.append(choice)
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
    interval = _fraction_interval(quality, cost, choices)
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
        "cost_fraction_interval": None if interval is None else [round(v, 4) for v in interval],
        "head_l2": {m: heads[m][1] for m in by_cost},
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
