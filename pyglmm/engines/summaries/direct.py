r"""The direct fit: maximise the polynomial-approximate likelihood built from the
released statistics themselves (no pseudo-data, no randomness, no matching error).

Derivation.  With :math:`f(\eta) = \log(1 + e^\eta)`, cluster :math:`h` (size
:math:`n`, events :math:`Y`, means :math:`\bar x`, response cross-moments :math:`s`,
central moments :math:`m_\alpha`; see :mod:`~pyglmm.engines.summaries.site`) has,
given its random intercept :math:`b`, with :math:`a = \beta_0 + \bar x^\top\beta`,
:math:`e = a + b` and :math:`d_j = (x_j - \bar x)^\top\beta` (which does not depend
on :math:`b`),

.. math::
    \ell_h(b) = Y e + n s^\top\beta - \sum_j f(e + d_j)
    \approx Y e + n s^\top\beta - \sum_{k=0}^{K} c_k(e)\, M_k(\beta),
    \quad c_k = f^{(k)}/k!,\quad M_k(\beta) = \sum_j d_j^k
    = n\, T_k[\beta, \dots, \beta],

:math:`T_k` the symmetric tensor of the order-:math:`k` central moments
(:math:`M_0 = n`, :math:`M_1 = 0`).  Expanding about the cluster's centre keeps the
:math:`c_k` bounded and smooth in :math:`b` (the derivatives of :math:`f` are
polynomials in :math:`\sigma(e)` of degree :math:`\le k+1`), so
:math:`\ell_h(b) \to -\infty` as :math:`|b| \to \infty` whenever
:math:`0 < Y < n`, and the integral over :math:`b` is finite.  (Expanding about
:math:`\eta = 0` instead gives a :math:`-\eta^4/192` term and a divergent integral.)
The series converges for :math:`|d_j| < \pi` (the poles of :math:`f` are at
:math:`\pm i\pi`), so the approximation is good when the within-cluster spread of
:math:`x^\top\beta` is moderate.

The marginal log-likelihood
:math:`\sum_h \log \int \exp(\ell_h(b))\, \phi(b; 0, \sigma^2)\, db` is evaluated by
adaptive Gauss-Hermite quadrature per cluster: the nodes
:math:`b_q = \hat b_h + \sqrt2\,\omega_h z_q` are centred at the mode
:math:`\hat b_h` of the integrand with :math:`\omega_h = (-\partial_b^2 \log
\text{integrand})^{-1/2}` (``nagq = 1`` is the Laplace approximation).  Gradient
and Hessian in :math:`\theta = (\beta_0, \beta, \log\sigma)` are analytic for the
nodes held fixed (:math:`\nabla \log\sum_q W_q e^{h_q} = \sum_q p_q \nabla h_q`,
Hessian :math:`\sum_q p_q(\nabla^2 h_q + \nabla h_q \nabla h_q^\top) - \bar g\bar
g^\top`); the nodes are re-centred at every evaluation, so the maximiser
(scipy's ``trust-exact``) converges to the stationary point of the adaptive
quadrature up to its quadrature error.  Standard errors come from the observed
information (the negative Hessian) at the maximum, :math:`\mathrm{se}(\hat\sigma)`
by the delta method.

Orders: :math:`K = 1` carries no within-cluster information beyond :math:`s`, and
its likelihood grows without bound along :math:`s` (no maximum exists), so the
direct fit needs :math:`K \ge 2`.  For :math:`K = 2` every term is bounded above
(:math:`c_2 = f''/2 > 0`, :math:`M_2 \ge 0`); for :math:`K \ge 3` the odd and
quartic terms make the approximate likelihood unbounded far from the data's
range of :math:`\beta` (:math:`c_4` changes sign), so the fit at order :math:`K`
starts from the order-2 maximum and finds the local maximum next to it.
"""

import math
from itertools import permutations

