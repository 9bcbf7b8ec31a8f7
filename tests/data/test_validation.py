"""Bad input gets a clear error naming the column, row or level, never a wrong number."""

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import DataError

F = "y ~ x + C(cat) + (1|user) + (1|item)"


@pytest.fixture
def df():
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame({"y": rng.integers(0, 2, n), "x": rng.standard_normal(n),
                         "cat": rng.choice(["a", "b", "c"], n), "user": rng.integers(0, 15, n),
                         "item": rng.integers(0, 9, n)}, index=np.arange(1000, 1000 + n))


def fit(data, formula=F, **kw):
    return pyglmm.glmm(formula, data, **kw)


@pytest.mark.parametrize("kw,message", [
    (dict(formula="y ~ x + z + (1|user)"), "fixed-effect variable 'z' is not in the data"),
    (dict(formula="y ~ x + (1|shop)"), r"grouping factor 'shop' \(in \(1\|shop\)\) is not in the data"),
    (dict(formula="yy ~ x + (1|user)"), r"response column 'yy' is not in the data \(did you mean 'y'\?\)"),
    (dict(weights="wt"), "weights column 'wt' is not in the data"),
    (dict(trials="n"), "trials column 'n' is not in the data"),
    (dict(offset="off"), "offset column 'off' is not in the data"),
])
def test_missing_column_is_named_by_its_role(df, kw, message):
    with pytest.raises(DataError, match=message + r".*; the data have columns 'y', 'x', 'cat'"):
        fit(df, **kw)


def test_every_missing_column_is_named(df):
    with pytest.raises(DataError, match="weights column 'w' is not in the data; grouping factor 'shop'"):
        fit(df, "y ~ x + (1|shop)", weights="w")


def test_bad_named_columns_are_named_by_their_role(df):
    with pytest.raises(DataError, match=r"weights column 'wt' has negative weights, first at row 1004"):
        fit(df.assign(wt=np.where(np.arange(len(df)) == 4, -1.0, 1.0)), weights="wt")
    with pytest.raises(DataError, match=r"offset column 'o' has 1 NaN or infinite value\(s\), first at row 1002"):
        fit(df.assign(o=np.where(np.arange(len(df)) == 2, np.nan, 0.0)), offset="o")
    with pytest.raises(DataError, match="trials column 'n' must be numeric, got dtype"):
        fit(df.assign(n="3"), trials="n")
    missing = pd.array([1.0] * len(df), dtype="Float64")
    missing[5] = pd.NA
    with pytest.raises(DataError, match=r"weights column 'wt' has 1 NaN or infinite value\(s\), first at row 1005"):
        fit(df.assign(wt=missing), weights="wt")


@pytest.mark.parametrize("col", ["y", "x"])
def test_nan_and_inf_name_column_and_row(df, col):
    bad = df.astype({col: float})
    bad.loc[1007, col] = np.nan
    with pytest.raises(DataError, match=rf"column '{col}' has 1 (missing|NaN or infinite) value\(s\), "
                                        "first at row 1007"):
        fit(bad)
    bad.loc[1007, col] = np.inf
    with pytest.raises(DataError, match=rf"column '{col}' has 1 NaN or infinite value\(s\), first at row 1007"):
        fit(bad)


def test_missing_group_label(df):
    bad = df.astype({"item": float})
    bad.loc[1003, "item"] = np.nan
    with pytest.raises(DataError, match=r"grouping column 'item' has 1 missing value\(s\), first at row 1003"):
        fit(bad)


def test_non_binary_response(df):
    bad = df.copy()
    bad.loc[1010, "y"] = 2
    with pytest.raises(DataError, match=r"response 'y' must be 0/1 .* 1 row\(s\) hold other values \(2\.0\), first at row 1010"):
        fit(bad)


def test_non_numeric_response(df):
    bad = df.assign(y=np.where(df.y == 1, "yes", "no"))
    with pytest.raises(DataError, match=r"column 'y' must be numeric"):
        fit(bad)


def test_trials_out_of_range(df):
    data = df.assign(n=3, s=np.minimum(df.y * 4, 4))
    with pytest.raises(DataError, match=r"response 's' must lie in \[0, trials\].* 4.0 successes of 3.0 trials at row"):
        pyglmm.glmm("s ~ x + (1|user)", data, trials="n")


def test_negative_weights(df):
    with pytest.raises(DataError, match=r"column 'weights' has negative weights, first at row 1004"):
        fit(df, weights=np.where(np.arange(len(df)) == 4, -1.0, 1.0))


