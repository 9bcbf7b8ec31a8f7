r"""numba twin of the AGQ kernel (``csrc/agq/``): :func:`cluster_eval` with the
contract of :func:`pyglmm.engines.agq.kernels_numpy.cluster_eval`, argument
for argument.

The algebra is the reference's, organised so that each cluster's rows are
swept a few times while they sit in cache and every sum over rows is a sum of
per-row scalars times small products of the row's features (no (n, d, d)
intermediates):

* Newton on the mode evaluates :math:`\tilde h`, its gradient and its
  Hessian in one sweep at each trial point (the reference evaluates
  :math:`\tilde h` at the trial point and the derivatives at the accepted one:
  the same numbers);
* at the mode, two sweeps: :math:`H_{v\psi}` (then the mode derivatives
  :math:`M`), then the third and fourth derivative sums along the total
  derivatives :math:`s_j = B_j + M^\top R_j`;
* at the nodes, one sweep accumulates per node :math:`\sum_j\ell_{jk}` and
  :math:`\sum_j \ell'_{jk}(x_j, z_j)` (which give the node terms
  :math:`A_k`); for the Hessian a second sweep adds
  :math:`\sum_k\pi_k\ell''_{jk}s_{jk}s_{jk}^\top` using that
  :math:`s_{jk} = s_{j0} + \sum_c z_{kc}s_{jc}` is linear in the node
  :math:`z_k`: only the node-weighted moments
  :math:`W_j = \sum_k\pi_k\ell''_{jk}\tilde z_k\tilde z_k^\top`,
  :math:`\tilde z = (1, z)`, are formed per node (the :math:`\ell''_{jk}`
  of the first sweep are kept for the first ``NODE_STORE`` row-nodes of a
  cluster, recomputed beyond).

Clusters are grouped into chunks by :func:`chunk_bounds` (fixed by the data,
not by the thread count); each chunk sums its clusters' gradient and Hessian
in cluster order, and the chunks are added in order: results do not depend on
the number of threads.  Workspaces are allocated once per chunk.
"""

import math

import numpy as np
from numba import njit, prange

from ..crossed.numba_blocks import set_threads
from .kernels_numpy import gh_grid
# numba's on-disk cache of this module's kernels holds numba_mode's functions compiled in and is
# keyed on this file only: a change to numba_mode.py needs a change here (or a cleared __pycache__)
from .numba_mode import (_cholesky, _find_mode, _lower_inverse, _mode_derivatives, _row, _row_const,
                         _row_s)

CHUNK_WORK = 8192     # a chunk closes once rows + CLUSTER_WORK * clusters reach this
CLUSTER_WORK = 16
NODE_STORE = 1 << 18  # node second derivatives kept per cluster (rows x nodes), beyond: recomputed

__all__ = ["cluster_eval", "chunk_bounds"]


def chunk_bounds(starts):
    """Chunk c holds clusters ``[b[c], b[c+1])``: consecutive clusters until
    rows + ``CLUSTER_WORK`` x clusters reach ``CHUNK_WORK`` (as ``chunk_bounds``
    in csrc/agq/cluster_eval.cpp)."""
    return _chunk_bounds(np.asarray(starts, dtype=np.int64))


@njit(cache=True)
def _chunk_bounds(starts):
    m = starts.shape[0] - 1
    out = np.empty(m + 1, dtype=np.int64)
    out[0] = 0
    nb, work = 0, 0
    for c in range(m):
        work += starts[c + 1] - starts[c] + CLUSTER_WORK
        if work >= CHUNK_WORK or c == m - 1:
            nb += 1
            out[nb] = c + 1
            work = 0
    return out[:nb + 1].copy()


# --- one cluster -------------------------------------------------------------------

@njit(cache=True)
def _workspace(nmax, p, q, G, deriv):
    """Every scratch array of one cluster's evaluation, sized for clusters of up to nmax rows."""
    t = q * (q + 1) // 2
    d = p + t
    e = d if deriv == 2 else 0
    return (np.empty(nmax), np.empty((nmax, q)), np.empty((nmax, 4)),
            np.empty(min(nmax * G, NODE_STORE) if deriv == 2 else 0),
            np.empty((4, q)), np.empty((10, q, q)), np.empty((q, 1)),
            np.empty((2, d)), np.empty((q, d)), np.empty((3, d, q, q)), np.empty((q, q, d)),
            np.empty((q, e, e)), np.empty((q, e)), np.empty((q, q, e)), np.empty((2, q, q, q)),
            np.empty((q, q, e, e)), np.empty((q, e, e)), np.empty((2, e, e, q, q)),
            np.empty((G, q)), np.empty((G, q)), np.empty(G), np.empty((G, p + q)), np.empty((G, d)),
            np.empty((q, d)), np.empty((d, d)), np.empty((2, q + 1, d)), np.empty((q + 1, q + 1)))