import numpy as np

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def softplus_derivatives(e, jmax):
    """:math:`f^{(j)}(e)` for :math:`j = 0..j_{max}`, :math:`f = \\log(1+e^\\eta)`, stacked
    on a new first axis (:math:`f^{(j)} = P_j(\\sigma)` with :math:`P_1 = \\sigma`,
    :math:`P_{j+1} = P_j'\\,\\sigma(1-\\sigma)`)."""
    from numpy.polynomial import polynomial as P

    s = np.where(e >= 0, 1 / (1 + np.exp(-np.abs(e))), np.exp(-np.abs(e)) / (1 + np.exp(-np.abs(e))))
    out = [np.logaddexp(0.0, e)]
    poly, logistic_slope = np.array([0.0, 1.0]), np.array([0.0, 1.0, -1.0])
    for _ in range(jmax):
        out.append(P.polyval(s, poly))
        poly = P.polymul(P.polyder(poly), logistic_slope)
    return np.stack(out)


class Problem:
    """The stacked clusters of all sites, ready for the likelihood.

    ``n``, ``events`` (H,), ``mean``, ``y_cross`` (H, p), ``tensors[k]`` (H, p, ..., p)
    the order-k central-moment tensors for k = 2..K.
    """

    def __init__(self, n, events, mean, y_cross, moments, index, order):
        self.n, self.events = n.astype(np.float64), events.astype(np.float64)
        self.mean, self.y_cross, self.order = mean, y_cross, order
        H, p = mean.shape
        self.p = p
        self.tensors = {}
        for k in range(2, order + 1 if p else 2):  # no covariates: every M_k (k > 0) is 0
            T = np.zeros((H,) + (p,) * k)
            for col, alpha in enumerate(index):
                if len(alpha) == k:
                    for perm in set(permutations(alpha)):
                        T[(slice(None),) + perm] = moments[:, col]
            self.tensors[k] = T

    def polynomials(self, beta, order):
        """M_k, grad M_k, Hessian M_k (k = 0..order) at the slopes ``beta``: arrays (H, K+1),
        (H, K+1, p), (H, K+1, p, p)."""
        H, p = self.mean.shape
        M, dM, d2M = np.zeros((H, order + 1)), np.zeros((H, order + 1, p)), np.zeros((H, order + 1, p, p))
        M[:, 0] = self.n
        for k in range(2, order + 1 if self.tensors else 2):
            v = self.tensors[k]
            for _ in range(k - 2):
                v = v @ beta
            nk = self.n[:, None]
            d2M[:, k] = nk[:, :, None] * k * (k - 1) * v
            w = v @ beta
            dM[:, k] = nk * k * w
            M[:, k] = self.n * (w @ beta)
        return M, dM, d2M


def _terms(problem, theta, b, order, want):
    """h(b) = log[ exp(l_h(b)) phi(b; 0, sigma^2) ] at nodes b (H, Q), and optionally its
    b-derivatives ("b") or theta-gradient and Hessian ("theta")."""
    p = problem.p
    beta0, beta, tau = theta[0], theta[1:1 + p], theta[1 + p]
    inv_var = math.exp(-2 * tau)
    M, dM, d2M = problem.polynomials(beta, order)
    a = beta0 + problem.mean @ beta
    e = a[:, None] + b
    D = softplus_derivatives(e, order + 2)  # (K+3, H, Q)
    fact = np.array([math.factorial(k) for k in range(order + 1)])
    c0, c1, c2 = (D[j:j + order + 1] / fact[:, None, None] for j in range(3))
    S0 = np.einsum("khq,hk->hq", c0, M)
    h = (problem.events[:, None] * e + (problem.n * (problem.y_cross @ beta))[:, None] - S0
         - 0.5 * b * b * inv_var - tau - LOG_SQRT_2PI)
    if want == "value":
        return h
    S1, S2 = np.einsum("khq,hk->hq", c1, M), np.einsum("khq,hk->hq", c2, M)
    if want == "b":
        return h, problem.events[:, None] - S1 - b * inv_var, -S2 - inv_var
    H_, Q = b.shape
    u = np.concatenate([np.ones((H_, 1)), problem.mean], axis=1)  # d a / d (beta0, beta)
    G1 = np.einsum("khq,hkp->hqp", c1, dM)
    grad = np.zeros((H_, Q, p + 2))
    grad[..., :p + 1] = problem.events[:, None, None] * u[:, None, :] - S1[..., None] * u[:, None, :]
    grad[..., 1:p + 1] += (problem.n[:, None] * problem.y_cross)[:, None, :] - np.einsum(
        "khq,hkp->hqp", c0, dM)
    grad[..., p + 1] = b * b * inv_var - 1
    hess = np.zeros((H_, Q, p + 2, p + 2))
    hess[..., :p + 1, :p + 1] = -S2[..., None, None] * (u[:, :, None] * u[:, None, :])[:, None]
    cross = u[:, None, :, None] * np.pad(G1, ((0, 0), (0, 0), (1, 0)))[:, :, None, :]
    hess[..., :p + 1, :p + 1] -= cross + np.swapaxes(cross, -1, -2)
    hess[..., 1:p + 1, 1:p + 1] -= np.einsum("khq,hkrs->hqrs", c0, d2M)
    hess[..., p + 1, p + 1] = -2 * b * b * inv_var
    return h, grad, hess, problem.events[:, None] - S1 - b * inv_var


