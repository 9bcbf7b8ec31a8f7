"""predict: unseen levels (population or error, counted), label dtypes, rows named in errors,
the Series it returns, and memory."""

import tracemalloc

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm.exceptions import DataError
from cases import small_crossed

FORMULA = "y ~ x1 + x2 + (1|g0) + (1|g1)"


@pytest.fixture(scope="module")
def arrays_fit():
    X, y, groups = small_crossed()
    return X, groups, pyglmm.glmm_from_arrays(X, y, groups)


@pytest.fixture(scope="module")
def formula_fit():
    X, y, groups = small_crossed()
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y, **groups},
                      index=pd.Index([f"r{i}" for i in range(len(y))], name="id"))
    return df, pyglmm.glmm(FORMULA, df)


def manual(res, df):
    """eta by hand, b = 0 for labels not among the fitted levels."""
    b = {f: res.b[f].reindex(df[f]).fillna(0.0).to_numpy() for f in ("g0", "g1")}
    return (res.coef["Intercept"] + res.coef["x1"] * df.x1 + res.coef["x2"] * df.x2
            + b["g0"] + b["g1"]).to_numpy()


def test_predict_returns_a_series_aligned_with_newdata(formula_fit):
    df, res = formula_fit
    new = df.iloc[::-3]
    eta = res.predict(new)
    assert isinstance(eta, pd.Series) and eta.name == "eta"
    assert eta.index.equals(new.index)
    np.testing.assert_allclose(eta.to_numpy(), manual(res, new), rtol=1e-12, atol=1e-13)
    assert eta.attrs["population_rows"] == {"g0": 0, "g1": 0}
    mu = res.predict(new, type="response", chunk_size=17)
    assert mu.name == "mu" and mu.index.equals(new.index)
    np.testing.assert_allclose(mu.to_numpy(), 1 / (1 + np.exp(-manual(res, new))), rtol=1e-12)


def test_unseen_and_missing_labels_score_at_the_population_level_and_are_counted(formula_fit):
    df, res = formula_fit
    new = df.iloc[:40].copy()
    new["g0"] = new.g0.astype(float)
    new.iloc[[3, 17, 25], new.columns.get_loc("g0")] = [99.0, np.nan, -1.0]  # unseen, missing, unseen
    new.iloc[[5], new.columns.get_loc("g1")] = 1000
    for chunk_size in (1_000_000, 7, 1):  # counts add up over chunks
        eta = res.predict(new, chunk_size=chunk_size)
        assert eta.attrs["population_rows"] == {"g0": 3, "g1": 1}
        np.testing.assert_allclose(eta.to_numpy(), manual(res, new), rtol=1e-12, atol=1e-13)
    X, groups = new[["x1", "x2"]].to_numpy(), {"g0": new.g0.to_numpy(), "g1": new.g1.to_numpy()}
    arr = pyglmm.glmm_from_arrays(*small_crossed()[:2], small_crossed()[2])
    assert arr.predict(X=X, groups=groups).attrs["population_rows"] == {"g0": 3, "g1": 1}


def test_new_levels_error_names_factor_level_and_row(formula_fit, arrays_fit):
    df, res = formula_fit
    new = df.iloc[:30].copy()
    new.iloc[22, new.columns.get_loc("g1")] = 1000
    res.predict(new.iloc[:22], new_levels="error")  # only seen levels: fine
    for chunk_size in (1_000_000, 8):
        with pytest.raises(DataError, match=r"grouping column 'g1' has level 1000, not seen in the fit, "
                                            r"at row 'r22'"):
            res.predict(new, new_levels="error", chunk_size=chunk_size)
    new["g0"] = new.g0.astype(float)
    new.iloc[4, new.columns.get_loc("g0")] = np.nan
    with pytest.raises(DataError, match=r"grouping column 'g0' has a missing label at row 'r4'"):
        res.predict(new, new_levels="error", chunk_size=3)
    X, groups, ares = arrays_fit
    g1 = groups["g1"].copy()
    g1[123] = -5
    with pytest.raises(DataError, match=r"grouping column 'g1' has level -5, not seen in the fit, at row 123;"):
        ares.predict(X=X, groups={**groups, "g1": g1}, new_levels="error", chunk_size=50)


