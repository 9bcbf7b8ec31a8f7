"""numba kernels: twins of ``csrc/crossed/*.cpp`` (see ``csrc/crossed/kernels.hpp``).

Rows are split into the same contiguous blocks as in C++ (``numba_blocks.n_blocks``), each
block accumulates privately, and blocks are reduced in order, so results are
identical for a given thread count.  The loops are the plain form of the C++
ones, without its refinements (a tile's rows in phases, per-level sums of a
sorted factor written straight into the output, explicit AVX2).  Optional
arrays are empty when absent.

Per-level sums (``S``, ``ZU``, group sums) allocate nothing per call: the first
block adds into the output, every other block into its slab of a workspace
kept between calls (``workspace``), zeroed only over the levels its rows
touch, and the slabs are added into the output level by level in block order.
"""

import numpy as np
from numba import njit, prange

from ...families import BINOMIAL, BINOMIAL_ETA_MAX, EPS, POISSON, POISSON_ETA_MAX
from .numba_blocks import TILE, add_slabs, block_slab, gram_tile, n_blocks, set_threads, workspace

@njit(cache=True, inline="always")
def _expit(x):
    if x >= 0:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def _irls_point(family, eta):
    """Mean and V(mu) at the clamped linear predictor (see pyglmm/families.py)."""
    if family == BINOMIAL:
        mu = _expit(min(BINOMIAL_ETA_MAX, max(-BINOMIAL_ETA_MAX, eta)))
        return mu, mu * (1.0 - mu)
    if family == POISSON:
        mu = max(np.exp(min(POISSON_ETA_MAX, eta)), EPS)
        return mu, mu
    return eta, 1.0


@njit(cache=True, inline="always")
def _unit_deviance(family, y, mu):
    if family == BINOMIAL:
        d = 0.0
        if y > 0.0:
            d += y * np.log(y / mu)
        if y < 1.0:
            d += (1.0 - y) * np.log((1.0 - y) / (1.0 - mu))
        return 2.0 * d
    if family == POISSON:
        return 2.0 * ((y * np.log(y / mu) if y > 0.0 else 0.0) - (y - mu))
    return (y - mu) ** 2


