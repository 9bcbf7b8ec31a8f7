r"""The EM for the MAP of :math:`(\Sigma_k, \sigma^2)` and the empirical-Bayes
:math:`\lambda`, finished by Newton steps on the same objective.

Objective (maximised):

.. math::

    J(\Sigma, \sigma^2, \lambda) = \max_{\beta_u} \log N(y;\, X_u\beta_u,\, V)
        - \sum_k \frac{c_k}{2}\left(\log|\Sigma_k| + \mathrm{tr}(A_k\Sigma_k^{-1})\right),
    \qquad c_k = \frac{b_k m_k}{1 - b_k},

the exact marginal log-likelihood (:math:`\beta_p` and :math:`\gamma`
integrated out, :math:`V = \sigma^2(I + X_pX_p^\top/\lambda) + \sum_k Z_kG_kZ_k^\top`)
plus the inverse-Wishart log-density :math:`IW(\nu_k, \Psi_k)` of each
:math:`\Sigma_k` up to its constant, in the talk's form: prior mode
:math:`A_k = \Psi_k/(\nu_k+q_k+1)` and weight :math:`b_k = (\nu_k+q_k+1)/(m_k+\nu_k+q_k+1)`.

EM with :math:`(\beta_p, \gamma)` latent and :math:`\beta_u` at its GLS value
(ECME): with the E-step's :math:`S_k, R, B` (:mod:`.solvers`) the expected
complete-data log posterior is maximised by

.. math::

    \Sigma_k \leftarrow b_k A_k + (1 - b_k)\, S_k / m_k, \qquad
    \sigma^2 \leftarrow \frac{R + \lambda B}{N + p_p} \;(\lambda \text{ fixed}), \qquad
    \sigma^2 \leftarrow \frac{R}{N - 1},\; \lambda \leftarrow \frac{p_p R}{(N - 1) B}
    \;(\lambda \text{ by empirical Bayes}).

(The EB pair: with :math:`\tau^2 = \sigma^2/\lambda` the expected
complete-data log-likelihood separates into :math:`-\tfrac N2\log\sigma^2 -
R/2\sigma^2` and :math:`-\tfrac{p_p}2\log\tau^2 - B/2\tau^2`.)  Each step
increases :math:`J`; its fixed points are the stationary points of :math:`J`
(checked in the tests against a direct maximisation with scipy).  With
:math:`b = 0` and no penalised columns, :math:`J` is lme4's ML
log-likelihood.

When :math:`\lambda` is chosen by empirical Bayes, :math:`J` gains :math:`\log\sigma`:
the talk integrates :math:`\sigma` with the other parameters (Laplace), and under a
flat prior on :math:`\sigma` the Laplace factor is :math:`\propto\hat\sigma`.  Without
it, when :math:`p \ge N` and :math:`X^\top X` is nearly spherical, the marginal
likelihood rises (by hundredths) all the way to :math:`\sigma^2 \to 0,\ \lambda \to 0`,
where the data are fitted by the penalised columns alone.

EM is slow near a singular :math:`\Sigma` (thousands of iterations on the
talk's cubic random slopes), so after a few plain EM steps the fit switches to
Newton trust-region steps (scipy's ``trust-exact``) on :math:`J` in unconstrained
coordinates :math:`\phi` (log-Cholesky factors of :math:`\Sigma_k`, :math:`\log\sigma^2`,
:math:`\log\lambda`) with the exact gradient that the same E-step gives by
Fisher's identity (the gradient of :math:`J` equals that of the EM's
expected complete-data log posterior at the current point; :math:`\beta_u`
is profiled, so the envelope theorem applies):

.. math::

    \frac{\partial J}{\partial L_k} = L_k^{-\top}\big(T_k + c_kL_k^{-1}A_kL_k^{-\top}
        - (m_k + c_k)I\big), \quad
    \frac{\partial J}{\partial\sigma^2}\Big|_{\tau^2} = \frac{R}{2\sigma^4} - \frac{N}{2\sigma^2}
        \;(+\tfrac1{2\sigma^2} \text{ with EB } \lambda), \quad
    \frac{\partial J}{\partial\tau^2}\Big|_{\sigma^2} = \frac{B}{2\tau^4} - \frac{p_p}{2\tau^2},

with :math:`\Sigma_k = L_kL_k^\top`, :math:`T_k = L_k^{-1}S_kL_k^{-\top}` (the
whitened second moments, which the E-step computes without :math:`\Sigma_k^{-1}`:
the form :math:`\tfrac12\Sigma^{-1}(S - m\Sigma)\Sigma^{-1}` loses every digit to
cancellation when :math:`\Sigma` is nearly singular) and :math:`\tau^2 =
\sigma^2/\lambda`.  The gradient vanishes exactly where the EM map has a fixed
point, so the estimate is the EM's (the tests check that one more EM step
leaves it unchanged).
"""

from dataclasses import dataclass, field

import numpy as np

from ...exceptions import SingularMatrixError


