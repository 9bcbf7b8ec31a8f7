r"""Covariance of :math:`\hat\beta` in O(N) (eq. 24) and the naive-regression comparison (Sec. 6).

Eq. (24): with the converged weights :math:`W`, :math:`S` the smoother of the
random effects alone (problem 22) and
:math:`\Sigma = \sum_k \sigma_k^2 Z_k Z_k^\top + W^{-1}` the covariance of the
working response,

.. math::

    \widehat{\mathrm{cov}}(\hat\beta) = H^{-1} M H^{-\top}, \quad
    \tilde R = (I - S) X, \quad U = W \tilde R, \quad H = X^\top U, \quad
    M = U^\top \Sigma U = \sum_k \sigma_k^2 (Z_k^\top U)^\top (Z_k^\top U) + \tilde R^\top W \tilde R.

(The PDF text prints :math:`\sigma^{-2}` in :math:`\Sigma`; the covariance of
:math:`Z b` is :math:`\sigma^2 Z Z^\top`.)  :math:`S X` comes from backfitting
all p columns of X at once on the random effects, without touching X: block k
solves :math:`A_k = D_k^{-1}(Z_k^\top W X - \sum_{j \ne k} Z_k^\top W Z_j A_j)`
with :math:`D_k = Z_k^\top w + 1/\sigma_k^2`.  When X holds an intercept the
blocks are centred (:math:`\sum_g A_{k,g} = 0`, the constrained block minimum):
by Lemma 4.1 the estimator :math:`\hat\beta` is the same linear map of z
under the constraint, so the sandwich is unchanged while backfitting no longer
drifts along the intercept direction.  With exact S the sandwich equals
:math:`(X^\top V^{-1} X)^{-1}`, :math:`V = \Sigma`.

Naive logistic (or least-squares) regression :math:`\hat\beta_{LR}` with
weights :math:`W_L` has :math:`\widehat{\mathrm{cov}}_{LR} = \phi_L (X^\top W_L X)^{-1}`
and, under the GLMM,
:math:`\widehat{\mathrm{cov}}_{GLMM}(\hat\beta_{LR}) = H_L^{-1} [\sum_k \sigma_k^2
(Z_k^\top W_L X)^\top (Z_k^\top W_L X) + X^\top W_L^2 W^{-1} X] H_L^{-1}`,
:math:`H_L = X^\top W_L X`.
"""

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from scipy.linalg import eigh

from ...data.validation import check_positive_definite, checked_inverse, checked_solve
from .passes import passes_of
from .schall import _relative

# How a singular H = X'W(I - S)X, with S the random effects' smoother, names its columns.
_BESIDE_RANDOM = dict(zero="has nothing left beside the random effects (it is zero on the rows "
                           "with positive weight, or constant within the levels of the grouping "
                           "factors), so it is not estimable",
                      within=" after removing the random effects")
_AT_WEIGHTS = dict(zero="is zero on every row with positive weight",
                   within=" on the rows with positive weight")


def smooth_columns(d, fit, kern, nthreads, tol=1e-10, max_iter=1000):
    """Backfit every column of X on the random effects: S X = sum_k Z_k A_k.

    Returns ``(A, iterations, rel)`` with ``A`` the (Q, p) per-level fits.
    Block k is solved in the unscaled weights w0 = phi w, with
    D_k = Z_k'w0 + phi / sigma_k^2 (the same fit), by the kernel ``smooth_step``
    (``d``: a Design or its :class:`~pyglmm.engines.crossed.passes.RowPasses`).
    """
    rows = passes_of(d, kern, nthreads)
    d = rows.d
    s = np.ascontiguousarray(fit.s0)
    D = fit.Wq0 + fit.phi * np.repeat(1.0 / fit.sigma2, d.n_levels)
    A = np.zeros(s.shape)  # calloc: pages zeroed as the kernel first writes them, no memset pass
    work = np.empty((int(d.n_levels.max()), d.p))
    rel, it = np.inf, 0
    for it in range(1, max_iter + 1):
        num = den = 0.0
        for k in range(len(d.n_levels)):
            dn, dd = rows.smooth_step(k, fit.w0, s, D, A, work)
            num, den = num + dn, den + dd
        rel = _relative(num, den)
        if rel <= tol:
            break
    return A, it, rel


def _sandwich(d, sandwich_pass, A, sigma2, what):
    """H^{-1} M H^{-T} and H^{-1} from one sandwich pass, ``sandwich_pass(H, ZU, M0)``
    (``what`` names H in errors)."""
    p, Q = d.p, int(d.offsets[-1])
    H, ZU, M0 = np.empty((p, p)), np.empty((Q, p)), np.empty((p, p))
    sandwich_pass(H, ZU, M0)
    M = M0 + sum(s2 * ZU[lv].T @ ZU[lv] for s2, lv in zip(sigma2, d.factor_slices()))
    return _from_sums(d, H, M, A.size, what)


def _from_sums(d, H, M, smoothed, what):
    Hinv = checked_inverse(H, d.feature_names, what, **(_BESIDE_RANDOM if smoothed else _AT_WEIGHTS))
    return Hinv @ M @ Hinv.T, Hinv


