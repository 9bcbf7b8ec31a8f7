r"""Pseudo-data whose statistics match a cluster's released ones (Limpoco, Faes &
Hens 2025), one pseudo-cluster of the same size per cluster.

* The response: exactly ``events`` ones among the ``n`` rows, in random order.
* Discrete covariates (each categorical term's dummies, and every other column
  flagged binary) stay discrete: level counts are the released ones, and so are the
  counts of each level among the events (from the response cross-moments), so
  :math:`\bar x` and :math:`s` match exactly.  Their pairwise counts with the
  discrete covariates placed before them are then matched as well as swaps of
  levels between rows with the same response allow (steepest descent over classes
  of rows with the same pattern of earlier dummies: each swap keeps the counts
  already matched).
* Continuous covariates are solved for by nonlinear least squares
  (``scipy.optimize.least_squares``, ``"lm"`` when there are at least as many
  equations as unknowns, ``"trf"`` otherwise) with an analytic Jacobian.  In
  standardised units :math:`w_{jv} = (x_{jv} - \bar x_v)/\mathrm{sd}_v` (sd from the
  released variance, 1 at order 1), the residuals are
  :math:`\frac1n\sum_j \prod_v w_{jv}^{\alpha_v} - m_\alpha/\prod_v \mathrm{sd}_v^{\alpha_v}`
  for every released moment that involves a continuous column, plus the means
  (:math:`\frac1n\sum_j w_{jv}`, target 0) and the response cross-moments
  (:math:`\frac1n\sum_j y_j w_{jv} - s_v/\mathrm{sd}_v`); the derivative in
  :math:`w_{jv}` is :math:`\frac{\alpha_v}{n} w_{jv}^{\alpha_v - 1}\prod_{u \ne v}
  w_{ju}^{\alpha_u}`.  Starting values: standard normal draws standardised to mean
  0 and variance 1, from the seeded generator.

The match residual of a cluster is the largest absolute difference, in the same
standardised units, between any released statistic and the pseudo-cluster's.
"""

import numpy as np

from .site import cluster_statistics

MATCH_TOL = 1e-6  # a residual above this is reported as not small


def discrete_groups(columns, binary, categorical):
    """Lists of column indices that are one discrete variable each (a categorical
    term's dummies; a binary column on its own)."""
    grouped = {v for g in categorical for v in g}
    return [list(g) for g in categorical] + [[v] for v in range(len(columns))
                                             if binary[v] and v not in grouped]


def _assign_levels(rng, y, counts, event_counts):
    """Level codes (0 = reference) with ``counts[l]`` rows of level l+1, of which
    ``event_counts[l]`` have y = 1."""
    codes = np.zeros(len(y), dtype=np.int64)
    for stratum, want in ((y == 1, event_counts), (y == 0, counts - event_counts)):
        rows = rng.permutation(np.flatnonzero(stratum))
        want = np.clip(want, 0, None)
        labels = np.repeat(np.arange(1, len(want) + 1), want)[:len(rows)]
        codes[rows[:len(labels)]] = labels
    return codes