@njit(cache=True, parallel=True)
def _take_rows(X, order, out, nb):
    n = order.shape[0]
    for t in prange(nb):
        for i in range(n * t // nb, n * (t + 1) // nb):
            out[i, :] = X[order[i], :]


def take_rows(X, order, out, nthreads):
    if np.any((order < 0) | (order >= X.shape[0])):
        raise ValueError("order: index out of range")
    set_threads(nthreads)
    _take_rows(X, order, out, n_blocks(order.shape[0], nthreads))


@njit(cache=True)
def _order_rows(codes, factor, lo, q, order):
    following = np.zeros(q + 1, dtype=np.int64)  # rows before each level's
    for i in range(codes.shape[0]):
        following[codes[i, factor] - lo + 1] += 1
    for g in range(q):
        following[g + 1] += following[g]
    for i in range(codes.shape[0]):
        g = codes[i, factor] - lo
        order[following[g]] = i
        following[g] += 1


def order_rows(codes, factor, lo, q, order):
    key = codes[:, factor]
    if key.size and (key.min() < lo or key.max() >= lo + q):
        raise ValueError("codes: outside the factor's levels [lo, lo + q)")
    _order_rows(codes, factor, lo, q, order)


@njit(cache=True, parallel=True)
def _linear_predictor(X, xcat, codes, beta, b, offset, eta, nb):
    n, p = X.shape
    for t in prange(nb):
        for i in range(n * t // nb, n * (t + 1) // nb):
            e = offset[i] if offset.size else 0.0
            for j in range(p):
                e += X[i, j] * beta[j]
            for j in range(xcat.shape[1]):
                if xcat[i, j] >= 0:
                    e += beta[xcat[i, j]]
            for j in range(codes.shape[1]):
                if codes[i, j] >= 0:
                    e += b[codes[i, j]]
            eta[i] = e


def _cat(xcat, n):
    """The categorical codes, or an (n, 0) array when there are none."""
    return np.empty((n, 0), dtype=np.int32) if xcat is None else xcat


def linear_predictor(X, codes, beta, b, offset, eta, nthreads, xcat=None):
    set_threads(nthreads)
    _linear_predictor(X, _cat(xcat, X.shape[0]), codes, beta, b, offset, eta,
                      n_blocks(X.shape[0], nthreads))


@njit(cache=True, parallel=True)
def _irls_quantities(family, eta, y, prior, offset, mu, w, z, nb):
    n = eta.shape[0]
    dev = np.zeros(nb)
    for t in prange(nb):
        d = 0.0
        for i in range(n * t // nb, n * (t + 1) // nb):
            pw = prior[i] if prior.size else 1.0
            m, v = _irls_point(family, eta[i])
            mu[i] = m
            w[i] = pw * v
            z[i] = eta[i] - (offset[i] if offset.size else 0.0) + (y[i] - m) / v
            d += pw * _unit_deviance(family, y[i], m)
        dev[t] = d
    total = 0.0
    for t in range(nb):  # in block order
        total += dev[t]
    return total


def irls_quantities(family, eta, y, prior, offset, mu, w, z, nthreads):
    set_threads(nthreads)
    return _irls_quantities(family, eta, y, prior, offset, mu, w, z,
                            n_blocks(eta.shape[0], nthreads))


@njit(cache=True, parallel=True)
def _stats_pass(family, X, xcat, codes, y, prior, offset, beta, b, dbeta, db, design,
                w, S, ws, nb):
    n, p = X.shape
    k, m, T = codes.shape[1], xcat.shape[1], beta.shape[0]  # T = p + dummy columns
    sc = np.zeros((nb, 4))
    G = np.zeros((nb, T, T)) if design else np.zeros((nb, 0, 0))
    h = np.zeros((nb, T))
    spans = np.empty((nb, k, 2), dtype=np.int64)
    for t in prange(nb):
        lo, hi = n * t // nb, n * (t + 1) // nb
        St = block_slab(codes, lo, hi, -1, t, S, ws, spans, 0) if design else S
        # thread-local accumulators, written back once: no false sharing
        s0 = s1 = s2 = s3 = 0.0
        Gt = np.zeros((T, T)) if design else np.zeros((0, 0))
        ht = np.zeros(T)
        xt = np.zeros((p, TILE))  # the tile's x and w x, by columns
        wxt = np.zeros((p, TILE))
        for i in range(lo, hi):
            r = (i - lo) % TILE
            zeta = 0.0
            dz = 0.0
            for j in range(p):
                zeta += X[i, j] * beta[j]
                dz += X[i, j] * dbeta[j]
            for j in range(m):
                if xcat[i, j] >= 0:
                    zeta += beta[xcat[i, j]]
                    dz += dbeta[xcat[i, j]]
            for j in range(k):
                zeta += b[codes[i, j]]
                dz += db[codes[i, j]]
            old = zeta - dz
            s1 += zeta * zeta
            s2 += dz * dz
            s3 += old * old
            pw = prior[i] if prior.size else 1.0
            mu, var = _irls_point(family, zeta + (offset[i] if offset.size else 0.0))
            res = y[i] - mu
            rv = res / var
            s0 += pw * res * rv
            if not design:
                continue
            wi = pw * var
            w[i] = wi
            zi = zeta + rv
            for j in range(p):
                xt[j, r] = X[i, j]
                wxt[j, r] = wi * X[i, j]
                ht[j] += wxt[j, r] * zi
            if r == TILE - 1 or i == hi - 1:
                gram_tile(r + 1, wxt, xt, Gt[:p, :p], True)
            for u in range(m):  # the row's dummies: G's rows and columns c
                c = xcat[i, u]
                if c < 0:
                    continue
                for j in range(p):
                    Gt[j, c] += wxt[j, r]
                for v in range(m):
                    if xcat[i, v] >= c:
                        Gt[c, xcat[i, v]] += wi
                ht[c] += wi * zi
            if wi == 0.0:
                continue
            for j in range(k):
                g = codes[i, j]
                for l in range(p):
                    St[g, l] += wxt[l, r]
                for u in range(m):
                    if xcat[i, u] >= 0:
                        St[g, xcat[i, u]] += wi
                St[g, T] += wi
                St[g, T + 1] += wi * zi
        sc[t, 0] = s0
        sc[t, 1] = s1
        sc[t, 2] = s2
        sc[t, 3] = s3
        if design:
            G[t] = Gt
            h[t] = ht
    for t in range(1, nb):
        sc[0] += sc[t]
        if design:
            G[0] += G[t]
            h[0] += h[t]
    if design:
        add_slabs(S, ws, spans, 0)
    return sc[0], G[0], h[0]


def stats_pass(family, X, codes, y, prior, offset, beta, b, dbeta, db, design,
               w, G, h, S, nthreads, xcat=None):
    set_threads(nthreads)
    nb = n_blocks(X.shape[0], nthreads)
    args = (family, X, _cat(xcat, X.shape[0]), codes, y, prior, offset, beta, b, dbeta, db,
            design, w, S)
    if not design:
        return _stats_pass(*args, np.empty((0, 0, 0)), nb)[0]
    with workspace.get((nb - 1,) + S.shape) as ws:
        sc, G_, h_ = _stats_pass(*args, ws, nb)
    G[:] = np.triu(G_) + np.triu(G_, 1).T
    h[:] = h_
    return sc


@njit(cache=True, parallel=True)
def _group_cross_sums(codes, factor, lo, w, table, out, ws, nb):
    """Unscaled group sums into ``out`` (level g at row g - lo)."""
    n, k = codes.shape
    m = table.shape[1]
    spans = np.empty((nb, k, 2), dtype=np.int64)
    for t in prange(nb):
        begin, end = n * t // nb, n * (t + 1) // nb
        acc = block_slab(codes, begin, end, factor, t, out, ws, spans, lo)
        for i in range(begin, end):
            wi = w[i]
            if wi == 0.0:
                continue
            g = codes[i, factor] - lo
            for j in range(k):
                if j == factor:
                    continue
                c = codes[i, j]
                for l in range(m):
                    acc[g, l] += wi * table[c, l]
    add_slabs(out, ws, spans, lo)


def group_cross_sums(codes, factor, lo, w, scale, table, out, nthreads):
    set_threads(nthreads)
    nb = n_blocks(codes.shape[0], nthreads)
    with workspace.get((nb - 1,) + out.shape) as ws:
        _group_cross_sums(codes, factor, lo, w, table, out, ws, nb)
    if scale != 1.0:
        out *= scale


@njit(cache=True)
def _chol_solve(L, x):
    p = x.shape[0]
    for i in range(p):
        v = x[i]
        for j in range(i):
            v -= L[i, j] * x[j]
        x[i] = v / L[i, i]
    for i in range(p - 1, -1, -1):
        v = x[i]
        for j in range(i + 1, p):
            v -= L[j, i] * x[j]
        x[i] = v / L[i, i]


@njit(cache=True)
def _quad_form(M, v):
    out = 0.0
    for i in range(v.shape[0]):
        row = 0.0
        for j in range(v.shape[0]):
            row += M[i, j] * v[j]
        out += v[i] * row
    return out


@njit(cache=True)
def _club_backfit(codes, offsets, w, scale, h, s, D, tq, chol, XtX, counts, beta, b,
                  tol, max_iter, nb, u, ws):
    k = codes.shape[1]
    p = beta.shape[0]
    v = np.zeros((k, p))
    for f in range(k):
        for g in range(offsets[f], offsets[f + 1]):
            for l in range(p):
                v[f, l] += s[g, l] * b[g]
    bcol = b.reshape(b.shape[0], 1)
    sweeps = 0
    rel = 0.0
    while sweeps < max_iter:
        sweeps += 1
        beta0 = beta.copy()
        num_b = 0.0
        den_b = 0.0
        for f in range(k):
            lo = offsets[f]
            hi = offsets[f + 1]
            uf = u[:hi - lo]
            _group_cross_sums(codes, f, lo, w, bcol, uf, ws, nb)
            rhs = h.copy()
            for j in range(k):
                if j != f:
                    rhs -= v[j]
            for g in range(lo, hi):
                uf[g - lo, 0] = tq[g] - uf[g - lo, 0] * scale
                ratio = uf[g - lo, 0] / D[g]
                for l in range(p):
                    rhs[l] -= s[g, l] * ratio
            _chol_solve(chol[f], rhs)
            beta[:] = rhs
            v[f] = 0.0
            for g in range(lo, hi):
                fit = 0.0
                for l in range(p):
                    fit += s[g, l] * beta[l]
                bn = (uf[g - lo, 0] - fit) / D[g]
                d = bn - b[g]
                num_b += counts[g] * d * d
                den_b += counts[g] * b[g] * b[g]
                b[g] = bn
                for l in range(p):
                    v[f, l] += s[g, l] * bn
        dbeta = beta - beta0
        num = _quad_form(XtX, dbeta) + num_b
        den = _quad_form(XtX, beta0) + den_b
        if den > 0.0:
            rel = num / den
        else:
            rel = np.inf if num > 0.0 else 0.0
        if rel <= tol:
            break
    return sweeps, rel


def club_backfit(codes, offsets, w, scale, h, s, D, tq, chol, XtX, counts, beta, b,
                 tol, max_iter, nthreads):
    set_threads(nthreads)
    nb = n_blocks(codes.shape[0], nthreads)
    qmax = int(np.max(np.diff(offsets), initial=0))
    with workspace.get((nb, qmax, 1)) as ws:  # u, then the slabs
        sweeps, rel = _club_backfit(codes, offsets, w, scale, h, s, D, tq, chol, XtX, counts,
                                    beta, b, tol, max_iter, nb, ws[0], ws[1:])
    return int(sweeps), float(rel)


@njit(cache=True, parallel=True)
def _sandwich_pass(X, xcat, codes, A, wu, scale, wm, ZU, ws, nb):
    n, p = X.shape
    k, m, T = codes.shape[1], xcat.shape[1], ZU.shape[1]  # T = p + dummy columns
    H = np.zeros((nb, T, T))
    M0 = np.zeros((nb, T, T))
    spans = np.empty((nb, k, 2), dtype=np.int64)
    for t in prange(nb):
        lo, hi = n * t // nb, n * (t + 1) // nb
        Zt = block_slab(codes, lo, hi, -1, t, ZU, ws, spans, 0)
        Ht = np.zeros((T, T))  # thread-local, written back once
        Mt = np.zeros((T, T))
        xt = np.zeros((T, TILE))  # the tile's x, r, u = wu r and wm r, by columns
        rt = np.zeros((T, TILE))
        ut = np.zeros((T, TILE))
        mt = np.zeros((T, TILE))
        for i in range(lo, hi):
            r = (i - lo) % TILE
            wui = scale * wu[i]
            wmi = wm[i] if wm.size else wui
            for l in range(p):
                xt[l, r] = X[i, l]
            for l in range(p, T):
                xt[l, r] = 0.0
            for u in range(m):
                if xcat[i, u] >= 0:
                    xt[xcat[i, u], r] = 1.0
            for l in range(T):
                rt[l, r] = xt[l, r]
            if A.size:
                for j in range(k):
                    for l in range(T):
                        rt[l, r] -= A[codes[i, j], l]
            for l in range(T):
                ut[l, r] = wui * rt[l, r]
                mt[l, r] = wmi * rt[l, r]
            if r == TILE - 1 or i == hi - 1:
                gram_tile(r + 1, xt, ut, Ht, False)
                gram_tile(r + 1, mt, rt, Mt, True)
            if wui == 0.0:
                continue
            for j in range(k):
                g = codes[i, j]
                for l in range(T):
                    Zt[g, l] += ut[l, r]
        H[t] = Ht
        M0[t] = Mt
    for t in range(1, nb):
        H[0] += H[t]
        M0[0] += M0[t]
    add_slabs(ZU, ws, spans, 0)
    return H[0], M0[0]


def sandwich_pass(X, codes, A, wu, scale, wm, H, ZU, M0, nthreads, xcat=None):
    set_threads(nthreads)
    nb = n_blocks(X.shape[0], nthreads)
    with workspace.get((nb - 1,) + ZU.shape) as ws:
        H_, M_ = _sandwich_pass(X, _cat(xcat, X.shape[0]), codes, A, wu, scale, wm, ZU, ws, nb)
    H[:] = H_
    M0[:] = np.triu(M_) + np.triu(M_, 1).T


@njit(cache=True)
def schall_update(offsets, Wq, b, lam, nu, sigma2):
    for f in range(lam.shape[0]):
        df = 0.0
        ss = 0.0
        for g in range(offsets[f], offsets[f + 1]):
            df += Wq[g] / (Wq[g] + lam[f])
            ss += b[g] * b[g]
        nu[f] = (offsets[f + 1] - offsets[f]) - df
        sigma2[f] = ss / df if df > 0.0 else 0.0


@njit(cache=True, parallel=True)
def _smooth_finish(lo, s, D, counts, centre, A, new, nb):
    q, p = new.shape
    part = np.zeros((nb, p + 1))  # per level block: column sums of new, sum of 1/D
    for t in prange(nb):
        for g in range(q * t // nb, q * (t + 1) // nb):
            inv = 1.0 / D[lo + g]
            for l in range(p):
                new[g, l] = (s[lo + g, l] - new[g, l]) * inv
                part[t, l] += new[g, l]
            part[t, p] += inv
    c = np.zeros(p)
    if centre:
        for t in range(1, nb):
            part[0] += part[t]
        for l in range(p):
            c[l] = part[0, l] / part[0, p]
    norms = np.zeros((nb, 2))
    for t in prange(nb):
        num = 0.0
        den = 0.0
        for g in range(q * t // nb, q * (t + 1) // nb):
            inv = 1.0 / D[lo + g]
            dn = 0.0
            dd = 0.0
            for l in range(p):
                v = new[g, l] - c[l] * inv
                old = A[lo + g, l]
                dn += (old - v) ** 2
                dd += old * old
                A[lo + g, l] = v
            num += counts[lo + g] * dn
            den += counts[lo + g] * dd
        norms[t, 0] = num
        norms[t, 1] = den
    num = 0.0
    den = 0.0
    for t in range(nb):  # in block order
        num += norms[t, 0]
        den += norms[t, 1]
    return num, den


def smooth_step(codes, offsets, factor, w, s, D, counts, centre, A, work, nthreads):
    lo, hi = int(offsets[factor]), int(offsets[factor + 1])
    new = work[: hi - lo]
    group_cross_sums(codes, factor, lo, w, 1.0, A, new, nthreads)
    num, den = _smooth_finish(lo, s, D, counts, bool(centre), A, new, n_blocks(hi - lo, nthreads))
    return float(num), float(den)


@njit(cache=True, parallel=True)
def _club_prepare(S, lo, hi, lam, s, Wq, tq, D, nb):
    p = s.shape[1]
    q = hi - lo
    acc = np.zeros((nb, p, p))
    for t in prange(nb):
        at = np.zeros((p, TILE))  # the tile's s_g / D_g and s_g, by columns
        bt = np.zeros((p, TILE))
        Rt = np.zeros((p, p))
        first, last = lo + q * t // nb, lo + q * (t + 1) // nb
        for g in range(first, last):
            r = (g - first) % TILE
            Wq[g] = S[g, p]
            tq[g] = S[g, p + 1]
            D[g] = S[g, p] + lam
            inv = 1.0 / D[g]
            for l in range(p):
                s[g, l] = S[g, l]
                bt[l, r] = S[g, l]
                at[l, r] = S[g, l] * inv
            if r == TILE - 1 or g == last - 1:
                gram_tile(r + 1, at, bt, Rt, True)
        acc[t] = Rt
    for t in range(1, nb):  # in block order
        acc[0] += acc[t]
    return acc[0]


def club_prepare(S, offsets, lam, s, Wq, tq, D, R, nthreads):
    set_threads(nthreads)
    for f in range(lam.shape[0]):
        lo, hi = int(offsets[f]), int(offsets[f + 1])
        Rf = _club_prepare(S, lo, hi, lam[f], s, Wq, tq, D, n_blocks(hi - lo, nthreads))
        R[f] = np.triu(Rf) + np.triu(Rf, 1).T
