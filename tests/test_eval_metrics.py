"""The RouteLLM paper's metrics against hand-computed cases, ties and a non-monotonic curve."""

from __future__ import annotations

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]
import pytest

from tierwise.evals.metrics import (
    CurvePoint,
    apgr,
    cpt,
    evaluate_router,
    oracle_scores,
    random_scores,
    sweep,
)
from tierwise.evals.routerbench import cost_to_reach


def _pts(xs: list[float], ys: list[float]) -> list[CurvePoint]:
    return [CurvePoint(0.0, x, y) for x, y in zip(xs, ys, strict=True)]


def test_edges_are_pandas_qcut_edges_without_ties() -> None:
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0, 0.05, 0.95])
    _, edges = pd.qcut(scores, 10, retbins=True)
    weak = np.zeros(len(scores))
    strong = np.ones(len(scores))
    points = sweep(scores, weak, strong, ties="drop")
    assert [p.threshold for p in points] == pytest.approx(list(edges))
    # route to strong if score >= edge, and > edge for the last edge
    for p, edge in zip(points[:-1], edges[:-1], strict=True):
        assert p.strong_pct == pytest.approx(100 * np.mean(scores >= edge))
    assert points[0].strong_pct == 100.0
    assert points[-1].strong_pct == 0.0


def test_hand_computed_sweep_and_apgr() -> None:
    # 10 prompts, unique scores 0..9; the strong model helps exactly on the top-scored 2.
    scores = np.arange(10, dtype=float)
    weak = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=float)
    strong = np.ones(10)
    points = sweep(scores, weak, strong, ties="drop")
    assert len(points) == 11
    # edges are 0, 0.9, 1.8, …, 9: ">= edge" sends 10, 9, 8, …, 1 prompts; "> 9" sends none
    assert [p.strong_pct for p in points] == pytest.approx(
        [100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    )
    assert [p.quality for p in points] == pytest.approx([1] * 9 + [0.9, 0.8])
    # Trapezoid over x = 0..100: AUC = 0.8*0 … = 10*(0.8+0.9)/2 + 10*(0.9+1)/2 + 80*1 = 98
    # weak AUC = 0.8*100 = 80, strong AUC = 100 → APGR = (98-80)/(100-80) = 0.9
    assert apgr(points, 0.8, 1.0) == pytest.approx(0.9)
    res = evaluate_router(scores, weak, strong, ties="drop")
    assert res.apgr == pytest.approx(0.9)
    # PGR 0.5 is reached halfway between 0 % (PGR 0) and 10 % (PGR 0.5): exactly 10 %
    assert res.cpt50 == pytest.approx(10.0)
    # PGR 0.8: between 10 % (0.5) and 20 % (1.0) → 10 + 0.3/0.5*10 = 16 %
    assert res.cpt80 == pytest.approx(16.0)


def test_ties_make_qcut_raise_and_are_handled_both_ways() -> None:
    scores = np.array([0.0] * 8 + [1.0, 1.0])  # heavy ties: qcut's edges are not unique
    weak = np.array([1, 0, 1, 0, 1, 0, 1, 0, 0, 0], dtype=float)
    strong = np.ones(10)
    with pytest.raises(ValueError, match="Bin edges must be unique"):
        pd.qcut(scores, 10)
    dropped = sweep(scores, weak, strong, ties="drop")
    assert len(dropped) == 3  # edges 0.0, 1.0 and the last edge 1.0 ("> edge")
    assert [p.strong_pct for p in dropped] == [100.0, 20.0, 0.0]
    broken = sweep(scores, weak, strong, ties="break", keys=list(range(10)))
    assert len(broken) == 11
    assert [p.strong_pct for p in broken] == pytest.approx(
        [100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    )
    # deterministic: the same keys give the same curve, whatever the input order
    order = np.random.default_rng(1).permutation(10)
    again = sweep(scores[order], weak[order], strong[order], ties="break", keys=list(order))
    assert [p.quality for p in again] == pytest.approx([p.quality for p in broken])


def test_cpt_on_a_non_monotonic_curve() -> None:
    # PGR 0, 0.6, 0.2 (a dip), 0.7, 1.0 at 0/25/50/75/100 % strong calls, listed as the sweep
    # produces them (threshold order: 100 % strong first).
    pts = _pts([100, 75, 50, 25, 0], [1.0, 0.7, 0.2, 0.6, 0.0])
    assert cpt(pts, 0.5, 0.0, 1.0) == pytest.approx(25 * 0.5 / 0.6)
    # 0.65 is first reached after the dip: between 50 % (0.2) and 75 % (0.7) → 72.5 %
    assert cpt(pts, 0.65, 0.0, 1.0) == pytest.approx(72.5)
    # np.interp on the curve as produced silently answers something else
    ys = [p.quality for p in pts]
    xs = [p.strong_pct for p in pts]
    assert float(np.interp(0.5, ys, xs)) != pytest.approx(25 * 0.5 / 0.6)
    assert cpt(pts, 1.5, 0.0, 1.0) is None  # never reached
    assert cpt(list(reversed(pts)), 0.65, 0.0, 1.0) == pytest.approx(72.5)


def test_random_router_is_about_half_and_oracle_above_one() -> None:
    rng = np.random.default_rng(12345)  # not one of the random routers' seeds
    n = 4000
    weak = (rng.random(n) < 0.6).astype(float)
    strong = (rng.random(n) < 0.8).astype(float)  # sometimes wrong where the weak one is right
    randoms = [evaluate_router(random_scores(n, s), weak, strong).apgr for s in range(10)]
    assert np.mean(randoms) == pytest.approx(0.5, abs=0.03)
    oracle = evaluate_router(oracle_scores(weak, strong), weak, strong)
    assert oracle.apgr > 1.0  # routing only where the strong model helps beats always-strong


def test_apgr_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError, match="strong != weak"):
        apgr(_pts([0, 100], [0.5, 0.5]), 0.5, 0.5)
    with pytest.raises(ValueError, match="one length"):
        sweep([1.0, 2.0], [0.0], [1.0, 1.0])


def test_cost_to_reach_interpolates_and_handles_dips() -> None:
    curve = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (5.0, 0.9)]
    assert cost_to_reach(curve, 0.6) == pytest.approx(1.5)
    assert cost_to_reach(curve, 0.8) == pytest.approx(2.0 + (0.8 - 0.7) / 0.2 * 3.0)
    assert cost_to_reach(curve, 0.95) is None


def test_bootstrap_interval_is_reproducible_and_covers_the_estimate() -> None:
    from tierwise.evals.metrics import apgr_interval, bootstrap_interval, evaluate_router

    rng = np.random.default_rng(5)
    n = 400
    weak = (rng.random(n) < 0.6).astype(float)
    strong = np.maximum(weak, (rng.random(n) < 0.5).astype(float))
    scores = (strong - weak) + rng.normal(0, 0.8, n)  # an informative, noisy router
    point = evaluate_router(scores, weak, strong).apgr
    lo, hi = apgr_interval(scores, weak, strong, resamples=300)
    assert lo < point < hi
    assert (lo, hi) == apgr_interval(scores, weak, strong, resamples=300)  # fixed seed
    assert lo > 0.5  # better than random, with confidence
    mean_lo, mean_hi = bootstrap_interval(lambda idx: float(weak[idx].mean()), n)
    assert mean_lo < weak.mean() < mean_hi and mean_hi - mean_lo < 0.15
