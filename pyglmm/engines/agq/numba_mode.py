r"""Steps of the numba AGQ kernel (:mod:`.kernels_numba`): the rows' log-densities
and derivatives, small dense algebra (q <= 3), Newton on the mode, and the
mode's first and second derivatives in (beta, theta).  Line for line
csrc/agq/cluster_eval.cpp; notation of :mod:`.kernels_numpy`.
"""

import math

from numba import njit

from .kernels_numpy import BINOMIAL, MODE_MAX_ITER, MODE_TOL, POISSON

LOG_2PI = math.log(2.0 * math.pi)


# --- rows ----------------------------------------------------------------------

@njit(cache=True, inline="always")
def _log1p_unit(e):
    """log(1 + e) for e in [0, 1] to a few ulps: log(u) e / (u - 1), u = 1 + e (one log)."""
    u = 1.0 + e
    return e if u == 1.0 else math.log(u) * (e / (u - 1.0))


@njit(cache=True, inline="always")
def _row(family, dispersion, y, a, eta, value, order):
    """(l0 without its constant (0 unless ``value``), l1, l2, l3, l4) at eta; derivatives
    above ``order`` (at least 2 when any) are 0."""
    l0 = l1 = l2 = l3 = l4 = 0.0
    if family == BINOMIAL:
        e = math.exp(-abs(eta))
        if value:
            l0 = a * (y * eta - max(eta, 0.0) - _log1p_unit(e))
        if order >= 1:
            inv = 1.0 / (1.0 + e)
            mu = inv if eta >= 0 else e * inv
            l1 = a * (y - mu)
            if order >= 2:
                v = e * inv * inv
                l2 = -a * v
                l3 = -a * v * (1.0 - 2.0 * mu)
                l4 = -a * v * (1.0 - 6.0 * v)
    elif family == POISSON:
        mu = math.exp(eta) if eta < 709.78 else math.inf
        l0 = a * (y * eta - mu)
        l1 = a * (y - mu)
        l2 = l3 = l4 = -a * mu
    else:
        r = y - eta
        l0 = -0.5 * a * r * r / dispersion
        l1 = a * r / dispersion
        l2 = -a / dispersion
    return l0, l1, l2, l3, l4


@njit(cache=True, inline="always")
def _row_const(family, dispersion, y, a):
    """The part of l_j that does not depend on eta."""
    if family == BINOMIAL:
        k = a * y
        return math.lgamma(a + 1.0) - math.lgamma(k + 1.0) - math.lgamma(a - k + 1.0)
    if family == POISSON:
        return -a * math.lgamma(y + 1.0)
    return -0.5 * (LOG_2PI + math.log(dispersion / a))


# --- small dense algebra (q <= 3) -----------------------------------------------