@njit(cache=True)
def _eval_cluster(family, dispersion, X, Z, y, a, o, r0, n, beta, lam, ta, tb, z, logw, deriv,
                  v, condvar, grad, hess, wk):
    """One cluster (kernels_numpy.eval_cluster): the mode in v, H^-1 in condvar, the
    gradient and Hessian into grad and hess (zeroed here); returns (loglik, converged)."""
    (off, R, LM, L2N, qv, qq, step, dv, M, dqq, D3, E3, SZs2, F3, G3, F4, MM, ddqq,
     V, GK, S0, P1, A, delta, hl2, sc, W) = wk
    p, q, t = X.shape[1], Z.shape[1], ta.shape[0]
    d = p + t
    G = z.shape[0]
    g, gn, vn, SZ1 = qv[0], qv[1], qv[2], qv[3]
    H, Hn, L, Li, S, tmp, SZR2, SZZ2 = qq[0], qq[1], qq[2], qq[3], qq[4], qq[5], qq[6], qq[7]
    s = dv[1]
    Hd, Ld, Sd = dqq[0], dqq[1], dqq[2]
    const = 0.0
    for j in range(n):
        r = r0 + j
        eta = o[r]
        for i in range(p):
            eta += X[r, i] * beta[i]
        off[j] = eta
        for c in range(q):
            acc = 0.0
            for e in range(c, q):
                acc += Z[r, e] * lam[e, c]
            R[j, c] = acc
        const += _row_const(family, dispersion, y[r], a[r])
    converged = _find_mode(family, dispersion, y, a, r0, n, off, R, q, v, g, H, L, vn, gn, Hn, step)
    _cholesky(H, L, q)
    _lower_inverse(L, Li, q)
    for i in range(q):
        for j in range(q):
            S[i, j] = Li[j, i]
            acc = 0.0
            for c in range(q):
                acc += Li[c, i] * Li[c, j]
            condvar[i, j] = acc
    if deriv >= 1:
        _mode_derivatives(family, dispersion, X, Z, y, a, r0, n, off, R, LM, q, v, ta, tb, deriv,
                          L, Li, S, tmp, qq[8:10], SZ1, SZR2, SZZ2, s, M, Hd, Ld, Sd, D3, E3, SZs2, F3, G3,
                          F4, MM, ddqq, lam)
    # nodes v_k = v + S z_k: sums over rows per node
    for k in range(G):
        S0[k] = 0.0
        for c in range(q):
            acc = v[c]
            for e in range(q):
                acc += S[c, e] * z[k, e]
            V[k, c] = acc
    P1[:, :] = 0.0
    stored = min(n, L2N.shape[0] // G)
    for j in range(n):
        r = r0 + j
        for k in range(G):
            eta = off[j]
            for c in range(q):
                eta += R[j, c] * V[k, c]
            l0, l1, l2, _, _ = _row(family, dispersion, y[r], a[r], eta, True, 2 * deriv)
            S0[k] += l0
            if deriv >= 1:
                for i in range(p):
                    P1[k, i] += l1 * X[r, i]
                for e in range(q):
                    P1[k, p + e] += l1 * Z[r, e]
                if j < stored:
                    L2N[j * G + k] = l2
    amax = -math.inf
    for k in range(G):
        zz, vv = 0.0, 0.0
        for c in range(q):
            zz += z[k, c] * z[k, c]
            vv += V[k, c] * V[k, c]
        S0[k] = logw[k] + 0.5 * zz + S0[k] - 0.5 * vv
        amax = max(amax, S0[k])
    total = 0.0
    for k in range(G):
        S0[k] = math.exp(S0[k] - amax)
        total += S0[k]
    loglik = const + amax + math.log(total)
    for c in range(q):
        loglik -= math.log(L[c, c])
    if deriv == 0:
        return loglik, converged
    pik = S0
    for k in range(G):
        pik[k] /= total
    # gradient: d log|S| + sum_k pi_k A_k
    for i in range(d):
        acc = 0.0
        for c in range(q):
            acc -= Ld[i, c, c] / L[c, c]
        grad[i] = acc
    for k in range(G):
        _node_delta(M, Sd, z[k], delta, q, d)
        for c in range(q):  # g_k = R'l1 - v_k, the gradient of h~ at the node
            acc = -V[k, c]
            for e in range(c, q):
                acc += lam[e, c] * P1[k, p + e]
            GK[k, c] = acc
        for i in range(d):
            acc = P1[k, i] if i < p else P1[k, p + ta[i - p]] * V[k, tb[i - p]]
            for c in range(q):
                acc += GK[k, c] * delta[c, i]
            A[k, i] = acc
            grad[i] += pik[k] * acc
    if deriv == 1:
        return loglik, converged
    _hessian(family, dispersion, X, Z, y, a, r0, n, off, R, L2N, stored, ta, tb, z, V, P1, A, pik, L, S,
             M, Ld, Sd, MM, ddqq, qv, qq, dv[0], sc, W, hl2, v, GK, hess)
    return loglik, converged


@njit(cache=True)
def _node_delta(M, Sd, zk, delta, q, d):
    """delta[:, i] = M[:, i] + Sd_i z_k: the node's total derivatives of v_k."""
    for c in range(q):
        for i in range(d):
            acc = M[c, i]
            for b in range(q):
                acc += Sd[i, c, b] * zk[b]
            delta[c, i] = acc


@njit(cache=True)
def _hessian(family, dispersion, X, Z, y, a, r0, n, off, R, L2N, stored, ta, tb, z, V, P1, A, pik, L, S,
             M, Ld, Sd, MM, ddqq, qv, qq, Abar, sc, W, hl2, v, GK, hess):
    """The cluster's Hessian (kernels_numpy.eval_cluster's last part), node sums by moments in z."""
    p, q = X.shape[1], Z.shape[1]
    d, G = p + ta.shape[0], z.shape[0]
    Ldd, Sdd = ddqq[0], ddqq[1]
    zbar, gbar, P1Zbar = qv[0], qv[1], qv[2]
    Zmom, GZ, PZ = qq[5], qq[6], qq[7]
    # sum_k pi_k sum_j l2_jk s_jk s_jk', s_jk = s_j0 + sum_c z_kc s_jc
    hl2[:, :] = 0.0
    sv, yv = sc[0], sc[1]
    for j in range(n):
        r = r0 + j
        W[:, :] = 0.0
        for k in range(G):
            if j < stored:
                l2 = L2N[j * G + k]
            else:
                eta = off[j]
                for c in range(q):
                    eta += R[j, c] * V[k, c]
                l2 = _row(family, dispersion, y[r], a[r], eta, False, 2)[2]
            w = pik[k] * l2
            W[0, 0] += w
            for c in range(q):
                wc = w * z[k, c]
                W[0, c + 1] += wc
                for c2 in range(c, q):
                    W[c + 1, c2 + 1] += wc * z[k, c2]
        for c in range(q + 1):
            for c2 in range(c):
                W[c, c2] = W[c2, c]
        _row_s(X, Z, r, v, ta, tb, M, R[j], True, sv[0])
        for c in range(q):
            for i in range(d):
                acc = 0.0
                for e in range(q):
                    acc += R[j, e] * Sd[i, e, c]
                if i >= p:
                    acc += Z[r, ta[i - p]] * S[tb[i - p], c]
                sv[c + 1, i] = acc
        for c in range(q + 1):
            for i in range(d):
                acc = 0.0
                for c2 in range(q + 1):
                    acc += W[c, c2] * sv[c2, i]
                yv[c, i] = acc
        for i in range(d):
            for k in range(i, d):
                acc = 0.0
                for c in range(q + 1):
                    acc += sv[c, i] * yv[c, k]
                hl2[i, k] += acc
    # node moments
    zbar[:] = 0.0
    gbar[:] = 0.0
    P1Zbar[:] = 0.0
    Zmom[:, :] = 0.0
    GZ[:, :] = 0.0
    PZ[:, :] = 0.0
    Abar[:] = 0.0
    for k in range(G):
        w = pik[k]
        gk = GK[k]
        for b in range(q):
            zbar[b] += w * z[k, b]
            gbar[b] += w * gk[b]
            P1Zbar[b] += w * P1[k, p + b]
            for c in range(q):
                Zmom[b, c] += w * z[k, b] * z[k, c]
                GZ[b, c] += w * gk[b] * z[k, c]
                PZ[b, c] += w * P1[k, p + b] * z[k, c]
        for i in range(d):
            Abar[i] += w * A[k, i]
    for i in range(d):
        for k in range(i, d):
            h = hl2[i, k]
            for b in range(q):
                h += -Ldd[i, k, b, b] / L[b, b] + Ld[i, b, b] * Ld[k, b, b] / (L[b, b] * L[b, b])
                h += gbar[b] * MM[b, i, k]
                zi, zk = 0.0, 0.0
                for c in range(q):
                    h += GZ[b, c] * Sdd[i, k, b, c]
                    zi += Sd[i, b, c] * zbar[c]
                    zk += Sd[k, b, c] * zbar[c]
                    for e in range(q):
                        h -= Sd[i, b, c] * Sd[k, b, e] * Zmom[c, e]
                h -= M[b, i] * M[b, k] + M[b, i] * zk + M[b, k] * zi
            for x, y_ in ((i, k), (k, i)):
                if x >= p:
                    u = x - p
                    h += P1Zbar[ta[u]] * M[tb[u], y_]
                    for c in range(q):
                        h += Sd[y_, tb[u], c] * PZ[ta[u], c]
            for g in range(G):
                h += pik[g] * (A[g, i] - Abar[i]) * (A[g, k] - Abar[k])
            hess[i, k] = h
            hess[k, i] = h


# --- all clusters ---------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _run(family, dispersion, X, Z, y, a, o, starts, bounds, beta, lam, ta, tb, z, logw, modes, deriv,
         loglik_out, condvar_out, gpart, hpart, failed):
    p, q = X.shape[1], Z.shape[1]
    d, G = p + ta.shape[0], z.shape[0]
    for ch in prange(bounds.shape[0] - 1):
        nmax = 0
        for c in range(bounds[ch], bounds[ch + 1]):
            nmax = max(nmax, starts[c + 1] - starts[c])
        wk = _workspace(nmax, p, q, G, deriv)
        gc, hc = np.zeros(d), np.zeros((d, d))
        nf = 0
        for c in range(bounds[ch], bounds[ch + 1]):
            ll, ok = _eval_cluster(family, dispersion, X, Z, y, a, o, starts[c], starts[c + 1] - starts[c],
                                   beta, lam, ta, tb, z, logw, deriv, modes[c], condvar_out[c], gc, hc, wk)
            loglik_out[c] = ll
            nf += not ok
            if deriv >= 1:
                gpart[ch] += gc
            if deriv == 2:
                hpart[ch] += hc
        failed[ch] = nf


