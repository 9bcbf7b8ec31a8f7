"""The AGQ engine on awkward input: a gaussian response far from unit scale or
location and covariates far from unit scale (the fit is equivariant), prior
weights of zero (those rows contribute nothing), and magnitudes the fit cannot
represent (a DataError naming the column)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from cases import DATA

import pyglmm

SLEEP = "Reaction ~ Days + (Days|Subject)"


@pytest.fixture(scope="module")
def sleep():
    return pd.read_csv(DATA / "sleepstudy.csv")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return pyglmm.glmm(SLEEP, sleep, "gaussian", nagq=1)


@pytest.mark.parametrize("a, c", [(1e6, 0.0), (1.0, 1e6), (1e-6, 0.0), (-3.0, 7.0), (1e150, 0.0),
                                  (1e-150, 0.0)])
def test_gaussian_fit_is_equivariant_in_the_response(sleep, sleep_fit, a, c):
    """The fit on a y + c is the fit on y mapped: beta -> a beta (+ c on the intercept),
    standard errors, random effects and sigma times |a|, log-likelihood less n log|a|."""
    ref = sleep_fit
    res = pyglmm.glmm(SLEEP, sleep.assign(Reaction=a * sleep.Reaction + c), "gaussian", nagq=1)
    assert res.converged and not res.warnings
    coef = a * ref.coef
    coef["Intercept"] += c
    # measured: <= 1e-13 relative (coefficients), <= 6e-12 (the rest), 1.5e-11 (loglik)
    np.testing.assert_allclose(res.coef, coef, rtol=1e-10)
    np.testing.assert_allclose(res.se, abs(a) * ref.se, rtol=1e-10)
    np.testing.assert_allclose(res.re_cov["Subject"], a**2 * ref.re_cov["Subject"], rtol=1e-10)
    np.testing.assert_allclose(res.dispersion, a**2 * ref.dispersion, rtol=1e-10)
    np.testing.assert_allclose(res.b["Subject"], a * ref.b["Subject"], rtol=1e-9, atol=1e-10 * abs(a))
    np.testing.assert_allclose(res.b_var["Subject"], a**2 * ref.b_var["Subject"], rtol=1e-9)
    assert res.loglik == pytest.approx(ref.loglik - len(sleep) * np.log(abs(a)), rel=1e-14, abs=1e-9)
    np.testing.assert_allclose(res.fittedvalues, a * ref.fittedvalues + c, rtol=1e-10)


def test_gaussian_response_whose_variance_underflows_is_named(sleep):
    with pytest.raises(pyglmm.DataError, match=r"^response 'Reaction' varies too little for double "
                                               r"precision: its residual standard deviation 4\.77e-299 is "
                                               r"below 7\.46e-155, whose square underflows"):
        pyglmm.glmm(SLEEP, sleep.assign(Reaction=sleep.Reaction * 1e-300), "gaussian", nagq=1)


def test_gaussian_offset_is_standardised_with_the_response(sleep, sleep_fit):
    """An offset in the response's units: the fit on (y + o, offset o) is the fit on y."""
    o = 1e6 * np.sin(np.arange(len(sleep)))
    res = pyglmm.glmm(SLEEP, sleep.assign(Reaction=sleep.Reaction + o), "gaussian", nagq=1,
                      offset=o)
    assert res.converged
    np.testing.assert_allclose(res.coef, sleep_fit.coef, rtol=1e-8)
    np.testing.assert_allclose(res.re_cov["Subject"], sleep_fit.re_cov["Subject"], rtol=1e-8)
    assert res.loglik == pytest.approx(sleep_fit.loglik, abs=1e-8)


def zero_weighted(df, rows, level_column):
    """``df`` with weight column ``w``: 1, but 0 on ``rows`` and on every row of the
    last level of ``level_column``."""
    w = np.ones(len(df))
    w[rows] = 0.0
    w[(df[level_column] == df[level_column].iloc[-1]).to_numpy()] = 0.0
    return df.assign(w=w)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("nagq", [1, 5])
