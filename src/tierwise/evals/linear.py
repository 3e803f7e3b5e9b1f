"""L2-regularised logistic regression with soft labels and an offset, for training.

One small, exact implementation used everywhere tierwise fits a linear head: the shipped
prior's heads (``tierwise train``), the benchmark heads fitted at evaluation time
(``tierwise eval routerbench``), and a deployment's adapter (``tierwise train --from-ledger``).

It minimises ``Σ wᵢ·[log(1 + e^{zᵢ}) − yᵢ·zᵢ] + (l2 / 2)·‖β − β₀‖²`` with
``zᵢ = offsetᵢ + xᵢ·β + b`` by Newton-CG with exact Hessian-vector products (scipy): labels
``yᵢ`` may be any value in [0, 1] (a judge's tie is 0.5), ``offset`` carries a prior's logit so
the fit learns a correction to it, and ``β₀`` (default 0) is what the weights are pulled
towards. The intercept is not penalised.
With ``l2 = 1/C`` this is scikit-learn's ``LogisticRegression(C=C)`` for hard labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LinearFit:
    coef: FloatArray  # (n_features,)
    intercept: float
    iterations: int
    converged: bool

    def decision(self, x: Any, offset: FloatArray | None = None) -> FloatArray:
        z = np.asarray(x @ self.coef, dtype=np.float64) + self.intercept
        return z if offset is None else z + offset


def _log1pexp(z: FloatArray) -> FloatArray:
    return np.asarray(np.logaddexp(0.0, z), dtype=np.float64)


def sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def fit_logistic(
    x: Any,
    y: npt.ArrayLike,
    *,
    l2: float,
    weights: npt.ArrayLike | None = None,
    offset: npt.ArrayLike | None = None,
    toward: npt.ArrayLike | None = None,
    fit_intercept: bool = True,
    max_iter: int = 500,
    tol: float = 1e-6,
) -> LinearFit:
    """Fit one logistic head (see the module's docstring). ``x`` is a dense array or a scipy
    sparse matrix of shape (n, d); ``y`` in [0, 1]."""
    from scipy.optimize import minimize  # type: ignore[import-untyped,unused-ignore]

    labels = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if np.any((labels < 0) | (labels > 1)) or np.isnan(labels).any():
        raise ValueError("labels must lie in [0, 1]")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    off = np.zeros(n) if offset is None else np.asarray(offset, dtype=np.float64)
    beta0 = np.zeros(d) if toward is None else np.asarray(toward, dtype=np.float64)
    if l2 <= 0:
        raise ValueError("l2 must be positive")
    xt = x.T
    # wᵢ·σ(zᵢ)·(1 − σ(zᵢ)) at the parameters of the last evaluation, and those parameters
    curvature = np.zeros(n)
    at: list[FloatArray | None] = [None]

    def update_curvature(params: FloatArray) -> None:
        last = at[0]
        if last is not None and np.array_equal(last, params):
            return
        beta, b = params[:d], (params[d] if fit_intercept else 0.0)
        p = sigmoid(np.asarray(x @ beta, dtype=np.float64) + b + off)
        curvature[:] = w * p * (1.0 - p)
        at[0] = params.copy()

    def loss_grad(params: FloatArray) -> tuple[float, FloatArray]:
        beta, b = params[:d], (params[d] if fit_intercept else 0.0)
        z = np.asarray(x @ beta, dtype=np.float64) + b + off
        loss = float(w @ (_log1pexp(z) - labels * z))
        p = sigmoid(z)
        curvature[:] = w * p * (1.0 - p)
        at[0] = params.copy()
        r = w * (p - labels)
        diff = beta - beta0
        loss += 0.5 * l2 * float(diff @ diff)
        grad_beta = np.asarray(xt @ r, dtype=np.float64) + l2 * diff
        if fit_intercept:
            return loss, np.concatenate([grad_beta, [float(r.sum())]])
        return loss, grad_beta

    def hessp(params: FloatArray, v: FloatArray) -> FloatArray:
        update_curvature(params)
        vb, vc = v[:d], (v[d] if fit_intercept else 0.0)
        u = curvature * (np.asarray(x @ vb, dtype=np.float64) + vc)
        hb = np.asarray(xt @ u, dtype=np.float64) + l2 * vb
        return np.concatenate([hb, [float(u.sum())]]) if fit_intercept else hb

    start = np.concatenate([beta0, [0.0]]) if fit_intercept else beta0.copy()
    res = minimize(
        loss_grad,
        start,
        jac=True,
        hessp=hessp,
        method="Newton-CG",
        options={"maxiter": max_iter, "xtol": tol},
    )
    params = np.asarray(res.x, dtype=np.float64)
    return LinearFit(
        coef=params[:d].copy(),
        intercept=float(params[d]) if fit_intercept else 0.0,
        iterations=int(res.nit),
        converged=bool(res.success),
    )


def log_loss(y: npt.ArrayLike, p: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> float:
    """Mean (weighted) cross-entropy of probabilities ``p`` against labels ``y`` in [0, 1]."""
    yy = np.asarray(y, dtype=np.float64)
    pp = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    ww = np.ones(len(yy)) if weights is None else np.asarray(weights, dtype=np.float64)
    per = -(yy * np.log(pp) + (1 - yy) * np.log(1 - pp))
    return float((ww * per).sum() / ww.sum())


@dataclass(frozen=True, slots=True)
class SoftmaxFit:
    coef: FloatArray  # (n_classes, n_features)
    intercept: FloatArray  # (n_classes,)
    iterations: int
    converged: bool

    def decision(self, x: Any) -> FloatArray:
        return np.asarray(x @ self.coef.T, dtype=np.float64) + self.intercept

    def predict_proba(self, x: Any) -> FloatArray:
        z = self.decision(x)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def fit_softmax(
    x: Any,
    y: npt.ArrayLike,
    n_classes: int,
    *,
    l2: float,
    max_iter: int = 500,
    tol: float = 1e-6,
) -> SoftmaxFit:
    """Multinomial logistic regression (labels 0 … n_classes − 1), L2 on the weights only, by
    Newton-CG with exact Hessian-vector products; scikit-learn's multinomial
    ``LogisticRegression(C=1/l2)`` up to the solver's tolerance."""
    from scipy.optimize import minimize  # type: ignore[import-untyped,unused-ignore]

    labels = np.asarray(y, dtype=np.int64)
    n, d = x.shape
    k = n_classes
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must be integers in [0, {k}) of shape ({n},)")
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0
    xt = x.T
    state: dict[str, Any] = {}

    def unpack(params: FloatArray) -> tuple[FloatArray, FloatArray]:
        return params[: d * k].reshape(k, d), params[d * k :]

    def probs(params: FloatArray) -> FloatArray:
        key = params.tobytes()
        if state.get("key") != key:
            w, b = unpack(params)
            z = np.asarray(x @ w.T, dtype=np.float64) + b
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            state["p"] = e / e.sum(axis=1, keepdims=True)
            state["logp"] = z - np.log(e.sum(axis=1, keepdims=True))
            state["key"] = key
        return np.asarray(state["p"], dtype=np.float64)

    def loss_grad(params: FloatArray) -> tuple[float, FloatArray]:
        w, _ = unpack(params)
        p = probs(params)
        loss = -float((onehot * state["logp"]).sum()) + 0.5 * l2 * float((w * w).sum())
        r = p - onehot  # (n, k)
        gw = np.asarray(xt @ r, dtype=np.float64).T + l2 * w
        return loss, np.concatenate([gw.ravel(), r.sum(axis=0)])

    def hessp(params: FloatArray, v: FloatArray) -> FloatArray:
        p = probs(params)
        vw, vb = unpack(v)
        u = np.asarray(x @ vw.T, dtype=np.float64) + vb  # (n, k)
        s = p * u
        m = s - p * s.sum(axis=1, keepdims=True)
        hw = np.asarray(xt @ m, dtype=np.float64).T + l2 * vw
        return np.concatenate([hw.ravel(), m.sum(axis=0)])

    res = minimize(
        loss_grad,
        np.zeros(d * k + k),
        jac=True,
        hessp=hessp,
        method="Newton-CG",
        options={"maxiter": max_iter, "xtol": tol},
    )
    w, b = unpack(np.asarray(res.x, dtype=np.float64))
    return SoftmaxFit(w.copy(), b.copy(), int(res.nit), bool(res.success))
