"""Separation in the AGQ engine: fixed effects without a finite estimate are found by an
exact certificate, flagged, warned about and given NaN standard errors, on every backend;
data without separation never are."""

import warnings

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import SeparationWarning
from pyglmm.backends import kernels
from pyglmm.engines.agq import glmm_agq
from pyglmm.engines.agq.model import AGQArrays, ClusterObjective, build_arrays
from pyglmm.engines.separation import SeparationMonitor
from pyglmm.families import get_family

M, N = 30, 20  # clusters, rows per cluster


def data(seed=1):
    """Binary y on x with a random intercept; w is constant within clusters (1 in every
    third), cat a row-level category."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(M), N)
    x = rng.standard_normal(M * N)
    eta = 0.5 * x + rng.normal(0, 1, M)[g]
    return pd.DataFrame({"g": g, "x": x, "w": (np.arange(M) % 3 == 0).astype(float)[g],
                         "cat": rng.choice(list("abc"), M * N),
                         "y": (rng.random(M * N) < 1 / (1 + np.exp(-eta))).astype(float)})


def quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return glmm_agq(*args, **kw)


def by_cluster_covariate():
    """Every row of the clusters with w = 1 is a success."""
    df = data()
    return df.assign(y=np.where(df.w == 1, 1.0, df.y))


def test_separation_by_a_cluster_constant_covariate_is_flagged(backend, tmp_path):
    df = by_cluster_covariate()
    n_w = int(df.w.sum())
    with pytest.warns(SeparationWarning, match=rf"^quasi-complete separation by 'w': the fitted means "
                                               rf"of {n_w} row\(s\) tend to 0 or 1 as the estimates "
                                               r"of 'w' diverge; found after \d+ iterations of the GLM start"):
        res = glmm_agq("y ~ x + w + (1|g)", df, backend=backend)
    assert res.separation == ["w"] and not res.converged and res.coef["w"] > 20
    assert np.isnan(res.se["w"]) and np.all(np.isfinite(res.se.drop("w")))
    assert "Separation: the estimates of 'w' diverge" in str(res.summary())
    assert res.to_dict()["separation"] == ["w"]
    res.save(tmp_path / "fit.json")
    back = pyglmm.load(tmp_path / "fit.json")
    assert back.separation == ["w"] and str(back.summary()) == str(res.summary())
    # the other estimates are their limits: the fit without the separated clusters
    # (measured differences 8e-11 in the estimates, 2e-11 in the standard errors)
    rest = glmm_agq("y ~ x + (1|g)", df[df.w == 0], backend=backend)
    np.testing.assert_allclose(res.coef[["Intercept", "x"]], rest.coef, atol=1e-8)
    np.testing.assert_allclose(res.se[["Intercept", "x"]], rest.se, atol=1e-8)
    np.testing.assert_allclose(res.sigma, rest.sigma, atol=1e-8)


def test_the_random_effect_does_not_absorb_cluster_level_separation():
    """Along the separating direction the marginal log-likelihood increases at every
    covariance of the random effects: no point is a maximum (whatever sigma)."""
    df = by_cluster_covariate()
    arrays = build_arrays("y ~ x + w + (1|g)", df, get_family("binomial"))
    objective = ClusterObjective(kernels("numpy", "agq"), arrays, 1)
    for sigma in (0.3, 1.0, 5.0):
        ll = [objective(np.r_[-0.5, 0.45, s, np.log(sigma)], 0)[0] for s in (0, 2, 4, 8, 16)]
        assert np.all(np.diff(ll) > 0), (sigma, ll)


def test_poisson_zeros_in_a_category_are_flagged_and_the_rest_is_their_limit():
    df = data()
    rng = np.random.default_rng(2)
    y = rng.poisson(np.exp(0.3 + 0.2 * df.x + rng.normal(0, 0.5, M)[df.g]))
    df = df.assign(y=np.where(df.cat == "c", 0, y))
    with pytest.warns(SeparationWarning, match=r"^quasi-complete separation by 'C\(cat\)\[T\.c\]': the "
                                               r"fitted means of \d+ row\(s\) tend to 0 as"):
        res = glmm_agq("y ~ x + C(cat) + (1|g)", df, family="poisson")
    assert res.separation == ["C(cat)[T.c]"] and res.coef["C(cat)[T.c]"] < -20
    # measured: 7e-13 (estimates), 5e-15 (standard errors)
    rest = glmm_agq("y ~ x + C(cat) + (1|g)", df[df.cat != "c"], family="poisson")
    np.testing.assert_allclose(res.coef[rest.coef.index], rest.coef, atol=1e-8)
    np.testing.assert_allclose(res.se[rest.coef.index], rest.se, atol=1e-8)


def test_separation_with_trials_and_random_slopes():
    df = by_cluster_covariate()
    rng = np.random.default_rng(3)
    df = df.assign(n=3, s=np.where(df.w == 1, 3, rng.integers(0, 4, len(df))))
    with pytest.warns(SeparationWarning, match="quasi-complete separation by 'w'"):
        res = quiet_but_separation("s ~ x + w + (1|g)", df, trials="n")  # sigma ~0 too
    assert res.separation == ["w"]
    with pytest.warns(SeparationWarning, match="quasi-complete separation by 'w'"):
        res = quiet_but_separation("y ~ x + w + (1 + x|g)", by_cluster_covariate(), nagq=3)
    assert res.separation == ["w"] and np.isnan(res.se["w"])


@pytest.mark.parametrize("threshold,columns", [(0.0, "'x'"), (1.0, "'Intercept', 'x'")])
def test_complete_separation_leaves_no_standard_error(threshold, columns):
    df = data()
    with pytest.warns(SeparationWarning, match=rf"^complete separation by {columns}: the fitted "
                                               rf"means of {M * N} row\(s\)"):
        res = quiet_but_separation("y ~ x + (1|g)", df.assign(y=(df.x > threshold).astype(float)))
    assert res.separation == eval(f"[{columns}]")
    assert np.isnan(res.cov_params().to_numpy()).all()  # every row separated: nothing is identified


def quiet_but_separation(*args, **kw):
    """The fit, with only its SeparationWarning (a boundary fit is likely here too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyglmm.SingularFitWarning)
        return glmm_agq(*args, **kw)


