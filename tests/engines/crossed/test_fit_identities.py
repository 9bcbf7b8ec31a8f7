"""Identities any correct fit satisfies, and property tests on random designs."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import pyglmm
from cases import small_crossed

TOL = dict(rtol=1e-7, atol=1e-9)
# The identities hold at the fixed point: converge to it closely.
TIGHT = dict(tol=1e-14, inner_tol=1e-14, var_tol=1e-10, max_iter=5000)


def assert_same_fit(a, b, tol=TOL):
    np.testing.assert_allclose(a.coef, b.coef, **tol)
    np.testing.assert_allclose(a.sigma, b.sigma, **tol)
    np.testing.assert_allclose(a.se, b.se, **tol)


def test_aggregated_binomial_equals_bernoulli_rows():
    X, y, groups = small_crossed(n=600)
    X = np.round(X)  # few distinct rows, so that aggregation merges some
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y, **groups})
    agg = df.groupby(["x1", "x2", "g0", "g1"], as_index=False).agg(s=("y", "sum"), n=("y", "size"))
    assert len(agg) < len(df)
    full = pyglmm.glmm("y ~ x1 + x2 + (1|g0) + (1|g1)", df, **TIGHT)
    short = pyglmm.glmm("s ~ x1 + x2 + (1|g0) + (1|g1)", agg, trials="n", **TIGHT)
    assert_same_fit(full, short)


def test_prior_weight_two_equals_duplicated_rows():
    X, y, groups = small_crossed()
    w = np.where(np.arange(len(y)) % 3 == 0, 2.0, 1.0)
    dup = np.repeat(np.arange(len(y)), w.astype(int))
    a = pyglmm.glmm_from_arrays(X, y, groups, weights=w, **TIGHT)
    b = pyglmm.glmm_from_arrays(X[dup], y[dup], {k: v[dup] for k, v in groups.items()}, **TIGHT)
    assert_same_fit(a, b)


def test_zero_weight_rows_do_not_count():
    X, y, groups = small_crossed()
    keep = np.arange(len(y)) % 4 != 0
    w = keep.astype(float)
    a = pyglmm.glmm_from_arrays(X, y, groups, weights=w, **TIGHT)
    b = pyglmm.glmm_from_arrays(X[keep], y[keep], {k: v[keep] for k, v in groups.items()}, **TIGHT)
    np.testing.assert_allclose(a.coef, b.coef, **TOL)
    np.testing.assert_allclose(a.sigma, b.sigma, **TOL)


def test_offset_shifts_its_coefficient():
    X, y, groups = small_crossed()
    a = pyglmm.glmm_from_arrays(X, y, groups, **TIGHT)
    b = pyglmm.glmm_from_arrays(X, y, groups, offset=0.7 * X[:, 0], **TIGHT)
    np.testing.assert_allclose(b.coef["x1"], a.coef["x1"] - 0.7, **TOL)
    np.testing.assert_allclose(b.coef[["Intercept", "x2"]], a.coef[["Intercept", "x2"]], **TOL)


def test_estimated_dispersion_is_the_papers_eq15():
    X, y, groups = small_crossed(n=800)
    res = pyglmm.glmm_from_arrays(X, y, groups, dispersion="estimate")
    mu = res.predict(X=X, groups=groups, type="response")
    pearson = np.sum((y - mu) ** 2 / (mu * (1 - mu)))
    assert res.pearson_chi2 == pytest.approx(pearson, rel=1e-6)
    assert res.dispersion == pytest.approx(pearson / res.df_resid, rel=1e-6)
    # df = N - p - sum_k (q_k - nu_k), with nu_k from the diagonal approximation
    assert len(y) - 3 - 36 < res.df_resid < len(y) - 3


def indicators(groups, res):
    """Dense indicator matrices Z_k, one column per level of the fit (in its order)."""
    return [(np.asarray(groups[f])[:, None] == res.b[f].index.to_numpy()[None, :]).astype(float)
            for f in res.factor_names]


def test_three_crossed_factors_reach_the_pql_fixed_point():
    """With three factors, the returned fit is the fixed point of both halves of PQL:
    (beta, b) solves problem (12) at the working response and weights of (beta, b)
    itself, and every sigma_k^2 = |b_k|^2 / (q_k - nu_k) (eq. 14 with the diagonal
    trace of eq. 25).  Listing the factors in another order changes nothing."""
    X, y, groups = small_crossed(n=3000, K=3, R=40, C=30, sigma=(0.9, 0.6))
    res = pyglmm.glmm_from_arrays(X, y, groups, se=False, **TIGHT)
    assert res.converged and list(res.sigma.index) == ["g0", "g1", "g2"]
    Xd = np.column_stack([np.ones(len(y)), X])
    Zs = indicators(groups, res)
    b = np.concatenate([res.b[f] for f in res.factor_names])
    eta = Xd @ res.coef.to_numpy() + np.hstack(Zs) @ b
    mu = 1 / (1 + np.exp(-eta))
    w = mu * (1 - mu)
    beta_pls, b_pls = dense_pls(Xd, eta + (y - mu) / w, w, Zs, res.sigma.to_numpy() ** 2)
    np.testing.assert_allclose(res.coef, beta_pls, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(b, b_pls, atol=1e-8)
    for f, Z in zip(res.factor_names, Zs):
        lam = 1 / res.sigma[f] ** 2
        nu = lam * np.sum(1 / (Z.T @ w + lam))
        assert res.sigma[f] ** 2 == pytest.approx(np.sum(res.b[f] ** 2) / (Z.shape[1] - nu), rel=1e-7)
    assert 0.6 < res.sigma["g0"] < 1.3 and 0.3 < res.sigma["g1"] < 0.9  # truth 0.9, 0.6
    shuffled = pyglmm.glmm_from_arrays(X, y, {f: groups[f] for f in ["g2", "g0", "g1"]}, se=False,
                                       **TIGHT)
    np.testing.assert_allclose(shuffled.coef, res.coef, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(shuffled.sigma[res.factor_names], res.sigma, rtol=1e-7, atol=1e-9)


def dense_pls(X, z, w, Zs, sigma2):
    """Solve the penalised weighted least squares problem (12) densely."""
    Z = np.hstack(Zs)
    C = np.hstack([X, Z])
    P = np.diag(np.concatenate([np.zeros(X.shape[1])] + [np.full(z_.shape[1], 1 / s) for z_, s in zip(Zs, sigma2)]))
    sol = np.linalg.solve(C.T @ (w[:, None] * C) + P, C.T @ (w * z))
    return sol[: X.shape[1]], sol[X.shape[1]:]


@pytest.mark.filterwarnings("ignore::pyglmm.SingularFitWarning")
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(60, 400), R=st.integers(2, 25),
       C=st.integers(1, 12), K=st.integers(1, 3))
@example(seed=6111, n=81, R=24, C=7, K=2)  # coupled, slow variances: unlimited jumps oscillated
@example(seed=194367, n=232, R=20, C=6, K=3)  # a variance at the boundary: jumps are needed
def test_gaussian_fit_solves_the_mixed_model_equations(seed, n, R, C, K):
    """At the converged variances, (beta, b) is the dense solution of problem (12)."""
    X, y, groups = small_crossed(n=n, R=R, C=C, K=K, seed=seed)
    y = y + X[:, 0] + np.random.default_rng(seed).standard_normal(n)
    res = pyglmm.glmm_from_arrays(X, y, groups, family="gaussian", inner_tol=1e-14, tol=1e-14,
                                  var_tol=1e-10, max_iter=10_000, se=False)
    Xd = np.column_stack([np.ones(n), X])
    Zs = [(groups[f][:, None] == res.b[f].index.to_numpy()[None, :]).astype(float) for f in groups]
    beta, b = dense_pls(Xd, y, np.full(n, 1 / res.dispersion), Zs, res.sigma.to_numpy() ** 2)
    scale = np.abs(y).max()
    np.testing.assert_allclose(res.coef, beta, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(np.concatenate([res.b[f] for f in groups]), b, atol=1e-6 * scale)


@pytest.mark.filterwarnings("ignore::pyglmm.SingularFitWarning")
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_row_order_and_level_labels_do_not_matter(seed):
    X, y, groups = small_crossed(n=300, seed=seed % 7)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    relabel = {f: rng.permutation(200)[v] * 3 + 11 for f, v in groups.items()}  # other labels, same partition
    a = pyglmm.glmm_from_arrays(X, y, groups, **TIGHT)
    b = pyglmm.glmm_from_arrays(X[perm], y[perm], {f: v[perm] for f, v in relabel.items()}, **TIGHT)
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-6, atol=1e-8)


@pytest.mark.filterwarnings("ignore::pyglmm.SingularFitWarning")
def test_boundary_fit_returns_modes_at_the_returned_variances():
    """Found by hypothesis: a fit that stopped on an extrapolated step returned the
    modes of the previous variances."""
    X, y, groups = small_crossed(n=66, R=24, C=2, K=3, seed=287611)
    y = y + X[:, 0] + np.random.default_rng(287611).standard_normal(66)
    res = pyglmm.glmm_from_arrays(X, y, groups, family="gaussian", inner_tol=1e-14, tol=1e-14,
                                  var_tol=1e-10, max_iter=10_000, se=False)
    assert not res.history.accelerated.iloc[-1]
    Xd = np.column_stack([np.ones(66), X])
    Zs = [(groups[f][:, None] == res.b[f].index.to_numpy()[None, :]).astype(float) for f in groups]
    beta, b = dense_pls(Xd, y, np.full(66, 1 / res.dispersion), Zs, res.sigma.to_numpy() ** 2)
    np.testing.assert_allclose(np.concatenate([res.b[f] for f in groups]), b, atol=1e-8)


def test_rows_reordered_by_the_largest_factor_give_the_same_fit(monkeypatch, backend):
    """Fits reorder rows by their largest factor when its table is big; force it here."""
    import pyglmm.data.design as design
    X, y, groups = small_crossed(n=2000, R=300, C=40)
    shuffle = np.random.default_rng(0).permutation(len(y))
    X, y, groups = X[shuffle], y[shuffle], {k: v[shuffle] for k, v in groups.items()}
    plain = pyglmm.glmm_from_arrays(X, y, groups, backend=backend, compare_naive=True)
    monkeypatch.setattr(design, "SORT_ABOVE_BYTES", 0)
    sorted_ = pyglmm.glmm_from_arrays(X, y, groups, backend=backend, compare_naive=True)
    np.testing.assert_allclose(sorted_.coef, plain.coef, rtol=1e-9)
    np.testing.assert_allclose(sorted_.se, plain.se, rtol=1e-9)
    np.testing.assert_allclose(sorted_.sigma, plain.sigma, rtol=1e-9)
    np.testing.assert_allclose(sorted_.naive.to_numpy(), plain.naive.to_numpy(), rtol=1e-9)
    assert sorted_.iterations == plain.iterations