@dataclass
class Prior:
    """Inverse-Wishart prior of one term in the talk's (b, A) form."""

    b: float
    A: np.ndarray

    def weight(self, m):
        """:math:`c = bm/(1-b) = \\nu + q + 1`."""
        return self.b * m / (1 - self.b)

    def log_kernel(self, Sigma, m):
        if self.b == 0:
            return 0.0
        sign, logdet = np.linalg.slogdet(Sigma)
        return -0.5 * self.weight(m) * (logdet + np.trace(np.linalg.solve(Sigma, self.A)))


@dataclass
class State:
    """Parameters; ``Ls`` the lower Cholesky factors of the Sigmas when known
    (a point of the optimiser is given by them: refactoring LL' can fail when
    L is nearly singular)."""

    Sigmas: list
    s2: float
    lam: float
    Ls: list = None

    def factors(self):
        if self.Ls is None:
            self.Ls = [np.linalg.cholesky(S) for S in self.Sigmas]
        return self.Ls


@dataclass
class EMResult:
    state: State
    estep: object
    objective: float
    iterations: int
    converged: bool
    history: list = field(default_factory=list)


def pack(state, qs, with_lam):
    parts = []
    for L in state.factors():
        i, j = np.tril_indices(len(L))
        v = L[i, j].copy()
        v[i == j] = np.log(v[i == j])
        parts.append(v)
    parts.append([np.log(state.s2)])
    parts.append([np.log(state.lam)] if with_lam else [])
    return np.concatenate(parts)


def unpack(phi, qs, lam_fixed):
    Sigmas, Ls, pos = [], [], 0
    for q in qs:
        d = q * (q + 1) // 2
        i, j = np.tril_indices(q)
        L = np.zeros((q, q))
        v = phi[pos: pos + d].copy()
        v[i == j] = np.exp(v[i == j])
        L[i, j] = v
        Sigmas.append(L @ L.T)
        Ls.append(L)
        pos += d
    s2 = float(np.exp(phi[pos]))
    lam = lam_fixed if lam_fixed is not None else float(np.exp(phi[pos + 1]))
    return State(Sigmas, s2, lam, Ls)