# --- never a false alarm ----------------------------------------------------------------------


@pytest.fixture
def certificates(monkeypatch):
    """The certificates the fits ask for, and their verdicts."""
    calls = []
    real = AGQArrays.certificate

    def recorded(self, bounds, delta):
        calls.append(real(self, bounds, delta))
        return calls[-1]
    monkeypatch.setattr(AGQArrays, "certificate", recorded)
    return calls


def test_regular_fits_pay_no_certificate(certificates):
    df = data()
    for kw in ({}, {"nagq": 5}):
        res = glmm_agq("y ~ x + C(cat) + w + (1|g)", df, **kw)
        assert res.converged and res.separation == []
    res = glmm_agq("y ~ x + (1 + x|g)", df)
    assert res.converged and res.separation == []
    assert certificates == []


def test_one_contradicting_row_means_no_separation(certificates):
    df = by_cluster_covariate()
    first = int(np.flatnonzero(df.w == 1)[0])
    y = df.y.to_numpy().copy()
    y[first] = 0.0
    res = quiet("y ~ x + w + (1|g)", df.assign(y=y))
    assert res.separation == [] and all(c is None for c in certificates)
    assert res.coef["w"] < 10 and np.isfinite(res.se["w"])


def test_separation_within_clusters_only_is_not_certified(certificates):
    """y = 1 exactly where x exceeds a threshold of its own in each cluster: no direction of
    the fixed effects alone separates the rows (the limit needs the random intercepts'
    variance to diverge too), so the certificate must not fire."""
    df = data()
    c = np.random.default_rng(4).normal(0, 1, M)
    res = quiet("y ~ x + (1|g)", df.assign(y=(df.x > c[df.g]).astype(float)))
    assert res.separation == [] and all(c is None for c in certificates)


def test_gaussian_fits_are_never_separated():
    res = glmm_agq("y ~ x + w + (1|g)", by_cluster_covariate(), family="gaussian")
    assert res.separation == [] and res.converged