def _mode_terms(problem, theta, bhat, order):
    """At the modes ``bhat`` (H,): h_bb, h_bbb (H,) and the theta-gradients of h_b and
    h_bb (H, d), for the implicit derivatives of the modes and the scales."""
    p = problem.p
    beta0, beta, tau = theta[0], theta[1:1 + p], theta[1 + p]
    inv_var = math.exp(-2 * tau)
    M, dM, _ = problem.polynomials(beta, order)
    D = softplus_derivatives(beta0 + problem.mean @ beta + bhat, order + 3)  # (K+4, H)
    fact = np.array([math.factorial(k) for k in range(order + 1)])
    c1, c2, c3 = (D[j:j + order + 1] / fact[:, None] for j in (1, 2, 3))
    S2, S3 = np.einsum("kh,hk->h", c2, M), np.einsum("kh,hk->h", c3, M)
    u = np.concatenate([np.ones((len(bhat), 1)), problem.mean], axis=1)
    h_btheta, h_bbtheta = np.zeros((len(bhat), p + 2)), np.zeros((len(bhat), p + 2))
    h_btheta[:, :p + 1] = -S2[:, None] * u
    h_btheta[:, 1:p + 1] -= np.einsum("kh,hkp->hp", c1, dM)
    h_btheta[:, p + 1] = 2 * bhat * inv_var
    h_bbtheta[:, :p + 1] = -S3[:, None] * u
    h_bbtheta[:, 1:p + 1] -= np.einsum("kh,hkp->hp", c2, dM)
    h_bbtheta[:, p + 1] = 2 * inv_var
    return -S2 - inv_var, -S3, h_btheta, h_bbtheta


def modes(problem, theta, order, start=None, iterations=100):
    """Modes b_hat (H,) of each cluster's integrand and omega = (-h''(b_hat))^(-1/2): a
    safeguarded Newton iteration per cluster (step halving until h increases)."""
    b = np.zeros(len(problem.n)) if start is None else start.copy()
    for _ in range(iterations):
        h, g, hbb = (v[:, 0] for v in _terms(problem, theta, b[:, None], order, "b"))
        step = np.where(hbb < 0, -g / np.where(hbb < 0, hbb, -1.0), np.sign(g))
        step = np.clip(step, -2.0, 2.0)
        for _ in range(40):
            new = _terms(problem, theta, (b + step)[:, None], order, "value")[:, 0]
            worse = ~(new >= h - 1e-12 * np.abs(h))
            if not worse.any():
                break
            step = np.where(worse, step / 2, step)
        b = b + step
        if np.max(np.abs(step)) < 1e-10:
            break
    _, _, hbb = (v[:, 0] for v in _terms(problem, theta, b[:, None], order, "b"))
    return b, 1 / np.sqrt(np.maximum(-hbb, 1e-300))


