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


def _same(a, b, path="", rtol=1e-9, atol=1e-10):
    """Two JSON-like values equal, numbers to the tolerances (timings excepted)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for key in a:
            if key not in ("seconds", "timings"):
                _same(a[key], b[key], f"{path}.{key}", rtol, atol)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{path}[{i}]", rtol, atol)
    elif isinstance(a, float) and not isinstance(b, bool):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=path)
    else:
        assert a == b, path


STITCHFIX = "y ~ C(client_fit) + edgy + boho + chest + dress + C(material) + C(item_fit) + (1|client) + (1|item)"
NO_INTERCEPT = "y ~ 0 + C(material) + chest + shade + C(client_fit) + (1|client) + (1|item)"
ONLY_CODES = "y ~ 0 + C(material) + (1|client) + (1|item)"  # no dense column at all


# categoricals before, between and after numeric columns; with and without intercept;
# rows in the caller's order and sorted by client (as at scale)
@pytest.mark.parametrize("formula, reorder", [(STITCHFIX, False), (STITCHFIX, True), (NO_INTERCEPT, False),
                                              (ONLY_CODES, True)])
def test_formula_fit_with_categoricals_as_codes_equals_the_dense_fit_in_every_output(
        backend, formula, reorder, monkeypatch, tmp_path):
    """The formula path keeps categoricals as codes (dense columns first, then the
    dummies) and reorders the coefficients once; with every column dense (the
    coding's ``matrix``, the formula's order) each output is the same.  Measured
    differences: coefficients, SEs, sigmas and modes 1e-13 or less (the sums of
    the two layouts round differently), so 1e-9 relative and 1e-10 absolute."""
    import pyglmm
    from pyglmm.data.coding import FixedCoding

    df = pyglmm.simulate_stitchfix(4000, 500, 100, seed=5, as_frame=True)
    df["shade"] = np.where(df.client % 3 == 0, "dark", np.where(df.client % 3 == 1, "light", "mid"))
    if reorder:
        monkeypatch.setattr("pyglmm.data.design.SORT_ABOVE_BYTES", 0)
    fit = lambda: pyglmm.glmm(formula, df, backend=backend, compare_naive=True)  # noqa: E731
    codes = fit()
    with monkeypatch.context() as m:  # the same fit with every column dense, in formula order
        m.setattr(FixedCoding, "split", lambda self, frame: (self.matrix(frame), None))
        m.setattr(FixedCoding, "design_names", property(lambda self: self.names))
        dense = fit()
    assert list(codes.params.index) == codes.coding.names
    assert codes.coding.names != codes.coding.design_names or formula == ONLY_CODES
    assert codes.converged and dense.converged
    _same(dense.to_dict(full=True), codes.to_dict(full=True))  # coef, cov, sigma, modes, naive, ...
    for name in ("fittedvalues", "resid_pearson", "resid_deviance"):
        np.testing.assert_allclose(getattr(codes, name), getattr(dense, name), rtol=1e-10, atol=1e-12)
    pd.testing.assert_frame_equal(codes.conf_int(), dense.conf_int(), rtol=1e-9)
    pd.testing.assert_series_equal(codes.pvalues, dense.pvalues, rtol=1e-9, atol=1e-12)
    drop_time = lambda text: "\n".join(line for line in text.splitlines() if " s on backend" not in line)  # noqa: E731
    assert drop_time(str(codes.summary())) == drop_time(str(dense.summary()))
    new = df.sample(500, random_state=1)
    for res in (codes, dense):
        res.save(tmp_path / "model.json")
        res.loaded = pyglmm.load(tmp_path / "model.json")
    np.testing.assert_allclose(codes.loaded.predict(new), dense.loaded.predict(new), rtol=1e-10)
    np.testing.assert_allclose(codes.predict(new), dense.predict(new), rtol=1e-10)
    pd.testing.assert_series_equal(codes.loaded.params, dense.params, rtol=1e-9, atol=1e-10)