def test_aliased_columns_are_named(df):
    data = df.assign(x2=2 * df.x + 1)
    with pytest.raises(DataError, match=r"aliased .*'x2' is a linear combination of 'Intercept', 'x'"):
        fit(data, "y ~ x + x2 + (1|user) + (1|item)")
    with pytest.raises(DataError, match=r"'zero' is all zeros"):
        fit(df.assign(zero=0.0), "y ~ x + zero + (1|user)")
    # a categorical before the numeric column it aliases: blamed in the formula's order, as
    # written, though the design holds the numeric columns first
    group = np.where(df.x > 0.5, "c", np.where(df.x > -0.5, "b", "a"))
    with pytest.raises(DataError, match=r"aliased .*'is_c' is a linear combination of 'C\(g\)\[T\.c\]'"):
        fit(df.assign(g=group, is_c=(group == "c").astype(float)), "y ~ C(g) + is_c + (1|user)")


def test_empty_data(df):
    with pytest.raises(DataError, match="the data have no rows"):
        fit(df.iloc[:0])


def test_formula_errors(df):
    with pytest.raises(ValueError, match="formula 'y ~ x' has no random-effect term"):
        fit(df, "y ~ x")
    with pytest.raises(NotImplementedError, match=r"random intercepts only; \(\(Intercept\) \+ x\|user\) has random slopes"):
        fit(df, "y ~ x + (x|user)", engine="crossed")  # engine="auto" fits slopes by AGQ
    with pytest.raises(ValueError, match="grouping factor 'user' appears twice"):
        fit(df, "y ~ x + (1|user) + (1|user)")
    with pytest.raises(ValueError, match=r"formula must look like .*, got 'y x \+ \(1\|user\)'"):
        fit(df, "y x + (1|user)")


def test_bad_options(df):
    with pytest.raises(ValueError, match="unknown family 'negbin'"):
        fit(df, family="negbin")
    with pytest.raises(ValueError, match="dispersion must be 'fixed' or 'estimate'"):
        fit(df, dispersion="pearson")
    with pytest.raises(ValueError, match="tol must be positive"):
        fit(df, tol=0)
    with pytest.raises(ValueError, match="unknown backend 'cuda'; choose one of cpp, numba, numpy"):
        fit(df, backend="cuda")


def test_array_interface_errors():
    X = np.ones((10, 2))
    with pytest.raises(DataError, match="grouping column 'g' has 9 rows, expected 10"):
        pyglmm.glmm_from_arrays(X, np.zeros(10), {"g": np.arange(9)})
    with pytest.raises(DataError, match=r"groups is empty: give at least one grouping factor"):
        pyglmm.glmm_from_arrays(X, np.zeros(10), {})
    with pytest.raises(ValueError, match="feature_names has 1 names for 2 columns"):
        pyglmm.glmm_from_arrays(X, np.zeros(10), {"g": np.arange(10)}, feature_names=["a"])
    with pytest.raises(ValueError, match="X already has a column named 'Intercept'"):
        pyglmm.glmm_from_arrays(X, np.zeros(10), {"g": np.arange(10)}, feature_names=["Intercept", "a"])
    with pytest.raises(DataError, match="fixed-effect column names repeat: 'a'"):
        pyglmm.glmm_from_arrays(X, np.zeros(10), {"g": np.arange(10)}, feature_names=["a", "a"])
    Xn = np.random.default_rng(0).standard_normal((10, 2))
    Xn[3, 1] = np.nan
    with pytest.raises(DataError, match="column 'x2' has 1 NaN or infinite value\\(s\\), first at row 3"):
        pyglmm.glmm_from_arrays(Xn, np.zeros(10), {"g": np.arange(10)})


def test_nonconvergence_is_flagged_and_warned(df):
    with pytest.warns(pyglmm.ConvergenceWarning, match="did not converge in 2 iterations"):
        res = fit(df, max_iter=2)
    assert not res.converged
    assert "did not converge" in str(res)


