"""The numpy reference kernel of the AGQ engine: exact derivatives (central
finite differences), exact values where the integral is known (gaussian:
the multivariate normal marginal; any family: dense brute-force quadrature),
and stability at the extremes."""

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from pyglmm.engines.agq import kernels_numpy as kn
from pyglmm.families import family_of_code

GAUSSIAN, BINOMIAL, POISSON = kn.GAUSSIAN, kn.BINOMIAL, kn.POISSON
DISPERSION = 1.3


def problem(family, q, m=6, n=8, p=2, seed=1):
    """m clusters of n rows: X (intercept + normals), Z (intercept + normals), y, weights, offset, starts."""
    rng = np.random.default_rng(seed)
    N = m * n
    X = np.c_[np.ones(N), rng.normal(size=(N, p - 1))]
    Z = np.c_[np.ones(N), rng.normal(size=(N, q - 1))]
    starts = np.arange(0, N + 1, n, dtype=np.int64)
    eta = X @ np.r_[0.3, -0.5, 0.2][:p] + rng.normal(size=N)
    if family == BINOMIAL:  # proportions of 1..3 trials
        a = rng.integers(1, 4, N).astype(float)
        y = rng.binomial(a.astype(int), 1 / (1 + np.exp(-eta))) / a
    elif family == POISSON:
        a = np.ones(N)
        y = rng.poisson(np.exp(eta)).astype(float)
    else:
        a = 1 + rng.random(N)
        y = eta + rng.normal(size=N)
    return dict(X=X, Z=Z, y=y, weights=a, offset=0.1 * rng.normal(size=N), starts=starts)


def params(q, p=2, seed=2):
    rng = np.random.default_rng(seed)
    t = q * (q + 1) // 2
    return np.r_[np.r_[0.2, -0.3, 0.1][:p], 0.4 * rng.normal(size=t) + 0.7 * np.eye(q)[np.tril_indices(q)]]


def evaluate(family, data, psi, K, deriv, dispersion=DISPERSION):
    """Sum over clusters of the log-likelihood, gradient and Hessian, and the outputs per cluster."""
    p, q = data["X"].shape[1], data["Z"].shape[1]
    m, d = len(data["starts"]) - 1, len(psi)
    nodes, w = hermegauss(K)
    ll, g, h = np.zeros(m), np.zeros(d), np.zeros((d, d))
    modes, cv = np.zeros((m, q)), np.zeros((m, q, q))
    failed = kn.cluster_eval(family, dispersion, data["X"], data["Z"], data["y"], data["weights"],
                             data["offset"], data["starts"], psi[:p], psi[p:], nodes,
                             w / np.sqrt(2 * np.pi), modes, deriv, ll, g, h, cv, 1)
    assert failed == 0
    return ll, g, h, modes, cv


def central(fun, psi, eps):
    return np.array([(fun(psi + eps * e) - fun(psi - eps * e)) / (2 * eps) for e in np.eye(len(psi))])


CASES = [(f, q, K) for f in (BINOMIAL, POISSON, GAUSSIAN) for q in (1, 2, 3) for K in (1, 3)]


@pytest.mark.parametrize("family,q,K", CASES)
def test_gradient_and_hessian_match_finite_differences(family, q, K):
    # measured: 1e-10 (gradient) and 1e-9 (Hessian) relative to the largest entry at eps 1e-5
    data, psi = problem(family, q), params(q)
    _, g, h, _, _ = evaluate(family, data, psi, K, 2)
    g_fd = central(lambda x: evaluate(family, data, x, K, 0)[0].sum(), psi, 1e-5)
    h_fd = central(lambda x: evaluate(family, data, x, K, 1)[1], psi, 1e-5)
    assert np.abs(g - g_fd).max() <= 1e-7 * np.abs(g).max()
    assert np.abs(h - h_fd).max() <= 1e-7 * np.abs(h).max()
    assert np.array_equal(h, h.T) or np.abs(h - h.T).max() <= 1e-13 * np.abs(h).max()


@pytest.mark.parametrize("family", [BINOMIAL, POISSON])
def test_derivatives_at_a_singular_lambda(family):
    """A zero diagonal of Lambda (a singular fit) is a valid point with exact derivatives."""
    data, psi = problem(family, 2), params(2)
    psi[-1] = 0.0  # Lambda[1, 1] = 0: the slope is perfectly correlated with the intercept
    _, g, h, _, _ = evaluate(family, data, psi, 3, 2)
    g_fd = central(lambda x: evaluate(family, data, x, 3, 0)[0].sum(), psi, 1e-5)
    h_fd = central(lambda x: evaluate(family, data, x, 3, 1)[1], psi, 1e-5)
    assert np.abs(g - g_fd).max() <= 1e-7 * np.abs(g).max()
    assert np.abs(h - h_fd).max() <= 1e-7 * np.abs(h).max()


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("K", [1, 2, 5])
def test_gaussian_is_the_exact_marginal_likelihood(q, K):
    """Gaussian h~ is quadratic: every K gives the N(o + X beta, Z Lambda Lambda' Z' + sigma^2 A^-1) density."""
    data, psi = problem(GAUSSIAN, q), params(q)
    ll = evaluate(GAUSSIAN, data, psi, K, 0)[0]
    lam = kn.lambda_matrix(psi[2:], q)
    for c in range(len(ll)):
        r = slice(data["starts"][c], data["starts"][c + 1])
        Zl = data["Z"][r] @ lam
        cov = Zl @ Zl.T + DISPERSION * np.diag(1 / data["weights"][r])
        mean = data["offset"][r] + data["X"][r] @ psi[:2]
        exact = multivariate_normal(mean, cov).logpdf(data["y"][r])
        assert ll[c] == pytest.approx(exact, rel=1e-12, abs=1e-11)  # measured 3e-15