def test_zero_weight_rows_contribute_nothing(backend, nagq):
    """A fit with rows of weight 0 is the fit without them; like glmer, they count in
    n_obs, a level with no weighted row stays with b = 0 and the prior's variance,
    and predicting it gives the population value."""
    if backend not in pyglmm.backends.available_backends("agq"):
        pytest.skip(f"{backend} backend not built")
    cbpp = zero_weighted(pd.read_csv(DATA / "agq_cbpp.csv"), [0, 5, 7], "herd")
    formula, options = "incidence ~ period + (1|herd)", dict(nagq=nagq, trials="size", backend=backend)
    res = pyglmm.glmm(formula, cbpp, weights="w", **options)
    kept = pyglmm.glmm(formula, cbpp[cbpp.w > 0], **options)
    assert res.converged and res.n_obs == len(cbpp) and kept.n_obs == (cbpp.w > 0).sum()
    np.testing.assert_allclose(res.coef, kept.coef, rtol=1e-12)
    np.testing.assert_allclose(res.cov, kept.cov, rtol=1e-10)
    np.testing.assert_allclose(res.sigma, kept.sigma, rtol=1e-12)
    assert res.loglik == pytest.approx(kept.loglik, abs=1e-10)
    last = cbpp.herd.iloc[-1]
    assert res.n_levels == {"herd": cbpp.herd.nunique()}
    np.testing.assert_allclose(res.b["herd"].drop(last), kept.b["herd"], rtol=1e-10, atol=1e-12)
    assert res.b["herd"][last] == 0 and res.b_var["herd"][last] == pytest.approx(res.sigma["herd"]**2)
    population = res.predict(cbpp.tail(1).assign(herd=-1))
    assert res.predict(cbpp.tail(1), new_levels="error").iloc[0] == pytest.approx(population.iloc[0])


def test_zero_weight_rows_gaussian(sleep):
    """Gaussian (whose density has log w in its constant): still the fit without them."""
    df = zero_weighted(sleep, [0, 1, 2, 50], "Subject")
    res = pyglmm.glmm(SLEEP, df, "gaussian", nagq=1, weights="w")
    kept = pyglmm.glmm(SLEEP, df[df.w > 0], "gaussian", nagq=1)
    assert res.converged
    np.testing.assert_allclose(res.coef, kept.coef, rtol=1e-12)
    np.testing.assert_allclose(res.cov, kept.cov, rtol=1e-10)
    np.testing.assert_allclose(res.re_cov["Subject"], kept.re_cov["Subject"], rtol=1e-10)
    assert res.loglik == pytest.approx(kept.loglik, abs=1e-10)


def test_zero_weights_that_alias_a_column_are_named(sleep):
    """A fixed-effect column that is constant over the rows of positive weight."""
    df = sleep.assign(w=(sleep.Days > 0).astype(float), d0=(sleep.Days == 0).astype(float))
    with pytest.raises(pyglmm.SingularMatrixError, match="over the rows of positive weight.*'d0'"):
        pyglmm.glmm("Reaction ~ Days + d0 + (1|Subject)", df, "gaussian", nagq=1, weights="w")


@pytest.mark.parametrize("bad, what", [(-1.0, "negative weights, first at row 7"),
                                       (np.nan, "1 NaN or infinite value.*first at row 7"),
                                       (np.inf, "1 NaN or infinite value.*first at row 7")])
def test_bad_weights_are_refused(sleep, bad, what):
    df = sleep.assign(w=1.0)
    df.loc[7, "w"] = bad
    with pytest.raises(pyglmm.DataError, match=f"weights column 'w'.*{what}"):
        pyglmm.glmm(SLEEP, df, "gaussian", nagq=1, weights="w")


