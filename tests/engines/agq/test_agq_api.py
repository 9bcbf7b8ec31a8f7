"""The AGQ engine through pyglmm.glmm: engine choice, results (ranef, summary,
save/load, predict), singular fits, bad input, and the command line."""

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from cases import DATA

import pyglmm
from pyglmm import DataError, SingularFitWarning
from pyglmm.cli import main
from pyglmm.engines.agq.result import AGQResult
from pyglmm.engines.crossed.result import CrossedResult

GOLDEN = json.loads((DATA / "agq_glmer.json").read_text())


@pytest.fixture(scope="module")
def cbpp():
    return pd.read_csv(DATA / "agq_cbpp.csv")


@pytest.fixture(scope="module")
def slopes():
    return pd.read_csv(DATA / "agq_slopes_binomial.csv")


@pytest.fixture(scope="module")
def slope_fit(slopes):
    return pyglmm.glmm("y ~ x + t + (1 + t|g)", slopes)


def binary(seed, m=30, n=20):
    """Binary data with no cluster effect at all (m clusters of n rows)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"g": np.repeat(np.arange(m), n), "x": rng.normal(size=m * n)})
    df["y"] = (rng.random(m * n) < 1 / (1 + np.exp(-(0.2 + 0.5 * df.x)))).astype(int)
    df["h"] = df.g % 3
    return df


def test_auto_engine_rule(cbpp, slope_fit):
    assert isinstance(slope_fit, AGQResult)                                      # slopes
    res = pyglmm.glmm("incidence ~ C(period) + (1|herd)", cbpp, trials="size", nagq=3)  # nagq given
    assert isinstance(res, AGQResult) and res.nagq == 3
    assert isinstance(pyglmm.glmm("incidence ~ C(period) + (1|herd)", cbpp, trials="size"),
                      CrossedResult)                                             # otherwise crossed
    forced = pyglmm.glmm("incidence ~ C(period) + (1|herd)", cbpp, trials="size", engine="agq")
    assert isinstance(forced, AGQResult) and forced.nagq == 1


def test_engine_errors_name_what_is_wrong(cbpp):
    df = binary(0)
    with pytest.raises(DataError, match="'g', 'h'"):
        pyglmm.glmm("y ~ x + (1|g) + (1|h)", df, engine="agq")
    with pytest.raises(ValueError, match="nagq"):
        pyglmm.glmm("y ~ x + (1|g)", df, engine="crossed", nagq=2)
    with pytest.raises(ValueError, match="engine"):
        pyglmm.glmm("y ~ x + (1|g)", df, engine="laplace")
    with pytest.raises(ValueError, match="nagq"):
        pyglmm.glmm("y ~ x + (1|g)", df, nagq=0)
    with pytest.raises(DataError, match="response 'y'"):
        pyglmm.glmm("y ~ x + (1|g)", df.assign(y=0), nagq=1)
    with pytest.raises(DataError, match="trials column 'nope'"):
        pyglmm.glmm("incidence ~ C(period) + (1|herd)", cbpp, trials="nope", nagq=1)
    with pytest.raises(DataError, match=r"^random slope 't' \(in \(1 \+ t\|g\)\) is not in the data; the data"):
        pyglmm.glmm("y ~ x + (1 + t|g)", df, nagq=1)  # named once, as what it is


def test_singular_fit_is_on_the_boundary_and_reported():
    with pytest.warns(SingularFitWarning, match="'g'") as record:
        res = pyglmm.glmm("y ~ x + (1|g)", binary(1), nagq=3)
    assert record[0].filename == __file__  # attributed to the caller's line
    assert res.singular == ["g"] and res.sigma["g"] == 0.0 and res.converged
    assert np.all(res.ranef()["g"].condval == 0) and np.isfinite(res.bse).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interior = pyglmm.glmm("y ~ x + (1|g)", binary(2), nagq=3)  # a small variance, not 0
    assert interior.singular == [] and 0.05 < interior.sigma["g"] < 0.1


def test_ranef_and_condsd_match_lme4(cbpp):
    ref = GOLDEN["agq_cbpp"]["fits"][0]
    res = pyglmm.glmm("incidence ~ C(period) + (1|herd)", cbpp, trials="size", nagq=1)
    re = res.ranef()["herd"]
    np.testing.assert_allclose(re.condval, ref["condval"], rtol=1e-4, atol=1e-6)  # measured 3e-6
    np.testing.assert_allclose(re.condsd, ref["condsd"], rtol=1e-4)              # measured 2e-6


def test_random_slope_ranef_and_varcorr_match_lme4(slope_fit):
    ref = GOLDEN["agq_slopes_binomial"]["fits"][0]
    re = slope_fit.ranef()["g"]
    assert list(re.term.unique()) == ["(Intercept)", "t"]
    np.testing.assert_allclose(re.condval, ref["condval"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(re.condsd, ref["condsd"], rtol=1e-4)
    vc = slope_fit.VarCorr()
    cov = np.asarray(ref["cov"])
    assert vc.sdcor.iloc[2] == pytest.approx(cov[0][1] / np.sqrt(cov[0][0] * cov[1][1]), rel=1e-4)


def test_summary_save_load_and_predict(slope_fit, slopes, tmp_path):
    text = str(slope_fit)
    assert "Laplace" in text and "logLik" in text and "corr((Intercept), t)" in text
    d = slope_fit.to_dict()
    assert d["engine"] == "agq" and {"loglik", "aic", "bic"} <= set(d)
    slope_fit.save(tmp_path / "m.json")
    back = pyglmm.load(tmp_path / "m.json")
    assert isinstance(back, AGQResult) and back.nagq == slope_fit.nagq
    assert back.aic == slope_fit.aic and back.history.equals(slope_fit.history)
    np.testing.assert_allclose(slope_fit.predict(slopes, type="response"), slope_fit.fittedvalues,
                               rtol=1e-12)
    np.testing.assert_array_equal(back.predict(slopes), slope_fit.predict(slopes))


def test_history_round_trips_through_the_shared_table_reader(slope_fit, tmp_path):
    """A non-finite entry of the history is written null and reads back NaN, in a float
    column (as every engine's tables, :func:`pyglmm.results.io.table_from_json`)."""
    history = slope_fit.history.head(1).assign(decrement=np.inf)
    dataclasses.replace(slope_fit, history=history).save(tmp_path / "m.json")
    back = pyglmm.load(tmp_path / "m.json").history
    pd.testing.assert_frame_equal(back, history.replace(np.inf, np.nan), check_exact=True)


def test_cli_fit_with_nagq(tmp_path, capsys):
    out = tmp_path / "fit.json"
    code = main(["fit", str(DATA / "agq_cbpp.csv"), "--formula", "incidence ~ C(period) + (1|herd)",
                 "--trials", "size", "--nagq", "5", "--json", str(out)])
    assert code == 0
    d = json.loads(out.read_text())
    ref = GOLDEN["agq_cbpp"]["fits"][2]  # nAGQ = 5, tight
    assert d["engine"] == "agq" and {"loglik", "aic", "bic"} <= set(d)
    assert d["coef"]["Intercept"] == pytest.approx(ref["beta"][0], rel=1e-5)
    assert "nAGQ = 5" in capsys.readouterr().out


def test_cli_refuses_crossed_options_for_agq(capsys):
    code = main(["fit", str(DATA / "agq_cbpp.csv"), "--formula", "incidence ~ C(period) + (1|herd)",
                 "--trials", "size", "--nagq", "2", "--naive"])
    assert code == 1 and "--naive" in capsys.readouterr().err


def test_singular_random_slope_fit_has_finite_standard_errors():
    """No slope in the data: Lambda[1, 1] goes to 0 (correlation 1), a singular fit whose
    beta standard errors still come from the observed information."""
    rng = np.random.default_rng(1)
    m, n = 40, 10
    g = np.repeat(np.arange(m), n)
    t, x = rng.random(m * n), rng.normal(size=m * n)
    eta = 0.2 + 0.5 * x + rng.normal(0, 1, m)[g]
    df = pd.DataFrame({"g": g, "t": t, "x": x, "y": (rng.random(m * n) < 1 / (1 + np.exp(-eta))).astype(int)})
    with pytest.warns(SingularFitWarning, match="'g'"):
        res = pyglmm.glmm("y ~ x + (1 + t|g)", df)
    cov = res.re_cov["g"].to_numpy()
    assert res.singular == ["g"] and res.converged
    assert abs(cov[0, 1]) == pytest.approx(np.sqrt(cov[0, 0] * cov[1, 1]), rel=1e-6)  # |corr| = 1
    assert np.all(np.isfinite(res.bse)) and np.all(res.bse > 0)


def test_an_option_of_the_other_engine_is_named(cbpp):
    with pytest.raises(TypeError, match="'dispersion' is not an option of the agq engine"):
        pyglmm.glmm("incidence ~ C(period) + (1|herd)", cbpp, trials="size", nagq=2, dispersion="fixed")
    with pytest.raises(TypeError, match="'bogus' is not an option of the crossed engine"):
        pyglmm.glmm("incidence ~ C(period) + (1|herd)", cbpp, trials="size", bogus=1, max_iter=3)


def test_iteration_limit_is_reported_and_warned(cbpp):
    from pyglmm import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="did not converge in 1 iterations"):
        res = pyglmm.glmm("incidence ~ C(period) + (1|herd)", cbpp, trials="size", nagq=1, max_iter=1)
    assert not res.converged and res.iterations == 1 and "NOT CONVERGED" in str(res)
