"""The direct fit: its derivatives, the Taylor expansion about the cluster centre, and
its estimates against glmer (exact where no covariate varies within a cluster)."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

import pyglmm
from cases import DATA
from pyglmm.engines.summaries import direct, fit_summaries, site_summary
from pyglmm.engines.summaries.api import combine
from pyglmm.engines.summaries.result import SummariesResult

FORMULA = "y ~ x1 + x2 + C(x3)"


@pytest.fixture(scope="module")
def case():
    df = pd.read_csv(DATA / "summaries_paper.csv")
    with open(DATA / "summaries_paper.fits.jsonl") as fh:
        fits = [json.loads(line) for line in fh]
    return df, {(f["formula"], f["engine"]): f for f in fits}


def _problem(df, formula, order):
    stats = combine([site_summary(df, formula, "cluster", order)])
    return direct.Problem(stats["n"], stats["events"], stats["mean"], stats["y_cross"],
                          stats["moments"], stats["index"], order), stats


def test_node_derivatives_match_finite_differences(case):
    problem, _ = _problem(case[0], FORMULA, 4)
    rng = np.random.default_rng(1)
    theta = np.r_[-4.0, rng.normal(0, 0.5, 4), math.log(0.8)]
    b = rng.normal(0, 1, (30, 3))
    h, grad, hess, h_b = direct._terms(problem, theta, b, 4, "theta")
    eps = 1e-6
    for i in range(len(theta)):
        step = np.zeros(len(theta))
        step[i] = eps
        up, down = (direct._terms(problem, theta + s, b, 4, "theta") for s in (step, -step))
        np.testing.assert_allclose((up[0] - down[0]) / (2 * eps), grad[..., i], atol=2e-6)
        np.testing.assert_allclose((up[1] - down[1]) / (2 * eps), hess[..., i, :], atol=2e-6)
    _, hb, hbb = direct._terms(problem, theta, b, 4, "b")
    np.testing.assert_allclose(hb, h_b, rtol=1e-14)
    up, down = (direct._terms(problem, theta, b + s, 4, "b") for s in (eps, -eps))
    np.testing.assert_allclose((up[0] - down[0]) / (2 * eps), hb, atol=2e-6)
    np.testing.assert_allclose((up[1] - down[1]) / (2 * eps), hbb, atol=2e-6)


@pytest.mark.parametrize("nagq", [1, 5])
def test_quadrature_gradient_is_exact_with_moving_nodes(case, nagq):
    # the gradient includes the nodes' movement (implicit derivatives of modes and scales):
    # it must match finite differences of the log-likelihood itself (measured: < 1e-6)
    problem, _ = _problem(case[0], FORMULA, 3)
    obj = direct.Objective(problem, 3, nagq)
    theta = np.array([-4.1, 0.3, -0.2, 1.1, 0.4, math.log(0.9)])
    obj.evaluate(theta)
    grad = obj.grad.copy()
    eps = 1e-5
    for i in range(len(theta)):
        step = np.zeros(len(theta))
        step[i] = eps
        diff = (obj.fun(theta - step) - obj.fun(theta + step)) / (2 * eps)
        assert diff == pytest.approx(grad[i], abs=1e-5)


def test_taylor_about_the_cluster_centre_approaches_the_exact_likelihood(case):
    df = case[0]
    X = np.column_stack([df.x1, df.x2, df.x3 == "b", df.x3 == "c"]).astype(float)
    y, g = df.y.to_numpy(float), df.cluster.to_numpy()
    theta = np.array([-4.0, 0.36, -0.18, 1.29, 0.52, math.log(0.9)])
    b = np.linspace(-2, 2, 30)
    eta = theta[0] + X @ theta[1:5] + b[g]
    exact = np.bincount(g, y * eta - np.logaddexp(0, eta))
    errors = []
    for order in (2, 3, 4):
        problem, _ = _problem(df, FORMULA, order)
        h = direct._terms(problem, theta, b[:, None], order, "value")[:, 0]
        approx = h + 0.5 * b**2 * math.exp(-2 * theta[-1]) + theta[-1] + direct.LOG_SQRT_2PI
        errors.append(np.abs(approx - exact).max())
    # measured largest error per cluster of 100 rows: 0.26, 0.096, 0.035 for K = 2, 3, 4
    assert errors[0] > 2 * errors[1] > 4 * errors[2]
    assert errors[2] < 0.05


@pytest.mark.parametrize("formula", ["y ~ 1", "y ~ w"])
@pytest.mark.parametrize("nagq", [1, 7])
def test_exact_without_within_cluster_covariates(case, formula, nagq):
    # no covariate varies within a cluster: every M_k (k >= 2) is 0, the likelihood is
    # exact and the direct fit is glmer's; measured differences < 1.6e-6 (nAGQ=1, where
    # glmer's own PIRLS tolerance dominates) and < 2.5e-7 (nAGQ=7)
    df, fits = case
    ref = fits[(formula, f"glmer_nAGQ{nagq}")]
    res = fit_summaries([site_summary(df, formula, "cluster", 2)], nagq=nagq)
    tol = 5e-6 if nagq == 1 else 1e-6
    assert res.converged
    np.testing.assert_allclose(res.params, np.atleast_1d(ref["beta"]), atol=tol)
    np.testing.assert_allclose(res.bse, np.atleast_1d(ref["se"]), atol=5 * tol + 3e-6)
    assert res.sigma.iloc[0] == pytest.approx(ref["sigma_cluster"], abs=tol)
    assert res.llf == pytest.approx(ref["loglik"], abs=tol)


def test_order_4_is_close_to_glmer_and_order_2_is_not(case):
    df, fits = case
    ref = fits[(FORMULA, "glmer_nAGQ7")]
    msg = {K: site_summary(df, FORMULA, "cluster", K) for K in (2, 4)}
    res4 = fit_summaries([msg[4]], nagq=7)
    # measured: coefficients within 0.004, sd within 0.0015, se within 0.0012, logLik 0.023
    np.testing.assert_allclose(res4.params, ref["beta"], atol=0.006)
    np.testing.assert_allclose(res4.bse, ref["se"], atol=0.002)
    assert res4.sigma.iloc[0] == pytest.approx(ref["sigma_cluster"], abs=0.003)
    assert res4.llf == pytest.approx(ref["loglik"], abs=0.05)
    res2 = fit_summaries([msg[2]], nagq=7)
    assert np.abs(res2.params - ref["beta"]).max() > 0.3  # order 2 misses (measured 0.58)


def test_order_1_is_refused(case):
    with pytest.raises(ValueError, match="order >= 2"):
        fit_summaries([site_summary(case[0], FORMULA, "cluster", 1)])


def test_sites_split_give_the_same_fit_and_clusters_may_not_repeat(case, tmp_path):
    df = case[0]
    whole = fit_summaries([site_summary(df, FORMULA, "cluster", 3)])
    parts = [site_summary(df[df.cluster < 12], FORMULA, "cluster", 3, site="a"),
             site_summary(df[df.cluster >= 12], FORMULA, "cluster", 3, site="b")]
    split = fit_summaries(parts)
    np.testing.assert_allclose(split.params, whole.params, rtol=1e-12)
    np.testing.assert_allclose(split.bse, whole.bse, rtol=1e-9)
    assert split.sites == ["a", "b"]
    with pytest.raises(ValueError, match=r"site 'b'.*cluster '0' also appears in message 0"):
        fit_summaries([parts[0], site_summary(df[df.cluster < 3], FORMULA, "cluster", 3, site="b")])
    with pytest.raises(ValueError, match=r"message 1 \(site 'b'\): field 'order' differs"):
        fit_summaries([parts[0], site_summary(df[df.cluster >= 12], FORMULA, "cluster", 2, site="b")])
    # a cluster's label compares by value across the sites' dtypes: 3 and 3.0 are one cluster
    floats = site_summary(df[df.cluster < 3].astype({"cluster": float}), FORMULA, "cluster", 3, site="b")
    with pytest.raises(ValueError, match=r"site 'b'.*cluster '0' also appears in message 0"):
        fit_summaries([parts[0], floats])
    with pytest.raises(ValueError, match=r"message 1 \(site 'a'\): site name 'a' is also the name in message 0"):
        fit_summaries([parts[0], site_summary(df[df.cluster >= 12], FORMULA, "cluster", 3, site="a")])


def test_result_prints_saves_and_loads(case, tmp_path):
    res = fit_summaries([site_summary(case[0], FORMULA, "cluster", 3)], nagq=3)
    text = str(res)
    assert "order-3 polynomial-approximate likelihood" in text and "3 nodes" in text
    assert "Pearson" not in text and "C(x3)[T.b]" in text
    brief = res.to_dict()
    assert brief["fit_method"] == "direct" and brief["order"] == 3 and brief["match_residual"] is None
    res.save(tmp_path / "m.json")
    back = pyglmm.load(tmp_path / "m.json")
    assert isinstance(back, SummariesResult) and back.order == 3 and back.fit_method == "direct"
    pd.testing.assert_series_equal(back.params, res.params)
    pd.testing.assert_frame_equal(back.cov_params(), res.cov_params())
    # predict codes new rows with the sites' coding and adds the cluster's mode
    new = case[0].head(3)
    eta = res.predict(new)
    b = res.b["cluster"].loc[new.cluster.astype(str)].to_numpy()
    X = np.column_stack([np.ones(3), new.x1, new.x2, new.x3 == "b", new.x3 == "c"]).astype(float)
    np.testing.assert_allclose(eta, X @ res.params.to_numpy() + b, rtol=1e-12)
    with pytest.raises(AttributeError, match="fittedvalues"):
        res.fittedvalues


def test_no_maximum_is_reported_not_hidden():
    # a within-cluster spread of x'beta far beyond the series' radius (pi): the order-4
    # approximation has no maximum near the data, and the fit says so
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 60)
    x = rng.normal(0, 3, len(g))
    y = (rng.random(len(g)) < 1 / (1 + np.exp(-(2 * x + rng.normal(0, 1, 20)[g])))).astype(int)
    msg = site_summary(pd.DataFrame({"g": g, "x": x, "y": y}), "y ~ x", "g", 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_summaries([msg])
    assert not res.converged and res.cov is None
    assert any(issubclass(w.category, pyglmm.ConvergenceWarning) for w in caught)
    assert "did not converge" in res.warnings[0]
