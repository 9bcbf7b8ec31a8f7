"""The result layer with random slopes (a q x q covariance per factor): ranef, VarCorr,
summary, predict and save/load, on a hand-made result whose numbers are known."""

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm.data.coding import FixedCoding
from pyglmm.results import io
from pyglmm.results.base import GLMMResult, sigma_of

NAMES = ["(Intercept)", "t"]


class LikelihoodResult(GLMMResult):
    """A result of an engine that maximises a likelihood (as the AGQ engine's)."""

    engine = "likelihood_test"
    method = "a test"


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(io.RESULT_CLASSES, LikelihoodResult.engine, (__name__, "LikelihoodResult"))


@pytest.fixture
def result():
    rng = np.random.default_rng(5)
    levels = pd.Index(["a", "b", "c"], name="g")
    frame = pd.DataFrame({"y": [0.0, 1.0], "x": [0.5, 1.5]})
    cov = pd.DataFrame([[0.64, -0.12], [-0.12, 0.25]], NAMES, NAMES)
    b = pd.DataFrame(rng.normal(size=(3, 2)), index=levels, columns=NAMES)
    b_var = pd.DataFrame(rng.uniform(0.1, 0.2, (3, 2)), index=levels, columns=NAMES)
    return LikelihoodResult(
        formula="y ~ x + (1 + t|g)", family="binomial", link="logit", dispersion_mode="fixed",
        coef=pd.Series([-0.3, 0.7], index=["Intercept", "x"], name="coef"),
        cov=pd.DataFrame(np.diag([0.01, 0.04]), ["Intercept", "x"], ["Intercept", "x"]),
        sigma=sigma_of({"g": cov}), dispersion=1.0, b={"g": b}, b_var={"g": b_var}, re_cov={"g": cov},
        loglik=-123.5, n_obs=40, n_levels={"g": 3}, df_resid=35.0, pearson_chi2=30.0, deviance=247.0,
        iterations=5, converged=True, singular=[], seconds=0.1, timings={}, backend="numpy", threads=1,
        intercept=True, coding=FixedCoding.from_data("x", frame))


def test_sigma_varcorr_and_ranef(result):
    assert list(result.sigma.index) == ["g", "g:t"]
    np.testing.assert_allclose(result.sigma, [0.8, 0.5])
    vc = result.VarCorr()
    assert vc[["grp", "var1"]].values.tolist() == [["g", "(Intercept)"], ["g", "t"], ["g", "(Intercept)"]]
    np.testing.assert_allclose(vc.vcov, [0.64, 0.25, -0.12])
    np.testing.assert_allclose(vc.sdcor, [0.8, 0.5, -0.12 / 0.4])
    assert vc.var2.tolist()[2] == "t"
    ranef = result.ranef()["g"]
    assert ranef.term.tolist() == ["(Intercept)"] * 3 + ["t"] * 3
    np.testing.assert_allclose(ranef.condval, result.b["g"].to_numpy().T.ravel())
    np.testing.assert_allclose(ranef.condsd, np.sqrt(result.b_var["g"].to_numpy().T.ravel()))
    assert result.random_terms() == {"g": NAMES}


def test_likelihood_and_summary(result):
    k = 2 + 3  # two fixed effects, three covariance parameters
    assert result.df_model == k
    assert result.aic == pytest.approx(247.0 + 2 * k)
    assert result.bic == pytest.approx(247.0 + np.log(40) * k)
    text = result.summary()
    assert "corr((Intercept), t)" in text and "-0.300" in text and "-123.5000" in text


def test_predict_adds_the_slopes(result):
    new = pd.DataFrame({"x": [1.0, 2.0, 0.0, 1.0], "t": [0.5, -1.0, 2.0, 3.0], "g": ["c", "a", "b", "zz"]})
    b = result.b["g"]
    expect = -0.3 + 0.7 * new.x + [b.loc[g, "(Intercept)"] + t * b.loc[g, "t"] if g in b.index else 0.0
                                    for g, t in zip(new.g, new.t)]
    got = result.predict(new)
    np.testing.assert_allclose(got, expect, rtol=1e-14)
    assert got.attrs["population_rows"] == {"g": 1}
    with pytest.raises(pyglmm.DataError, match="'t'"):
        result.predict(new.assign(t=[0.5, np.nan, 1.0, 1.0]))
    with pytest.raises(pyglmm.DataError, match="newdata lacks column\\(s\\) 't'"):
        result.predict(new.drop(columns="t"))


def test_save_load_round_trip(result, tmp_path):
    result.save(tmp_path / "m.json")
    back = pyglmm.load(tmp_path / "m.json")
    assert type(back) is LikelihoodResult
    pd.testing.assert_frame_equal(back.re_cov["g"], result.re_cov["g"])
    pd.testing.assert_frame_equal(back.b["g"], result.b["g"])
    pd.testing.assert_frame_equal(back.b_var["g"], result.b_var["g"])
    assert back.llf == result.llf and back.aic == result.aic
    new = pd.DataFrame({"x": [1.0, 2.0], "t": [0.5, -1.0], "g": ["c", "a"]})
    pd.testing.assert_series_equal(back.predict(new), result.predict(new))
