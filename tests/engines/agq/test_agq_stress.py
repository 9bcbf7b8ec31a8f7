"""Stress table of the AGQ engine: extreme but legal data give finite results (or
a clear error), never NaN.

| case | what is extreme |
|---|---|
| singletons | every cluster has one row |
| all_0_all_1 | a third of the clusters are all 0, a third all 1 |
| sigma_0 | no cluster effect (a singular fit, sigma = 0) |
| sigma_4 | cluster sd 4: most clusters nearly all 0 or all 1 |
| eta_40 | offsets of +-40 in half the rows |
| poisson_big | poisson counts near e^8 with sd 2 |
| many_clusters | 10^5 clusters of 1-3 rows (compiled backends only: the numpy reference takes minutes) |
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import backends
from pyglmm.exceptions import ConvergenceWarning, SingularFitWarning


def simulate(m, sizes, sd, family="binomial", offset=0.0, seed=0, slope=False):
    rng = np.random.default_rng(seed)
    n_rows = rng.choice(sizes, m)
    g = np.repeat(np.arange(m), n_rows)
    n = g.size
    x, t = rng.normal(size=n), rng.random(n)
    b = rng.normal(0, sd, m)[g] + (rng.normal(0, sd / 2, m)[g] * t if slope else 0)
    off = np.where(rng.random(n) < 0.5, offset, -offset) if offset else np.zeros(n)
    eta = off + 0.3 + 0.5 * x + b
    if family == "binomial":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    else:
        y = rng.poisson(np.exp(np.minimum(eta, 20))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "t": t, "g": g, "off": off})


def all_0_all_1():
    df = simulate(60, [4, 6], 1.0, seed=3)
    df.loc[df.g % 3 == 0, "y"] = 0.0
    df.loc[df.g % 3 == 1, "y"] = 1.0
    return df


CASES = {
    "singletons": lambda: simulate(150, [1], 1.0, seed=1),
    "all_0_all_1": all_0_all_1,
    "sigma_0": lambda: simulate(40, [10], 0.0, seed=1),
    "sigma_4": lambda: simulate(80, [5, 10], 4.0, seed=4),
    "eta_40": lambda: simulate(60, [5], 1.0, offset=40.0, seed=5),
    "poisson_big": lambda: simulate(40, [5], 2.0, family="poisson", offset=0.0, seed=6).assign(
        y=lambda d: np.random.default_rng(6).poisson(np.exp(8 + 2 * (d.g % 5 - 2) / 2.0))),
}


def finite_fit(df, family="binomial", slopes=False, **kw):
    formula = "y ~ x + (1 + t|g)" if slopes else "y ~ x + (1|g)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = pyglmm.glmm(formula, df, family, offset="off", **kw)
    kinds = {w.category for w in caught}
    assert kinds <= {SingularFitWarning, ConvergenceWarning}, kinds
    re = res.ranef()["g"]
    for values in (res.coef, res.bse, res.sigma, re.condval, re.condsd, res.fittedvalues):
        assert np.all(np.isfinite(values))
    assert np.isfinite([res.loglik, res.aic, res.bic, res.deviance]).all()
    return res, kinds


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("nagq", [1, 7])
def test_stress_case_is_finite(name, nagq):
    df = CASES[name]()
    res, kinds = finite_fit(df, "poisson" if name == "poisson_big" else "binomial", nagq=nagq)
    assert res.converged
    if name == "sigma_0":
        assert res.singular == ["g"] and SingularFitWarning in kinds
    if name == "sigma_4":
        assert 2.5 < res.sigma["g"] < 6


@pytest.mark.parametrize("name", ["singletons", "all_0_all_1", "eta_40"])
def test_stress_random_slopes_are_finite(name):
    finite_fit(CASES[name](), slopes=True, nagq=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", [b for b in backends.BACKENDS if b != "numpy"])
def test_many_clusters_are_finite(name):
    if name not in backends.available_backends("agq"):
        pytest.skip(f"no {name} kernels for the agq engine")
    df = simulate(100_000, [1, 2, 3], 1.0, seed=7)
    res, _ = finite_fit(df, nagq=3, backend=name)
    assert res.converged and res.n_levels["g"] == 100_000


# --- a curvature singular to rounding: one row, q = 2, a poisson mean near e^40 -------------

def huge_count():
    """30 ordinary poisson clusters and cluster 'big' with one row whose count is e^40."""
    df = simulate(30, [6], 0.5, family="poisson", seed=8)
    big = pd.DataFrame({"y": [float(np.round(np.exp(40.0)))], "x": [0.0], "t": [0.7], "g": ["big"],
                        "off": [0.0]})
    return pd.concat([df.assign(g=df.g.astype(str)), big], ignore_index=True)


def test_kernels_agree_where_the_curvature_is_singular_to_rounding():
    """At eta ~ 40 in the one-row cluster, H = I + mu r r' (mu ~ 2e17) is not positive
    definite in double precision: every backend gives that cluster NaN and counts its mode
    search as failed (the numpy reference once raised LinAlgError), the others agree."""
    from pyglmm.engines.agq.model import build_arrays, evaluate_clusters
    from pyglmm.families import get_family

    arrays = build_arrays("y ~ x + (1 + t|g)", huge_count(), get_family("poisson"))
    big = list(arrays.levels).index("big")
    out = {}
    for name in backends.available_backends("agq"):
        modes = np.zeros((arrays.m, arrays.q))
        ll, _, _, _, failed = evaluate_clusters(backends.kernels(name, "agq"), arrays,
                                                np.array([40.0, 0.0]), np.array([1.0, 0.0, 1.0]),
                                                1, modes, 0)
        assert np.isnan(ll[big]) and failed == 1, name
        out[name] = np.delete(ll, big)
        assert np.isfinite(out[name]).all()
    for name, ll in out.items():
        np.testing.assert_allclose(ll, out["numpy"], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("name", backends.BACKENDS)
def test_a_cluster_that_cannot_be_evaluated_is_named(name):
    if name not in backends.available_backends("agq"):
        pytest.skip(f"no {name} kernels for the agq engine")
    with pytest.raises(pyglmm.DataError, match=r"^the marginal log-likelihood of cluster\(s\) 'big' "
                                               r"of 'g' \(1 row\(s\)\) cannot be computed at the "
                                               "start: .*singular to rounding \\(fewer rows than the 2 random effects"):
        pyglmm.glmm("y ~ x + (1 + t|g)", huge_count(), "poisson", engine="agq", backend=name)
