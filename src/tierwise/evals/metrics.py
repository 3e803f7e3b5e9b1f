"""The RouteLLM paper's router metrics, with the two traps of its code handled explicitly.

A router gives each prompt a score (higher = more in need of the strong model). Thresholds are
the 11 edges of ``pandas.qcut(scores, 10)``; a prompt goes to the strong model when its score is
``>= edge`` (``> edge`` for the last edge). Each threshold gives a point (% strong calls,
quality). PGR = (quality − weak) / (strong − weak). APGR is the trapezoid area under the quality
curve over % strong calls, normalised as (AUC − weak_AUC) / (strong_AUC − weak_AUC). CPT(x%) is the
smallest % of strong calls whose PGR reaches x%, by linear interpolation along the curve.

Trap 1, ties: ``qcut`` raises on duplicate edges when many scores are equal. ``ties="break"``
(the default) ranks the scores first, breaking ties deterministically by the SHA-256 of the
prompt (a key that does not depend on the router), so there are always 11 distinct edges and a
tied group is split as a fixed pseudo-random order would split it. ``ties="drop"`` keeps the raw
scores and drops duplicate edges, as ``qcut(..., duplicates="drop")`` does (fewer points).

Trap 2, a non-monotonic curve: ``np.interp`` assumes increasing x and silently returns nonsense
otherwise. :func:`cpt` walks the curve in order of increasing % strong calls and interpolates
inside the first segment that crosses the target, so a later dip cannot move the answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Ties = Literal["break", "drop"]
FloatArray = npt.NDArray[np.float64]
N_BINS = 10


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    strong_pct: float  # 0–100
    quality: float  # mean quality of the routed answers (accuracy, or a judge score)


@dataclass(frozen=True, slots=True)
class RouterResult:
    points: list[CurvePoint]
    apgr: float
    cpt50: float | None
    cpt80: float | None
    weak_quality: float
    strong_quality: float


def tiebreak_key(prompt: str) -> int:
    """A router-independent, deterministic order for tied scores."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")


def _quantile_edges(values: FloatArray, n_bins: int) -> FloatArray:
    # pandas.qcut's edges: linear-interpolated quantiles at 0, 1/n, …, 1.
    return np.asarray(np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)), dtype=np.float64)


def sweep(
    scores: Sequence[float] | FloatArray,
    weak: Sequence[float] | FloatArray,
    strong: Sequence[float] | FloatArray,
    *,
    ties: Ties = "break",
    keys: Sequence[int] | FloatArray | None = None,
    n_bins: int = N_BINS,
) -> list[CurvePoint]:
    """The paper's threshold sweep. ``keys`` break ties (``ties="break"``); default: index."""
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weak, dtype=np.float64)
    g = np.asarray(strong, dtype=np.float64)
    if not (len(s) == len(w) == len(g)) or len(s) == 0:
        raise ValueError("scores, weak and strong must be non-empty and of one length")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if ties == "break":
        tb = np.asarray(keys if keys is not None else range(len(s)), dtype=np.float64)
        order = np.lexsort((tb, s))  # by score, then by the tie-break key
        values = np.empty(len(s), dtype=np.float64)
        values[order] = np.arange(len(s), dtype=np.float64)
    else:
        values = s
    edges = _quantile_edges(values, n_bins)
    if ties == "drop":
        edges = np.unique(edges)
    points: list[CurvePoint] = []
    last = len(edges) - 1
    for i, edge in enumerate(edges):
        chosen = values > edge if i == last else values >= edge
        quality = float(np.where(chosen, g, w).mean())
        threshold = float(edge) if ties == "drop" else _score_at_rank(s, values, float(edge))
        points.append(CurvePoint(threshold, float(chosen.mean() * 100.0), quality))
    return points


def _score_at_rank(scores: FloatArray, ranks: FloatArray, rank: float) -> float:
    """The raw score that sits at a (possibly fractional) rank edge, for display."""
    idx = int(np.searchsorted(np.sort(ranks), rank, side="left"))
    idx = min(idx, len(ranks) - 1)
    return float(np.sort(scores)[idx])


