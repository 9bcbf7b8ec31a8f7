"""Reference kernels of the ridge engine in plain numpy: slow, obviously correct.

Every function has the signature of its C++ twin in ``csrc/ridge/kernels.hpp``
and of the numba twin (``kernels_numba``); the other backends are tested
against these.  ``nthreads`` is accepted and ignored.

Conventions: rows are sorted by group; group ``i`` owns rows
``offsets[i]:offsets[i+1]``.  Arrays are C-contiguous float64.
"""

import numpy as np


def group_reductions(offsets, Z, D, y, nthreads=1):
    """Per-group cross products ``Z_i'Z_i`` (m, q, q), ``Z_i'D_i`` (m, q, p) and
    ``Z_i'y_i`` (m, q) of the rows of each group."""
    m = len(offsets) - 1
    q, p = Z.shape[1], D.shape[1]
    ZtZ, ZtD, Zty = np.zeros((m, q, q)), np.zeros((m, q, p)), np.zeros((m, q))
    for i in range(m):
        rows = slice(offsets[i], offsets[i + 1])
        Zi = Z[rows]
        ZtZ[i], ZtD[i], Zty[i] = Zi.T @ Zi, Zi.T @ D[rows], Zi.T @ y[rows]
    return ZtZ, ZtD, Zty


def batched_spd_solve(M, R, nthreads=1):
    """Solve ``M_i X_i = R_i`` for every group by Cholesky (M: m x q x q symmetric,
    R: m x q x k).  Returns ``(X, logdet)`` with ``logdet[i] = log|M_i|``; a group
    whose M_i is not positive definite gets ``logdet[i] = nan`` and ``X_i = 0``."""
    try:
        L = np.linalg.cholesky(M)
    except np.linalg.LinAlgError:  # some M_i is not positive definite: one at a time
        L = None
    if L is not None:
        X = np.linalg.solve(np.swapaxes(L, 1, 2), np.linalg.solve(L, R))
        return X, 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
    X, logdet = np.zeros(R.shape), np.zeros(len(M))
    for i in range(len(M)):
        try:
            X[i], logdet[i] = _solve_one(M[i], R[i])
        except np.linalg.LinAlgError:
            logdet[i] = np.nan
    return X, logdet


def _solve_one(M, R):
    L = np.linalg.cholesky(M)
    return np.linalg.solve(L.T, np.linalg.solve(L, R)), 2 * np.log(np.diag(L)).sum()
