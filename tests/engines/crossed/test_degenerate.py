"""Degenerate data and singular matrices: a clear error naming the cause, or a flagged
and warned result, never silent iterations to the limit or a bare LinAlgError."""

import warnings

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import DataError, SeparationWarning, SingularMatrixError
from pyglmm.backends import kernels
from pyglmm.data.design import build_design
from pyglmm.engines.crossed import degenerate, schall
from pyglmm.engines.crossed.inference import beta_covariance, naive_comparison, naive_fit
from pyglmm.families import get_family

F = "y ~ x + (1|u) + (1|v)"
FC = "y ~ x + C(cat) + (1|u) + (1|v)"
D = r"'C\(cat\)\[T\.d\]'"  # the dummy of category d


def crossed(n=2000, seed=0):
    """A binary response on two crossed factors u (40 levels) and v (25)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.standard_normal(n), "cat": rng.choice(list("abcd"), n),
                       "u": rng.integers(0, 40, n), "v": rng.integers(0, 25, n)})
    eta = 0.5 * df.x + rng.normal(0, 1, 40)[df.u]
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return df


def quiet_fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyglmm.glmm(*args, **kw)


# --- responses without a finite estimate: errors up front -------------------------------------

@pytest.mark.parametrize("value", [0, 1])
def test_constant_binomial_response_is_an_error(value):
    with pytest.raises(DataError, match=f"the response 'y' is {value} in every row: the intercept "
                                        f"has no finite estimate .every fitted mean tends to {value}"):
        pyglmm.glmm(F, crossed().assign(y=float(value)))


def test_constant_response_counts_the_rows_of_positive_weight():
    df = crossed()
    with pytest.raises(DataError, match="the response 'y' is 0 in every row with positive weight"):
        pyglmm.glmm(F, df.assign(w=(df.y == 0).astype(float)), weights="w")


def test_all_successes_with_trials_is_an_error():
    with pytest.raises(DataError, match="the response 's' is 1 in every row: the intercept"):
        pyglmm.glmm("s ~ x + (1|u) + (1|v)", crossed().assign(n=3.0, s=3.0), trials="n")


def test_response_pure_within_every_level_names_the_factor():
    df = crossed()
    ones = np.arange(40) % 3 == 0  # 14 of u's 40 levels are all 1, the others all 0
    with pytest.raises(DataError, match=r"the response 'y' is all 0 or all 1 within every level of "
                                        r"factor 'u': 26 levels all 0, 14 all 1\. The random effects "
                                        r"\(1\|u\) separate the data"):
        pyglmm.glmm(F, df.assign(y=ones[df.u].astype(float)))


def test_one_row_per_level_of_a_binary_response_names_the_factor():
    df = crossed().assign(obs=lambda d: np.arange(len(d)))
    with pytest.raises(DataError, match=r"within every level of factor 'obs' \(every level has a "
                                        r"single row\)"):
        pyglmm.glmm("y ~ x + (1|u) + (1|obs)", df)


@pytest.mark.parametrize("screen", [degenerate.SCREEN, 100])
def test_one_mixed_level_anywhere_is_enough(monkeypatch, screen):
    """Pure levels in the first rows (the screen) are counted again over all rows."""
    monkeypatch.setattr(degenerate, "SCREEN", screen)
    df = crossed()
    y = (np.arange(40) % 3 == 0)[df.u].astype(float)
    last = int(np.flatnonzero(df.u == df.u.iloc[-1])[0])  # first row of the last row's level
    y[-1] = 1 - y[last]  # the last row mixes its level
    res = quiet_fit(F, df.assign(y=y), max_iter=3, se=False)
    assert res.n_obs == len(df)
    with pytest.raises(DataError, match="within every level of factor 'u'"):  # its weight is 0
        pyglmm.glmm(F, df.assign(y=y, w=np.r_[np.ones(len(df) - 1), 0.0]), weights="w")


def test_constant_gaussian_response_is_an_error_with_estimated_dispersion():
    df = crossed().assign(y=3.0)
    with pytest.raises(DataError, match=r"the estimated dispersion fell to .*: the response 'y' is "
                                        r"constant \(3 in every row\), so there is no residual variation"):
        pyglmm.glmm(F, df, family="gaussian")
    with pytest.raises(DataError, match=r"the response 'y' minus the offset is constant \(2 in every row"):
        pyglmm.glmm(F, df.assign(o=1.0), family="gaussian", offset="o")
    # a known residual variance leaves a finite (boundary) estimate
    fixed = quiet_fit(F, df, family="gaussian", dispersion="fixed")
    assert fixed.converged and fixed.coef["Intercept"] == pytest.approx(3.0, rel=1e-12)


def test_gaussian_response_constant_within_levels_names_the_factor():
    df = crossed()
    y = np.random.default_rng(1).standard_normal(40)[df.u]
    with pytest.raises(DataError, match="the response 'y' is constant within every level of factor 'u'"):
        pyglmm.glmm(F, df.assign(y=y), family="gaussian")


def test_gaussian_exact_fit_is_an_error():
    df = crossed()
    with pytest.raises(DataError, match="the fixed and random effects reproduce the response 'y' exactly"):
        pyglmm.glmm(F, df.assign(y=1 + 2 * df.x), family="gaussian")


# --- separation by the fixed effects: stopped early, flagged and warned ----------------------

def quasi_separated(seed=0):
    df = crossed(seed=seed)
    return df.assign(y=np.where(df.cat == "d", 1.0, df.y))  # category d: every response is 1


def test_quasi_separation_by_a_category_is_flagged_and_stops_early(backend, tmp_path):
    df = quasi_separated()
    n_d = int((df.cat == "d").sum())
    with pytest.warns(SeparationWarning, match=rf"^quasi-complete separation by {D}: the fitted means "
                                               rf"of {n_d} row\(s\) tend to 0 or 1"):
        res = pyglmm.glmm(FC, df, backend=backend)
    assert issubclass(SeparationWarning, pyglmm.ConvergenceWarning)
    assert res.separation == ["C(cat)[T.d]"] and not res.converged and res.iterations <= 10
    assert res.coef["C(cat)[T.d]"] > 4  # on its way to infinity
    assert np.isnan(res.se["C(cat)[T.d]"]) and np.all(np.isfinite(res.se.drop("C(cat)[T.d]")))
    assert f"after {res.iterations} outer iterations" in res.warnings[0]
    assert "Separation: the estimates of 'C(cat)[T.d]' diverge" in str(res)
    assert res.to_dict()["separation"] == ["C(cat)[T.d]"]
    res.save(tmp_path / "fit.json")
    back = pyglmm.load(tmp_path / "fit.json")
    assert back.separation == res.separation and str(back) == str(res)
    # the other estimates are those of the data without the separated rows
    rest = quiet_fit("y ~ x + C(cat) + (1|u) + (1|v)", df[df.cat != "d"])
    np.testing.assert_allclose(res.coef[["x", "C(cat)[T.b]", "C(cat)[T.c]"]],
                               rest.coef[["x", "C(cat)[T.b]", "C(cat)[T.c]"]], atol=0.01)


def test_regular_fits_pay_no_separation_check(monkeypatch):
    """The monitor's O(p) test keeps regular fits free of certificate passes over X."""
    calls = []
    monkeypatch.setattr(degenerate, "separation_certificate", lambda *a: calls.append(a))
    df = crossed()
    for data in (df, df.assign(y=np.where((df.cat == "d") & (df.x > 1.5), 1.0, df.y))):
        res = quiet_fit(FC, data, se=False)
        assert res.converged and res.separation == []
    assert calls == []