def test_array_fit_needs_its_covariates(arrays_fit):
    X, groups, res = arrays_fit
    with pytest.raises(DataError, match=r"X has 3 columns, the model has 2 covariates \(x1, x2; "
                                        r"the intercept is added\)"):
        res.predict(X=np.column_stack([np.ones(len(X)), X]), groups=groups)


@pytest.mark.parametrize("kwargs,name", [({"new_levels": "drop"}, "new_levels"), ({"type": "mean"}, "type"),
                                         ({"chunk_size": 0}, "chunk_size")])
def test_bad_arguments_are_named(arrays_fit, kwargs, name):
    X, groups, res = arrays_fit
    with pytest.raises(ValueError, match=f"^{name} must be"):
        res.predict(X=X, groups=groups, **kwargs)


def _days(g):
    return pd.Timestamp("2026-01-01") + pd.to_timedelta(g, unit="D")


# (how the model's g0 labels are written in the fit, how they are given to predict)
SAME_LABELS = {
    "int as str": (lambda g: g, lambda g: g.astype(str)),
    "int as object str": (lambda g: g, lambda g: g.astype(str).astype(object)),
    "int as float": (lambda g: g, lambda g: g.astype(float)),
    "int as int32": (lambda g: g, lambda g: g.astype(np.int32)),
    "int as nullable Int64": (lambda g: g, lambda g: pd.array(g, dtype="Int64")),
    "int as category of str": (lambda g: g, lambda g: pd.Categorical(g.astype(str))),
    "int as category of int": (lambda g: g, lambda g: pd.Categorical(g)),
    "str as int": (lambda g: g.astype(str), lambda g: g),
    "str as float": (lambda g: g.astype(str), lambda g: g.astype(float)),
    "str as category": (lambda g: g.astype(str), lambda g: pd.Categorical(g.astype(str))),
    "float as int": (lambda g: g.astype(float), lambda g: g),
    "float as str": (lambda g: g.astype(float), lambda g: g.astype(str)),
    "float as str with .0": (lambda g: g.astype(float), lambda g: np.char.add(g.astype(str), ".0")),
    "fractional float as str": (lambda g: g + 0.5, lambda g: (g + 0.5).astype(str)),
    "category as str": (lambda g: pd.Categorical(np.char.add("u", g.astype(str))),
                        lambda g: np.char.add("u", g.astype(str))),
    "category as other categories": (
        lambda g: pd.Categorical(np.char.add("u", g.astype(str))),
        lambda g: pd.Categorical(np.char.add("u", g.astype(str)), categories=[f"u{i}" for i in range(40, -1, -1)])),
    "bool as object": (lambda g: g % 2 == 0, lambda g: (g % 2 == 0).astype(object)),
    "bool as category": (lambda g: g % 2 == 0, lambda g: pd.Categorical(g % 2 == 0)),
    "datetime as ISO str": (_days, lambda g: _days(g).strftime("%Y-%m-%d").to_numpy()),
    "datetime as seconds": (_days, lambda g: _days(g).astype("datetime64[s]")),
    "ISO str as datetime": (lambda g: _days(g).strftime("%Y-%m-%d").to_numpy(), _days),
}


@pytest.mark.filterwarnings("ignore::pyglmm.SingularFitWarning")  # two boolean levels
@pytest.mark.parametrize("case", list(SAME_LABELS))
def test_labels_match_by_value_whatever_their_dtype(case):
    fitted, given = SAME_LABELS[case]
    X, y, groups = small_crossed()
    res = pyglmm.glmm_from_arrays(X, y, {**groups, "g0": fitted(groups["g0"])})
    want = res.predict(X=X, groups={**groups, "g0": fitted(groups["g0"])})
    assert want.attrs["population_rows"] == {"g0": 0, "g1": 0}
    got = res.predict(X=X, groups={**groups, "g0": given(groups["g0"])}, chunk_size=150)
    assert got.attrs["population_rows"] == {"g0": 0, "g1": 0}
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


