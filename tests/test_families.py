"""GLM families: link functions, variance, deviance and log-likelihood by their
definitions, the fit's clamps, and the response checks."""

import math

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm.exceptions import DataError
from pyglmm.families import family_of_code, get_family

RNG = np.random.default_rng(0)
ETA = RNG.normal(0, 2, 50)


@pytest.mark.parametrize("name,link,code", [("gaussian", "identity", 0), ("binomial", "logit", 1),
                                            ("poisson", "log", 2)])
def test_links_and_ids(name, link, code):
    fam = get_family(name.upper())
    assert fam.name == name and fam.link == link and fam.code == code and family_of_code(code) is fam
    mu = fam.linkinv(ETA)
    np.testing.assert_allclose(fam.linkfun(mu), ETA, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fam.mean(ETA), mu)
    want = {"gaussian": ETA, "binomial": 1 / (1 + np.exp(-ETA)), "poisson": np.exp(ETA)}[name]
    np.testing.assert_allclose(mu, want, rtol=1e-14)
    V = {"gaussian": np.ones_like(mu), "binomial": mu * (1 - mu), "poisson": mu}[name]
    np.testing.assert_allclose(fam.variance(mu), V, rtol=1e-15)


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown family 'gamma'; choose one of binomial, poisson, gaussian"):
        get_family("gamma")


def test_fit_clamps():
    """Inside the fit eta is clamped (binomial |eta| <= 30, poisson mu in [eps, e^100]);
    linkinv is not."""
    eta = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    pois, binom = get_family("poisson"), get_family("binomial")
    eps = np.finfo(float).eps
    np.testing.assert_allclose(pois.irls_mean(eta), [eps, eps, 1.0, np.exp(40.0), np.exp(100.0)],
                               rtol=1e-15)
    np.testing.assert_allclose(pois.linkinv(eta), [0.0, np.exp(-40.0), 1.0, np.exp(40.0), np.inf])
    np.testing.assert_allclose(binom.irls_mean(eta)[[0, 4]], [1 / (1 + np.exp(30.0)), 1 / (1 + np.exp(-30.0))],
                               rtol=1e-15)


def test_poisson_loglike_and_deviance_by_definition():
    fam = get_family("poisson")
    y = RNG.poisson(3.0, 50).astype(float)
    y[:3] = 0.0
    mu, w = np.exp(ETA / 4), RNG.uniform(0.5, 2, 50)
    ll = [wi * (yi * math.log(mi) - mi - math.lgamma(yi + 1)) for yi, mi, wi in zip(y, mu, w)]
    np.testing.assert_allclose(fam.loglike_obs(y, mu, w), ll, rtol=1e-12)
    # deviance = 2 (saturated log-likelihood - log-likelihood)
    np.testing.assert_allclose(fam.deviance(y, mu, w), 2 * (fam.loglike(y, y, w) - fam.loglike(y, mu, w)),
                               rtol=1e-12)
    np.testing.assert_allclose(fam.unit_deviance(y, mu), 2 * (np.where(y > 0, y * np.log(np.maximum(y, 1) / mu), 0)
                                                              - (y - mu)), rtol=1e-12)
    r = fam.resid_deviance(y, mu, w)
    np.testing.assert_allclose(r**2, w * fam.unit_deviance(y, mu), rtol=1e-12)
    assert np.all(np.sign(r) == np.sign(y - mu))


def test_binomial_loglike_and_deviance_by_definition():
    fam = get_family("binomial")
    m = RNG.integers(1, 10, 50).astype(float)
    k = np.floor(RNG.uniform(0, 1, 50) * (m + 1)).clip(0, m)
    mu = fam.linkinv(ETA)
    ll = [math.log(math.comb(int(mi), int(ki))) + ki * math.log(p) + (mi - ki) * math.log(1 - p)
          for mi, ki, p in zip(m, k, mu)]
    np.testing.assert_allclose(fam.loglike_obs(k / m, mu, m), ll, rtol=1e-10)
    np.testing.assert_allclose(fam.deviance(k / m, mu, m),
                               2 * (fam.loglike(k / m, k / m, m) - fam.loglike(k / m, mu, m)), rtol=1e-10)


def test_gaussian_loglike_by_definition():
    fam = get_family("gaussian")
    y, w, phi = RNG.normal(size=50), RNG.uniform(0.5, 2, 50), 1.7
    ll = [-0.5 * (wi * (yi - e) ** 2 / phi + math.log(2 * math.pi * phi / wi)) for yi, e, wi in zip(y, ETA, w)]
    np.testing.assert_allclose(fam.loglike_obs(y, ETA, w, phi), ll, rtol=1e-12)
    np.testing.assert_allclose(fam.deviance(y, ETA, w), np.sum(w * (y - ETA) ** 2), rtol=1e-12)


def poisson_frame():
    rng = np.random.default_rng(1)
    n = 300
    df = pd.DataFrame({"u": rng.integers(0, 20, n), "v": rng.integers(0, 15, n),
                       "x": rng.standard_normal(n)})
    df["count"] = rng.poisson(np.exp(0.5 + 0.3 * df.x)).astype(float)
    df.index = df.index + 500
    return df


def test_poisson_refuses_negative_counts_naming_column_and_row():
    df = poisson_frame()
    df.loc[[507, 520], "count"] = [-1.0, -2.0]
    with pytest.raises(DataError, match=r"response 'count' must be non-negative counts for the poisson "
                                        r"family: 2 row\(s\) are negative, first -1.0 at row 507"):
        pyglmm.glmm("count ~ x + (1|u) + (1|v)", df, family="poisson")


def test_poisson_warns_about_non_integer_counts_naming_column_and_row():
    df = poisson_frame()
    df.loc[512, "count"] = 2.5
    with pytest.warns(UserWarning, match=r"response 'count' has 1 non-integer count\(s\) for the poisson "
                                         r"family, first 2.5 at row 512") as record:
        res = pyglmm.glmm("count ~ x + (1|u) + (1|v)", df, family="poisson")
    assert record[0].filename == __file__  # attributed to the caller's line
    assert res.converged



@pytest.mark.filterwarnings("ignore::pyglmm.SingularFitWarning")  # this toy binomial model is singular
def test_binomial_warns_about_non_integer_successes_or_trials():
    df = poisson_frame()
    df["n"] = df["count"] + 2.0
    df.loc[515, "n"] = 4.5
    with pytest.warns(UserWarning, match=r"response 'count': 1 row\(s\) have non-integer successes or trials, "
                                         r"first .* of 4.5 at row 515") as record:
        pyglmm.glmm("count ~ x + (1|u) + (1|v)", df, trials="n")
    assert record[0].filename == __file__
