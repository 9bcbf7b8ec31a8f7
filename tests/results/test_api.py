"""The statsmodels- and lme4-named outputs of a result against direct computations."""

import json
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

import pyglmm
import pyglmm.data.design
from cases import case_formula, load_case

POISSON_FORMULA = "y ~ x1 + x2 + (1|row) + (1|col)"


def shuffled(df, seed=0):
    """The rows in random order, labelled by a non-default index."""
    out = df.sample(frac=1.0, random_state=seed)
    out.index = 1000 + 3 * np.arange(len(out))
    return out


@pytest.fixture(scope="module")
def binary():
    df = shuffled(load_case("crossed_trend_s1e4")[0])
    return df, pyglmm.glmm(case_formula(df), df)


@pytest.fixture(scope="module")
def poisson():
    df = shuffled(load_case("crossed_poisson_s1e4")[0])
    return df, pyglmm.glmm(POISSON_FORMULA, df, family="poisson", offset="logexp", weights="w")


def test_fixed_effect_inference(binary):
    _, res = binary
    pd.testing.assert_series_equal(res.params, res.coef.rename(None))
    pd.testing.assert_series_equal(res.fixef(), res.params)
    cov = res.cov_params()
    pd.testing.assert_frame_equal(cov, res.cov)
    cov.iloc[0, 0] = -1.0  # a copy
    assert res.cov.iloc[0, 0] > 0
    np.testing.assert_allclose(res.bse, np.sqrt(np.diag(res.cov)), rtol=1e-15)
    z = res.params / res.bse
    np.testing.assert_allclose(res.zvalues, z, rtol=1e-15)
    np.testing.assert_allclose(res.tvalues, z, rtol=1e-15)
    p = [math.erfc(abs(v) / math.sqrt(2)) for v in z]  # two-sided normal tail
    np.testing.assert_allclose(res.pvalues, p, rtol=1e-12, atol=1e-300)
    assert list(res.pvalues.index) == list(res.params.index)
    for alpha in (0.05, 0.1, 0.01):
        q = NormalDist().inv_cdf(1 - alpha / 2)
        ci = res.conf_int(alpha)
        assert list(ci.columns) == [0, 1] and list(ci.index) == list(res.params.index)
        np.testing.assert_allclose(ci[0], res.params - q * res.bse, rtol=1e-12)
        np.testing.assert_allclose(ci[1], res.params + q * res.bse, rtol=1e-12)
    for bad in (1.5, "a", None):
        with pytest.raises(ValueError, match="alpha must lie in"):
            res.conf_int(bad)
    assert res.nobs == res.n_obs == 11236


def test_random_effects_and_variance_components(binary):
    df, res = binary
    re_ = res.ranef()
    assert list(re_) == ["row", "col"]
    for f in ("row", "col"):
        assert list(re_[f].columns) == ["condval", "condsd"] and re_[f].index.name == f
        pd.testing.assert_series_equal(re_[f].condval, res.b[f], check_names=False)
        # diagonal conditional sd: 1 / sqrt(sum of the level's working weights + 1/sigma^2),
        # with binomial working weights mu (1 - mu) at the fitted means
        mu = res.fittedvalues
        W = (mu * (1 - mu)).groupby(df[f]).sum()
        np.testing.assert_allclose(re_[f].condsd, 1 / np.sqrt(W + 1 / res.sigma[f] ** 2), rtol=1e-9)
    vc = res.VarCorr()
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert list(vc.grp) == ["row", "col"] and list(vc.var1) == ["(Intercept)"] * 2
    assert vc.var2.isna().all()
    np.testing.assert_allclose(vc.vcov, res.sigma**2, rtol=1e-15)
    np.testing.assert_allclose(vc.sdcor, res.sigma, rtol=1e-15)
    assert res.ngroups.to_dict() == {"row": df.row.nunique(), "col": df.col.nunique()}