def _auc(points: Sequence[CurvePoint]) -> float:
    ordered = sorted(points, key=lambda p: (p.strong_pct, p.quality))
    xs = np.array([p.strong_pct for p in ordered])
    ys = np.array([p.quality for p in ordered])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def apgr(points: Sequence[CurvePoint], weak_quality: float, strong_quality: float) -> float:
    """Area under the PGR curve: (AUC − weak_AUC) / (strong_AUC − weak_AUC), trapezoid rule.

    The weak and strong "curves" are flat lines over the same % strong span as the router's
    curve (0–100 % for a full sweep).
    """
    xs = [p.strong_pct for p in points]
    span = max(xs) - min(xs)
    if span <= 0 or strong_quality == weak_quality:
        raise ValueError("APGR needs a curve spanning some % strong and strong != weak")
    weak_auc, strong_auc = weak_quality * span, strong_quality * span
    return (_auc(points) - weak_auc) / (strong_auc - weak_auc)


def pgr(quality: float, weak_quality: float, strong_quality: float) -> float:
    return (quality - weak_quality) / (strong_quality - weak_quality)


def cpt(
    points: Sequence[CurvePoint], target: float, weak_quality: float, strong_quality: float
) -> float | None:
    """Smallest % strong calls whose PGR reaches ``target`` (0.5 for CPT(50%)); None if never.

    Walks the curve by increasing % strong calls and interpolates linearly inside the first
    segment that crosses ``target`` — correct for a non-monotonic curve, unlike ``np.interp``.
    """
    ordered = sorted(points, key=lambda p: (p.strong_pct, p.quality))
    prev_x: float | None = None
    prev_y = 0.0
    for p in ordered:
        y = pgr(p.quality, weak_quality, strong_quality)
        if y >= target:
            if prev_x is None or y == prev_y:
                return p.strong_pct
            return prev_x + (target - prev_y) * (p.strong_pct - prev_x) / (y - prev_y)
        prev_x, prev_y = p.strong_pct, y
    return None


def evaluate_router(
    scores: Sequence[float] | FloatArray,
    weak: Sequence[float] | FloatArray,
    strong: Sequence[float] | FloatArray,
    *,
    ties: Ties = "break",
    keys: Sequence[int] | None = None,
) -> RouterResult:
    w = float(np.mean(weak))
    g = float(np.mean(strong))
    points = sweep(scores, weak, strong, ties=ties, keys=keys)
    return RouterResult(
        points=points,
        apgr=apgr(points, w, g),
        cpt50=cpt(points, 0.5, w, g),
        cpt80=cpt(points, 0.8, w, g),
        weak_quality=w,
        strong_quality=g,
    )


def random_scores(n: int, seed: int) -> FloatArray:
    return np.random.default_rng(seed).random(n)


def oracle_scores(
    weak: Sequence[float] | FloatArray, strong: Sequence[float] | FloatArray
) -> FloatArray:
    """The oracle's score: how much the strong model gains on this prompt."""
    return np.asarray(strong, dtype=np.float64) - np.asarray(weak, dtype=np.float64)


# -- uncertainty ------------------------------------------------------------------------------
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def bootstrap_interval(
    statistic: Callable[[npt.NDArray[np.int64]], float | None],
    n: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
    tick: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` items resampled with
    replacement (fixed seed, so intervals reproduce). Resamples where the statistic is
    undefined (None) are left out. ``tick()`` is called after each resample."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        v = statistic(rng.integers(0, n, n))
        if v is not None and np.isfinite(v):
            values.append(v)
        if tick is not None:
            tick()
    if not values:
        raise ValueError("the statistic is undefined on every resample")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def apgr_interval(
    scores: Sequence[float] | FloatArray,
    weak: Sequence[float] | FloatArray,
    strong: Sequence[float] | FloatArray,
    *,
    keys: Sequence[int] | None = None,
    ties: Ties = "break",
    resamples: int = BOOTSTRAP_RESAMPLES,
    tick: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """95 % bootstrap interval of APGR: prompts resampled with replacement, the whole sweep
    (edges, weak and strong quality) recomputed on each resample."""
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weak, dtype=np.float64)
    g = np.asarray(strong, dtype=np.float64)
    k = np.asarray(keys if keys is not None else range(len(s)), dtype=np.float64)

    def one(idx: npt.NDArray[np.int64]) -> float | None:
        wq, gq = float(w[idx].mean()), float(g[idx].mean())
        if wq == gq:
            return None
        points = sweep(s[idx], w[idx], g[idx], ties=ties, keys=k[idx])
        return apgr(points, wq, gq)

    return bootstrap_interval(one, len(s), resamples=resamples, tick=tick)
