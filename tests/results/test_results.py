"""The result object: tables, display, JSON, save/load and streaming predict."""

import json

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import DataError
from cases import case_formula, load_case, small_crossed


@pytest.fixture(scope="module")
def fitted():
    df, _ = load_case("crossed_trend_s1e4")
    return df, pyglmm.glmm(case_formula(df), df, compare_naive=True)


def test_summary_layout(fitted):
    _, res = fitted
    text = str(res)
    for piece in ["Formula: y ~ x1 +", "Family: binomial (logit); dispersion fixed at 1",
                  "converged", "Variance components:", "row       (Intercept)     173", "Number of obs: 11,236",
                  "Fixed effects:", "Intercept", "Std. Error", "Pr(>|z|)", "Naive logistic regression",
                  "naivete", "backend " + res.backend]:
        assert piece in text, piece
    assert repr(res).startswith("<CrossedResult 'y ~ x1") and isinstance(res, pyglmm.GLMMResult)


def test_tables(fitted):
    _, res = fitted
    tab = res.coef_table()
    assert list(tab.columns) == ["coef", "se", "z", "p_value", "ci_lower", "ci_upper"]
    assert list(tab.index) == ["Intercept"] + [f"x{i}" for i in range(1, 8)]
    np.testing.assert_allclose(tab.z, tab.coef / tab.se)
    np.testing.assert_allclose(tab.ci_upper - tab.ci_lower, 2 * 1.959963984540054 * tab.se)
    re_ = res.ranef()["row"]
    assert list(re_.columns) == ["condval", "condsd"] and len(re_) == 173
    assert (re_.condsd > 0).all() and (re_.condsd < res.sigma["row"]).all()
    assert list(res.history.columns[:2]) == ["iteration", "inner_sweeps"]
    assert "sigma_row" in res.history and len(res.history) == res.iterations
    assert res.history.rel_change.iloc[-1] <= 1e-8


def test_json_brief_schema(fitted):
    _, res = fitted
    d = json.loads(res.to_json())
    assert set(d) == {"coef", "se", "sigma", "dispersion", "n_obs", "n_levels", "iterations",
                      "converged", "separation", "seconds", "backend", "engine"}
    assert d["separation"] == []
    assert d["coef"]["Intercept"] == pytest.approx(res.coef["Intercept"])
    assert d["n_levels"] == {"row": 173, "col": 173} and d["n_obs"] == 11236


def test_save_load_predict_roundtrip(fitted, tmp_path):
    df, res = fitted
    res.save(tmp_path / "fit.json")
    back = pyglmm.load(tmp_path / "fit.json")
    pd.testing.assert_series_equal(back.coef, res.coef, check_names=False)
    pd.testing.assert_frame_equal(back.cov, res.cov)
    assert str(back) == str(res)
    np.testing.assert_allclose(back.predict(df), res.predict(df), rtol=1e-14)


def test_predict_training_rows_is_the_linear_predictor(fitted):
    df, res = fitted
    eta = res.predict(df)
    X = np.column_stack([np.ones(len(df))] + [df[f"x{i}"] for i in range(1, 8)])
    manual = X @ res.coef.to_numpy() + res.b["row"].loc[df.row].to_numpy() + res.b["col"].loc[df.col].to_numpy()
    np.testing.assert_allclose(eta, manual, rtol=1e-12, atol=1e-13)  # eta near 0: cancellation
    np.testing.assert_allclose(res.predict(df, type="response"), 1 / (1 + np.exp(-manual)), rtol=1e-12)
    # streaming in chunks gives the same numbers, on both scales
    np.testing.assert_allclose(res.predict(df, chunk_size=1000), eta, rtol=1e-15)
    np.testing.assert_allclose(res.predict(df, type="response", chunk_size=999),
                               1 / (1 + np.exp(-manual)), rtol=1e-12)


def test_predict_unseen_levels_are_population_level(fitted):
    df, res = fitted
    new = df.head(4).copy()
    new["row"] = [10**6, 10**6 + 1, df.row.iloc[2], np.nan]
    eta = res.predict(new)
    X = np.column_stack([np.ones(4)] + [new[f"x{i}"] for i in range(1, 8)])
    fixed = X @ res.coef.to_numpy() + res.b["col"].loc[new.col].to_numpy()
    np.testing.assert_allclose(eta[[0, 1, 3]], fixed[[0, 1, 3]], rtol=1e-12)
    assert eta[2] == pytest.approx(fixed[2] + res.b["row"].loc[df.row.iloc[2]])
    with pytest.raises(ValueError, match=r"newdata lacks column\(s\) 'col'"):
        res.predict(new.drop(columns="col"))


