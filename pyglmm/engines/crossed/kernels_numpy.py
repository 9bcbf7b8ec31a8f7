"""Reference kernels in plain numpy: slow, single-threaded, obviously correct.

Every function has the signature of its C++ twin in ``csrc/crossed/kernels.hpp`` (whose
header states the conventions) and of the numba twin; the other backends are
tested against these.  ``nthreads`` is accepted and ignored.
"""

import numpy as np
from scipy.linalg import cho_solve

from ...families import family_of_code


def family_point(family, eta):
    """Mean (at the fit's clamped linear predictor) and variance function V(mu)."""
    fam = family_of_code(family)
    mu = fam.irls_mean(eta)
    return mu, fam.variance(mu)


def _gather(table, codes):
    """sum_j table[codes[:, j]] with negative codes contributing nothing."""
    out = np.zeros((codes.shape[0],) + table.shape[1:])
    for j in range(codes.shape[1]):
        c = codes[:, j]
        out += np.where((c >= 0).reshape((-1,) + (1,) * (table.ndim - 1)), table[np.maximum(c, 0)], 0.0)
    return out


def _group_sums(codes, weights, n_levels):
    """Column-wise sums of ``weights`` (n or n x m) over integer levels."""
    if weights.ndim == 1:
        return np.bincount(codes, weights=weights, minlength=n_levels)
    return np.column_stack([np.bincount(codes, weights=weights[:, l], minlength=n_levels)
                            for l in range(weights.shape[1])]).reshape(n_levels, weights.shape[1])


def _with_dummies(X, xcat, T):
    """X (n x p) followed by the dummy columns p..T-1 that xcat's codes mark with 1."""
    if xcat is None or xcat.shape[1] == 0:
        return X
    full = np.zeros((X.shape[0], T))
    full[:, : X.shape[1]] = X
    rows = np.arange(X.shape[0])
    for j in range(xcat.shape[1]):
        has = xcat[:, j] >= 0
        full[rows[has], xcat[has, j]] = 1.0
    return full


def take_rows(X, order, out, nthreads):
    if np.any((order < 0) | (order >= X.shape[0])):
        raise ValueError("order: index out of range")
    np.take(X, order, axis=0, out=out)


def order_rows(codes, factor, lo, q, order):
    key = codes[:, factor]
    if key.size and (key.min() < lo or key.max() >= lo + q):
        raise ValueError("codes: outside the factor's levels [lo, lo + q)")
    order[:] = np.argsort(key, kind="stable")


def linear_predictor(X, codes, beta, b, offset, eta, nthreads, xcat=None):
    X = _with_dummies(X, xcat, beta.shape[0])
    eta[:] = X @ beta + _gather(b, codes) + (offset if offset.size else 0.0)


def irls_quantities(family, eta, y, prior, offset, mu, w, z, nthreads):
    m, v = family_point(family, eta)
    mu[:] = m
    w[:] = (prior if prior.size else 1.0) * v
    z[:] = eta - (offset if offset.size else 0.0) + (y - m) / v
    return family_of_code(family).deviance(y, m, prior)


def stats_pass(family, X, codes, y, prior, offset, beta, b, dbeta, db, design,
               w, G, h, S, nthreads, xcat=None):
    X = _with_dummies(X, xcat, beta.shape[0])
    zeta = X @ beta + _gather(b, codes)
    dz = X @ dbeta + _gather(db, codes)
    mu, var = family_point(family, zeta + (offset if offset.size else 0.0))
    pw = prior if prior.size else np.ones_like(y)
    res = y - mu
    old = zeta - dz
    scalars = np.array([np.sum(pw * res**2 / var), zeta @ zeta, dz @ dz, old @ old])
    if design:
        w[:] = pw * var
        wz = w * (zeta + res / var)
        WX = w[:, None] * X
        G[:] = X.T @ WX
        h[:] = X.T @ wz
        S[:] = 0.0
        for j in range(codes.shape[1]):  # S = Z'W [X, 1, z]
            S += _group_sums(codes[:, j], np.column_stack([WX, w, wz]), S.shape[0])
    return scalars


def group_cross_sums(codes, factor, lo, w, scale, table, out, nthreads):
    others = np.delete(codes, factor, axis=1)
    block = w[:, None] * _gather(table, others)
    out[:] = scale * _group_sums(codes[:, factor] - lo, block, out.shape[0])