def test_one_contradicting_row_means_no_separation():
    df = quasi_separated()
    first_d = int(np.flatnonzero(df.cat == "d")[0])
    y = df.y.to_numpy().copy()
    y[first_d] = 0.0
    res = quiet_fit(FC, df.assign(y=y))
    assert res.separation == [] and res.converged
    # unless that row has no weight
    w = np.ones(len(df))
    w[first_d] = 0.0
    with pytest.warns(SeparationWarning, match=rf"quasi-complete separation by {D}"):
        res = pyglmm.glmm(FC, df.assign(y=y, w=w), weights="w")
    assert res.separation == ["C(cat)[T.d]"]


@pytest.mark.parametrize("threshold,columns", [(0.0, "'x'"), (1.0, "'Intercept', 'x'")])
def test_complete_separation_names_the_columns(threshold, columns):
    df = crossed()
    with pytest.warns(SeparationWarning, match=rf"^complete separation by {columns}: the fitted means "
                                               r"of 2000 row\(s\)"):
        res = pyglmm.glmm(F, df.assign(y=(df.x > threshold).astype(float)), dispersion="estimate")
    assert res.separation == eval(f"[{columns}]") and res.iterations <= 10


def test_separation_with_trials_and_the_naive_comparison():
    df = crossed()
    agg = df.assign(n=3.0, s=np.where(df.cat == "d", 3.0, np.round(3 * df.y * 0.7)))
    with pytest.warns(SeparationWarning, match=rf"quasi-complete separation by {D}"):
        res = pyglmm.glmm("s ~ x + C(cat) + (1|u) + (1|v)", agg, trials="n", compare_naive=True)
    assert res.separation == ["C(cat)[T.d]"] and res.naive is None
    assert "the naive comparison was skipped: the naive regression separates too" in res.warnings