def test_gaussian_variance_components_have_the_residual_row():
    df, _ = load_case("crossed_gauss_s3e3")
    res = pyglmm.glmm(case_formula(df), df, family="gaussian")
    vc = res.VarCorr()
    assert list(vc.grp) == ["row", "col", "Residual"] and pd.isna(vc.var1.iloc[-1])
    assert vc.vcov.iloc[-1] == res.dispersion and vc.sdcor.iloc[-1] == np.sqrt(res.dispersion)
    assert "Residual" in str(res)
    # gaussian: fitted = eta, Pearson residuals = response residuals
    eta = res.predict(df)
    np.testing.assert_allclose(res.fittedvalues, eta, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(res.resid_pearson, df.y - eta, rtol=1e-12, atol=1e-12)


def test_binary_fitted_values_and_residuals(binary):
    df, res = binary
    mu = res.fittedvalues
    pd.testing.assert_index_equal(mu.index, df.index)  # the caller's rows and labels
    eta = res.predict(df)
    np.testing.assert_allclose(mu, 1 / (1 + np.exp(-eta)), rtol=1e-13)
    np.testing.assert_allclose(mu, res.predict(df, type="response"), rtol=1e-15)
    y = df.y.to_numpy(float)
    np.testing.assert_allclose(res.resid_response, y - mu, rtol=1e-15)
    pearson = (y - mu) / np.sqrt(mu * (1 - mu))
    np.testing.assert_allclose(res.resid_pearson, pearson, rtol=1e-12)
    np.testing.assert_allclose(np.sum(pearson**2), res.pearson_chi2, rtol=1e-10)
    dev = np.sign(y - mu) * np.sqrt(-2 * np.log(np.where(y == 1, mu, 1 - mu)))
    np.testing.assert_allclose(res.resid_deviance, dev, rtol=1e-12)
    np.testing.assert_allclose(np.sum(dev**2), res.deviance, rtol=1e-10)
    for name in ("resid_response", "resid_pearson", "resid_deviance"):
        pd.testing.assert_index_equal(getattr(res, name).index, df.index)


def test_poisson_fitted_values_and_weighted_residuals(poisson):
    df, res = poisson
    mu = res.fittedvalues
    np.testing.assert_allclose(mu, np.exp(res.predict(df)), rtol=1e-14)
    y, w = df.y.to_numpy(float), df.w.to_numpy(float)
    np.testing.assert_allclose(res.resid_response, y - mu, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(res.resid_pearson, np.sqrt(w) * (y - mu) / np.sqrt(mu), rtol=1e-12)
    np.testing.assert_allclose(np.sum(res.resid_pearson**2), res.pearson_chi2, rtol=1e-10)
    unit = 2 * (np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0) - (y - mu))
    # where y ~ mu the unit deviance is a difference of O(y) terms (absolute rounding
    # ~1e-16 y), and its square root magnifies that to ~1e-8 sqrt(y)
    np.testing.assert_allclose(res.resid_deviance, np.sign(y - mu) * np.sqrt(w * unit),
                               rtol=1e-10, atol=1e-7)
    np.testing.assert_allclose(np.sum(res.resid_deviance**2), res.deviance, rtol=1e-10)


def test_binomial_trials_residuals_follow_statsmodels():
    """With trials m: fittedvalues are probabilities, resid_response is successes - m mu,
    Pearson residuals sqrt(m w) (p - mu) / sqrt(V(mu)), as statsmodels' GLM."""
    rng = np.random.default_rng(5)
    n = 600
    g1, g2 = rng.integers(0, 30, n), rng.integers(0, 20, n)
    m = rng.integers(1, 9, n)
    x = rng.standard_normal(n)
    succ = rng.binomial(m, 1 / (1 + np.exp(-(0.3 * x + rng.normal(0, 0.8, 30)[g1]))))
    w = rng.uniform(0.5, 2, n)
    res = pyglmm.glmm_from_arrays(x[:, None], succ, {"g1": g1, "g2": g2}, trials=m, weights=w)
    mu = res.fittedvalues.to_numpy()
    np.testing.assert_allclose(mu, res.predict(X=x[:, None], groups={"g1": g1, "g2": g2},
                                               type="response"), rtol=1e-15)
    p = succ / m
    np.testing.assert_allclose(res.resid_response, succ - m * mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.resid_pearson, np.sqrt(m * w) * (p - mu) / np.sqrt(mu * (1 - mu)),
                               rtol=1e-12)
    np.testing.assert_allclose(np.sum(res.resid_pearson**2), res.pearson_chi2, rtol=1e-10)
    np.testing.assert_allclose(np.sum(res.resid_deviance**2), res.deviance, rtol=1e-10)
    assert isinstance(res.fittedvalues.index, pd.RangeIndex)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_per_row_outputs_in_callers_order_when_the_design_sorts_rows(monkeypatch, family):
    case, formula, kw = {"binomial": ("crossed_trend_s1e4", None, {}),
                         "poisson": ("crossed_poisson_s1e4", POISSON_FORMULA,
                                     dict(offset="logexp", weights="w"))}[family]
    df = shuffled(load_case(case)[0], seed=3)
    formula = formula or case_formula(df)
    plain = pyglmm.glmm(formula, df, family=family, **kw)
    monkeypatch.setattr(pyglmm.data.design, "SORT_ABOVE_BYTES", 0)
    # the design does reorder these rows now
    d = pyglmm.data.design.build_design(
        np.ones((len(df), 1)), df.y.to_numpy(), {"row": df.row, "col": df["col"]},
        pyglmm.families.get_family(family), feature_names=["a"], response_name="y",
        kern=pyglmm.backends.kernels(), nthreads=1)
    assert d.order is not None and not np.array_equal(d.order, np.arange(len(df)))
    np.testing.assert_array_equal(d.y, df.y.to_numpy(float)[d.order])
    res = pyglmm.glmm(formula, df, family=family, **kw)
    pd.testing.assert_index_equal(res.fittedvalues.index, df.index)
    np.testing.assert_allclose(res.fittedvalues, res.predict(df, type="response"), rtol=1e-14)
    for name in ("fittedvalues", "resid_response", "resid_pearson", "resid_deviance"):
        np.testing.assert_allclose(getattr(res, name), getattr(plain, name), rtol=1e-7, atol=1e-9)


def test_without_standard_errors(binary):
    df, _ = binary
    res = pyglmm.glmm(case_formula(df), df, se=False)
    for name in ("bse", "zvalues", "tvalues", "pvalues"):
        with pytest.raises(AttributeError, match="bse is not available: .*se=False"):
            getattr(res, name)
    with pytest.raises(AttributeError, match="cov_params is not available"):
        res.cov_params()
    with pytest.raises(AttributeError, match="bse is not available"):
        res.conf_int()
    assert res.se is None and list(res.coef_table().columns) == ["coef"]
    assert "Fixed effects:" in str(res)


def test_loaded_model_has_estimates_but_no_per_row_outputs(binary, tmp_path):
    df, res = binary
    res.save(tmp_path / "fit.json")
    back = pyglmm.load(tmp_path / "fit.json")
    assert isinstance(back, pyglmm.GLMMResult)
    pd.testing.assert_frame_equal(back.conf_int(), res.conf_int())
    pd.testing.assert_frame_equal(back.VarCorr(), res.VarCorr())
    pd.testing.assert_frame_equal(back.ranef()["col"], res.ranef()["col"], check_index_type=False)
    for name in ("fittedvalues", "resid_response", "resid_pearson", "resid_deviance"):
        with pytest.raises(AttributeError, match=f"{name} is not available: a loaded model"):
            getattr(back, name)
    np.testing.assert_allclose(back.predict(df, type="response"), res.fittedvalues, rtol=1e-14)


def test_a_dask_fit_says_where_its_rows_are(binary):
    """A fit of a Dask DataFrame keeps no rows; the message points to the lazy predict."""
    import dataclasses

    _, res = binary
    remote = dataclasses.replace(res, rows=None, cluster={"workers": 2, "threads": 2, "partitions": 4})
    for name in ("fittedvalues", "resid_deviance"):
        with pytest.raises(AttributeError, match=rf"{name} is not available: the rows of a Dask fit stay "
                                                 r"on the workers; .*predict\(ddf"):
            getattr(remote, name)


@pytest.mark.parametrize("which", ["binary", "poisson"])
def test_no_likelihood_is_reported(which, request):
    _, res = request.getfixturevalue(which)
    full = res.to_dict(full=True)
    texts = [str(res), json.dumps(res.to_dict()), json.dumps(full, default=str)]
    for text in texts:
        low = text.lower()
        for word in ("loglik", "log-likelihood", "log likelihood", "llf", "aic", "bic"):
            assert word not in low, word
    assert "PQL has no likelihood" in texts[0]
    for name in ("llf", "aic", "bic"):
        with pytest.raises(AttributeError, match=f"{name} is not available: a PQL fit has no likelihood"):
            getattr(res, name)


def test_per_row_storage_is_small_and_owned(binary, poisson):
    """One float64 per row for the means; the response in its narrowest exact dtype
    (a 0/1 response: 1 byte per row), copied: changing the caller's array later
    changes no residual."""
    for (df, res), ydtype in [(binary, np.uint8), (poisson, np.uint8)]:
        assert res.rows.mu.dtype == np.float64 and res.rows.mu.nbytes == 8 * len(df)
        assert res.rows.y.dtype == ydtype
    assert poisson[1].rows.weights.dtype == np.uint8 and poisson[1].rows.trials is None
    rng = np.random.default_rng(2)
    g1, g2 = rng.integers(0, 25, 500), rng.integers(0, 20, 500)
    y = rng.normal(0, 1, 25)[g1] + rng.normal(0, 0.5, 20)[g2] + rng.standard_normal(500)
    res = pyglmm.glmm_from_arrays(np.ones((500, 1)), y, {"g1": g1, "g2": g2}, intercept=False,
                                  family="gaussian")
    assert res.rows.y.dtype == np.float64
    before = res.resid_response.copy()
    y[:] = 0.0
    pd.testing.assert_series_equal(res.resid_response, before)
