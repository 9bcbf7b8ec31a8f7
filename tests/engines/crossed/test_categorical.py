"""Categorical fixed effects kept as codes (Design.xcat) fit as their dummy columns do."""

import time

import numpy as np
import pandas as pd
import pytest

from pyglmm import backends as _backend
from pyglmm.data.design import build_design
from pyglmm.engines.crossed.api import _fit, _options
from pyglmm.families import get_family


def crossed_with_categoricals(seed=0, n=4000, sizes=(3, 2), levels=(60, 25)):
    """A binary crossed problem whose X is a dense block (intercept, two covariates)
    and categoricals with sizes[j] dummies each (code -1: the reference level).

    Returns the dense block, the categoricals' dummy column ids (xcat), the whole
    X with the dummies as columns, y and the groups."""
    rng = np.random.default_rng(seed)
    dense = np.column_stack([np.ones(n), rng.standard_normal((n, 2))])
    starts = dense.shape[1] + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    local = np.column_stack([rng.integers(-1, s, n) for s in sizes])
    xcat = np.ascontiguousarray(np.where(local >= 0, local + starts, -1).astype(np.int32))
    X = np.zeros((n, dense.shape[1] + sum(sizes)))
    X[:, : dense.shape[1]] = dense
    for j in range(len(sizes)):
        has = xcat[:, j] >= 0
        X[np.flatnonzero(has), xcat[has, j]] = 1.0
    groups = {f"g{k}": rng.integers(0, q, n) for k, q in enumerate(levels)}
    eta = X @ rng.normal(0, 0.5, X.shape[1]) + sum(rng.normal(0, 0.7, q)[groups[f"g{k}"]]
                                                   for k, q in enumerate(levels))
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return dense, xcat, X, y, groups


@pytest.mark.parametrize("family", ["binomial", "gaussian"])
def test_fit_with_categoricals_as_codes_equals_dummy_columns(backend, family):
    dense, xcat, X, y, groups = crossed_with_categoricals()
    if family == "gaussian":
        y = y + np.cos(np.arange(len(y)))
    fam = get_family(family)
    kern = _backend.kernels(backend)
    names = [f"x{j}" for j in range(X.shape[1])]
    fits = []
    for split in (False, True):
        d = build_design(X, y, groups, fam, feature_names=names, response_name="y", kern=kern,
                         nthreads=2)
        if split:  # the same model, its dummies as codes (X'X and the checks as before)
            d.X, d.xcat = np.ascontiguousarray(dense), xcat
            assert d.p == X.shape[1] and d.X.shape[1] == 3
        opts = _options(fam, None, 1e-10, 1e-10, 1e-6, 100, 1000)
        given = (y, None, None, pd.RangeIndex(len(y)))  # the caller's rows, for per-row outputs
        fits.append(_fit(d, fam, "y ~ x", time.perf_counter(), opts, True, True, backend, kern, 2,
                         None, given))
    a, b = fits
    assert a.converged and b.converged
    np.testing.assert_allclose(b.coef, a.coef, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(b.cov, a.cov, rtol=1e-8, atol=1e-13)
    np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-9)
    np.testing.assert_allclose(b.deviance, a.deviance, rtol=1e-12)
    np.testing.assert_allclose(b.naive.to_numpy(), a.naive.to_numpy(), rtol=1e-8, atol=1e-13)
