"""numba kernels of the ridge engine: twins of ``csrc/ridge/kernels.cpp`` (contracts in
``csrc/ridge/kernels.hpp``; reference: ``kernels_numpy``).

Each group is independent: groups are split over threads (``prange``), each
writes only its own slice of the outputs, so results do not depend on the
thread count.  The Cholesky factorisation and the two triangular solves are
written out (q is small: a random intercept and a few slopes).
"""

import numpy as np
from numba import njit, prange

from ..crossed.numba_blocks import set_threads


@njit(cache=True, parallel=True)
def _reductions(offsets, Z, D, y, ZtZ, ZtD, Zty):
    q, p = Z.shape[1], D.shape[1]
    for i in prange(offsets.shape[0] - 1):
        for r in range(offsets[i], offsets[i + 1]):
            for a in range(q):
                za = Z[r, a]
                Zty[i, a] += za * y[r]
                for b in range(q):
                    ZtZ[i, a, b] += za * Z[r, b]
                for c in range(p):
                    ZtD[i, a, c] += za * D[r, c]


def group_reductions(offsets, Z, D, y, nthreads=1):
    """Per-group ``Z_i'Z_i`` (m, q, q), ``Z_i'D_i`` (m, q, p), ``Z_i'y_i`` (m, q)."""
    set_threads(nthreads)
    m, q, p = offsets.shape[0] - 1, Z.shape[1], D.shape[1]
    ZtZ, ZtD, Zty = np.zeros((m, q, q)), np.zeros((m, q, p)), np.zeros((m, q))
    _reductions(offsets, Z, D, y, ZtZ, ZtD, Zty)
    return ZtZ, ZtD, Zty


@njit(cache=True, parallel=True)
def _solves(M, R, X, logdet):
    m, q, k = R.shape
    for i in prange(m):
        L = np.zeros((q, q))
        ok = True
        for j in range(q):
            s = M[i, j, j]
            for c in range(j):
                s -= L[j, c] * L[j, c]
            if not s > 0.0:
                ok = False
                break
            L[j, j] = np.sqrt(s)
            for r in range(j + 1, q):
                t = M[i, r, j]
                for c in range(j):
                    t -= L[r, c] * L[j, c]
                L[r, j] = t / L[j, j]
        if not ok:
            logdet[i] = np.nan
            continue
        ld = 0.0
        for j in range(q):
            ld += 2.0 * np.log(L[j, j])
        logdet[i] = ld
        for col in range(k):
            for j in range(q):  # L w = r
                t = R[i, j, col]
                for c in range(j):
                    t -= L[j, c] * X[i, c, col]
                X[i, j, col] = t / L[j, j]
            for j in range(q - 1, -1, -1):  # L' x = w
                t = X[i, j, col]
                for c in range(j + 1, q):
                    t -= L[c, j] * X[i, c, col]
                X[i, j, col] = t / L[j, j]


def batched_spd_solve(M, R, nthreads=1):
    """Solve ``M_i X_i = R_i`` by Cholesky per group; ``(X, logdet)``, ``logdet[i] = nan``
    (and ``X_i = 0``) where M_i is not positive definite."""
    set_threads(nthreads)
    X, logdet = np.zeros(R.shape), np.zeros(M.shape[0])
    _solves(M, R, X, logdet)
    X[np.isnan(logdet)] = 0.0
    return X, logdet
