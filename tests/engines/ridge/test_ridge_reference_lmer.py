"""With b = 0 and no penalised column the ridge LMM is lmer's ML fit: agreement with
lmer (REML = FALSE, tight bobyqa) on lmm_m40_r5 and sleepstudy (golden values from
tests/golden/ridge_lmer.R; provenance in tests/fixtures/README.md).

Tolerances are 1e-4 (the issue's), relative for Sigma, sigma and the coefficients'
standard errors, absolute for coefficients in units of their se and for the
log-likelihood; the measured discrepancies are in the comments."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pyglmm

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
GOLDEN = json.loads((FIXTURES / "ridge_lmer.json").read_text())
DATA = {"lmm_m40_r5": "lmm_m40_r5.csv", "sleepstudy": "sleepstudy.csv"}


def fit(case, **options):
    ref = GOLDEN[case]
    return pyglmm.ridge_lmm(ref["formula"], pd.read_csv(FIXTURES / DATA[case]), b=0.0,
                            **options), ref


# lmm_m40_r5's ML Sigma is nearly singular (lmer's own estimate, rounded to 15 digits, is not
# numerically positive definite): the fit warns, as it should
@pytest.mark.filterwarnings("ignore::pyglmm.SingularFitWarning")
@pytest.mark.parametrize("case", ["lmm_m40_r5", "sleepstudy"])
@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_matches_lmer_ml(case, solver):
    res, ref = fit(case, solver=solver)
    assert res.converged and res.solver == solver
    se = np.array(ref["se"])
    # measured: coefficients within 2e-8 se, Sigma 5e-6 relative (lmm_m40_r5's t2 entry,
    # a nearly singular Sigma; sleepstudy 2e-9), sigma 3e-7, se 3e-6, loglik 1e-9
    np.testing.assert_allclose((res.params.to_numpy() - ref["beta"]) / se, 0, atol=1e-4)
    Sigma = res.re_cov[res.factor_names[0]].to_numpy()
    np.testing.assert_allclose(Sigma, np.array(ref["Sigma"]), rtol=1e-4, atol=1e-4 * np.abs(ref["Sigma"]).max())
    assert res.residual_sd == pytest.approx(ref["sigma"], rel=1e-4)
    np.testing.assert_allclose(res.bse.to_numpy(), se, rtol=1e-4)
    assert res.llf == pytest.approx(ref["loglik"], abs=1e-4)
    assert res.penalized == [] and res.lam is None


def test_sleepstudy_reports_like_lme4():
    res, ref = fit("sleepstudy")
    vc = res.VarCorr()
    S = np.array(ref["Sigma"])
    corr = vc[(vc.var1 == "(Intercept)") & (vc.var2 == "Days")].sdcor.item()
    assert corr == pytest.approx(S[0, 1] / np.sqrt(S[0, 0] * S[1, 1]), rel=1e-4)
    assert list(res.params.index) == ["Intercept", "Days"]
    # BLUPs: lme4's conditional modes satisfy y - fitted = residuals; ours average to ~0 per effect
    ranef = res.ranef()["Subject"]
    assert set(ranef.term) == {"(Intercept)", "Days"} and len(ranef) == 36
    assert res.aic == pytest.approx(-2 * ref["loglik"] + 2 * 6, abs=1e-3)


def test_singular_ml_fit_reports_like_lmer():
    """A replicate of the talk's cubic-slope design whose ML Sigma has rank 2 (lmer: isSingular):
    refactoring Sigma = LL' fails there, so the result must use the fit's own factors (it used
    to raise numpy's LinAlgError).  Measured: loglik 7e-10, coefficients 5e-7 se, sigma 1.4e-8."""
    ref = GOLDEN["ridge_singular_cubic"]
    df = pd.read_csv(FIXTURES / "ridge_singular_cubic.csv")
    with pytest.warns(pyglmm.SingularFitWarning, match="'ind'"):
        res = pyglmm.ridge_lmm(ref["formula"], df, b=0.0, unpenalized=["x1", "x2"])
    assert ref["singular"] and res.singular == ["ind"] and res.converged
    assert res.llf == pytest.approx(ref["loglik"], abs=1e-6)
    np.testing.assert_allclose((res.params.to_numpy() - ref["beta"]) / np.array(ref["se"]), 0, atol=1e-4)
    assert res.residual_sd == pytest.approx(ref["sigma"], rel=1e-4)


def test_newton_steps_past_an_underflowing_cholesky_diagonal():
    """A replicate whose ML Sigma has rank 2, where a trust-region step drove a log-Cholesky
    diagonal below exp's range (L^-1 then raised LinAlgError, and its NaN Hessian made scipy
    raise).  The fit must finish, report the singular fit, and reach at least lmer's maximum:
    here lmer (bobyqa, rhoend 1e-12) stops at another rank-2 point, 0.125 below pyglmm's."""
    ref = GOLDEN["ridge_singular_cubic8"]
    df = pd.read_csv(FIXTURES / "ridge_singular_cubic8.csv")
    with pytest.warns(pyglmm.SingularFitWarning, match="'ind'"):
        res = pyglmm.ridge_lmm(ref["formula"], df, b=0.0, unpenalized=["x1", "x2"])
    assert ref["singular"] and res.singular == ["ind"] and res.converged
    assert res.llf >= ref["loglik"] - 1e-8