@pytest.mark.parametrize("k", [1e-8, 1e8, 1e100])
def test_fit_is_equivariant_in_a_covariate_binomial(k):
    """Scaling a fixed-effect column scales its coefficient and standard error by 1/k and
    changes nothing else (the optimiser works on columns of unit scale)."""
    cbpp = pd.read_csv(DATA / "agq_cbpp.csv")
    formula, options = "incidence ~ P + (1|herd)", dict(nagq=5, trials="size")
    ref = pyglmm.glmm(formula, cbpp.assign(P=cbpp.period), **options)
    res = pyglmm.glmm(formula, cbpp.assign(P=cbpp.period * k), **options)
    assert res.converged
    # measured: <= 3e-15 relative at 1e100
    np.testing.assert_allclose(res.coef, ref.coef / [1, k], rtol=1e-10)
    np.testing.assert_allclose(res.se, ref.se / [1, k], rtol=1e-8)
    np.testing.assert_allclose(res.sigma, ref.sigma, rtol=1e-10)
    assert res.loglik == pytest.approx(ref.loglik, abs=1e-10)


@pytest.mark.parametrize("k", [1e-6, 1e3])
def test_fit_is_equivariant_in_a_slope_gaussian(sleep, sleep_fit, k):
    """Days * k as fixed effect and random slope: its coefficient over k, its row and
    column of the random effects' covariance over k, the rest unchanged."""
    res = pyglmm.glmm("Reaction ~ D + (D|Subject)", sleep.assign(D=sleep.Days * k), "gaussian",
                      nagq=1)
    assert res.converged
    ref, unscale = sleep_fit, np.array([1, 1 / k])
    np.testing.assert_allclose(res.coef, ref.coef * unscale, rtol=1e-10)
    np.testing.assert_allclose(res.se, ref.se * unscale, rtol=1e-8)
    np.testing.assert_allclose(res.re_cov["Subject"], ref.re_cov["Subject"] * np.outer(unscale, unscale),
                               rtol=1e-8)
    assert res.loglik == pytest.approx(ref.loglik, abs=1e-9)


def test_slope_whose_squares_overflow_is_named(sleep):
    with pytest.raises(pyglmm.DataError, match=r"^random slope column 'D' has a value too large "
                                               r"for double precision \(1e\+200 at row 1\)"):
        pyglmm.glmm("Reaction ~ Days + (D|Subject)", sleep.assign(D=sleep.Days * 1e200),
                    "gaussian", nagq=1)


def test_poisson_counts_beyond_the_mean_cap_are_named():
    """Counts near 1e50 need a mean beyond the fit's cap e^100: named, not a wrong number."""
    cbpp = pd.read_csv(DATA / "agq_cbpp.csv")
    with pytest.raises(pyglmm.DataError, match=r"cluster\(s\) 1, 2, 3, 4, 5 and 10 more of 'herd' "
                                               r".*the fitted means are too large \(a poisson mean "
                                               r"is capped at e\^100"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pyglmm.glmm("incidence ~ period + (1|herd)", cbpp.assign(incidence=cbpp.incidence * 1e50),
                        "poisson", nagq=1)


def test_fit_is_equivariant_in_a_slope_binomial():
    """t * 1e-3 as fixed effect and random slope: the slope's sd grows 1000-fold, which
    is not a huge effect (its effect on the linear predictor is unchanged), so
    the fit still converges without a warning and equals the fit on t."""
    df = pd.read_csv(DATA / "agq_slopes_binomial.csv")
    formula, k = "y ~ x + T + (T|g)", 1e-3
    ref = pyglmm.glmm(formula, df.assign(T=df.t), nagq=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pyglmm.ConvergenceWarning)
        res = pyglmm.glmm(formula, df.assign(T=df.t * k), nagq=1)
    assert res.converged and ref.converged
    assert res.sigma["g:T"] >= 10  # the sd per unit of T*k
    unscale = np.array([1, 1, 1 / k])
    np.testing.assert_allclose(res.coef, ref.coef * unscale, rtol=1e-8)
    assert res.loglik == pytest.approx(ref.loglik, abs=1e-9)