def test_the_optimiser_pushes_along_a_certified_direction_and_fixes_coordinates():
    """maximize's watch protocol on f(x) = -exp(-x0) - (x1 - 1)^2 (x0 diverges; with x2 the
    objective does not vary at all, as every parameter under complete separation)."""
    from pyglmm.engines.agq.optimize import maximize

    def evaluate(x, deriv):
        e = np.exp(-x[0])
        return (-e - (x[1] - 1) ** 2, np.array([e, -2 * (x[1] - 1), 0.0]),
                np.diag([-e, -2.0, 0.0]))

    def watch(fix):
        def w(x, iteration):
            return (np.array([1.0, 0.0, 0.0]), np.array(fix)) if iteration == 2 else None
        return w
    # x0 pushed until its gain is below tol, then fixed; x1 optimised; x2 fixed too
    opt = maximize(evaluate, np.zeros(3), tol=1e-10, watch=watch([True, False, True]))
    assert opt.converged and opt.iterations <= 5 and opt.free.tolist() == [False, True, False]
    assert np.exp(-opt.x[0]) < 1e-9 and opt.x[1] == pytest.approx(1.0)
    # with x2 left free its zero curvature never lets Newton converge: the iteration limit
    opt = maximize(evaluate, np.zeros(3), tol=1e-10, max_iter=20, watch=watch([True, False, False]))
    assert not opt.converged and opt.iterations == 20


# --- the monitor's trigger on iterates (pyglmm.engines.separation) ----------------------------


def monitored(betas, separating):
    """Feed ``betas`` (iterates of 3 coefficients, unit column scale) to a monitor whose
    certificate holds exactly for directions on the columns in ``separating``; the
    directions it asked about and what it found."""
    asked = []

    def certificate(bounds, delta):
        asked.append(np.flatnonzero(delta).tolist())
        return (5, False) if asked[-1] and set(asked[-1]) <= separating else None
    monitor = SeparationMonitor("binomial", np.ones(3), ["a", "b", "c"], certificate)
    found = [monitor.check(beta, it) for it, beta in enumerate(betas)]
    return asked, next((f for f in found if f is not None), None)


def test_a_huge_coefficient_creeping_alone_is_certified():
    """Li et al. setting 5 rep 13: b2 reached -120 with the variance and then moved alone by
    steps of about 1 (1% of its size): the share-of-size rule alone never asked."""
    betas = [[0.5, -120.0 - k, 3.0] for k in range(6)]
    asked, found = monitored(betas, {1})
    assert found is not None and found.columns == ["b"] and asked[0] == [1]
    asked, found = monitored([[0.5, -8.0 - 0.1 * k, 3.0] for k in range(6)], {1})
    assert asked == [] and found is None  # 1/80 of its size and not huge: a slow fit


def test_a_huge_coefficient_that_converges_is_not_checked():
    betas = [[0.5, -120.0 + 0.5 ** k, 3.0] for k in range(8)]  # steps halve: converging
    assert monitored(betas, {1}) == ([], None)


def test_a_huge_separating_coefficient_is_certified_beside_one_that_follows_it():
    """Li et al. setting 5 rep 89: b1 (not separating) and b2 (separating) creep together."""
    betas = [[160.0 + 0.3 * k, -340.0 - 0.5 * k, 3.0] for k in range(6)]
    asked, found = monitored(betas, {1})
    assert found is not None and found.columns == ["b"] and [0, 1] in asked and asked[-1] == [1]


def test_the_final_check_tries_each_coefficient_once_one_is_huge():
    """Li et al. setting 6 rep 94: b1 = -15 stopped beside an intercept of -103."""
    def final(beta):
        asked = []

        def certificate(bounds, delta):
            asked.append(delta.tolist())
            return (2, False) if delta.tolist() == [0.0, -1.0, 0.0] else None
        found = SeparationMonitor("binomial", np.ones(3), ["a", "b", "c"], certificate).final(
            beta, 12)
        return asked, found
    asked, found = final([-103.0, -15.0, 2.0])
    assert asked == [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]] and found.columns == ["b"]
    assert final([-9.0, -8.0, 2.0]) == ([], None)  # nothing huge: no certificate