def test_gaussian_fits_are_never_separated():
    df = quasi_separated()
    res = quiet_fit(FC, df, family="gaussian")
    assert res.separation == [] and res.converged


# --- singular matrices name the columns to blame ----------------------------------------------

def test_column_without_weight_is_named():
    """Cholesky of the clubbed blocks (schall._club_factors), through the public API."""
    df = crossed()
    w = (df.cat != "d").astype(float)
    with pytest.raises(SingularMatrixError, match=rf"X'WX \(the fixed effects at the working weights\) "
                                                  rf"is singular: {D} is zero on every row with positive weight"):
        pyglmm.glmm(FC, df.assign(w=w), weights="w")
    x2 = np.where(w > 0, df.x, np.random.default_rng(2).standard_normal(len(df)))
    with pytest.raises(SingularMatrixError, match="'x2' is a linear combination of 'x' on the rows "
                                                  "with positive weight"):
        pyglmm.glmm("y ~ x + x2 + (1|u) + (1|v)", df.assign(w=w, x2=x2), weights="w", family="gaussian")


def test_column_constant_within_the_levels_of_an_unpenalised_factor_is_named():
    """A_k = X'W(I - S_k)X at sigma_k = infinity (D_k = Z_k'w): the intercept and a
    column constant within the levels of k are not estimable beside (1|k)."""
    rng = np.random.default_rng(0)
    g = rng.integers(0, 10, 200)
    X = np.column_stack([np.ones(200), rng.integers(0, 5, 10)[g], rng.standard_normal(200)])
    Z = (g[:, None] == np.arange(10)).astype(float)
    with pytest.raises(SingularMatrixError, match=r"X'W\(I - S\)X beside the random effects of 'g' is "
                                                  r"singular: 'Intercept' is constant within every level "
                                                  r"of 'g', so it is not estimable beside \(1\|g\); 'age' "
                                                  r"is constant within every level of 'g'"):
        s, D = Z.T @ X, Z.sum(axis=0)  # the level sums, no penalty: R = s' D^-1 s
        schall._club_factors(X.T @ X, (s.T @ (s / D[:, None]))[None], ["Intercept", "age", "x"], ["g"])