def test_predict_formula_with_categorical_and_offset():
    rng = np.random.default_rng(5)
    n = 1500
    data = pd.DataFrame({"x": rng.standard_normal(n), "cat": rng.choice(["lo", "mid", "hi"], n),
                         "u": rng.integers(0, 30, n), "v": rng.integers(0, 20, n),
                         "off": rng.normal(0, 0.3, n)})
    eta = data.off + 0.5 * data.x + (data.cat == "mid") + rng.normal(0, 0.7, 30)[data.u]
    data["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    res = pyglmm.glmm("y ~ x + C(cat) + (1|u) + (1|v)", data, offset="off")
    assert list(res.coef.index) == ["Intercept", "x", "C(cat)[T.lo]", "C(cat)[T.mid]"]  # 'hi' first sorted
    got = res.predict(data.iloc[::7])
    rows = data.iloc[::7]
    manual = (rows.off + res.coef["Intercept"] + res.coef["x"] * rows.x
              + res.coef["C(cat)[T.lo]"] * (rows.cat == "lo") + res.coef["C(cat)[T.mid]"] * (rows.cat == "mid")
              + res.b["u"].loc[rows.u].to_numpy() + res.b["v"].loc[rows.v].to_numpy())
    np.testing.assert_allclose(got, manual, rtol=1e-12)


def test_predict_arrays():
    X, y, groups = small_crossed()
    res = pyglmm.glmm_from_arrays(X, y, groups)
    eta = res.predict(X=X, groups=groups)
    manual = res.coef["Intercept"] + X @ res.coef[["x1", "x2"]].to_numpy() + sum(
        res.b[f].loc[groups[f]].to_numpy() for f in groups)
    np.testing.assert_allclose(eta, manual, rtol=1e-12, atol=1e-13)  # eta near 0: cancellation
    np.testing.assert_allclose(res.predict(X=X, groups=groups, chunk_size=7), eta, rtol=1e-15)
    with pytest.raises(ValueError, match="pass X= and groups="):
        res.predict(pd.DataFrame())
    with pytest.raises(ValueError, match=r"groups\['g1'\] has 5 rows, X has 400"):
        res.predict(X=X, groups={**groups, "g1": groups["g1"][:5]})
    with pytest.raises(ValueError, match="only for models fitted with an offset array"):
        res.predict(X=X, groups=groups, offset=np.zeros(400))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        res.predict(X=X, groups=groups, chunk_size=0)
    with_offset = pyglmm.glmm_from_arrays(X, y, groups, offset=0.1 * X[:, 0])
    with pytest.raises(ValueError, match=r"offset must hold one number per row of X \(400\), got shape \(3,\)"):
        with_offset.predict(X=X, groups=groups, offset=np.zeros(3))
    with pytest.raises(ValueError, match="fitted with an offset: pass offset="):
        with_offset.predict(X=X, groups=groups)
    frame = pd.DataFrame(X, index=np.arange(400) * 3)
    with pytest.raises(DataError, match=r"offset: the Series' index is not X's"):
        with_offset.predict(X=frame, groups=groups, offset=pd.Series(np.zeros(400)))
    with pytest.raises(DataError, match=r"offset must hold one number per row of X \(400\), got shape \(\)"):
        with_offset.predict(X=X, groups=groups, offset=0.0)
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        res.predict(X=X[:, 0], groups=groups)
    bad = X.copy()
    bad[310, 1] = np.nan
    with pytest.raises(ValueError, match="column 'x2' has 1 NaN or infinite value.*row 310"):
        res.predict(X=bad, groups=groups, chunk_size=100)


def test_formula_fit_with_an_array_offset_needs_it_in_predict():
    X, y, groups = small_crossed()
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y, **groups})
    off = np.linspace(-1, 1, len(y))
    res = pyglmm.glmm("y ~ x1 + x2 + (1|g0) + (1|g1)", df, offset=off)
    plain = pyglmm.glmm("y ~ x1 + x2 + (1|g0) + (1|g1)", df.assign(o=off), offset="o")
    np.testing.assert_allclose(res.predict(df, offset=off), plain.predict(df.assign(o=off)), rtol=1e-12)
    with pytest.raises(ValueError, match="pass offset="):
        res.predict(df)
    with pytest.raises(ValueError, match=r"newdata lacks column\(s\) 'x2'"):
        plain.predict(df.assign(o=off).drop(columns="x2"))


def test_save_load_keeps_datetime_levels(tmp_path):
    X, y, groups = small_crossed()
    days = {"g0": pd.Timestamp("2026-01-01") + pd.to_timedelta(groups["g0"], unit="D"),
            "g1": groups["g1"]}
    res = pyglmm.glmm_from_arrays(X, y, days)
    res.save(tmp_path / "fit.json")
    back = pyglmm.load(tmp_path / "fit.json")
    assert back.b["g0"].index.dtype == res.b["g0"].index.dtype
    np.testing.assert_allclose(back.predict(X=X, groups=days), res.predict(X=X, groups=days), rtol=1e-14)
    odd = pyglmm.glmm_from_arrays(X, y, {"g0": [(v, v) for v in groups["g0"]], "g1": groups["g1"]})
    with pytest.raises(ValueError, match="levels of factor 'g0' .* cannot be saved as JSON"):
        odd.save(tmp_path / "odd.json")