def test_singular_fit_is_flagged_and_warned():
    rng = np.random.default_rng(1)
    n = 3000
    data = pd.DataFrame({"user": rng.integers(0, 60, n), "item": rng.integers(0, 40, n),
                         "x": rng.standard_normal(n)})
    eta = 0.3 * data.x + rng.normal(0, 0.8, 60)[data.user]  # no item effect at all
    data["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    with pytest.warns(pyglmm.SingularFitWarning, match="variance of 'item' is estimated at ~0"):
        res = pyglmm.glmm("y ~ x + (1|user) + (1|item)", data)
    assert res.singular == ["item"] and res.converged
    assert res.sigma["item"] < 1e-4 and 0.5 < res.sigma["user"] < 1.1
    assert "boundary (singular) fit" in str(res)


def test_trials_are_binomial_only_and_arrays_one_dimensional():
    X = np.random.default_rng(0).standard_normal((50, 1))
    g = {"g": np.arange(50) % 5}
    with pytest.raises(DataError, match="trials are for the binomial family, not gaussian"):
        pyglmm.glmm_from_arrays(X, np.zeros(50), g, family="gaussian", trials=np.ones(50))
    with pytest.raises(DataError, match="column 'y' must be 1-dimensional, got shape \\(50, 1\\)"):
        pyglmm.glmm_from_arrays(X, np.zeros((50, 1)), g)
    with pytest.raises(DataError, match="column 'weights' must be 1-dimensional"):
        pyglmm.glmm_from_arrays(X, np.zeros(50), g, weights=np.ones((50, 1)))
    with pytest.raises(DataError, match="grouping column 'g' must be 1-dimensional"):
        pyglmm.glmm_from_arrays(X, np.zeros(50), {"g": np.zeros((50, 2))})


def test_bad_iteration_and_thread_options(df):
    with pytest.raises(ValueError, match="max_inner_iter must be an integer of at least 1, got 50.5"):
        fit(df, max_inner_iter=50.5)
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        fit(df, threads=0, backend="numba" if "numba" in pyglmm.available_backends() else None)


@pytest.mark.parametrize("engine", [dict(), dict(nagq=2, formula="y ~ x + (1|user)")])
@pytest.mark.parametrize("role", ["weights", "offset"])
def test_a_series_must_carry_the_datas_index(df, engine, role):
    """A Series is never matched by position behind the user's back (its index is the
    data's reversed here); aligned, it is used as given."""
    values = pd.Series(np.linspace(0.5, 1.5, len(df)), index=df.index[::-1])
    with pytest.raises(DataError, match=rf"{role}: the Series' index is not the data's"):
        fit(df, **{**engine, role: values})
    aligned = values.reindex(df.index)
    a, b = fit(df, **{**engine, role: aligned}), fit(df, **{**engine, role: aligned.to_numpy()})
    np.testing.assert_array_equal(a.params, b.params)


def test_grouping_labels_of_mixed_types_are_refused(df):
    mixed = df.assign(user=df.user.astype(object))
    mixed.loc[mixed.index[::2], "user"] = mixed.user[::2].astype(str)  # 5 and "5": one group spelled two ways
    with pytest.raises(DataError, match=r"grouping column 'user' mixes label types \((number|str), (number|str)\)"):
        fit(mixed)
    odd = df.assign(user=df.user.astype(object))
    odd.at[1003, "user"] = [1, 2]
    with pytest.raises(DataError, match=r"grouping column 'user' holds an unhashable label \(list\) at row 1003"):
        fit(odd)


@pytest.mark.parametrize("engine", ["crossed", "agq"])
@pytest.mark.parametrize("column, role, kw", [
    ("y", "response", {"family": "poisson"}),
    ("wt", "weights", {"weights": "wt"}),
    ("n", "trials", {"trials": "n"}),
    ("o", "offset", {"offset": "o"})])
def test_values_whose_squares_overflow_are_named(df, engine, column, role, kw):
    """One rule for both engines: a value beyond ~1.34e154 (whose square overflows)."""
    data = df.assign(wt=1.0, n=1.0, o=0.0)
    data[column] = np.where(np.arange(len(df)) == 3, 2e154, data[column].astype(float))
    with pytest.raises(DataError, match=rf"^{role} column '{column}' has a value too large for "
                                        r"double precision \(2e\+154 at row 1003\): values beyond "
                                        r"1\.34e\+154 overflow when squared"):
        fit(data, "y ~ x + (1|user)", engine=engine, **kw)


def test_weights_times_trials_overflow(df):
    with pytest.raises(DataError, match=r"^weights times trials has a value too large .*at row 1000"):
        fit(df.assign(wt=1e100, n=1e100), "y ~ x + (1|user)", weights="wt", trials="n")


def test_magnitude_below_the_limit_is_accepted():
    from pyglmm.data.validation import HUGE, check_magnitude

    check_magnitude("x", np.array([HUGE, -HUGE, 1e-300, 0.0]))
    with pytest.raises(DataError, match=r"^column 'x' has a value too large .*\(-inf at row 1\)"):
        check_magnitude("x", np.array([HUGE, -np.inf]))