def cluster_eval(family, dispersion, X, Z, y, weights, offset, starts, beta, theta, nodes,
                 gh_weights, modes, deriv, loglik_out, grad_out, hess_out, condvar_out, nthreads):
    """See :func:`pyglmm.engines.agq.kernels_numpy.cluster_eval` (the same contract)."""
    p, q = X.shape[1], Z.shape[1]
    ta = np.array([r for r in range(q) for _ in range(r + 1)], dtype=np.int64)
    tb = np.array([c for r in range(q) for c in range(r + 1)], dtype=np.int64)
    d = p + len(ta)
    lam = np.zeros((q, q))
    lam[ta, tb] = theta
    z, logw = gh_grid(np.asarray(nodes, dtype=np.float64), np.asarray(gh_weights, dtype=np.float64), q)
    bounds = _chunk_bounds(starts)
    nch = len(bounds) - 1
    gpart = np.zeros((nch, d) if deriv >= 1 else (nch, 0))
    hpart = np.zeros((nch, d, d) if deriv == 2 else (nch, 0, 0))
    failed = np.zeros(nch, dtype=np.int64)
    set_threads(nthreads)
    _run(family, dispersion, X, Z, y, weights, offset, starts, bounds, beta, lam, ta, tb, z, logw, modes,
         deriv, loglik_out, condvar_out, gpart, hpart, failed)
    if deriv >= 1:
        grad_out[:] = 0.0
        for ch in range(nch):  # in chunk order
            grad_out += gpart[ch]
    if deriv == 2:
        hess_out[:] = 0.0
        for ch in range(nch):
            hess_out += hpart[ch]
    return int(failed.sum())
