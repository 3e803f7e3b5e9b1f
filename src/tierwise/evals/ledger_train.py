"""``tierwise train --from-ledger``: fit a deployment's adapter on its own ledger.

**Examples.** Every answered request the learned classifier routed to a tier below the top
one, whose row carries the structured decision columns (migration 7) computed by the current
prior, is an example for that tier, labelled by what the deployment learned about it:

* a shadow **verdict** against the top tier (``shadow_verdicts``): the share of the two
  judge orders in which the cheaper answer was at least as good (1, 0.5 or 0), weight 1;
* users' **feedback** (``feedback``, 0–1): the score as a soft label, weight
  ``feedback_weight`` (a satisfaction score says less about "as good as the top tier" than a
  side-by-side verdict does).

**Fit.** Per tier, an L2-regularised logistic regression whose offset is the prior's logit of
that tier's predicted quality (recomputed from the stored prior logits, so it is the prior's,
not an earlier adapter's), on the standardised compact features and, when the ledger stores
prompts and enough of them are there, their text keys. The penalty pulls the correction to
zero, i.e. towards the shipped prior; its strength is chosen on the last part (by time) of the
training slice. A tier with fewer than ``min_examples`` examples keeps the prior.

**Validation.** The newest ``holdout`` share of the examples (by request time) is held out:
the adapter is fitted on the older ones only and both it and the prior are scored on the held
out slice (log loss, Brier score). It is *accepted* when its log loss there is lower than the
prior's; ``tierwise train --from-ledger`` writes it as a new version either way (so it can be
inspected) but activates only an accepted one (unless ``--force``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tierwise.classifiers import adapter as adapter_mod
from tierwise.classifiers.learned import COMPACT_NAMES, encode_array, tier_quality
from tierwise.errors import InputError
from tierwise.evals.linear import fit_logistic, log_loss, sigmoid

if TYPE_CHECKING:
    from tierwise.classifiers.learned import RouterModel
    from tierwise.config import Settings
    from tierwise.ledger.store import LedgerStore

L2_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
_EPS = 1e-4


@dataclass
class Examples:
    """Training examples for one tier, oldest first."""

    ts: list[dt.datetime] = field(default_factory=list)
    compact: list[list[float]] = field(default_factory=list)
    prior: list[float] = field(default_factory=list)  # the prior's predicted quality
    label: list[float] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)  # "verdict" | "feedback"
    prompt: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.label)


@dataclass
class LedgerData:
    tiers: list[str]
    examples: list[Examples]  # per tier below the top
    rows_read: int
    skipped: dict[str, int]
    verdicts: int
    feedback: int


def prior_quality(features: list[float], n_tiers: int) -> list[float]:
    """The prior's per-tier predicted quality from a row's stored prior tier logits."""
    z = features[:3]
    top = max(z)
    e = [math.exp(v - top) for v in z]
    total = sum(e)
    return tier_quality((e[0] / total, e[1] / total, e[2] / total), n_tiers)


def collect(
    settings: Settings,
    store: LedgerStore,
    model: RouterModel,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    feedback_weight: float = 0.5,
) -> LedgerData:
    """The examples the ledger holds for ``model`` (see the module's docstring)."""
    tiers = settings.tier_names
    top = tiers[-1]
    index = {t: i for i, t in enumerate(tiers)}
    rows = store.decision_rows(since=since, until=until)
    verdicts = store.verdicts()
    scores = store.feedback_scores(since=since, until=until)
    examples = [Examples() for _ in tiers[:-1]]
    skipped: dict[str, int] = {}
    n_verdicts = n_feedback = 0

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for row in rows:
        if row.status != "ok" or row.tier not in index:
            skip("not answered by a configured tier")
            continue
        if row.tier == top:
            skip("answered by the top tier")
            continue
        if row.decision_rule is None or row.route_features is None or row.router_model is None:
            skip("no structured decision columns")
            continue
        if not row.router_model.startswith(model.tag):
            skip("computed by another prior")
            continue
        if len(row.route_features) != len(COMPACT_NAMES):
            skip("features of another shape")
            continue
        i = index[row.tier]
        prior_q = prior_quality(row.route_features, len(tiers))[i]
        labels: list[tuple[float, float, str]] = []
        verdict = verdicts.get(row.request_id)
        if verdict is not None and verdict.reference_tier == top and verdict.tier == row.tier:
            good = verdict.cheap_good_enough
            if good is not None:
                labels.append((good, 1.0, "verdict"))
                n_verdicts += 1
        if row.request_id in scores and feedback_weight > 0:
            labels.append((scores[row.request_id], feedback_weight, "feedback"))
            n_feedback += 1
        if not labels:
            skip("no verdict or feedback")
            continue
        for label, weight, kind in labels:
            ex = examples[i]
            ex.ts.append(row.ts)
            ex.compact.append(list(row.route_features))
            ex.prior.append(prior_q)
            ex.label.append(label)
            ex.weight.append(weight)
            ex.kind.append(kind)
            ex.prompt.append(row.prompt)
    return LedgerData(tiers, examples, len(rows), skipped, n_verdicts, n_feedback)


def _logit(q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    c = np.clip(q, _EPS, 1 - _EPS)
    return np.asarray(np.log(c / (1 - c)), dtype=np.float64)


@dataclass
class TierFit:
    tier: str
    examples: int
    train: int
    held_out: int
    l2: float | None
    weights: npt.NDArray[np.float64]
    bias: float
    text: npt.NDArray[np.float64] | None
    prior_log_loss: float | None
    adapted_log_loss: float | None
    prior_brier: float | None
    adapted_brier: float | None
    note: str = ""

    def summary(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "examples": self.examples,
            "train": self.train,
            "held_out": self.held_out,
            "l2": self.l2,
            "prior_log_loss": r(self.prior_log_loss),
            "adapted_log_loss": r(self.adapted_log_loss),
            "prior_brier": r(self.prior_brier),
            "adapted_brier": r(self.adapted_brier),
            "note": self.note,
        }


def _design(
    ex: Examples,
    sel: npt.NDArray[np.intp],
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
    model: RouterModel,
    text: bool,
) -> Any:
    from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

    c = (np.asarray([ex.compact[i] for i in sel], dtype=np.float64) - mean) / scale
    if not text:
        return c
    x, _ = model.design([(ex.prompt[i] or "", "") for i in sel])
    return sparse.hstack([x, sparse.csr_matrix(c)]).tocsr()


def fit_tier(
    name: str,
    ex: Examples,
    model: RouterModel,
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
    *,
    holdout: float,
    min_examples: int,
    text: bool,
) -> TierFit:
    """Fit one tier's correction on the older examples; score prior and fit on the newest."""
    n = len(ex)
    d = len(COMPACT_NAMES)
    zero = np.zeros(d)
    if n < min_examples:
        return TierFit(
            name,
            n,
            0,
            0,
            None,
            zero,
            0.0,
            None,
            None,
            None,
            None,
            None,
            f"fewer than {min_examples} examples: the prior stands",
        )
    order = np.argsort(np.array([t.timestamp() for t in ex.ts]), kind="stable")
    n_hold = max(1, round(n * holdout))
    train, held = order[: n - n_hold], order[n - n_hold :]
    y = np.asarray(ex.label)
    w = np.asarray(ex.weight)
    off = _logit(np.asarray(ex.prior))
    x_all = _design(ex, order, mean, scale, model, text)
    pos = {int(r): k for k, r in enumerate(order)}
    x_train = x_all[[pos[int(r)] for r in train]]
    x_held = x_all[[pos[int(r)] for r in held]]
    # the penalty: chosen on the newest fifth of the training slice
    inner = max(1, len(train) // 5)
    fit_part, check_part = np.arange(len(train) - inner), np.arange(len(train) - inner, len(train))
    best_l2, best_loss = L2_GRID[-1], math.inf
    for l2 in L2_GRID:
        f = fit_logistic(
            x_train[fit_part],
            y[train][fit_part],
            l2=l2,
            weights=w[train][fit_part],
            offset=off[train][fit_part],
        )
        p = sigmoid(f.decision(x_train[check_part], off[train][check_part]))
        loss = log_loss(y[train][check_part], p, w[train][check_part])
        if loss < best_loss - 1e-12:
            best_l2, best_loss = l2, loss
    fit = fit_logistic(x_train, y[train], l2=best_l2, weights=w[train], offset=off[train])
    p_adapted = sigmoid(fit.decision(x_held, off[held]))
    p_prior = np.clip(np.asarray(ex.prior)[held], _EPS, 1 - _EPS)
    yh, wh = y[held], w[held]
    coef = np.asarray(fit.coef)
    text_w = coef[: coef.shape[0] - d] if text else None
    return TierFit(
        tier=name,
        examples=n,
        train=len(train),
        held_out=len(held),
        l2=best_l2,
        weights=coef[coef.shape[0] - d :],
        bias=fit.intercept,
        text=text_w,
        prior_log_loss=log_loss(yh, p_prior, wh),
        adapted_log_loss=log_loss(yh, p_adapted, wh),
        prior_brier=float((wh * (p_prior - yh) ** 2).sum() / wh.sum()),
        adapted_brier=float((wh * (p_adapted - yh) ** 2).sum() / wh.sum()),
    )


@dataclass
class Result:
    name: str
    path: Path
    accepted: bool
    reason: str
    data: LedgerData
    fits: list[TierFit]
    artifact: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.name,
            "path": str(self.path),
            "accepted": self.accepted,
            "reason": self.reason,
            "rows_read": self.data.rows_read,
            "verdicts": self.data.verdicts,
            "feedback": self.data.feedback,
            "skipped": self.data.skipped,
            "tiers": {f.tier: f.summary() for f in self.fits},
        }


def train_from_ledger(
    settings: Settings,
    store: LedgerStore,
    model: RouterModel,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    holdout: float = 0.2,
    min_examples: int = 30,
    feedback_weight: float = 0.5,
    text: str = "auto",
    stages: Any = None,
) -> Result:
    """Collect, fit, validate and write a new adapter version (not activated here)."""
    from tierwise.evals.train import StageRunner

    if not 0.0 < holdout < 1.0:
        raise InputError(f"--holdout must be between 0 and 1, got {holdout}")
    if text not in ("auto", "on", "off"):
        raise InputError(f"--text must be auto, on or off, got {text!r}")
    run = stages or StageRunner()
    with run.stage("reading the ledger", 1) as advance:
        data = collect(
            settings, store, model, since=since, until=until, feedback_weight=feedback_weight
        )
        advance()
    everything = [c for ex in data.examples for c in ex.compact]
    if not everything:
        raise InputError(
            "the ledger has no examples to learn from: answered requests below the top tier "
            "with the decision columns and a shadow verdict or feedback "
            f"(read {data.rows_read} rows; skipped: {json.dumps(data.skipped)})"
        )
    arr = np.asarray(everything, dtype=np.float64)
    mean, scale = arr.mean(axis=0), arr.std(axis=0)
    scale[scale < 1e-6] = 1.0  # constant (up to rounding): left unscaled
    fits: list[TierFit] = []
    with run.stage("fitting the tiers", len(data.examples)) as advance:
        for name, ex in zip(data.tiers, data.examples, strict=False):
            with_prompts = sum(1 for p in ex.prompt if p)
            use_text = text == "on" or (
                text == "auto" and len(ex) >= min_examples and with_prompts == len(ex)
            )
            fits.append(
                fit_tier(
                    name,
                    ex,
                    model,
                    mean,
                    scale,
                    holdout=holdout,
                    min_examples=min_examples,
                    text=use_text,
                )
            )
            advance()
    scored = [f for f in fits if f.adapted_log_loss is not None and f.prior_log_loss is not None]
    if not scored:
        accepted, reason = False, f"no tier has {min_examples} examples yet"
    else:
        prior = sum((f.prior_log_loss or 0.0) * f.held_out for f in scored)
        adapted = sum((f.adapted_log_loss or 0.0) * f.held_out for f in scored)
        held = sum(f.held_out for f in scored)
        accepted = adapted < prior
        reason = (
            f"held-out log loss {adapted / held:.4f} vs the prior's {prior / held:.4f} "
            f"on {held} examples: " + ("better, accepted" if accepted else "not better")
        )
    home = Path(settings.home)
    name = adapter_mod.next_version(home)
    artifact = _artifact(name, model, data, fits, mean, scale, accepted, reason, since, until)
    path = adapter_mod.version_path(home, name)
    with run.stage("writing the version", 1) as advance:
        adapter_mod.Adapter.from_dict(artifact, str(path)).check(model, data.tiers)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(artifact, separators=(",", ":")) + "\n", encoding="utf-8")
        advance()
    return Result(name, path, accepted, reason, data, fits, artifact)


def _artifact(
    name: str,
    model: RouterModel,
    data: LedgerData,
    fits: list[TierFit],
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
    accepted: bool,
    reason: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> dict[str, Any]:
    texts = [f.text for f in fits]
    text_weights = None
    if any(t is not None for t in texts):
        idf = np.sqrt(model.idf2)  # the decision gathers idf-folded weights
        cols = [t * idf if t is not None else np.zeros(len(model.vocab)) for t in texts]
        text_weights = encode_array(np.column_stack(cols).astype(np.float32))
    return {
        "format": adapter_mod.ADAPTER_FORMAT,
        "format_version": adapter_mod.ADAPTER_VERSION,
        "name": name,
        "prior": model.tag,
        "tiers": data.tiers,
        "feature_names": list(COMPACT_NAMES),
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "weights": [[float(v) for v in f.weights] for f in fits],
        "bias": [float(f.bias) for f in fits],
        "text_weights": text_weights,
        "card": {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "window": {
                "since": None if since is None else since.isoformat(),
                "until": None if until is None else until.isoformat(),
            },
            "accepted": accepted,
            "reason": reason,
            "rows_read": data.rows_read,
            "verdicts": data.verdicts,
            "feedback": data.feedback,
            "skipped": data.skipped,
            "tiers": {f.tier: f.summary() for f in fits},
        },
    }
