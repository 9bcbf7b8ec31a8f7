"""Cov(beta-hat) of eq. (24), computed in O(N) by backfitting, against dense algebra."""

import numpy as np
import pytest

import pyglmm
from cases import small_crossed


def dense_eq24(X, groups, res, prior=None):
    """Eq. (24) with N x N matrices, from the fit's public output."""
    n = X.shape[0]
    eta = res.predict(X=X[:, 1:] if res.intercept else X, groups=groups)
    if res.family == "binomial":
        mu = 1 / (1 + np.exp(-eta))
        w = mu * (1 - mu)
    else:
        w = np.ones(n)
    w = w * (1 if prior is None else prior) / res.dispersion
    Zs = [(np.asarray(groups[f])[:, None] == res.b[f].index.to_numpy()[None, :]).astype(float)
          for f in res.factor_names]
    Z = np.hstack(Zs)
    lam = np.concatenate([np.full(z.shape[1], 1 / res.sigma[f] ** 2) for z, f in zip(Zs, res.factor_names)])
    W = np.diag(w)
    S = Z @ np.linalg.solve(Z.T @ W @ Z + np.diag(lam), Z.T @ W)
    WS = W @ (np.eye(n) - S)
    H = X.T @ WS @ X
    Sigma = sum(res.sigma[f] ** 2 * z @ z.T for z, f in zip(Zs, res.factor_names)) + np.diag(1 / w)
    Hinv = np.linalg.inv(H)
    return Hinv @ X.T @ WS @ Sigma @ WS @ X @ Hinv, np.linalg.inv(X.T @ np.linalg.solve(Sigma, X))


@pytest.mark.parametrize("K", [1, 2, 3])
@pytest.mark.parametrize("intercept", [True, False])
def test_backfitted_covariance_equals_dense_eq24(backend, K, intercept):
    X, y, groups = small_crossed(n=300, K=K)
    res = pyglmm.glmm_from_arrays(X, y, groups, intercept=intercept, backend=backend)
    Xd = np.column_stack([np.ones(len(y)), X]) if intercept else X
    cov, gls = dense_eq24(Xd, groups, res)
    np.testing.assert_allclose(res.cov.to_numpy(), cov, rtol=1e-6, atol=1e-8 * np.abs(cov).max())
    # with the exact smoother the sandwich collapses to (X' V^-1 X)^-1
    np.testing.assert_allclose(cov, gls, rtol=1e-8, atol=1e-14)


def test_gaussian_weighted_covariance_equals_dense(backend):
    X, y, groups = small_crossed(n=250)
    prior = np.random.default_rng(0).uniform(0.5, 3, len(y))
    res = pyglmm.glmm_from_arrays(X, y + X[:, 0], groups, family="gaussian", weights=prior,
                                  backend=backend)
    cov, _ = dense_eq24(np.column_stack([np.ones(len(y)), X]), groups, res, prior=prior)
    np.testing.assert_allclose(res.cov.to_numpy(), cov, rtol=1e-6, atol=1e-8 * np.abs(cov).max())
