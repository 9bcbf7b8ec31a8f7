"""The L2-penalised path (Li et al.'s adaptive penalty): lambda = 0 is the plain fit,
lambda > 0 the maximiser of the penalised pooled log-likelihood (checked with
scipy's trust-region Newton on the AGQ engine's pooled objective), effective df
and the criterion's choice."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from cases import load_case
from pyglmm import backends
from pyglmm.engines.agq.model import ClusterObjective, build_arrays
from pyglmm.engines.federated.api import fit_federated
from pyglmm.engines.federated.penalty import penalty_path
from pyglmm.engines.federated.transports import in_process
from pyglmm.families import get_family

FORMULA = "y ~ b1 + b2 + b3 + b4 + c1 + c2 + c3 + c4 + c5 + c6 + (1|site)"


@pytest.fixture(scope="module")
def path():
    df, _ = load_case("sites_m10_n30_L")
    sites = {f"site{s}": g for s, g in df.groupby("site")}
    table, res = penalty_path(in_process(sites), FORMULA, [5.0, 0.0, 1.0, 20.0], nagq=2)
    return df, sites, table, res


def test_lambda_zero_is_the_plain_fit(path):
    _, sites, table, _ = path
    plain = fit_federated(in_process(sites), FORMULA, nagq=2)
    row = table[table["lambda"] == 0].iloc[0]
    np.testing.assert_allclose(row[list(plain.coef.index)].to_numpy(float), plain.coef, rtol=1e-9)
    assert row["loglik"] == pytest.approx(plain.loglik, rel=1e-13)
    assert row["df"] == pytest.approx(12.0, rel=1e-12)  # 11 fixed effects and sigma


def test_penalized_estimates_maximise_the_penalized_pooled_likelihood(path):
    df, _, table, _ = path
    arrays = build_arrays(FORMULA, df, get_family("binomial"))
    objective = ClusterObjective(backends.kernels("numpy", engine="agq"), arrays, 2)
    pen = np.r_[0.0, np.ones(10), 0.0]  # not the intercept, not sigma
    for lam in (1.0, 20.0):
        def f(x):
            ll, g, h = objective(x, 2)
            return -(ll - lam * pen @ x**2), -(g - 2 * lam * pen * x), -(h - 2 * lam * np.diag(pen))
        ref = minimize(lambda x: f(x)[0], np.zeros(12), jac=lambda x: f(x)[1],
                       hess=lambda x: f(x)[2], method="trust-exact", options={"gtol": 1e-10})
        row = table[table["lambda"] == lam].iloc[0]
        np.testing.assert_allclose(row[arrays.fixed_names].to_numpy(float), ref.x[:11],
                                   rtol=1e-6, atol=1e-8)  # measured <= 2e-8 (scipy stops at gtol 1e-10)
        assert row["penalized_loglik"] == pytest.approx(-ref.fun, rel=1e-10)


def test_path_table_and_choice(path):
    _, _, table, res = path
    assert table["lambda"].tolist() == [0.0, 1.0, 5.0, 20.0]  # fitted in increasing order
    assert np.all(np.diff(table["df"]) < 0) and table["converged"].all()
    assert np.all(np.diff(table["rounds"]) > 0)
    best = table["bic"].idxmin()
    assert table["chosen"].tolist() == [i == best for i in range(4)]
    np.testing.assert_allclose(res.coef, table.loc[best, list(res.coef.index)].to_numpy(float))
    norms = [np.sum(table.loc[i, list(res.coef.index)[1:]].to_numpy(float) ** 2) for i in range(4)]
    assert np.all(np.diff(norms) < 0)  # more penalty, smaller coefficients


@pytest.mark.parametrize("kwargs, words", [({"lambdas": [-1.0]}, "lambdas must be finite and >= 0"),
                                           ({"lambdas": []}, "lambdas must be"),
                                           ({"lambdas": [0.0], "criterion": "cv"}, "criterion")])
def test_bad_arguments_are_named(kwargs, words):
    frame = pd.DataFrame({"y": [0, 1] * 5, "x": np.arange(10.0), "g": [1] * 5 + [2] * 5})
    with pytest.raises(ValueError, match=words):
        penalty_path(in_process({"a": frame}), "y ~ x + (1|g)", **kwargs)
