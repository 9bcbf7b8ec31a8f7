"""The ridge engine's formulas checked numerically on small random problems:
primal = dual = a dense N x N computation; the analytic gradient = central
differences of the objective; the fit is a fixed point of the EM map and equals a
direct maximisation of the marginal likelihood plus the log prior with scipy;
the Sigma M-step is the inverse-Wishart MAP (Psi + S)/(m + nu + q + 1)."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from pyglmm.engines.ridge import kernels_numpy
from pyglmm.engines.ridge.em import EM, Prior, State, pack, unpack
from pyglmm.engines.ridge.solvers import Layout, Term, make_solver


def problem(seed=1, n=70, p=6, two_terms=True):
    rng = np.random.default_rng(seed)
    g1, g2 = rng.integers(0, 9, n), rng.integers(0, 4, n)
    t = rng.uniform(0, 1, n)
    X = np.column_stack([np.ones(n), t, rng.normal(size=(n, p - 2))])
    y = X[:, 2] - 0.5 * X[:, 3] + rng.normal(size=9)[g1] * (1 + t) + rng.normal(size=4)[g2] + rng.normal(size=n)
    terms = [Term("g1", ("(Intercept)", "t"), g1, np.column_stack([np.ones(n), t]), 9)]
    if two_terms:
        terms.append(Term("g2", ("(Intercept)",), g2, np.ones((n, 1)), 4))
    pen = np.array([False, False] + [True] * (p - 2))
    return Layout(y, X, [f"x{j}" for j in range(p)], pen, terms)


SIGMAS = [np.array([[0.7, 0.2], [0.2, 0.5]]), np.array([[0.3]])]


def dense_loglik(lay, Sigmas, s2, lam):
    """log N(y; X_u beta_u, V) at the GLS beta_u, V built entry by entry."""
    V = s2 * np.eye(lay.n) + s2 / lam * lay.X[:, lay.penalized] @ lay.X[:, lay.penalized].T
    for t, S in zip(lay.terms, Sigmas):
        V += (t.codes[:, None] == t.codes[None, :]) * (t.Z @ S @ t.Z.T)
    Xu = lay.X[:, ~lay.penalized]
    Vi = np.linalg.inv(V)
    bu = np.linalg.solve(Xu.T @ Vi @ Xu, Xu.T @ Vi @ lay.y)
    return multivariate_normal(Xu @ bu, V).logpdf(lay.y), bu


def test_primal_dual_and_dense_agree():
    lay = problem()
    Ls = [np.linalg.cholesky(S) for S in SIGMAS]
    p, d = (make_solver(lay, name, kernels_numpy).estep(Ls, 0.8, 2.5, final=True) for name in ("primal", "dual"))
    ll, bu = dense_loglik(lay, SIGMAS, 0.8, 2.5)
    assert p.loglik == pytest.approx(ll, abs=1e-10) and d.loglik == pytest.approx(ll, abs=1e-10)
    np.testing.assert_allclose(p.beta[:2], bu, atol=1e-10)
    for name in ("beta", "beta_cov"):
        np.testing.assert_allclose(getattr(p, name), getattr(d, name), atol=1e-10)
    for a, b in zip(p.T + p.gammas + p.cond_var, d.T + d.gammas + d.cond_var):
        np.testing.assert_allclose(a, b, atol=1e-10)
    assert (p.R, p.B, p.edf) == pytest.approx((d.R, d.B, d.edf), abs=1e-9)


@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("lam", [None, 2.5])
def test_gradient_matches_central_differences(solver, lam):
    lay = problem()
    em = EM(make_solver(lay, solver, kernels_numpy), [Prior(0.3, 0.4 * np.eye(2)), Prior(0.2, np.eye(1))], lam)
    phi = pack(State(SIGMAS, 0.8, 2.5), em.qs, em.free_lam)
    grad = em.value_grad(phi)[1]
    h = 1e-6
    fd = [(em.value_grad(phi + e)[0] - em.value_grad(phi - e)[0]) / (2 * h) for e in h * np.eye(len(phi))]
    np.testing.assert_allclose(grad, fd, atol=2e-6)  # measured 6e-8


@pytest.mark.parametrize("lam", [None, 3.0])
def test_fit_is_the_em_fixed_point_and_the_direct_maximum(lam):
    lay = problem(seed=3, two_terms=False)
    priors = [Prior(0.25, np.diag([0.5, 0.2]))]
    em = EM(make_solver(lay, "primal", kernels_numpy), priors, lam)
    fit = em.run(State([np.eye(2)], 1.0, 1.0))
    assert fit.converged
    # one more EM step moves nothing
    again = em.mstep(fit.state, fit.estep)
    np.testing.assert_allclose(again.Sigmas[0], fit.state.Sigmas[0], rtol=1e-7)
    assert (again.s2, again.lam) == pytest.approx((fit.state.s2, fit.state.lam), rel=1e-7)

    # direct maximisation of the dense log-likelihood + IW log kernel over (L, log s2, log lam)
    def negative(phi):
        st = unpack(phi, [2], lam)
        flat_sigma = 0.5 * np.log(st.s2) if lam is None else 0.0  # sigma integrated when lambda is EB
        return -(dense_loglik(lay, st.Sigmas, st.s2, st.lam)[0] + priors[0].log_kernel(st.Sigmas[0], 9)
                 + flat_sigma)

    opt = minimize(negative, pack(State([np.eye(2)], 1.0, lam or 1.0), [2], lam is None), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000, "maxfev": 20000})
    assert -opt.fun == pytest.approx(fit.objective, abs=1e-7)  # measured 2e-11
    direct = unpack(opt.x, [2], lam)
    np.testing.assert_allclose(direct.Sigmas[0], fit.state.Sigmas[0], rtol=1e-4)  # measured 1e-6
    assert direct.lam == pytest.approx(fit.state.lam, rel=1e-4)


def test_sigma_mstep_is_the_inverse_wishart_map():
    lay = problem(two_terms=False)
    b, A, m, q = 0.3, np.array([[0.6, 0.1], [0.1, 0.4]]), 9, 2
    em = EM(make_solver(lay, "primal", kernels_numpy), [Prior(b, A)], 2.5)
    st = State([SIGMAS[0]], 0.8, 2.5)
    e = em.evaluate(st)[0]
    L = np.linalg.cholesky(SIGMAS[0])
    S = L @ e.T[0] @ L.T
    nu = b * m / (1 - b) - q - 1
    psi = (nu + q + 1) * A
    np.testing.assert_allclose(em.mstep(st, e).Sigmas[0], (psi + S) / (m + nu + q + 1), atol=1e-12)


def test_lambda_is_the_empirical_bayes_maximum():
    """The EB lambda maximises the profiled criterion (marginal likelihood, sigma
    integrated under a flat prior) over lambda."""
    lay = problem(seed=4, two_terms=False)
    em = EM(make_solver(lay, "primal", kernels_numpy), [Prior(0.0, np.eye(2))], None)
    fit = em.run(State([np.eye(2)], 1.0, 1.0))
    best = fit.objective
    for factor in (0.8, 1.25):
        other = EM(make_solver(lay, "primal", kernels_numpy), [Prior(0.0, np.eye(2))],
                   fit.state.lam * factor).run(fit.state)
        # the EB criterion integrates sigma under a flat prior: J + log sigma
        assert other.objective + 0.5 * np.log(other.state.s2) < best - 1e-6


def test_laplace_evidence_matches_numerical_integration():
    """For a random intercept (q = 1) the Laplace evidence of b (log-Cholesky x = log L,
    flat prior on log sigma^2, the IW's full normalising constant and the Jacobian 2 L^2)
    is close to a 2-D quadrature of the same integrand over (x, log sigma^2)."""
    from pyglmm.engines.ridge.laplace import iw_constant, log_evidence

    rng = np.random.default_rng(8)
    n, m = 120, 15
    g = rng.integers(0, m, n)
    y = 1 + rng.normal(size=m)[g] * 0.8 + rng.normal(size=n)
    lay = Layout(y, np.ones((n, 1)), ["Intercept"], np.array([False]),
                 [Term("g", ("(Intercept)",), g, np.ones((n, 1)), m)])
    solver = make_solver(lay, "primal", kernels_numpy)
    b, A = 0.3, np.array([[0.5]])
    value, fit = log_evidence(solver, b, [A], State([np.eye(1)], 1.0, 1.0))
    em = EM(solver, [Prior(b, A)], 1.0)
    const = iw_constant(b, A, m)

    def integrand(x, s):  # J + IW constant + log|dSigma/dx|, x = log L, s = log sigma^2
        st = State([np.array([[np.exp(2 * x)]])], np.exp(s), 1.0)
        return em.evaluate(st)[1] + const + np.log(2) + 2 * x

    x0, s0 = np.log(np.sqrt(fit.state.Sigmas[0][0, 0])), np.log(fit.state.s2)
    xs, ss = np.linspace(x0 - 2.5, x0 + 2.5, 121), np.linspace(s0 - 1.2, s0 + 1.2, 61)
    F = np.array([[integrand(x, s) for s in ss] for x in xs])
    top = F.max()
    numeric = top + np.log(np.trapezoid(np.trapezoid(np.exp(F - top), ss, axis=1), xs))
    assert value == pytest.approx(numeric, abs=0.03)  # measured -0.011 (Laplace error)
