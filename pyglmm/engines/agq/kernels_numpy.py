r"""Reference (numpy) kernel of the AGQ engine: per-cluster adaptive Gauss–Hermite
log-likelihood with its exact gradient and Hessian.

This module is the contract the C++ kernel (``csrc/agq/``) and the numba twin
follow function for function: :func:`cluster_eval` is the one entry point;
:func:`row_terms`, :func:`find_mode` and :func:`eval_cluster` are its steps.

Model, per cluster :math:`c` with rows :math:`j` (sorted by cluster; cluster
``c`` owns rows ``starts[c]:starts[c+1]``), spherical random effects as lme4:

.. math::

    \eta_j = o_j + x_j^\top\beta + z_j^\top\Lambda v, \qquad v \sim N(0, I_q),

:math:`\Lambda` lower triangular (:math:`q \le 3`), its entries
:math:`\theta` the row-major lower triangle ((0,0), (1,0), (1,1), (2,0), ...);
a zero diagonal (a singular fit) is valid.  With :math:`\ell_j(\eta)` the full
conditional log-density of row :math:`j` including its constants (binomial
with trials :math:`a_j` and proportion :math:`y_j`:
:math:`\log\binom{a_j}{a_jy_j} + a_j(y_j\eta - \log(1+e^\eta))`; poisson with
prior weight :math:`a_j`: :math:`a_j(y_j\eta - e^\eta - \log y_j!)`;
gaussian with residual variance :math:`\sigma^2` = ``dispersion``:
:math:`-\tfrac12 a_j(y_j-\eta)^2/\sigma^2 - \tfrac12\log(2\pi\sigma^2/a_j)`),
let :math:`\tilde h(v) = \sum_j \ell_j(\eta_j) - v^\top v/2`.  Its mode
:math:`\hat v` is found by Newton with step halving (:math:`\tilde h` is
strictly concave: :math:`H = -\nabla^2\tilde h = I + \Lambda^\top Z^\top W
Z\Lambda \succeq I`), :math:`H(\hat v) = LL^\top`, :math:`S = L^{-\top}`, and
with the tensor grid of :math:`K` probabilists' Gauss–Hermite nodes
:math:`z_k` and weights :math:`w_k` (for :math:`N(0, I_q)`, summing to 1),
:math:`v_k = \hat v + S z_k`:

.. math::

    \ell_c = \log|S| + \mathrm{LSE}_k\big[\log w_k + |z_k|^2/2 + \tilde h(v_k)\big]

(``LSE`` the log-sum-exp with the max shift).  This is the substitution
:math:`v = \hat v + Sz` in :math:`\int \exp(\sum_j\ell_j)\,\phi(v)\,dv`
followed by Gauss–Hermite quadrature; :math:`K = 1` is the Laplace
approximation :math:`\tilde h(\hat v) - \tfrac12\log|H|`, and for :math:`q = 1`
it is glmer's ``nAGQ = K`` objective (glmer's deviance is :math:`-2\sum_c\ell_c`).

Derivatives (``deriv`` 1: gradient, 2: and Hessian) are exact total
derivatives with respect to :math:`\psi = (\beta, \theta)`: the mode moves
with :math:`\psi` (:math:`\partial_i\hat v = H^{-1}\partial_{v\psi_i}\tilde h`
by implicit differentiation, and the second derivatives by differentiating
once more), :math:`S` moves with :math:`H(\hat v(\psi), \psi)` (derivatives of
the Cholesky factor :math:`\dot L = L\,\Phi(L^{-1}\dot H L^{-\top})`,
:math:`\Phi` the lower triangle with half the diagonal).  They need the row
derivatives :math:`\ell^{(r)}_j`, :math:`r \le 4` (canonical links:
:math:`\ell' = a(y-\mu)`, :math:`\ell'' = -a\,b''(\eta)`, ...) times products
of the directional derivatives of :math:`\eta`, which is linear in
:math:`\beta` and bilinear in :math:`(\Lambda, v)`.  Notation in the code:
``d = p + t`` parameters (``t = q(q+1)/2``); ``dLam[i]`` the (q, q) derivative
of :math:`\Lambda` in parameter ``i`` (zero for :math:`\beta`); ``ZL[j, i]`` =
:math:`Z_j\,\partial_i\Lambda` (the cross derivative
:math:`\partial^2\eta_j/\partial\psi_i\partial v`); ``R = Z\Lambda``;
``B(v)[j, i]`` = :math:`\partial\eta_j/\partial\psi_i` at fixed :math:`v`;
``s[j, i]`` the total derivative of :math:`\eta_j` (at the mode or a node)
along parameter ``i``.
"""

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import gammaln