@pytest.mark.parametrize("fitted,given,pieces", [
    (lambda g: g, lambda g: np.char.add("u", g.astype(str)), ["do not match", "e.g. 'u", "e.g. 0"]),
    (lambda g: g, lambda g: g % 2 == 0, ["cannot be matched", "(bool, e.g. False)", "(int64, e.g. 0)"]),
    (lambda g: np.char.add("u", g.astype(str)), lambda g: g, ["never match", "e.g. 'u0'"]),
    (_days, lambda g: g, ["cannot be matched", "datetime64"]),
    (_days, lambda g: _days(g).tz_localize("UTC"), ["cannot be matched", "UTC"]),
])
def test_labels_of_another_type_are_refused_not_scored_as_unseen(fitted, given, pieces):
    X, y, groups = small_crossed()
    res = pyglmm.glmm_from_arrays(X, y, {**groups, "g0": fitted(groups["g0"])})
    with pytest.raises(DataError, match="grouping column 'g0'") as err:
        res.predict(X=X, groups={**groups, "g0": given(groups["g0"])})
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


def test_labels_of_another_spelling_are_refused(arrays_fit):
    """'03' is not how the integer level 3 is written: scoring it at the population level
    (as an unseen level) would be a silent wrong number; a new label such as '999' is unseen."""
    X, groups, res = arrays_fit
    g0 = groups["g0"].astype(str).astype(object)
    g0[:10] = ["0" + s for s in g0[:10]]
    with pytest.raises(DataError, match=rf"grouping column 'g0': the label '0{groups['g0'][0]}' reads as"):
        res.predict(X=X, groups={**groups, "g0": g0})
    g0[:10] = "999"
    eta = res.predict(X=X, groups={**groups, "g0": g0})
    assert eta.attrs["population_rows"] == {"g0": 10, "g1": 0}
    want = res.predict(X=X, groups=groups).to_numpy()
    np.testing.assert_array_equal(eta.to_numpy()[10:], want[10:])
    np.testing.assert_allclose(eta.to_numpy()[:10], want[:10] - res.b["g0"].loc[groups["g0"][:10]].to_numpy(),
                               rtol=1e-12, atol=1e-14)


def test_formula_fit_with_integer_labels_scores_string_labels(formula_fit, tmp_path):
    df, res = formula_fit
    as_str = df.astype({"g0": str, "g1": str})
    want = res.predict(df)
    for model in (res, _saved_and_loaded(res, tmp_path)):
        got = model.predict(as_str)
        assert got.attrs["population_rows"] == {"g0": 0, "g1": 0}
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


def _saved_and_loaded(res, tmp_path):
    res.save(tmp_path / "m.json")
    return pyglmm.load(tmp_path / "m.json")


def test_nan_in_a_covariate_or_the_offset_names_column_and_row(formula_fit):
    df, res = formula_fit
    bad = df.copy()
    bad.loc["r7", "x2"] = np.nan
    with pytest.raises(DataError, match=r"column 'x2' has 1 NaN or infinite value\(s\), first at row 'r7'"):
        res.predict(bad, chunk_size=5)
    with_offset = pyglmm.glmm("y ~ x1 + x2 + (1|g0) + (1|g1)", df.assign(off=0.1), offset="off")
    bad = df.assign(off=0.1)
    bad.loc["r9", "off"] = np.inf
    with pytest.raises(DataError, match=r"column 'off' has 1 NaN or infinite value\(s\), first at row 'r9'"):
        with_offset.predict(bad)
    with pytest.raises(DataError, match=r"offset column 'off' must be numeric"):
        with_offset.predict(bad.assign(off="a"))


def test_memory_beyond_the_output_is_chunk_sized():
    X, y, groups = small_crossed()
    res = pyglmm.glmm_from_arrays(X, y, groups)
    n, chunk = 400_000, 10_000
    rng = np.random.default_rng(1)
    Xn = rng.standard_normal((n, 2))
    new = {"g0": rng.integers(0, 25, n), "g1": rng.integers(0, 16, n)}
    res.predict(X=Xn[:10], groups={f: v[:10] for f, v in new.items()}, type="response")  # warm up
    tracemalloc.start()
    try:
        mu = res.predict(X=Xn, groups=new, type="response", chunk_size=chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n * 8 + 40 * chunk * 8, peak  # the output and a few chunk-sized temporaries
    assert mu.attrs["population_rows"]["g0"] == int((new["g0"] >= 20).sum()) > 0
