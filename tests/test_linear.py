"""The one logistic-regression fitter tierwise trains every head with (soft labels, an offset
carrying a prior, the pull towards it)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

from tierwise.evals.linear import fit_logistic, log_loss, sigmoid


def _data(n: int = 400, d: int = 6, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    true = np.array([1.5, -2.0, 0.5, 0.0, 0.0, 1.0])[:d]
    y = (rng.random(n) < sigmoid(x @ true + 0.3)).astype(float)
    return x, y


def test_matches_scikit_learn_on_hard_labels() -> None:
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped,unused-ignore]

    x, y = _data()
    ours = fit_logistic(x, y, l2=1.0)
    theirs = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(x, y)
    assert ours.converged
    assert ours.coef == pytest.approx(theirs.coef_[0], abs=1e-4)
    assert ours.intercept == pytest.approx(theirs.intercept_[0], abs=1e-4)
    # sparse input gives the same fit
    again = fit_logistic(sparse.csr_matrix(x), y, l2=1.0)
    assert again.coef == pytest.approx(ours.coef, abs=1e-6)


def test_soft_labels_equal_duplicated_weighted_rows() -> None:
    x, y = _data(200)
    soft = np.clip(y * 0.8 + 0.1, 0, 1)
    direct = fit_logistic(x, soft, l2=2.0)
    doubled = fit_logistic(
        np.vstack([x, x]),
        np.concatenate([np.ones(len(x)), np.zeros(len(x))]),
        l2=2.0,
        weights=np.concatenate([soft, 1 - soft]),
    )
    assert direct.coef == pytest.approx(doubled.coef, abs=1e-5)


def test_offset_is_a_prior_the_penalty_pulls_towards() -> None:
    x, y = _data()
    prior = np.full(len(y), 2.0)  # a confident, wrong prior logit
    strong_pull = fit_logistic(x, y, l2=1e6, offset=prior, fit_intercept=False)
    assert np.abs(strong_pull.coef).max() < 1e-3  # the prior stands
    free = fit_logistic(x, y, l2=0.01, offset=prior)
    p_free = sigmoid(free.decision(x, prior))
    p_prior = sigmoid(prior)
    assert log_loss(y, p_free) < log_loss(y, p_prior)


def test_bad_labels_are_refused() -> None:
    x, _ = _data(10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        fit_logistic(x, np.full(10, 2.0), l2=1.0)
    with pytest.raises(ValueError, match="shape"):
        fit_logistic(x, np.zeros(3), l2=1.0)


def test_softmax_matches_scikit_learn_multinomial() -> None:
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped,unused-ignore]

    from tierwise.evals.linear import fit_softmax

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5))
    y = np.argmax(x[:, :3] + rng.normal(0, 0.7, (300, 3)), axis=1)
    ours = fit_softmax(x, y, 3, l2=0.5)
    theirs = LogisticRegression(C=2.0, tol=1e-10, max_iter=10_000).fit(x, y)
    assert ours.converged
    assert ours.predict_proba(x) == pytest.approx(theirs.predict_proba(x), abs=1e-4)
    with pytest.raises(ValueError, match="labels must be integers"):
        fit_softmax(x, np.full(300, 3), 3, l2=1.0)