GAUSSIAN, BINOMIAL, POISSON = 0, 1, 2
MODE_TOL = 1e-10     # Newton on the mode stops once max |step| < MODE_TOL (1 + max |v|) (after taking it)
MODE_MAX_ITER = 100  # ... or after this many steps (the cluster is then counted as not converged)


def tri_index(q):
    """The (row, column) of each entry of theta: Lambda's row-major lower triangle."""
    return [(a, b) for a in range(q) for b in range(a + 1)]


def lambda_matrix(theta, q):
    """Lambda (q, q) from its lower-triangle entries ``theta``."""
    lam = np.zeros((q, q))
    for value, (a, b) in zip(theta, tri_index(q)):
        lam[a, b] = value
    return lam


def gh_grid(nodes, gh_weights, q):
    """The tensor grid: points (K**q, q) and log weights (K**q,) of 1-D nodes/weights."""
    z = np.array(np.meshgrid(*([nodes] * q), indexing="ij")).reshape(q, -1).T
    logw = np.log(np.array(np.meshgrid(*([gh_weights] * q), indexing="ij"))).reshape(q, -1).sum(0)
    return np.ascontiguousarray(z), logw


def row_terms(family, dispersion, y, a, eta, order):
    r"""Row log-densities :math:`\ell_j(\eta_j)` without their constant
    (:func:`row_constant`) and their derivatives in :math:`\eta` up to
    ``order`` (<= 4): a list ``[l0, l1, ..., l_order]`` of arrays shaped like
    ``eta`` (``y`` and ``a`` broadcast against it).

    Stable forms: :math:`\log(1+e^\eta) = \max(\eta, 0) + \log(1+e^{-|\eta|})`,
    :math:`\mu(1-\mu) = e^{-|\eta|}/(1+e^{-|\eta|})^2`.
    """
    if family == BINOMIAL:
        e = np.exp(-np.abs(eta))
        mu = np.where(eta >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        out = [a * (y * eta - np.maximum(eta, 0) - np.log1p(e))]
        v = e / (1.0 + e) ** 2
        derivs = [a * (y - mu), -a * v, -a * v * (1 - 2 * mu), -a * v * (1 - 6 * v)]
    elif family == POISSON:
        with np.errstate(over="ignore"):
            mu = np.exp(eta)
        out = [a * (y * eta - mu)]
        derivs = [a * (y - mu), -a * mu, -a * mu, -a * mu]
    elif family == GAUSSIAN:
        r = y - eta
        out = [-0.5 * a * r * r / dispersion]
        zero = np.zeros_like(r)
        derivs = [a * r / dispersion, -a / dispersion + zero, zero, zero]
    else:
        raise ValueError(f"unknown family id {family!r}")
    return out + derivs[:order]


def row_constant(family, dispersion, y, a):
    r"""The constants of the rows' log-densities (what :func:`row_terms` leaves out):
    binomial :math:`\log\binom{a}{ay}`, poisson :math:`-a\log y!`, gaussian
    :math:`-\tfrac12\log(2\pi\sigma^2/a)`."""
    if family == BINOMIAL:
        k = a * y
        return gammaln(a + 1) - gammaln(k + 1) - gammaln(a - k + 1)
    if family == POISSON:
        return -a * gammaln(y + 1)
    return -0.5 * np.log(2 * np.pi * dispersion / a)


def _h_terms(family, dispersion, y, a, off, R, v):
    """h~(v) = sum_j l_j - v'v/2 (without the rows' constants) and the rows' l', l''."""
    l0, l1, l2 = row_terms(family, dispersion, y, a, off + R @ v, 2)
    return l0.sum() - 0.5 * v @ v, l1, l2


def cholesky(H):
    """The lower Cholesky factor of ``H``; all NaN if ``H`` is not positive definite to
    rounding (as the compiled twins: their factor's NaN then propagates to the cluster's
    outputs, which :func:`pyglmm.engines.agq.glmm_agq` turns into an error naming it)."""
    try:
        return np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return np.full_like(H, np.nan)


def chol_solve(L, B):
    """:math:`(LL^\top)^{-1}B` by two triangular solves (NaN in, NaN out)."""
    half = solve_triangular(L, B, lower=True, check_finite=False)
    return solve_triangular(L.T, half, lower=False, check_finite=False)


def find_mode(family, dispersion, y, a, off, R, v):
    r"""Mode of :math:`\tilde h` by Newton with step halving from ``v``
    (``off`` = :math:`o + X\beta`, ``R`` = :math:`Z\Lambda`).

    Returns (mode, converged).  A step is halved (up to 50 times) until
    :math:`\tilde h` does not decrease by more than rounding
    (:math:`10^{-12}\max(1, |\tilde h|)`); iteration stops once a step with
    max |step| < ``MODE_TOL`` (1 + max |v|) has been taken.  A non-finite start is replaced by 0.
    One pass over the rows per trial point gives its value and the next step's derivatives.
    """
    q = R.shape[1]
    v = np.where(np.isfinite(v), v, 0.0)
    f, l1, l2 = _h_terms(family, dispersion, y, a, off, R, v)
    for _ in range(MODE_MAX_ITER):
        g = R.T @ l1 - v
        H = np.eye(q) - (R.T * l2) @ R
        step = chol_solve(cholesky(H), g)
        small = np.max(np.abs(step), initial=0.0) < MODE_TOL * (1.0 + np.max(np.abs(v), initial=0.0))
        slack = 1e-12 * max(1.0, abs(f))  # rounding of h~ near the mode is no decrease
        for _ in range(50):
            vn = v + step
            fn, n1, n2 = _h_terms(family, dispersion, y, a, off, R, vn)
            if fn >= f - slack or (small and np.isfinite(fn)):
                break
            step = step / 2
        else:
            return v, small
        v, f, l1, l2 = vn, fn, n1, n2
        if small:
            return v, True
    return v, False


def eval_cluster(family, dispersion, X, Z, y, a, o, beta, lam, dLam, z, logw, v0, deriv):
    r"""One cluster: ``(loglik, grad, hess, mode, condvar, converged)``.

    ``grad`` (d,) and ``hess`` (d, d) are None below ``deriv`` 1 / 2;
    ``condvar`` is :math:`H^{-1}` at the mode (the conditional covariance
    of :math:`v` in the Laplace approximation: :math:`\Lambda H^{-1}
    \Lambda^\top` for :math:`b`).  ``z``, ``logw``: the tensor grid
    (:func:`gh_grid`).
    """
    n, p = X.shape
    q = Z.shape[1]
    d = dLam.shape[0]
    off = o + X @ beta
    R = Z @ lam
    v, converged = find_mode(family, dispersion, y, a, off, R, v0)
    order = (2, 3, 4)[deriv]
    lm = row_terms(family, dispersion, y, a, off + R @ v, order)
    H = np.eye(q) - (R.T * lm[2]) @ R
    L = cholesky(H)
    Linv = solve_triangular(L, np.eye(q), lower=True, check_finite=False)
    S = Linv.T
    condvar = Linv.T @ Linv
    # nodes v_k = v + S z_k, their rows' terms, LSE
    V = v + z @ S.T                                  # (G, q)
    ETA = off[:, None] + R @ V.T                     # (n, G)
    lk = row_terms(family, dispersion, y[:, None], a[:, None], ETA, (0, 1, 2)[deriv])
    ak = logw + 0.5 * np.sum(z * z, 1) + lk[0].sum(0) - 0.5 * np.sum(V * V, 1)
    amax = ak.max()
    pik = np.exp(ak - amax)
    total = pik.sum()
    loglik = (row_constant(family, dispersion, y, a).sum() - np.sum(np.log(np.diag(L)))
              + amax + np.log(total))
    if deriv == 0:
        return loglik, None, None, v, condvar, converged
    pik /= total
    l1, l2 = lm[1], lm[2]
    ZL = np.einsum("na,iab->nib", Z, dLam)           # (n, d, q): d^2 eta / d psi_i d v
    Xpad = np.zeros((n, d))
    Xpad[:, :p] = X
    B = Xpad + ZL @ v                                # (n, d): d eta / d psi at fixed v
    # mode derivatives: m_i = H^{-1} d^2 h / dv dpsi_i
    Hvpsi = np.einsum("n,na,ni->ai", l2, R, B) + np.einsum("n,nia->ai", l1, ZL)
    M = chol_solve(L, Hvpsi)                         # (q, d)
    s = B + R @ M                                    # (n, d): total d eta / d psi_i at the mode
    # dH/dpsi_i = -T3[v, v, U_i], U_i = (e_i, m_i)
    l3 = lm[3]
    T = np.einsum("n,na,nib->iab", l2, R, ZL)
    Hd = -(np.einsum("n,na,nb,ni->iab", l3, R, R, s) + T + T.transpose(0, 2, 1))
    Ld = L @ _phi_batch(Linv @ Hd @ Linv.T)          # (d, q, q)
    Sd = -S @ Ld.transpose(0, 2, 1) @ S              # dS/dpsi_i
    dg = np.diagonal(Ld, axis1=1, axis2=2)           # (d, q)
    Ldiag = np.diag(L)
    grad_logS = -(dg / Ldiag).sum(1)
    # node directions delta_ki = m_i + S_i z_k and total eta derivatives
    delta = M[None] + np.einsum("iab,gb->gai", Sd, z)                      # (G, q, d)
    sk = (Xpad[:, None, :] + np.einsum("nib,gb->ngi", ZL, V)
          + np.einsum("na,gai->ngi", R, delta))                            # (n, G, d)
    Ak = np.einsum("ng,ngi->gi", lk[1], sk) - np.einsum("ga,gai->gi", V, delta)
    Abar = pik @ Ak
    grad = grad_logS + Abar
    if deriv == 1:
        return loglik, grad, None, v, condvar, converged
    l4 = lm[4]
    # second mode derivatives: m_ij = H^{-1} T3[v, U_i, U_j]
    CM = np.einsum("nia,aj->nij", ZL, M)            # C_i . m_j
    Q = CM + CM.transpose(0, 2, 1)                   # eta''[U_i, U_j]
    T = np.einsum("n,nia,nj->aij", l2, ZL, s)
    T3v = (np.einsum("n,na,ni,nj->aij", l3, R, s, s) + T + T.transpose(0, 2, 1)
           + np.einsum("n,nij,na->aij", l2, Q, R))
    MM = chol_solve(L, T3v.reshape(q, d * d)).reshape(q, d, d)
    # d^2 H / dpsi_i dpsi_j = -(T4[v, v, U_i, U_j] + T3[v, v, (0, m_ij)])
    T = np.einsum("n,nia,nb,nj->ijab", l3, ZL, R, s)
    T = T + T.transpose(1, 0, 2, 3)
    T = T + T.transpose(0, 1, 3, 2)
    U = np.einsum("n,nia,njb->ijab", l2, ZL, ZL)
    W3 = np.einsum("n,na,nb,ne->abe", l3, R, R, R)
    Hdd = -(np.einsum("n,na,nb,ni,nj->ijab", l4, R, R, s, s) + T
            + np.einsum("n,nij,na,nb->ijab", l3, Q, R, R) + U + U.transpose(1, 0, 2, 3)
            + np.einsum("abe,eij->ijab", W3, MM))
    LdLdT = np.einsum("iac,jbc->ijab", Ld, Ld)
    inner = Hdd - LdLdT - LdLdT.transpose(1, 0, 2, 3)
    Ldd = L @ _phi_batch(Linv @ inner @ Linv.T)      # (d, d, q, q)
    SLd = np.einsum("iac,jbc->ijab", Sd, Ld)         # S_i L_j'
    Sdd = -(SLd + SLd.transpose(1, 0, 2, 3) + S @ Ldd.transpose(0, 1, 3, 2)) @ S
    ddg = np.diagonal(Ldd, axis1=2, axis2=3)         # (d, d, q)
    hess_logS = -(ddg / Ldiag).sum(2) + np.einsum("ia,ja->ij", dg / Ldiag, dg / Ldiag)
    # node second derivatives
    delta2 = MM[None] + np.einsum("ijab,gb->gaij", Sdd, z)               # (G, q, d, d)
    CD = np.einsum("ng,nia,gaj->gij", lk[1], ZL, delta)
    VHV = (np.einsum("ng,ngi,ngj->gij", lk[2], sk, sk, optimize=True) + CD + CD.transpose(0, 2, 1)
           - np.einsum("gai,gaj->gij", delta, delta))
    gk = lk[1].T @ R - V                                                    # (G, q)
    inner_k = VHV + np.einsum("ga,gaij->gij", gk, delta2)
    hess = (hess_logS + np.einsum("g,gij->ij", pik, inner_k)
            + np.einsum("g,gi,gj->ij", pik, Ak, Ak) - np.outer(Abar, Abar))
    return loglik, grad, hess, v, condvar, converged


def _phi_batch(A):
    """Lower triangle with half the diagonal (the Cholesky derivative's map), over
    the leading axes of A (..., q, q)."""
    q = A.shape[-1]
    low = np.tril(np.ones((q, q)))
    low[np.diag_indices(q)] = 0.5
    return A * low


def cluster_eval(family, dispersion, X, Z, y, weights, offset, starts, beta, theta, nodes,
                 gh_weights, modes, deriv, loglik_out, grad_out, hess_out, condvar_out, nthreads):
    r"""Adaptive Gauss–Hermite log-likelihood of every cluster, and the sums over
    clusters of its gradient and Hessian in :math:`(\beta, \theta)`.

    Parameters
    ----------
    family : int
        ``GAUSSIAN`` (0), ``BINOMIAL`` (1) or ``POISSON`` (2) (ids of
        :mod:`pyglmm.families`); canonical links.
    dispersion : float
        The gaussian residual variance :math:`\sigma^2` (> 0); ignored otherwise.
    X : (n, p) float64
        Fixed-effect design, rows sorted by cluster.
    Z : (n, q) float64, 1 <= q <= 3
        Random-effect design (a column of ones for the intercept).
    y : (n,) float64
        Response (binomial: the proportion of successes).
    weights : (n,) float64
        Prior weights (binomial: times the number of trials), > 0.
    offset : (n,) float64
    starts : (m + 1,) int64
        Cluster ``c`` owns rows ``starts[c]:starts[c+1]``; ``starts[0] = 0``,
        non-decreasing, ``starts[m] = n``.
    beta : (p,) float64
    theta : (q(q+1)/2,) float64
        Lambda's row-major lower triangle (any sign; zero diagonals allowed).
    nodes, gh_weights : (K,) float64
        Probabilists' Gauss–Hermite nodes and weights for N(0, 1) (weights sum
        to 1; ``numpy.polynomial.hermite_e.hermegauss(K)`` divided by
        :math:`\sqrt{2\pi}`); ``K = 1`` with node 0 and weight 1 is Laplace.
    modes : (m, q) float64, in/out
        Start of each cluster's mode search (non-finite entries start at 0);
        overwritten with the modes :math:`\hat v` (spherical scale: the
        conditional modes of the random effects are :math:`\Lambda\hat v`).
    deriv : int
        0: log-likelihood only; 1: and the gradient; 2: and the Hessian.
    loglik_out : (m,) float64, out
        :math:`\ell_c`.
    grad_out : (d,) float64, out, d = p + q(q+1)/2
        :math:`\sum_c \partial\ell_c/\partial(\beta, \theta)` (written if deriv >= 1).
    hess_out : (d, d) float64, out
        :math:`\sum_c \partial^2\ell_c/\partial(\beta, \theta)^2` (written if deriv == 2).
    condvar_out : (m, q, q) float64, out
        :math:`H_c^{-1}` at the mode (conditional covariance of :math:`v`).
    nthreads : int
        Threads (the numpy reference runs on one; results never depend on it).

    Returns
    -------
    int
        Number of clusters whose mode search did not converge within
        ``MODE_MAX_ITER`` Newton steps (their values are still written).
    """
    q = Z.shape[1]
    p = X.shape[1]
    tri = tri_index(q)
    d = p + len(tri)
    lam = lambda_matrix(theta, q)
    dLam = np.zeros((d, q, q))
    for i, (ra, cb) in enumerate(tri):
        dLam[p + i, ra, cb] = 1.0
    z, logw = gh_grid(nodes, gh_weights, q)
    if deriv >= 1:
        grad_out[:] = 0.0
    if deriv == 2:
        hess_out[:] = 0.0
    failed = 0
    for c in range(len(starts) - 1):
        r = slice(starts[c], starts[c + 1])
        ll, g, h, v, cv, ok = eval_cluster(family, dispersion, X[r], Z[r], y[r], weights[r],
                                           offset[r], beta, lam, dLam, z, logw, modes[c], deriv)
        loglik_out[c] = ll
        modes[c] = v
        condvar_out[c] = cv
        failed += not ok
        if deriv >= 1:
            grad_out += g
        if deriv == 2:
            hess_out += h
    return failed