class EM:
    """The EM map and objective for a solver, priors and a fixed or free lambda."""

    #: Add log|J| of the log-Cholesky coordinates to J (for the Laplace evidence, :mod:`.laplace`).
    jacobian = False

    def __init__(self, solver, priors, lam_fixed):
        self.solver, self.priors = solver, priors
        self.layout = solver.layout
        self.free_lam = lam_fixed is None and self.layout.p_pen > 0
        self.lam_fixed = None if self.free_lam else (1.0 if lam_fixed is None else lam_fixed)
        self.qs = [t.q for t in self.layout.terms]

    def objective(self, state, e):
        """J, plus log sigma when lambda is chosen by empirical Bayes (sigma integrated
        under a flat prior, see the module docstring)."""
        return (e.loglik + sum(pr.log_kernel(S, t.m) for pr, S, t in
                               zip(self.priors, state.Sigmas, self.layout.terms))
                + (0.5 * np.log(state.s2) if self.free_lam else 0.0))

    def evaluate(self, state, final=False):
        e = self.solver.estep(state.factors(), state.s2, state.lam, final=final)
        return e, self.objective(state, e)

    def mstep(self, state, e):
        lay = self.layout
        Sigmas = []
        for pr, T, L, t in zip(self.priors, e.T, state.factors(), lay.terms):
            Sigmas.append(pr.b * pr.A + (1 - pr.b) * (L @ T @ L.T) / t.m)
        n, pp = lay.n, lay.p_pen
        if self.free_lam:
            return State(Sigmas, e.R / (n - 1), pp * e.R / ((n - 1) * e.B))
        lam = state.lam
        s2 = (e.R + lam * e.B) / (n + pp) if pp else e.R / n
        return State(Sigmas, s2, lam)

    def gradient(self, state, e):
        """dJ/dphi at ``state`` from its E-step ``e`` (module docstring)."""
        lay, parts = self.layout, []
        for pr, T, L, t in zip(self.priors, e.T, state.factors(), lay.terms):
            Linv = np.linalg.inv(L)
            c = pr.weight(t.m) if pr.b else 0.0
            inner = T - (t.m + c) * np.eye(t.q) + (c * Linv @ pr.A @ Linv.T if c else 0.0)
            dL = Linv.T @ inner  # dJ/dL = L^-T (T + c L^-1 A L^-T - (m + c) I)
            i, j = np.tril_indices(t.q)
            g = dL[i, j]
            g[i == j] *= L[i, j][i == j]
            parts.append(g)
        n, pp = lay.n, lay.p_pen
        d_s2 = 0.5 * e.R / state.s2 - 0.5 * (n - 1 if self.free_lam else n)
        d_tau = 0.5 * state.lam * e.B / state.s2 - 0.5 * pp if pp else 0.0
        parts.append([d_s2 + d_tau])
        parts.append([-d_tau] if self.free_lam else [])
        return np.concatenate(parts)

    def em_steps(self, state, n_steps, rtol=1e-9):
        """Up to ``n_steps`` plain EM steps from ``state`` (each increases J), fewer
        once J changes by less than ``rtol`` (relative); returns (state, steps)."""
        last = -np.inf
        for k in range(n_steps):
            e, obj = self.evaluate(state)
            if abs(obj - last) < rtol * abs(obj):
                return state, k
            state, last = self.mstep(state, e), obj
        return state, n_steps

    def _jacobian_vector(self):
        """d log|J|/dphi (constant): (q - j + 2) on the log-diagonal of each L_k
        (j = 1..q), 0 elsewhere (see :mod:`.laplace`)."""
        parts = []
        for q in self.qs:
            i, j = np.tril_indices(q)
            parts.append(np.where(i == j, q - j + 1.0, 0.0))
        parts.append([0.0] * (1 + int(self.free_lam)))
        return np.concatenate(parts)

    def value_grad(self, phi):
        """(J, dJ/dphi) at phi, plus log|J(phi)| (up to a constant) when ``jacobian``;
        (-inf, nan) where a covariance is not numerically positive definite (also where a
        Cholesky diagonal exp(phi) underflows: the gradient needs L^-1), so that the trust
        region rejects the step."""
        st = unpack(phi, self.qs, self.lam_fixed)
        try:
            e, obj = self.evaluate(st)
            grad = self.gradient(st, e)
        except (SingularMatrixError, np.linalg.LinAlgError):
            return -np.inf, np.full(len(phi), np.nan)
        if not np.all(np.isfinite(grad)):
            return -np.inf, np.full(len(phi), np.nan)
        if self.jacobian:
            jv = self._jacobian_vector()
            obj, grad = obj + jv @ phi, grad + jv
        return obj, grad

    def hessian(self, state, h=1e-5):
        """Central-difference Jacobian of the exact gradient at ``state`` (symmetrised)."""
        phi = pack(state, self.qs, self.free_lam)
        return _fd_hessian(lambda x: self.value_grad(x)[1], phi, h)

    def run(self, state, tol=1e-10, max_iter=200, warmup=30):
        """Up to ``warmup`` EM steps (cheap: one E-step each), then Newton trust-region steps (scipy's
        ``trust-exact``) on -J/N with the exact gradient and its central-difference
        Jacobian as Hessian, until the gradient is below ``tol`` (per row).
        Converged: scipy's test passed, or the gradient per row is below 1e-6."""
        from scipy.optimize import minimize

        state, steps = self.em_steps(state, warmup)
        n, memo, evals = self.layout.n, {}, [steps]

        def fg(phi):
            key = phi.tobytes()
            if key not in memo:
                evals[0] += 1
                obj, grad = self.value_grad(phi)
                memo[key] = (-obj / n, -grad / n)
                if len(memo) > 64:
                    memo.pop(next(iter(memo)))
            return memo[key]

        stalled = []

        def stop_when_stalled(intermediate_result):
            # J flat to rounding for 3 iterations (a drift along a flat ridge, such as
            # lambda -> 0 when p >= N): stop there
            stalled.append(intermediate_result.fun)
            if len(stalled) > 3 and stalled[-4] - stalled[-1] < 1e-13 * (1 + abs(stalled[-1])):
                raise StopIteration

        def hess(x):
            # at a point that value_grad refuses (J = -inf) the Hessian only has to be finite:
            # scipy rejects the step on J
            H = _fd_hessian(lambda z: fg(z)[1], x, central=False)
            return H if np.all(np.isfinite(H)) else np.eye(len(x))

        opt = minimize(lambda x: fg(x)[0], pack(state, self.qs, self.free_lam), callback=stop_when_stalled,
                       jac=lambda x: fg(x)[1], hess=hess,
                       method="trust-exact", options={"gtol": tol, "maxiter": max_iter})
        state = unpack(opt.x, self.qs, self.lam_fixed)
        e, obj = self.evaluate(state, final=True)
        grad = self.gradient(state, e)
        if self.jacobian:
            jv = self._jacobian_vector()
            obj, grad = obj + jv @ opt.x, grad + jv
        gmax = float(np.max(np.abs(grad)) / n)
        return EMResult(state, e, obj, evals[0], bool(opt.success) or gmax < 1e-6,
                        [opt.message, gmax])


def _fd_hessian(grad, phi, h=1e-5, central=True):
    """Finite-difference Jacobian of ``grad`` at phi, symmetrised: central (2d
    gradients, for the Laplace evidence) or forward (d more, enough for Newton steps)."""
    H = np.empty((len(phi), len(phi)))
    g0 = None if central else grad(phi)
    for j in range(len(phi)):
        d = np.zeros(len(phi))
        d[j] = h
        H[:, j] = (grad(phi + d) - grad(phi - d)) / (2 * h) if central else (grad(phi + d) - g0) / h
    return 0.5 * (H + H.T)
