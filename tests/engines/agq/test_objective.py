"""The AGQ engine's objective pieces: the log-Cholesky chain rule, the arrays built
from a frame, the optimiser on a known function, and the kernel's value against
glmer's deviance function at the same parameters (golden values from
tests/golden/agq_glmer.R)."""

import json

import numpy as np
import pandas as pd
import pytest
from cases import DATA

from pyglmm import DataError
from pyglmm.engines.agq import kernels_numpy
from pyglmm.engines.agq.model import ClusterObjective, LogCholesky, build_arrays, evaluate_clusters
from pyglmm.engines.agq.optimize import maximize
from pyglmm.families import get_family

GOLDEN = json.loads((DATA / "agq_glmer.json").read_text())


def case(name):
    """(data, golden entry, build_arrays keyword arguments) of a golden case."""
    g = GOLDEN[name]
    df = pd.read_csv(DATA / f"{'agq_poisson' if name == 'agq_poisson_slope' else name}.csv")
    kw = {k: g[k] for k in ("trials", "weights", "offset") if k in g}
    return df, g, kw


@pytest.mark.parametrize("q", [1, 2, 3])
def test_log_cholesky_chain_rule_matches_finite_differences(q):
    data = pd.DataFrame({"y": [0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1] * 3, "g": np.repeat(np.arange(6), 6),
                         "x": np.linspace(-1, 1, 36), "t": np.cos(np.arange(36.0)),
                         "s": np.sin(np.arange(36.0))})
    formula = "y ~ x + (" + " + ".join(["1", "t", "s"][:q]) + "|g)"
    arrays = build_arrays(formula, data, get_family("binomial"))
    obj = ClusterObjective(kernels_numpy, arrays, 3)
    x = np.r_[0.2, -0.4, np.random.default_rng(q).normal(size=q * (q + 1) // 2) * 0.5]
    _, g, h = obj(x, 2)
    eps = 1e-5
    g_fd = np.array([(obj(x + eps * e, 0)[0] - obj(x - eps * e, 0)[0]) / (2 * eps) for e in np.eye(len(x))])
    h_fd = np.array([(obj(x + eps * e, 1)[1] - obj(x - eps * e, 1)[1]) / (2 * eps) for e in np.eye(len(x))])
    assert np.abs(g - g_fd).max() < 1e-7 * np.abs(g).max()  # measured ~1e-10
    assert np.abs(h - h_fd).max() < 1e-7 * np.abs(h).max()


def test_log_cholesky_round_trip_and_boundary():
    param = LogCholesky(3)
    theta = np.array([0.5, -0.2, 1.5, 0.3, 0.0, 2.0])
    assert np.allclose(param.theta(param.rho(theta)), theta)
    rho = param.rho(np.array([0.0, 0.1, 1.0, 0, 0, 1]))
    assert rho[0] == -np.inf and param.theta(rho)[0] == 0.0


def test_arrays_are_sorted_by_cluster_with_caller_order_kept():
    df = pd.DataFrame({"y": [1, 0, 1, 1, 0], "x": [1.0, 2, 3, 4, 5], "g": ["b", "a", "b", "c", "a"],
                       "t": [0.1, 0.2, 0.3, 0.4, 0.5]})
    a = build_arrays("y ~ x + (1 + t|g)", df, get_family("binomial"))
    assert list(a.levels) == ["a", "b", "c"] and a.starts.tolist() == [0, 2, 4, 5]
    assert a.X[:, 1].tolist() == [2, 5, 1, 3, 4] and a.Z[:, 1].tolist() == [0.2, 0.5, 0.1, 0.3, 0.4]
    assert a.to_caller_order(a.X[:, 1]).tolist() == df.x.tolist()
    assert a.fixed_names == ["Intercept", "x"] and a.random_names == ["(Intercept)", "t"]


@pytest.mark.parametrize("formula,message", [
    ("y ~ x + (1|g) + (1|h)", "'g', 'h'"),
    ("y ~ x + (1 + t + x + s|g)", "at most 3"),
])
def test_arrays_refuse_what_the_engine_cannot_fit(formula, message):
    df = pd.DataFrame({"y": [1, 0, 1], "x": [1.0, 2, 3], "g": [1, 1, 2], "h": [1, 2, 2],
                       "t": [0.0, 1, 2], "s": [1.0, 0, 1]})
    with pytest.raises(DataError, match=message):
        build_arrays(formula, df, get_family("binomial"))


def test_arrays_name_a_bad_slope_column():
    df = pd.DataFrame({"y": [1, 0, 1], "x": [1.0, 2, 3], "g": [1, 1, 2], "t": [0.0, np.nan, 2]})
    with pytest.raises(DataError, match="random slope column 't'"):
        build_arrays("y ~ x + (1 + t|g)", df, get_family("binomial"))


def test_maximize_finds_a_quadratic_maximum_and_fixes_a_boundary():
    target = np.array([1.0, -2.0])

    def f(x, deriv):  # concave in x[0]; increasing towards x[1] = -inf (a variance at 0)
        val = -(x[0] - target[0]) ** 2 - np.exp(x[1]) if np.isfinite(x[1]) else -(x[0] - target[0]) ** 2
        g = np.array([-2 * (x[0] - target[0]), -np.exp(x[1])])
        h = np.diag([-2.0, -np.exp(x[1])])
        return val, g, h

    opt = maximize(f, [0.0, 0.0], bounded=[1], tol=1e-12)
    assert opt.converged and opt.x[0] == pytest.approx(1.0, abs=1e-9) and opt.x[1] == -np.inf
    assert any(row["fixed"] == [1] for row in opt.history)


def saturated(arrays):
    """The saturated model's log-likelihood (mu = y), which glmer leaves out for nAGQ > 1."""
    return arrays.family.loglike(arrays.y, arrays.y, arrays.weights)


def _golden_value(name, entry):
    df, g, kw = case(name)
    arrays = build_arrays(g["formula"], df, get_family(g["family"]), **kw)
    theta = np.atleast_1d(entry["theta"]).astype(float)
    modes = np.zeros((arrays.m, arrays.q))
    ll = evaluate_clusters(kernels_numpy, arrays, np.asarray(entry["beta"], float), theta,
                           entry["nagq"], modes, 0)[0].sum()
    return -2 * (ll - (saturated(arrays) if entry["nagq"] > 1 else 0.0)), entry["deviance"]


DEVFUN = [(name, i) for name in GOLDEN if name != "made_with" for i in range(len(GOLDEN[name].get("devfun", [])))]


@pytest.mark.parametrize("name,i", DEVFUN)
def test_kernel_value_is_glmer_deviance_at_the_same_parameters(name, i):
    """-2 sum_c l_c equals glmer's deviance function (devFunOnly = TRUE, tolPwrss = 1e-12) at the
    same (theta, beta); for nAGQ > 1 less the saturated log-likelihood, which glmer leaves out."""
    ours, glmer = _golden_value(name, GOLDEN[name]["devfun"][i])
    assert ours == pytest.approx(glmer, rel=1e-8)  # measured <= 5e-9 (glmer's PIRLS mode)