def club_backfit(codes, offsets, w, scale, h, s, D, tq, chol, XtX, counts, beta, b,
                 tol, max_iter, nthreads):
    def cross_sums(f, lo, table, out):
        group_cross_sums(codes, f, lo, w, scale, table, out, nthreads)

    return club_sweeps(cross_sums, offsets, h, s, D, tq, chol, XtX, counts, beta, b, tol, max_iter)


def club_sweeps(cross_sums, offsets, h, s, D, tq, chol, XtX, counts, beta, b, tol, max_iter):
    """club_backfit with its one pass over the rows, ``cross_sums(f, lo, table, out)``
    (group_cross_sums at the weights), given by the caller: the cluster passes
    (pyglmm.engines.crossed.cluster) reduce it over partitions."""
    K = len(offsets) - 1
    levels = [slice(offsets[f], offsets[f + 1]) for f in range(K)]
    sweeps, rel = 0, 0.0
    while sweeps < max_iter:
        sweeps += 1
        beta0, b0 = beta.copy(), b.copy()
        for f, lv in enumerate(levels):
            u = np.empty((lv.stop - lv.start, 1))
            cross_sums(f, lv.start, b[:, None], u)
            u = tq[lv] - u[:, 0]
            others = sum((s[o].T @ b[o] for g, o in enumerate(levels) if g != f), np.zeros_like(h))
            rhs = h - others - s[lv].T @ (u / D[lv])
            beta[:] = cho_solve((chol[f], True), rhs)
            b[lv] = (u - s[lv] @ beta) / D[lv]
        dbeta, dbb = beta - beta0, b - b0
        num = dbeta @ XtX @ dbeta + counts @ dbb**2
        den = beta0 @ XtX @ beta0 + counts @ b0**2
        rel = num / den if den > 0 else (np.inf if num > 0 else 0.0)
        if rel <= tol:
            break
    return sweeps, rel


def sandwich_pass(X, codes, A, wu, scale, wm, H, ZU, M0, nthreads, xcat=None):
    X = _with_dummies(X, xcat, H.shape[0])
    R = X - _gather(A, codes) if A.size else X
    U = (scale * wu)[:, None] * R
    H[:] = X.T @ U
    M0[:] = R.T @ ((wm if wm.size else scale * wu)[:, None] * R)
    ZU[:] = 0.0
    for j in range(codes.shape[1]):
        ZU += _group_sums(codes[:, j], U, ZU.shape[0])


def schall_update(offsets, Wq, b, lam, nu, sigma2):
    for f in range(lam.shape[0]):
        lv = slice(offsets[f], offsets[f + 1])
        df = np.sum(Wq[lv] / (Wq[lv] + lam[f]))  # q - nu, without cancellation
        nu[f] = (lv.stop - lv.start) - df
        sigma2[f] = np.sum(b[lv] ** 2) / df if df > 0 else 0.0


def smooth_step(codes, offsets, factor, w, s, D, counts, centre, A, work, nthreads):
    lv = slice(offsets[factor], offsets[factor + 1])
    new = work[: lv.stop - lv.start]
    group_cross_sums(codes, factor, lv.start, w, 1.0, A, new, nthreads)
    return smooth_update(lv, new, s, D, counts, centre, A)


def smooth_update(lv, new, s, D, counts, centre, A):
    """smooth_step after its one pass over the rows: ``new`` holds the group cross sums
    of A for the levels ``lv`` (the cluster passes reduce them over partitions)."""
    new[:] = (s[lv] - new) / D[lv, None]
    if centre:  # sum_g new_g = 0 along 1/D
        new -= np.outer(1.0 / D[lv], new.sum(axis=0) / np.sum(1.0 / D[lv]))
    num = counts[lv] @ np.sum((A[lv] - new) ** 2, axis=1)
    den = counts[lv] @ np.sum(A[lv] ** 2, axis=1)
    A[lv] = new
    return float(num), float(den)


def club_prepare(S, offsets, lam, s, Wq, tq, D, R, nthreads):
    p = s.shape[1]
    s[:], Wq[:], tq[:] = S[:, :p], S[:, p], S[:, p + 1]
    D[:] = Wq + np.repeat(lam, np.diff(offsets))
    for f in range(lam.shape[0]):
        lv = slice(offsets[f], offsets[f + 1])
        R[f] = s[lv].T @ (s[lv] / D[lv, None])
