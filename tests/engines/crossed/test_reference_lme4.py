"""Fits against lme4 on the reference cases in tests/fixtures (provenance: tests/fixtures/README.md).

Schall's PQL sits near glmer's nAGQ = 0 for binary data (both are PIRLS-based);
it is not expected to match nAGQ = 1 (Laplace).
"""

import numpy as np
import pytest

import pyglmm
from cases import case_formula, load_case

CROSSED = ["crossed_trend_s1e4", "crossed_zero_s1e4"]


@pytest.mark.parametrize("case", CROSSED)
def test_binomial_fixed_dispersion_matches_glmer_nagq0(case):
    df, fits = load_case(case)
    ref = fits["glmer_nAGQ0"]
    res = pyglmm.glmm(case_formula(df), df, dispersion="fixed")
    assert res.converged and res.dispersion == 1.0
    assert res.n_obs == ref["N"]
    # every coefficient within 0.3 of glmer's standard errors
    z = (res.coef.to_numpy() - ref["beta"]) / np.array(ref["se"])
    assert np.max(np.abs(z)) < 0.3, z
    # random-effect standard deviations within 10%
    np.testing.assert_allclose(res.sigma[["row", "col"]], [ref["sigma_row"], ref["sigma_col"]], rtol=0.10)
    # standard errors of eq. (24) within 10% of glmer's
    np.testing.assert_allclose(res.se, ref["se"], rtol=0.10)


@pytest.mark.parametrize("case", CROSSED)
def test_binomial_estimated_dispersion_sits_between_nagq0_and_nagq1(case):
    """Where the paper's estimated-dispersion fit lies, as a fraction of the way from
    glmer nAGQ = 0 (0) to nAGQ = 1 (1), per coefficient whose two glmer fits differ
    by more than a tenth of a standard error (measured: 0.1-0.3 of the way on the
    intercept and the trending slopes).  It stays within 0.35 SE of nAGQ = 0."""
    df, fits = load_case(case)
    a0, a1 = (np.array(fits[e]["beta"]) for e in ("glmer_nAGQ0", "glmer_nAGQ1"))
    se = np.array(fits["glmer_nAGQ0"]["se"])
    res = pyglmm.glmm(case_formula(df), df, dispersion="estimate")
    assert res.converged and 0.8 < res.dispersion < 0.95  # mild underdispersion, as the paper's 0.75
    beta = res.coef.to_numpy()
    assert np.max(np.abs(beta - a0) / se) < 0.35
    informative = np.abs(a1 - a0) > 0.1 * se
    position = (beta - a0)[informative] / (a1 - a0)[informative]
    assert np.all((position > -0.2) & (position < 1.0)), position
    assert np.median(position) > 0  # closer to Laplace than the fixed-dispersion fit
    fixed = pyglmm.glmm(case_formula(df), df, dispersion="fixed").coef.to_numpy()
    assert np.median((fixed - a0)[informative] / (a1 - a0)[informative]) < np.median(position)


def test_gaussian_matches_lmer():
    df, fits = load_case("crossed_gauss_s3e3")
    res = pyglmm.glmm(case_formula(df), df, family="gaussian")
    ref = fits["lmer_REML"]
    assert res.converged and res.dispersion_mode == "estimate"
    z = (res.coef.to_numpy() - ref["beta"]) / np.array(ref["se"])
    assert np.max(np.abs(z)) < 0.05
    np.testing.assert_allclose(res.sigma[["row", "col"]], [ref["sigma_row"], ref["sigma_col"]], rtol=0.02)
    np.testing.assert_allclose(np.sqrt(res.dispersion), ref["sigma"], rtol=0.01)
    np.testing.assert_allclose(res.se, ref["se"], rtol=0.02)


def test_gaussian_fixed_dispersion_is_one():
    """dispersion="fixed" means phi = 1 for gaussian too (a known residual variance)."""
    df, _ = load_case("crossed_gauss_s3e3")
    df = df.assign(y=10 * df.y)
    fixed = pyglmm.glmm(case_formula(df), df, family="gaussian", dispersion="fixed")
    assert fixed.dispersion == 1.0 and "dispersion fixed at 1" in str(fixed)
    est = pyglmm.glmm(case_formula(df), df, family="gaussian")
    assert est.dispersion == pytest.approx(100 * 1.0173564**2, rel=1e-3)
    # with phi fixed at 1 instead of ~103, the slopes' standard errors (which
    # reflect the residual variance) shrink by about sqrt(103)
    ratio = est.se[["x1", "x2"]] / fixed.se[["x1", "x2"]]
    assert np.all((ratio > 8) & (ratio < 12)), ratio


@pytest.mark.parametrize("weights", [None, "w"], ids=["unweighted", "weights"])
def test_poisson_with_offset_matches_glmer_nagq0(backend, weights):
    """Crossed Poisson with exposure offset (and prior weights) against glmer nAGQ = 0.
    Measured on every backend: coefficients within 0.0013 SE (the 5 decimals glmer's
    fit is stored with are worth up to 0.0011 SE on the slopes), sigmas within 0.44%,
    standard errors within 0.35% (glmer's are stored to 3 digits, 0.1%).  The bounds
    are set just above."""
    df, fits = load_case("crossed_poisson_s1e4")
    ref = fits["glmer_nAGQ0" + ("_weights" if weights else "")]
    res = pyglmm.glmm("y ~ x1 + x2 + (1|row) + (1|col)", df, family="poisson", offset="logexp",
                      weights=weights, backend=backend)
    assert res.converged and res.dispersion == 1.0 and res.family == "poisson"
    assert res.n_obs == ref["N"] and list(res.coef.index) == ["Intercept", "x1", "x2"]
    z = (res.coef.to_numpy() - ref["beta"]) / np.array(ref["se"])
    assert np.max(np.abs(z)) < 0.002, z
    np.testing.assert_allclose(res.sigma[["row", "col"]], [ref["sigma_row"], ref["sigma_col"]], rtol=0.006)
    np.testing.assert_allclose(res.se, ref["se"], rtol=0.005)
