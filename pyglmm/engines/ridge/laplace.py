r"""Empirical Bayes for the inverse-Wishart weight b (with the target A fixed).

The talk chooses the hyperparameters by maximising a Laplace approximation of
the marginal likelihood :math:`p(y \mid \lambda, b, A)`, integrating over
:math:`\Sigma` (and :math:`\sigma^2`).  pyglmm's version (the talk does not
give the parameterisation; this is the usual one):

.. math::

    \log p(y \mid b) \approx f(\hat x) + \tfrac d2 \log 2\pi - \tfrac12\log|-\nabla^2 f(\hat x)|,
    \qquad f(x) = \log p(y \mid \Sigma(x), \sigma^2, \lambda)
        + \sum_k \big[\log IW(\Sigma_k \mid \nu_k, \Psi_k) + \log|J_k(x)|\big],

over :math:`x` = the log-Cholesky coordinates of every :math:`\Sigma_k` and
:math:`\log\sigma^2` (flat prior on :math:`\log\sigma^2`), with :math:`\lambda`
held at its empirical-Bayes value, :math:`\beta_u` profiled,
:math:`\nu_k = b m_k/(1-b) - q_k - 1`, :math:`\Psi_k = b m_k A_k/(1-b)`, the
full IW normalising constant :math:`\tfrac{\nu}2\log|\Psi| - \tfrac{\nu q}2\log 2
- \log\Gamma_q(\nu/2)`, and the Jacobian of :math:`x \mapsto \mathrm{vech}\,\Sigma`,
:math:`\log|J| = q\log 2 + \sum_{j=1}^q (q - j + 2)\log L_{jj}`.  :math:`\hat x`
maximises :math:`f` (the MAP plus the Jacobian) and the Hessian is the
central-difference Jacobian of the exact gradient.

b is searched where the prior is proper with a finite mode weight,
:math:`\nu_k \ge q_k` for every term, up to 0.99: a coarse grid in logit(b),
then Brent's method (scipy) around the best grid point.  EB over b is only
meaningful for a *fixed* target A (with A free the criterion drives b to 1,
see ``notes/reglmm.md`` §4.4).
"""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import multigammaln

from .em import EM, Prior

B_MAX = 0.99


def b_bounds(terms):
    """The smallest b with nu_k >= q_k for every term, and B_MAX."""
    lo = max((2 * t.q + 1) / (t.m + 2 * t.q + 1) for t in terms)
    return lo, B_MAX


def iw_constant(b, A, m):
    q = len(A)
    nu = b * m / (1 - b) - q - 1
    psi_logdet = np.linalg.slogdet(b * m / (1 - b) * A)[1]
    return 0.5 * nu * psi_logdet - 0.5 * nu * q * np.log(2) - multigammaln(0.5 * nu, q)


def log_evidence(solver, b, targets, state):
    """The Laplace log marginal likelihood of b at the MAP started from ``state``;
    returns (value, the MAP fit with the Jacobian)."""
    priors = [Prior(b, A) for A in targets]
    em = EM(solver, priors, state.lam)
    em.jacobian = True
    fit = em.run(state, tol=1e-7, warmup=0)
    terms = solver.layout.terms
    H = em.hessian(fit.state)
    sign, logdet = np.linalg.slogdet(-H)
    if sign <= 0:
        return -np.inf, fit
    const = sum(iw_constant(b, A, t.m) + t.q * np.log(2) for A, t in zip(targets, terms))
    d = len(H)
    return float(fit.objective + const + 0.5 * d * np.log(2 * np.pi) - 0.5 * logdet), fit


def choose_b(solver, targets, state, n_grid=8):
    """Empirical-Bayes b: (b, log evidence, table of (b, log evidence) tried)."""
    lo, hi = b_bounds(solver.layout.terms)
    tried = {}

    def value(b):
        if b not in tried:
            tried[b] = log_evidence(solver, b, targets, state)[0]
        return tried[b]

    grid = 1 / (1 + np.exp(-np.linspace(np.log(lo / (1 - lo)), np.log(hi / (1 - hi)), n_grid)))
    vals = [value(float(b)) for b in grid]
    best = int(np.argmax(vals))
    a, c = grid[max(best - 1, 0)], grid[min(best + 1, n_grid - 1)]
    if best not in (0, n_grid - 1):
        opt = minimize_scalar(lambda b: -value(float(b)), bounds=(a, c), method="bounded",
                              options={"xatol": 1e-3})
        value(float(opt.x))
    b_best = max(tried, key=tried.get)
    return b_best, tried[b_best], sorted(tried.items())