def beta_covariance(d, fit, kern, nthreads, tol=1e-10, max_iter=1000):
    """Eq. (24) at the converged weights; returns ``(cov, note)``, ``note`` None
    unless backfitting the columns of X stopped short of ``tol`` (``d``: a Design
    or its :class:`~pyglmm.engines.crossed.passes.RowPasses`, which may compute the
    sums where its rows are: ``RowPasses.covariance_sums``)."""
    rows = passes_of(d, kern, nthreads)
    what = "H = X'W(I - S)X of the standard errors (eq. 24)"
    sums = rows.covariance_sums(fit, tol, max_iter)
    if sums is None:
        A, it, rel = smooth_columns(rows, fit, kern, nthreads, tol, max_iter)
        cov, _ = _sandwich(rows.d, partial(rows.sandwich, A, fit.w0, 1.0 / fit.phi), A,
                           fit.sigma2, what)
    else:
        H, M, it, rel = sums
        cov, _ = _from_sums(rows.d, H, M, True, what)
    note = None if rel <= tol else (f"backfitting the columns of X for the standard errors "
                                    f"stopped at {it} iterations (relative change {rel:.3g})")
    return 0.5 * (cov + cov.T), note


@dataclass
class NaiveFit:
    beta: np.ndarray
    w0: np.ndarray
    phi: float
    converged: bool
    iterations: int


def naive_fit(d, family, kern, nthreads, tol=1e-10, max_iter=100, start=None):
    """Plain GLM (no random effects) by IRLS from ``start`` (default 0), reusing the
    fused pass with no factors."""
    n, p = d.n, d.p
    no_codes, none = np.empty((n, 0), dtype=np.int32), np.empty(0)
    beta = np.zeros(p) if start is None else np.array(start, dtype=np.float64)
    dbeta = beta.copy()
    w0, G, h, S = np.empty(n), np.empty((p, p)), np.empty(p), np.empty((0, p + 2))
    converged, it, sc = False, 0, None
    for it in range(max_iter + 1):
        sc = kern.stats_pass(family.code, d.X, no_codes, d.y, d.prior, d.offset, beta, none,
                             dbeta, none, True, w0, G, h, S, nthreads, d.xcat)
        if it > 0 and _relative(sc[2], sc[3]) <= tol:
            converged = True
            break
        if it == max_iter:
            break
        new = checked_solve(G, h, d.feature_names, "X'WX of the naive regression", **_AT_WEIGHTS)
        dbeta, beta = new - beta, new
    phi = 1.0 if family.irls else float(sc[0]) / (d.n_eff - p)
    return NaiveFit(beta, w0, phi, converged, it)


def naive_comparison(d, family, fit, cov_glmm, kern, nthreads):
    """Table of the naive regression's estimates, SEs, naivete and inefficiency ratios.

    Returns ``(table, summary)`` where ``summary`` holds the largest
    eigenvalues of cov_LR^{-1} cov_GLMM(beta_LR) (naivete) and of
    cov_GLMM(beta_GLMM)^{-1} cov_GLMM(beta_LR) (inefficiency).
    """
    lr = naive_fit(d, family, kern, nthreads, start=fit.beta)  # near the naive fit: fewer passes
    wG = fit.w0 / fit.phi
    with np.errstate(divide="ignore", invalid="ignore"):
        wm = np.where(wG > 0, lr.w0**2 / wG, 0.0)
    no_smooth = np.empty((0, 0))  # absent A: the naive fit smooths nothing
    def naive_pass(H, ZU, M0):
        kern.sandwich_pass(d.X, d.codes, no_smooth, lr.w0, 1.0, wm, H, ZU, M0, nthreads, d.xcat)

    cov_glmm_lr, Hinv = _sandwich(d, naive_pass, no_smooth, fit.sigma2,
                                  "X'WX of the naive regression")
    cov_lr = lr.phi * Hinv
    table = pd.DataFrame({
        "coef_naive": lr.beta,
        "se_naive": np.sqrt(np.diag(cov_lr)),
        "se_naive_under_glmm": np.sqrt(np.diag(cov_glmm_lr)),
        "naivete": np.diag(cov_glmm_lr) / np.diag(cov_lr),
        "inefficiency": np.diag(cov_glmm_lr) / np.diag(cov_glmm),
    }, index=pd.Index(d.feature_names, name="term"))
    names = d.feature_names
    summary = {
        "max_naivete": _largest_ratio(cov_glmm_lr, cov_lr, names, "the naive covariance"),
        "max_inefficiency": _largest_ratio(cov_glmm_lr, cov_glmm, names,
                                           "the covariance of the GLMM estimates"),
        "naive_converged": lr.converged,
        "naive_iterations": lr.iterations,
    }
    return table, summary


def _largest_ratio(A, B, names, what):
    """Largest eigenvalue of B^{-1} A (the largest ratio a'Aa / a'Ba); B, named ``what``
    in errors, must be positive definite (numerically singular, it would give an
    arbitrarily large number)."""
    check_positive_definite(B, names, what, zero="has zero variance",
                            within=" (their estimates are confounded)")
    return float(eigh(A, B, eigvals_only=True)[-1])
