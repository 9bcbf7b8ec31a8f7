"""Fits against lme4 on the reference cases in tests/fixtures (provenance: tests/fixtures/README.md).

Schall's PQL sits near glmer's nAGQ = 0 for binary data (both are PIRLS-based);
it is not expected to match nAGQ = 1 (Laplace).

Every tolerance is set just above the discrepancy the fit actually shows (the
measured value is in the comment beside it, from this engine at its default
tolerances; the backends agree to 1e-8), so that a change of the engine that
moves an estimate fails here: for example, scaling Schall's variance update
by 0.98 or 1.02, or dropping the trace term nu_k, each fails several tests.
"""

import numpy as np
import pytest

import pyglmm
from cases import case_formula, load_case

# Against glmer nAGQ = 0 with phi = 1.  z: coefficient differences in glmer's standard
# errors; sigma: relative differences of sd(row), sd(col); se: relative differences of
# the standard errors of the intercept and of the slopes.
FIXED = {
    "crossed_trend_s1e4": dict(z=0.14,                 # measured 0.1283 (x1)
                               sigma=[0.045, 0.059],   # measured -0.0408, -0.0539
                               se_intercept=0.035,     # measured -0.0319
                               se_slopes=0.004),       # measured 0.0033 at most
    "crossed_zero_s1e4": dict(z=0.10,                  # measured 0.0921 (intercept)
                              sigma=[0.049, 0.043],    # measured -0.0443, -0.0393
                              se_intercept=0.041,      # measured -0.0374
                              se_slopes=0.002),        # measured 0.0018 at most
}


def relative(got, want):
    return np.asarray(got) / np.asarray(want) - 1


@pytest.mark.parametrize("case", list(FIXED))
def test_binomial_fixed_dispersion_matches_glmer_nagq0(case):
    df, fits = load_case(case)
    ref, tol = fits["glmer_nAGQ0"], FIXED[case]
    res = pyglmm.glmm(case_formula(df), df, dispersion="fixed")
    assert res.converged and res.dispersion == 1.0
    assert res.n_obs == ref["N"]
    z = (res.coef.to_numpy() - ref["beta"]) / np.array(ref["se"])
    assert np.max(np.abs(z)) < tol["z"], z
    sigma = relative(res.sigma[["row", "col"]], [ref["sigma_row"], ref["sigma_col"]])
    assert np.all(np.abs(sigma) < tol["sigma"]), sigma
    se = relative(res.se, ref["se"])
    assert abs(se[0]) < tol["se_intercept"] and np.max(np.abs(se[1:])) < tol["se_slopes"], se


# Where the estimated-dispersion fit lies between glmer nAGQ = 0 (position 0) and
# nAGQ = 1 (position 1), per coefficient whose two glmer fits differ by more than a
# tenth of a standard error; and its largest distance from nAGQ = 0 in glmer's SEs.
ESTIMATED = {
    "crossed_trend_s1e4": dict(position=(0.15, 0.31),  # measured 0.177 to 0.288 (7 slopes)
                               z=0.33),                # measured 0.3057
    "crossed_zero_s1e4": dict(position=(0.10, 0.13),   # measured 0.114 (intercept only)
                              z=0.10),                 # measured 0.0938
}


@pytest.mark.parametrize("case", list(ESTIMATED))
def test_binomial_estimated_dispersion_sits_between_nagq0_and_nagq1(case):
    """The paper's estimated-dispersion fit moves a fifth of the way from glmer
    nAGQ = 0 towards nAGQ = 1 (the fixed-dispersion fit moves the other way)."""
    df, fits = load_case(case)
    a0, a1 = (np.array(fits[e]["beta"]) for e in ("glmer_nAGQ0", "glmer_nAGQ1"))
    se = np.array(fits["glmer_nAGQ0"]["se"])
    tol = ESTIMATED[case]
    res = pyglmm.glmm(case_formula(df), df, dispersion="estimate")
    assert res.converged and 0.8 < res.dispersion < 0.95  # mild underdispersion, as the paper's 0.75
    beta = res.coef.to_numpy()
    assert np.max(np.abs(beta - a0) / se) < tol["z"]
    informative = np.abs(a1 - a0) > 0.1 * se
    position = (beta - a0)[informative] / (a1 - a0)[informative]
    lo, hi = tol["position"]
    assert np.all((position > lo) & (position < hi)), position
    fixed = pyglmm.glmm(case_formula(df), df, dispersion="fixed").coef.to_numpy()
    assert np.median((fixed - a0)[informative] / (a1 - a0)[informative]) < 0  # measured -0.10, -0.11


def test_gaussian_matches_lmer():
    df, fits = load_case("crossed_gauss_s3e3")
    res = pyglmm.glmm(case_formula(df), df, family="gaussian")
    ref = fits["lmer_REML"]
    assert res.converged and res.dispersion_mode == "estimate"
    z = (res.coef.to_numpy() - ref["beta"]) / np.array(ref["se"])
    assert np.max(np.abs(z)) < 0.0015, z  # measured 0.00131
    sigma = relative(res.sigma[["row", "col"]], [ref["sigma_row"], ref["sigma_col"]])
    assert np.all(np.abs(sigma) < [0.0070, 0.0090]), sigma  # measured -0.00634, -0.00814
    ml = fits["lmer_ML"]  # Schall's update with the diagonal trace is ML-like: nearer ML than REML
    sigma_ml = relative(res.sigma[["row", "col"]], [ml["sigma_row"], ml["sigma_col"]])
    assert np.all(np.abs(sigma_ml) < [0.0020, 0.0070]), sigma_ml  # measured -0.00170, -0.00640
    assert np.all(np.abs(sigma_ml) < np.abs(sigma))
    # lmer's residual sd is stored to 4 digits (1.017): +-5e-5 of rounding
    assert abs(relative(np.sqrt(res.dispersion), ref["sigma"])) < 0.0004  # measured 0.00035
    se = relative(res.se, ref["se"])
    assert abs(se[0]) < 0.0071 and np.max(np.abs(se[1:])) < 0.0003, se  # measured -0.00645, 0.00024


def test_gaussian_fixed_dispersion_is_one():
    """dispersion="fixed" means phi = 1 for gaussian too (a known residual variance)."""
    df, fits = load_case("crossed_gauss_s3e3")
    df = df.assign(y=10 * df.y)
    fixed = pyglmm.glmm(case_formula(df), df, family="gaussian", dispersion="fixed")
    assert fixed.dispersion == 1.0 and "dispersion fixed at 1" in str(fixed)
    est = pyglmm.glmm(case_formula(df), df, family="gaussian")
    # lmer's residual sd, times 10 (stored to 4 digits); measured 0.00035
    assert abs(relative(np.sqrt(est.dispersion), 10 * fits["lmer_REML"]["sigma"])) < 0.0004
    # with phi fixed at 1 instead of ~103, the slopes' standard errors (which
    # reflect the residual variance) shrink by almost exactly sqrt(phi)
    ratio = (est.se[["x1", "x2"]] / fixed.se[["x1", "x2"]]).to_numpy() / np.sqrt(est.dispersion)
    assert np.all(np.abs(ratio - 1) < 0.004), ratio  # measured -0.0028, -0.0033


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