@njit(cache=True)
def _cholesky(H, L, q):
    for i in range(q):
        for j in range(i + 1):
            s = H[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            if i == j:
                L[i, i] = math.sqrt(s) if s > 0 else math.nan
            else:
                L[i, j] = s / L[j, j]
        for j in range(i + 1, q):
            L[i, j] = 0.0


@njit(cache=True)
def _lower_inverse(L, Li, q):
    for j in range(q):
        for i in range(q):
            if i < j:
                Li[i, j] = 0.0
            elif i == j:
                Li[i, i] = 1.0 / L[i, i]
            else:
                s = 0.0
                for k in range(j, i):
                    s += L[i, k] * Li[k, j]
                Li[i, j] = -s / L[i, i]


@njit(cache=True)
def _solve_cols(L, B, q, ncol):
    """B (q, ncol) <- (L L')^{-1} B in place."""
    for c in range(ncol):
        for i in range(q):
            s = B[i, c]
            for k in range(i):
                s -= L[i, k] * B[k, c]
            B[i, c] = s / L[i, i]
        for i in range(q - 1, -1, -1):
            s = B[i, c]
            for k in range(i + 1, q):
                s -= L[k, i] * B[k, c]
            B[i, c] = s / L[i, i]


@njit(cache=True)
def _chol_derivative(L, Li, A, out, q, tmp):
    """out = L Phi(Li A Li') (the derivative of the Cholesky factor along dH = A)."""
    for i in range(q):
        for j in range(q):
            s = 0.0
            for k in range(q):
                for m in range(q):
                    s += Li[i, k] * A[k, m] * Li[j, m]
            tmp[i, j] = s if j < i else (0.5 * s if j == i else 0.0)
    for i in range(q):
        for j in range(q):
            s = 0.0
            for k in range(q):
                s += L[i, k] * tmp[k, j]
            out[i, j] = s


# --- Newton on the mode ----------------------------------------------------------

@njit(cache=True)
def _sweep_h(family, dispersion, y, a, r0, n, off, R, q, v, g, H):
    """sum_j l_j (without constants) - v'v/2 at v; g = R'l1 - v, H = I - R' diag(l2) R."""
    f = 0.0
    g[:] = 0.0
    H[:, :] = 0.0
    for j in range(n):
        eta = off[j]
        for c in range(q):
            eta += R[j, c] * v[c]
        l0, l1, l2, _, _ = _row(family, dispersion, y[r0 + j], a[r0 + j], eta, True, 2)
        f += l0
        for c in range(q):
            g[c] += l1 * R[j, c]
            for e in range(c + 1):
                H[c, e] -= l2 * R[j, c] * R[j, e]
    for c in range(q):
        f -= 0.5 * v[c] * v[c]
        g[c] -= v[c]
        H[c, c] += 1.0
        for e in range(c):
            H[e, c] = H[c, e]
    return f


@njit(cache=True)
def _find_mode(family, dispersion, y, a, r0, n, off, R, q, v, g, H, L, vn, gn, Hn, step):
    """Newton with step halving from v (kernels_numpy.find_mode, on h~ without the rows'
    constants); leaves the mode in v and H(v) in H.  Returns converged."""
    for c in range(q):
        if not math.isfinite(v[c]):
            v[c] = 0.0
    f = _sweep_h(family, dispersion, y, a, r0, n, off, R, q, v, g, H)
    for _ in range(MODE_MAX_ITER):
        _cholesky(H, L, q)
        for c in range(q):
            step[c, 0] = g[c]
        _solve_cols(L, step, q, 1)
        # a NaN step (H not positive definite to rounding) is no convergence
        smax, vmax, finite = 0.0, 0.0, True
        for c in range(q):
            finite = finite and math.isfinite(step[c, 0])
            smax = max(smax, abs(step[c, 0]))
            vmax = max(vmax, abs(v[c]))
        small = finite and smax < MODE_TOL * (1.0 + vmax)
        slack = 1e-12 * max(1.0, abs(f))
        accepted = False
        fn = 0.0
        for _ in range(50):
            for c in range(q):
                vn[c] = v[c] + step[c, 0]
            fn = _sweep_h(family, dispersion, y, a, r0, n, off, R, q, vn, gn, Hn)
            if fn >= f - slack or (small and math.isfinite(fn)):
                accepted = True
                break
            for c in range(q):
                step[c, 0] /= 2
        if not accepted:
            return small
        v[:] = vn
        g[:] = gn
        H[:, :] = Hn
        f = fn
        if small:
            return True
    return False


@njit(cache=True, inline="always")
def _row_s(X, Z, r, v, ta, tb, M, Rj, total, out):
    """The row's derivatives of eta at the mode: B = d eta / d psi at fixed v, and if
    ``total`` the total ones s = B + M'R_j."""
    p, q = X.shape[1], Z.shape[1]
    for i in range(out.shape[0]):
        acc = X[r, i] if i < p else Z[r, ta[i - p]] * v[tb[i - p]]
        if total:
            for c in range(q):
                acc += M[c, i] * Rj[c]
        out[i] = acc


@njit(cache=True)
def _mode_derivatives(family, dispersion, X, Z, y, a, r0, n, off, R, LM, q, v, ta, tb, deriv,
                      L, Li, S, tmp, scratch, SZ1, SZR2, SZZ2, s, M, Hd, Ld, Sd, D3, E3, SZs2, F3, G3,
                      F4, MM, ddqq, lam):
    """The mode's derivatives M = dv/dpsi, dH/dpsi (Hd), the Cholesky factor's (Ld) and S's (Sd),
    and with deriv 2 the second ones (MM, and ddqq = (Ldd, Sdd))."""
    p, t = X.shape[1], ta.shape[0]
    d = p + t
    M[:, :] = 0.0
    SZ1[:] = 0.0
    SZR2[:, :] = 0.0
    SZZ2[:, :] = 0.0
    for j in range(n):
        r = r0 + j
        eta = off[j]
        for c in range(q):
            eta += R[j, c] * v[c]
        _, l1, l2, l3, l4 = _row(family, dispersion, y[r], a[r], eta, False, 2 + deriv)
        LM[j, 0], LM[j, 1], LM[j, 2], LM[j, 3] = l1, l2, l3, l4
        _row_s(X, Z, r, v, ta, tb, M, R[j], False, s)
        for c in range(q):
            w = l2 * R[j, c]
            for i in range(d):
                M[c, i] += w * s[i]
        for e in range(q):
            SZ1[e] += l1 * Z[r, e]
            w = l2 * Z[r, e]
            for c in range(q):
                SZR2[e, c] += w * R[j, c]
                SZZ2[e, c] += w * Z[r, c]
    for u in range(t):
        M[tb[u], p + u] += SZ1[ta[u]]
    _solve_cols(L, M, q, d)
    D3[:, :, :] = 0.0
    if deriv == 2:
        E3[:, :, :] = 0.0
        SZs2[:, :] = 0.0
        F3[:, :, :] = 0.0
        G3[0, :, :, :] = 0.0
        F4[:, :, :, :] = 0.0
    for j in range(n):
        r = r0 + j
        l2, l3, l4 = LM[j, 1], LM[j, 2], LM[j, 3]
        _row_s(X, Z, r, v, ta, tb, M, R[j], True, s)
        for b1 in range(q):
            for b2 in range(b1 + 1):
                w = l3 * R[j, b1] * R[j, b2]
                for i in range(d):
                    D3[b1, b2, i] += w * s[i]
        if deriv < 2:
            continue
        for b1 in range(q):
            w = l3 * R[j, b1]
            for i in range(d):
                wi = w * s[i]
                for k in range(i, d):
                    E3[b1, i, k] += wi * s[k]
            for b2 in range(b1 + 1):
                w = l4 * R[j, b1] * R[j, b2]
                for i in range(d):
                    wi = w * s[i]
                    for k in range(i, d):
                        F4[b1, b2, i, k] += wi * s[k]
        for e in range(q):
            w2, w3 = l2 * Z[r, e], l3 * Z[r, e]
            for i in range(d):
                SZs2[e, i] += w2 * s[i]
            for b1 in range(q):
                w = w3 * R[j, b1]
                for i in range(d):
                    F3[e, b1, i] += w * s[i]
                for b2 in range(b1 + 1):
                    G3[0, e, b1, b2] += w * R[j, b2]
    for i in range(d):
        for b1 in range(q):
            for b2 in range(q):
                h = D3[max(b1, b2), min(b1, b2), i]
                if i >= p:
                    u = i - p
                    if b2 == tb[u]:
                        h += SZR2[ta[u], b1]
                    if b1 == tb[u]:
                        h += SZR2[ta[u], b2]
                Hd[i, b1, b2] = -h
        _chol_derivative(L, Li, Hd[i], Ld[i], q, tmp)
        for b1 in range(q):  # Sd_i = -S Ld_i' S
            for b2 in range(q):
                acc = 0.0
                for c in range(q):
                    for e in range(q):
                        acc += S[b1, c] * Ld[i, e, c] * S[e, b2]
                Sd[i, b1, b2] = -acc
    if deriv == 2:
        _mode_second(L, Li, S, scratch, M, Ld, Sd, SZR2, SZZ2, E3, SZs2, F3, G3, F4, MM, ddqq, ta, tb, lam)


@njit(cache=True)
def _mode_second(L, Li, S, tmp, M, Ld, Sd, SZR2, SZZ2, E3, SZs2, F3, G3, F4, MM, ddqq, ta, tb, lam):
    """Second derivatives: of the mode (MM, (q, d, d)), of L (Ldd) and of S (Sdd)."""
    p, q, d = M.shape[1] - ta.shape[0], M.shape[0], M.shape[1]
    Ldd, Sdd = ddqq[0], ddqq[1]
    for b1 in range(q):  # T3v into MM, then H^-1 T3v
        for i in range(d):
            for k in range(i, d):
                h = E3[b1, i, k]
                if i >= p:
                    u = i - p
                    if b1 == tb[u]:
                        h += SZs2[ta[u], k]
                    h += M[tb[u], k] * SZR2[ta[u], b1]
                if k >= p:
                    u = k - p
                    if b1 == tb[u]:
                        h += SZs2[ta[u], i]
                    h += M[tb[u], i] * SZR2[ta[u], b1]
                MM[b1, i, k] = h
                MM[b1, k, i] = h
    _solve_cols(L, MM.reshape(q, d * d), q, d * d)
    G, W3 = G3[0], G3[1]  # G[e, a, b] = sum l3 Z_e R_a R_b; W3[a, b, c] = sum l3 R_a R_b R_c
    for e in range(q):
        for b1 in range(q):
            for b2 in range(b1 + 1, q):
                G[e, b1, b2] = G[e, b2, b1]
    for b1 in range(q):
        for b2 in range(q):
            for c in range(q):
                acc = 0.0
                for e in range(c, q):
                    acc += lam[e, c] * G[e, b1, b2]
                W3[b1, b2, c] = acc
    inner = tmp[1]
    for i in range(d):
        for k in range(i, d):
            for b1 in range(q):
                for b2 in range(q):
                    h = F4[max(b1, b2), min(b1, b2), i, k]
                    for x, y_ in ((i, k), (k, i)):
                        if x >= p:
                            u = x - p
                            if b1 == tb[u]:
                                h += F3[ta[u], b2, y_]
                            if b2 == tb[u]:
                                h += F3[ta[u], b1, y_]
                            h += M[tb[u], y_] * G[ta[u], b1, b2]
                    if i >= p and k >= p:
                        u, w = i - p, k - p
                        if b1 == tb[u] and b2 == tb[w]:
                            h += SZZ2[ta[u], ta[w]]
                        if b1 == tb[w] and b2 == tb[u]:
                            h += SZZ2[ta[w], ta[u]]
                    for e in range(q):
                        h += W3[b1, b2, e] * MM[e, i, k]
                    for c in range(q):
                        h += Ld[i, b1, c] * Ld[k, b2, c] + Ld[k, b1, c] * Ld[i, b2, c]
                    inner[b1, b2] = -h
            _chol_derivative(L, Li, inner, Ldd[i, k], q, tmp[0])
            for b1 in range(q):  # Sdd = -(Sd_i Ld_k' + Sd_k Ld_i' + S Ldd') S
                for b2 in range(q):
                    acc = 0.0
                    for c in range(q):
                        acc += Sd[i, b1, c] * Ld[k, b2, c] + Sd[k, b1, c] * Ld[i, b2, c] + S[b1, c] * Ldd[i, k, b2, c]
                    inner[b1, b2] = acc
            for b1 in range(q):
                for b2 in range(q):
                    acc = 0.0
                    for c in range(q):
                        acc += inner[b1, c] * S[c, b2]
                    Sdd[i, k, b1, b2] = -acc
            Ldd[k, i] = Ldd[i, k]
            Sdd[k, i] = Sdd[i, k]