def _swap_descent(codes, y, W, cols, level_w, A, targets, max_steps=1000):
    """Swap the levels ``codes`` (0 = reference) of the variable whose standardised
    dummies are the columns ``cols`` of ``W`` (``level_w[l]``: their values at level
    l) between rows with the same y, by steepest descent on the squared residuals of
    the moments with exponents ``A`` (standardised ``targets``).  Rows fall in
    classes (y, level, values of the other columns): a swap's effect depends only on
    the two classes, so every distinct swap is scored at once."""
    n, L = len(y), len(cols)
    others = [v for v in range(W.shape[1]) if v not in cols]
    for _ in range(max_steps):
        classes, first = np.unique(np.column_stack([y, codes, W[:, others]]), axis=0,
                                   return_index=True)
        k = len(classes)
        rows = np.repeat(W[first], L + 1, axis=0)
        rows[:, cols] = np.tile(level_w, (k, 1))
        F = _monomials(rows, A).T.reshape(k, L + 1, -1)  # class c's monomials at level l
        la, ya = codes[first], classes[:, 0]
        G = F[:, la] - F[np.arange(k), la][:, None, :]  # [a, b]: a's row takes b's level
        resid = _monomials(W, A).mean(axis=1) - targets
        score = ((resid + (G + G.transpose(1, 0, 2)) / n) ** 2).sum(axis=2)
        score[(ya[:, None] != ya[None, :]) | (la[:, None] == la[None, :])] = np.inf
        a, b = np.unravel_index(np.argmin(score), score.shape)
        if not score[a, b] < (resid ** 2).sum() * (1 - 1e-12):
            break
        i, j = first[a], first[b]
        codes[i], codes[j] = codes[j], codes[i]
        W[i, cols], W[j, cols] = W[j, cols].copy(), W[i, cols].copy()
    return codes


def exponents(index, p):
    """The exponent matrix A (len(index), p): A[r, v] = how often v occurs in index[r]."""
    A = np.zeros((len(index), p), dtype=np.int64)
    for r, alpha in enumerate(index):
        for v in alpha:
            A[r, v] += 1
    return A


def _monomials(W, A):
    """prod_v W[:, v] ** A[r, v] for each row r of A: (len(A), n), from a table of powers."""
    order = int(A.max(initial=0))
    table = W.T[:, None, :] ** np.arange(order + 1)[None, :, None]  # (p, order+1, n)
    out = np.ones((A.shape[0], W.shape[0]))
    for v in np.flatnonzero(A.any(axis=0)):
        out *= table[v, A[:, v]]
    return out


def _residuals(W, y, cont, A, targets, y_targets):
    """Standardised residuals of the moments (exponents ``A``) and of the response
    cross-moments of the continuous columns ``cont``."""
    n = W.shape[0]
    return np.concatenate([_monomials(W, A).mean(axis=1) - targets, (y @ W[:, cont]) / n - y_targets])


def _jacobian(W, y, cont, A):
    n = W.shape[0]
    J = np.zeros((A.shape[0] + len(cont), n * len(cont)))
    for k, v in enumerate(cont):
        E = A.copy()
        E[:, v] = np.maximum(E[:, v] - 1, 0)
        J[:A.shape[0], k * n:(k + 1) * n] = A[:, v][:, None] * _monomials(W, E) / n
        J[A.shape[0] + k, k * n:(k + 1) * n] = y / n
    return J