def brute_force(family, data, psi, c, half_width=8.0, step=0.02):
    """log of the integral over v in R^2 of prod_j p(y_j | eta_j) phi(v): a dense (non-adaptive)
    trapezoid grid over [-8, 8]^2 (exponentially accurate for this smooth, decaying integrand)."""
    r = slice(data["starts"][c], data["starts"][c + 1])
    lam = kn.lambda_matrix(psi[2:], 2)
    g = np.arange(-half_width, half_width + step / 2, step)
    V = np.array(np.meshgrid(g, g, indexing="ij")).reshape(2, -1).T
    eta = (data["offset"][r] + data["X"][r] @ psi[:2])[:, None] + data["Z"][r] @ lam @ V.T
    fam = family_of_code(family)  # the families' own log-densities: independent of the kernel's
    rows = fam.loglike_obs(data["y"][r][:, None], fam.linkinv(eta), data["weights"][r][:, None], DISPERSION)
    return logsumexp(rows.sum(0) - 0.5 * np.sum(V * V, 1)) + 2 * np.log(step) - np.log(2 * np.pi)


@pytest.mark.parametrize("family", [BINOMIAL, POISSON])
def test_q2_converges_in_K_to_brute_force_quadrature(family):
    data, psi = problem(family, 2, m=3, n=5), params(2)
    psi[2:] *= 2.5  # large random effects: Laplace is visibly off
    exact = np.array([brute_force(family, data, psi, c) for c in range(3)])
    errors = [np.abs(evaluate(family, data, psi, K, 0)[0] - exact).max() for K in (1, 3, 7, 15, 25)]
    assert errors[0] > 1e-3          # Laplace: measured 5e-3 (binomial), 2e-2 (poisson)
    assert errors[-1] < 1e-6         # measured 3e-10 (binomial), 5e-11 (poisson)
    assert errors[2] < errors[0] / 10


def test_laplace_is_h_at_the_mode_minus_half_log_det():
    data, psi = problem(BINOMIAL, 2), params(2)
    ll, _, _, modes, cv = evaluate(BINOMIAL, data, psi, 1, 0)
    lam = kn.lambda_matrix(psi[2:], 2)
    for c in range(len(ll)):
        r = slice(data["starts"][c], data["starts"][c + 1])
        eta = data["offset"][r] + data["X"][r] @ psi[:2] + data["Z"][r] @ lam @ modes[c]
        _, l1, l2 = kn.row_terms(BINOMIAL, 1.0, data["y"][r], data["weights"][r], eta, 2)
        R = data["Z"][r] @ lam
        assert np.abs(R.T @ l1 - modes[c]).max() < 1e-9  # the mode: gradient zero
        H = np.eye(2) - (R.T * l2) @ R
        assert np.allclose(cv[c], np.linalg.inv(H), rtol=1e-12, atol=1e-15)
        h = family_of_code(BINOMIAL).loglike(data["y"][r], 1 / (1 + np.exp(-eta)), data["weights"][r])
        assert ll[c] == pytest.approx(h - modes[c] @ modes[c] / 2 - 0.5 * np.linalg.slogdet(H)[1], rel=1e-13)


def test_modes_are_warm_started_and_overwritten():
    data, psi = problem(POISSON, 1), params(1)
    nodes, w = hermegauss(3)
    m = len(data["starts"]) - 1
    out = []
    for start in (np.zeros((m, 1)), np.full((m, 1), 5.0), np.full((m, 1), np.nan)):
        ll, g, h, cv = np.zeros(m), np.zeros(3), np.zeros((3, 3)), np.zeros((m, 1, 1))
        kn.cluster_eval(POISSON, 1.0, data["X"], data["Z"], data["y"], data["weights"], data["offset"],
                        data["starts"], psi[:2], psi[2:], nodes, w / np.sqrt(2 * np.pi), start, 2,
                        ll, g, h, cv, 1)
        out.append((ll, start))
    for ll, modes in out[1:]:
        np.testing.assert_allclose(ll, out[0][0], rtol=1e-13)
        np.testing.assert_allclose(modes, out[0][1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family", [BINOMIAL, POISSON, GAUSSIAN])
def test_extremes_are_finite(family):
    """Clusters of one row, all-0 / all-1 clusters, eta near +-40, sigma near 0 and sigma 5."""
    rng = np.random.default_rng(7)
    sizes = [1, 1, 6, 6, 6, 3]
    N = sum(sizes)
    starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    X = np.c_[np.ones(N), rng.normal(size=N)]
    Z = np.ones((N, 1))
    y = np.r_[1.0, 0.0, np.zeros(6), np.ones(6), rng.integers(0, 2, 9)]
    if family == POISSON:
        y = y * 3
    offset = np.r_[40.0, -40.0, np.zeros(N - 2)]
    data = dict(X=X, Z=Z, y=y, weights=np.ones(N), offset=offset, starts=starts)
    for sigma in (0.0, 1e-6, 4.0, 5.0):
        for K in (1, 7):
            ll, g, h, modes, cv = evaluate(family, data, np.array([0.5, -1.0, sigma]), K, 2)
            for out in (ll, g, h, modes, cv):
                assert np.all(np.isfinite(out)), (sigma, K)