def fitted(df, formula_columns, weights=None):
    """A design and its fit through the internal pieces (to reach the inference sites)."""
    fam = get_family("binomial")
    kern = kernels("numpy")
    X = np.column_stack([np.ones(len(df))] + [df[c].to_numpy(dtype=float) for c in formula_columns])
    d = build_design(X, df.y.to_numpy(), {"u": df.u, "v": df.v}, fam,
                     feature_names=["Intercept"] + formula_columns, response_name="y", kern=kern,
                     nthreads=1, weights=weights)
    return d, fam, kern


def test_singular_bread_of_the_standard_errors_is_named():
    """np.linalg.inv(H) of eq. (24): H loses a column when its rows lose their weight."""
    df = crossed().assign(d=lambda t: (t.cat == "d").astype(float))
    d, fam, kern = fitted(df, ["x", "d"])
    fit = schall.fit_schall(d, fam, schall.FitOptions(), kern, 1)
    fit.w0[df.d.to_numpy() == 1] = 0.0
    with pytest.raises(SingularMatrixError, match=r"H = X'W\(I - S\)X of the standard errors \(eq\. 24\) "
                                                  r"is singular: 'd' has nothing left beside the random effects"):
        beta_covariance(d, fit, kern, 1)


def test_singular_naive_regression_is_named():
    """np.linalg.solve of the naive regression's IRLS."""
    df = crossed().assign(d=lambda t: (t.cat == "d").astype(float))
    d, fam, kern = fitted(df, ["x", "d"], weights=1.0 - df.d.to_numpy())
    with pytest.raises(SingularMatrixError, match="X'WX of the naive regression is singular: 'd' is zero "
                                                  "on every row with positive weight"):
        naive_fit(d, fam, kern, 1)


def test_singular_covariance_in_the_naive_comparison_is_named():
    """scipy's eigh(A, B) in the naive comparison needs B positive definite."""
    df = crossed().assign(x2=lambda t: np.random.default_rng(3).standard_normal(len(t)))
    d, fam, kern = fitted(df, ["x", "x2"])
    fit = schall.fit_schall(d, fam, schall.FitOptions(), kern, 1)
    cov, _ = beta_covariance(d, fit, kern, 1)
    cov[2], cov[:, 2] = cov[1], cov[:, 1]  # x2's estimate a copy of x's
    with pytest.raises(SingularMatrixError, match=r"the covariance of the GLMM estimates is singular: "
                                                  r"'x2' is a linear combination of 'x' \(their estimates "
                                                  r"are confounded\)"):
        naive_comparison(d, fam, fit, cov, kern, 1)


@pytest.mark.parametrize("scale,message", [
    (1e200, "'x2' is too large (its sum of squares overflows): rescale it"),
    (1e-200, "'x2' is all zeros (or so small that its squares underflow)"),
])
def test_columns_beyond_floating_point_are_named(scale, message):
    """aliased_columns on X'X: a column whose squares overflow gave NaN estimates, flagged
    as converged; one whose squares underflow was called all zeros."""
    df = crossed()
    with pytest.raises(SingularMatrixError, match=r"fixed-effect columns are aliased \(X'X is singular\): "
                                                  + message.replace("(", r"\(").replace(")", r"\)")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow in X'X
            pyglmm.glmm("y ~ x + x2 + (1|u) + (1|v)", df.assign(x2=scale * (1 + df.x ** 2)))


def test_separating_columns_are_named_in_the_formula_order():
    """Categoricals are estimated after the dense columns; the warning, like the
    coefficients, names the columns in the formula's order."""
    df = crossed()
    y = np.where(df.cat == "d", 1.0, (df.x > 0).astype(float))  # d's dummy and x separate
    with pytest.warns(SeparationWarning, match=rf"^complete separation by {D}, 'x': "):
        res = pyglmm.glmm("y ~ C(cat) + x + (1|u) + (1|v)", df.assign(y=y))
    assert res.separation == ["C(cat)[T.d]", "x"]