def pseudo_cluster(rng, n, events, mean, y_cross, moments, index, groups):
    """One pseudo-cluster: (y (n,), X (n, p)) matching the released statistics as
    the module describes."""
    from scipy.optimize import least_squares

    p = len(mean)
    y = np.zeros(n)
    y[rng.permutation(n)[:events]] = 1.0
    m = dict(zip(index, moments))
    sd = np.array([np.sqrt(m[(v, v)]) if (v, v) in m else 1.0 for v in range(p)])
    scale = np.where(sd > 0, sd, 1.0)
    W = np.zeros((n, p))  # standardised covariates (continuous ones at their mean for now)
    done = []
    for g in groups:
        counts = np.rint(n * mean[g]).astype(np.int64)
        event_counts = np.rint(n * y_cross[g] + events * mean[g]).astype(np.int64)
        codes = _assign_levels(rng, y, counts, event_counts)
        level_w = (np.vstack([np.zeros(len(g)), np.eye(len(g))]) - mean[g]) / scale[g]
        W[:, g] = level_w[codes]
        done += g
        rows = [r for r, alpha in enumerate(index)
                if set(alpha) <= set(done) and set(alpha) & set(g) and len(set(alpha)) > 1]
        if rows and len(done) > len(g):
            sub = [v for v in range(p) if v in done]
            A = exponents([index[r] for r in rows], p)[:, sub]
            targets = np.array([moments[r] / np.prod(scale[list(index[r])]) for r in rows])
            cols = [sub.index(v) for v in g]
            Wd = W[:, sub]
            _swap_descent(codes, y, Wd, cols, level_w, A, targets)
            W[:, sub] = Wd
    cont = [v for v in range(p) if v not in set(done) and sd[v] > 0]
    if not cont:
        return y, _unstandardise(W, mean, scale, done)
    keep = [r for r, alpha in enumerate(index) if any(v in cont for v in alpha)]
    sub = [index[r] for r in keep]
    targets = np.array([moments[r] / np.prod(scale[list(index[r])]) for r in keep])
    targets = np.concatenate([np.zeros(len(cont)), targets])
    sub = [(v,) for v in cont] + sub
    y_targets = y_cross[cont] / scale[cont]
    Z = rng.standard_normal((n, len(cont)))
    Z = (Z - Z.mean(axis=0)) / (Z.std(axis=0) if n > 1 else 1.0)

    def fill(z):
        W[:, cont] = z.reshape(len(cont), n).T
        return W

    A = exponents(sub, p)

    def fun(z):
        return _residuals(fill(z), y, cont, A, targets, y_targets)

    unknowns, equations = n * len(cont), len(sub) + len(cont)
    fit = least_squares(fun, Z.T.ravel(), jac=lambda z: _jacobian(fill(z), y, cont, A),
                        method="lm" if equations >= unknowns else "trf",
                        ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=200,
                        **({} if equations >= unknowns else {"tr_solver": "lsmr"}))
    return y, _unstandardise(fill(fit.x), mean, scale, done)


def _unstandardise(W, mean, scale, discrete):
    """Covariates from their standardised values; discrete columns exactly 0 or 1."""
    X = mean + W * scale
    X[:, discrete] = np.rint(X[:, discrete])
    return X


def generate(stats, index, groups, seed):
    """Stacked pseudo-data for all clusters of ``stats`` (the arrays of a checked
    message, or several stacked).

    Returns
    -------
    y, X, codes, residual : ndarray
        Response (N,), covariates (N, p), cluster code per row (N,), and each
        cluster's match residual (H,).
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    ys, Xs = [], []
    # the least-squares steps are small matrix-vector products: BLAS threads only spin
    with threadpool_limits(limits=1, user_api="blas"):
        for h in range(len(stats["n"])):
            y, X = pseudo_cluster(rng, int(stats["n"][h]), int(stats["events"][h]),
                                  stats["mean"][h], stats["y_cross"][h], stats["moments"][h],
                                  index, groups)
            ys.append(y)
            Xs.append(X)
    codes = np.repeat(np.arange(len(ys)), stats["n"])
    y, X = np.concatenate(ys), np.concatenate(Xs)
    order = max((len(a) for a in index), default=1)
    return y, X, codes, match_residual(stats, y, X, codes, index, order)


def match_residual(stats, y, X, codes, index, order):
    """Largest standardised difference, per cluster, between the released statistics
    and those of the pseudo-data."""
    got = cluster_statistics(X, y, codes, order)
    var = np.array([[m for a, m in zip(index, row) if len(a) == 2 and a[0] == a[1]]
                    for row in stats["moments"]])
    sd = np.sqrt(var) if var.shape[1] == X.shape[1] else np.ones_like(stats["mean"])
    sd[sd == 0] = 1.0
    scale = np.array([[np.prod(s[list(a)]) for a in index] for s in sd]).reshape(len(sd), len(index))
    parts = [np.abs(got["mean"] - stats["mean"]) / sd,
             np.abs(got["y_cross"] - stats["y_cross"]) / sd,
             np.abs(got["moments"] - stats["moments"]) / np.where(scale > 0, scale, 1.0),
             np.abs(got["events"] - stats["events"])[:, None].astype(np.float64)]
    return np.max(np.concatenate(parts, axis=1), axis=1)