class Objective:
    """Minus the adaptive-quadrature log-likelihood and its gradient (exact: the
    nodes move with theta), and an approximate Hessian (the nodes held fixed), cached
    per theta."""

    def __init__(self, problem, order, nagq):
        self.problem, self.order = problem, order
        z, w = np.polynomial.hermite.hermgauss(nagq)
        self.z, self.logw = z, np.log(w) + z * z + 0.5 * math.log(2)
        self.theta, self.b = None, None

    def evaluate(self, theta):
        theta = np.asarray(theta, dtype=np.float64)
        if self.theta is not None and np.array_equal(theta, self.theta):
            return
        problem, order = self.problem, self.order
        self.b, self.omega = modes(problem, theta, order, self.b)
        root2 = math.sqrt(2)
        nodes = self.b[:, None] + root2 * self.omega[:, None] * self.z
        h, grad, hess, h_b = _terms(problem, theta, nodes, order, "theta")
        logterms = h + self.logw + np.log(self.omega)[:, None]
        top = logterms.max(axis=1, keepdims=True)
        weights = np.exp(logterms - top)
        total = weights.sum(axis=1, keepdims=True)
        self.cluster_loglik = (top + np.log(total))[:, 0]
        pq = weights / total
        g = np.einsum("hq,hqd->hd", pq, grad)
        self.hessian = (np.einsum("hq,hqde->de", pq, hess) + np.einsum("hq,hqd,hqe->de", pq, grad, grad)
                        - g.T @ g)
        # the nodes b_hat + sqrt(2) omega z move with theta: implicit derivatives at the mode
        h_bb, h_bbb, h_btheta, h_bbtheta = _mode_terms(problem, theta, self.b, order)
        d_mode = -h_btheta / h_bb[:, None]
        d_logomega = -0.5 * (h_bbtheta + h_bbb[:, None] * d_mode) / h_bb[:, None]
        spread = root2 * self.omega[:, None] * self.z  # b_q - b_hat
        d_nodes = d_mode[:, None, :] + spread[..., None] * d_logomega[:, None, :]
        g = g + np.einsum("hq,hq,hqd->hd", pq, h_b, d_nodes) + d_logomega
        self.grad = g.sum(axis=0)
        self.theta = theta
        self.loglik = float(self.cluster_loglik.sum())

    def fun(self, theta):
        self.evaluate(theta)
        return -self.loglik if np.isfinite(self.loglik) else np.inf

    def jac(self, theta):
        self.evaluate(theta)
        return -self.grad

    def hess(self, theta):
        self.evaluate(theta)
        return -self.hessian

    def information(self, theta, step=1e-5):
        """The observed information: central differences of the exact gradient."""
        d = len(theta)
        out = np.zeros((d, d))
        for i in range(d):
            e = np.zeros(d)
            e[i] = step
            self.evaluate(theta + e)
            up = self.grad.copy()
            self.evaluate(theta - e)
            out[i] = -(up - self.grad) / (2 * step)
        self.evaluate(theta)
        return (out + out.T) / 2


def fit(problem, nagq, order, start, gtol=1e-6, maxiter=500):
    """Maximise the order-``order`` approximate likelihood from ``start`` (theta) with
    scipy's ``trust-exact`` (exact gradient, Hessian with the nodes held fixed); at
    order K > 2 the order-2 maximum is the start.

    Returns
    -------
    dict
        ``theta``, ``cov`` (inverse observed information of theta), ``loglik``,
        ``modes``, ``cond_sd``, ``iterations``, ``converged``, ``message``.
    """
    from scipy.optimize import minimize

    if order < 2:
        raise ValueError("the direct fit needs order >= 2: at order 1 the approximate likelihood "
                         "has no maximum (it grows without bound along the response "
                         "cross-moments); use method='pseudo' or summaries of a higher order")
    total_iter, theta = 0, np.asarray(start, dtype=np.float64)
    for k in sorted({2, order}):
        obj = Objective(problem, k, nagq)
        try:
            res = minimize(obj.fun, theta, jac=obj.jac, hess=obj.hess, method="trust-exact",
                           options={"gtol": gtol, "maxiter": maxiter, "max_trust_radius": 2.0})
        except ValueError as exc:  # non-finite values: the approximation ran away
            converged, message = False, f"the approximate likelihood has no maximum near the start ({exc})"
            break
        theta, total_iter = res.x, total_iter + res.nit
        obj.evaluate(theta)
        converged = bool(np.max(np.abs(obj.grad)) < gtol * 10) and np.all(np.isfinite(theta))
        message = "converged" if converged else f"not converged: {res.message}"
    cov = None
    if converged:
        info = obj.information(theta)
        if np.all(np.isfinite(info)) and np.linalg.eigvalsh(info)[0] > 0:
            cov = np.linalg.inv(info)
        else:
            converged, message = False, "the observed information is not positive definite at the estimate"
    obj.evaluate(theta)
    return {"theta": theta, "cov": cov, "loglik": obj.loglik, "modes": obj.b,
            "cond_sd": obj.omega, "iterations": total_iter, "converged": converged,
            "message": message, "gradient": obj.grad}
