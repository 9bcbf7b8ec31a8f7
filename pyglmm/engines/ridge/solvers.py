r"""The E-step of the ridge LMM: moments of the latent effects given the data.

Model (see :mod:`pyglmm.engines.ridge`): :math:`y = X_u\beta_u + X_p\beta_p +
\sum_k Z_k\gamma_k + \varepsilon`, :math:`\varepsilon \sim N(0, \sigma^2 I)`,
latent :math:`\beta_p \sim N(0, \sigma^2/\lambda\, I)` and
:math:`\gamma_{k,g} \sim N(0, \Sigma_k)` per level :math:`g`; :math:`\beta_u`
(unpenalised columns) is a parameter.  With :math:`W = [X_p, Z]`, prior
precision :math:`P = \mathrm{blockdiag}(\lambda/\sigma^2 I, I \otimes
\Sigma_k^{-1})` and :math:`V = \sigma^2 I + W P^{-1} W^\top`, one E-step at
:math:`(\Sigma, \sigma^2, \lambda)` returns

- :math:`\hat\beta_u = (X_u^\top V^{-1}X_u)^{-1}X_u^\top V^{-1}y` (GLS: the
  exact maximiser of the marginal likelihood given the rest, an ECME step) and
  :math:`\hat\theta = E(\theta \mid y, \hat\beta_u)` for :math:`\theta = (\beta_p, \gamma)`;
- :math:`S_k = \sum_g E(\gamma_{k,g}\gamma_{k,g}^\top \mid y)` (the Sigma M-step's statistic);
- :math:`R = E\|y - X_u\hat\beta_u - W\theta\|^2 = \|y - X_u\hat\beta_u - W\hat\theta\|^2
  + \mathrm{tr}(W\,\mathrm{Cov}(\theta|y)\,W^\top)` and
  :math:`B = E\|\beta_p\|^2 = \|\hat\beta_p\|^2 + \mathrm{tr}\,\mathrm{Cov}(\beta_p|y)`;
- the exact log-likelihood :math:`\log N(y; X_u\hat\beta_u, V)`.

Two solvers give the same numbers (tests hold them to each other and to a dense
N x N computation):

**Primal** (dimension :math:`p + \sum_k m_k q_k < N`).  The conditional
precision :math:`H = [X_u, W]^\top[X_u, W]/\sigma^2 + \mathrm{blockdiag}(0, P)`
is block-diagonal in the levels of one grouping factor (the "block" term, the
one with most effects): :math:`M_i = Z_i^\top Z_i/\sigma^2 + \Sigma^{-1}`
(q x q, the batched SPD solves of the kernels).  Eliminating them leaves the
Schur complement :math:`S = D^\top D/\sigma^2 + P_D - \sum_i D_i^\top Z_i
M_i^{-1} Z_i^\top D_i/\sigma^2` over the dense columns :math:`D = [X,
Z_{k \ne block}]`.  Solving with :math:`S` gives the joint mode (whose
:math:`\beta_u` is the GLS estimate, Henderson's equations); the covariances
*given* :math:`\beta_u` come from :math:`S_r`, :math:`S` without the rows of
:math:`X_u`: :math:`\mathrm{Cov}(\gamma_i) = M_i^{-1} + U_i S_r^{-1} U_i^\top`,
:math:`U_i = M_i^{-1}Z_i^\top D_{i,r}/\sigma^2`.  Then
:math:`\log|V| = N\log\sigma^2 - \log|P| + \sum_i\log|M_i| + \log|S_r|`,
:math:`r^\top V^{-1}r = \|r - W\hat\theta\|^2/\sigma^2 + \hat\theta^\top P\hat\theta`
and :math:`\mathrm{tr}(W\,\mathrm{Cov}\,W^\top) = \sigma^2(\dim\theta - \mathrm{tr}(P\,\mathrm{Cov}))`.
Every per-row quantity enters through per-group cross products computed once
(``group_reductions``), so an iteration costs :math:`O(m q^3 + m q p^2 + p^3)`,
not O(N).

**Dual** (:math:`p \gg N`, or more random effects than rows).  With
:math:`C = V = \sigma^2(I + X_pX_p^\top/\lambda) + \sum_k Z_k G_k Z_k^\top` and
:math:`a = C^{-1}(y - X_u\hat\beta_u)`: :math:`\hat\beta_p = (\sigma^2/\lambda)
X_p^\top a`, :math:`\hat\gamma_{k,g} = \Sigma_k Z_{k,g}^\top a_g`,
:math:`\mathrm{Cov}(\gamma_{k,g}) = \Sigma_k - \Sigma_k Z_{k,g}^\top
[C^{-1}]_{gg} Z_{k,g}\Sigma_k`, :math:`\|r - W\hat\theta\|^2 = \sigma^4\|a\|^2`,
:math:`\mathrm{tr}(W\,\mathrm{Cov}\,W^\top) = N\sigma^2 - \sigma^4\,\mathrm{tr}\,C^{-1}`,
:math:`\mathrm{tr}\,\mathrm{Cov}(\beta_p) = p_p\sigma^2/\lambda -
(\sigma^2/\lambda)^2\mathrm{tr}(C^{-1}X_pX_p^\top)`.  One N x N Cholesky per
iteration, :math:`O(N^3/3)`.
"""

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ...data.validation import singular_matrix_error
from ...exceptions import SingularMatrixError

LOG2PI = np.log(2 * np.pi)


@dataclass
class Term:
    """One random-effect term: level codes (0..m-1) per row, its columns Z (N x q)."""

    group: str
    names: tuple
    codes: np.ndarray
    Z: np.ndarray
    m: int

    @property
    def q(self):
        return self.Z.shape[1]


@dataclass
class Layout:
    """The fitted arrays: response, fixed-effect columns (penalised ones
    standardised), which columns are penalised, the random-effect terms."""

    y: np.ndarray
    X: np.ndarray
    names: list
    penalized: np.ndarray
    terms: list

    @property
    def n(self):
        return len(self.y)

    @property
    def p_pen(self):
        return int(self.penalized.sum())

    @property
    def n_random(self):
        return sum(t.m * t.q for t in self.terms)


@dataclass
class EStep:
    r"""What one E-step returns (see the module docstring).  ``T[k]`` is
    :math:`L_k^{-1} S_k L_k^{-\top}` for :math:`\Sigma_k = L_kL_k^\top`: the
    second moments of the whitened effects :math:`u = L^{-1}\gamma`, computed
    without :math:`\Sigma^{-1}` (accurate when :math:`\Sigma` is nearly singular)."""

    beta: np.ndarray
    gammas: list
    T: list
    R: float
    B: float
    loglik: float
    edf: float = np.nan
    beta_cov: np.ndarray = None
    cond_var: list = None  # final E-step: Var(gamma_{k,g} | y) per term, m_k x q_k


def _factor(M, names, what):
    try:
        return cho_factor(M, lower=True)
    except np.linalg.LinAlgError:
        raise singular_matrix_error(what, M, names) from None


def choose_solver(layout, solver="auto"):
    """``"primal"`` when :math:`p + \\sum_k m_k q_k < N`, else ``"dual"`` (or the one asked for)."""
    if solver not in ("auto", "primal", "dual"):
        raise ValueError(f"solver must be 'auto', 'primal' or 'dual', got {solver!r}")
    if solver == "auto":
        return "primal" if layout.X.shape[1] + layout.n_random < layout.n else "dual"
    return solver


def make_solver(layout, name, kernels, threads=1):
    """The E-step solver ``name`` on ``layout`` with a backend's kernel module."""
    return (Primal if name == "primal" else Dual)(layout, kernels, threads)


class Primal:
    """E-steps by the block-Schur elimination of the primal system (module
    docstring), in whitened effects :math:`u = L^{-1}\\gamma` (prior N(0, I)),
    as lme4 does: :math:`M_i = L^\\top Z_i^\\top Z_iL/\\sigma^2 + I`."""

    name = "primal"

    def __init__(self, layout, kernels, threads=1):
        self.layout, self.kernels, self.threads = layout, kernels, threads
        lay, kern = layout, kernels
        self.kb = int(np.argmax([t.m * t.q for t in lay.terms]))
        block = lay.terms[self.kb]
        order = np.argsort(block.codes, kind="stable")
        offsets = np.zeros(block.m + 1, dtype=np.int64)
        np.cumsum(np.bincount(block.codes, minlength=block.m), out=offsets[1:])
        p = lay.X.shape[1]
        self.others, self.starts, start = [], [], p
        for k, t in enumerate(lay.terms):
            if k != self.kb:
                self.others.append(k)
                self.starts.append(start)
                start += t.m * t.q
        D = np.zeros((lay.n, start))
        D[:, :p] = lay.X
        for k, s in zip(self.others, self.starts):
            t = lay.terms[k]
            for j in range(t.q):
                D[np.arange(lay.n), s + t.codes * t.q + j] = t.Z[:, j]
        self.dnames = list(lay.names) + [f"{lay.terms[k].group}[{g}]:{n}" for k in self.others
                                         for g in range(lay.terms[k].m) for n in lay.terms[k].names]
        Ds, ys = np.ascontiguousarray(D[order]), lay.y[order]
        Zs = np.ascontiguousarray(block.Z[order])
        self.ZtZ, self.ZtD, self.Zty = kern.group_reductions(offsets, Zs, Ds, ys, threads)
        self.DtD, self.Dty, self.yty = D.T @ D, D.T @ lay.y, float(lay.y @ lay.y)
        self.unpen = np.zeros(start, dtype=bool)
        self.unpen[:p] = ~lay.penalized
        self.rest = np.flatnonzero(~self.unpen)
        self.pen = np.flatnonzero(lay.penalized)

    def _whitening(self, Ls):
        """The dense columns' transformation: identity on X, I (x) L_k on term k."""
        T = np.eye(len(self.unpen))
        for k, s in zip(self.others, self.starts):
            t = self.layout.terms[k]
            for g in range(t.m):
                T[s + g * t.q: s + (g + 1) * t.q, s + g * t.q: s + (g + 1) * t.q] = Ls[k]
        return T

    def _cov_sums(self, idx, Sinv, U, Minv):
        """Sums over levels of Cov(u_g) per term and tr Cov(beta_p), with the
        dense block's covariance Sinv over the dense columns ``idx``."""
        lay = self.layout
        Ui = U[:, :, idx]
        covs = [None] * len(lay.terms)
        covs[self.kb] = Minv.sum(0) + np.einsum("iqa,ab,irb->qr", Ui, Sinv, Ui, optimize=True)
        pos = np.full(len(self.unpen), -1)
        pos[idx] = np.arange(len(idx))
        for k, s in zip(self.others, self.starts):
            t = lay.terms[k]
            j = pos[s: s + t.m * t.q]
            covs[k] = np.einsum("iaib->ab", Sinv[np.ix_(j, j)].reshape(t.m, t.q, t.m, t.q))
        tr_beta = float(np.trace(Sinv[np.ix_(pos[self.pen], pos[self.pen])])) if len(self.pen) else 0.0
        return covs, tr_beta

    def estep(self, Ls, s2, lam, final=False):
        """The E-step at Sigma_k = Ls[k] Ls[k]' (lower Cholesky factors), sigma^2, lambda."""
        lay, kb = self.layout, self.kb
        Lb, Tw = Ls[kb], self._whitening(Ls)
        m, q = len(self.ZtZ), lay.terms[kb].q
        nd = self.DtD.shape[0]
        ZtD = np.einsum("ji,mjb,bc->mic", Lb, self.ZtD, Tw, optimize=True) / s2  # L'Z'D T / s2
        Zty = self.Zty @ Lb / s2
        M = np.einsum("ji,mjk,kl->mil", Lb, self.ZtZ, Lb, optimize=True) / s2 + np.eye(q)
        rhs = np.concatenate([ZtD, Zty[:, :, None], np.broadcast_to(np.eye(q), (m, q, q))], axis=2)
        sol, logdet_M = self.kernels.batched_spd_solve(np.ascontiguousarray(M), np.ascontiguousarray(rhs),
                                                        self.threads)
        if not np.all(np.isfinite(logdet_M)):
            bad = int(np.flatnonzero(~np.isfinite(logdet_M))[0])
            raise SingularMatrixError(f"the conditional precision of level {bad} of "
                                      f"{lay.terms[kb].group!r} is not positive definite")
        U, u, Minv = sol[:, :, :nd], sol[:, :, nd], sol[:, :, nd + 1:]
        DtD, Dty = Tw.T @ self.DtD @ Tw, Tw.T @ self.Dty
        prior = np.where(self.unpen, 0.0, 1.0)
        prior[self.pen] = lam / s2
        S = DtD / s2 + np.diag(prior) - ZtD.reshape(m * q, nd).T @ U.reshape(m * q, nd)
        S = 0.5 * (S + S.T)
        cf = _factor(S, self.dnames, "X'V^-1 X (the fixed-effect columns given the random effects)")
        delta = cho_solve(cf, Dty / s2 - np.einsum("iqa,iq->a", ZtD, u))
        ub = u - U @ delta
        rest = self.rest
        cr = cho_factor(S[np.ix_(rest, rest)], lower=True)
        Srinv = cho_solve(cr, np.eye(len(rest)))
        covs, tr_beta = self._cov_sums(rest, Srinv, U, Minv)
        us = [None] * len(lay.terms)
        us[kb] = ub
        for k, s in zip(self.others, self.starts):
            t = lay.terms[k]
            us[k] = delta[s: s + t.m * t.q].reshape(t.m, t.q)
        beta = delta[:lay.X.shape[1]]
        bp = beta[lay.penalized]
        pp = lay.p_pen
        # residual sum of squares from the cross products (in whitened coordinates)
        rss = s2 * (self.yty / s2 - 2 * delta @ Dty / s2 - 2 * np.sum(ub * Zty) + delta @ DtD @ delta / s2
                    + 2 * np.einsum("iq,iqa,a->", ub, ZtD, delta)
                    + np.einsum("iq,iqr,ir->", ub, M - np.eye(q), ub))
        tr_pcov = ((lam / s2) * tr_beta if pp else 0.0) + sum(np.trace(c) for c in covs)
        quad = ((lam / s2) * bp @ bp if pp else 0.0) + sum(np.sum(v * v) for v in us)
        R = rss + s2 * (pp + lay.n_random - tr_pcov)
        B = float(bp @ bp + tr_beta)
        logdet_V = (lay.n * np.log(s2) - (pp * np.log(lam / s2) if pp else 0.0)
                    + logdet_M.sum() + 2 * np.log(np.diag(cr[0])).sum())
        loglik = -0.5 * (lay.n * LOG2PI + logdet_V + rss / s2 + quad)
        out = EStep(beta, [v @ L.T for v, L in zip(us, Ls)], [c + v.T @ v for c, v in zip(covs, us)],
                    float(R), B, float(loglik))
        if final:
            Sinv = cho_solve(cf, np.eye(nd))
            covs_f, trb_f = self._cov_sums(np.arange(nd), Sinv, U, Minv)
            tr_full = ((lam / s2) * trb_f if pp else 0.0) + sum(np.trace(c) for c in covs_f)
            out.edf = float(lay.X.shape[1] + lay.n_random - tr_full)
            p = lay.X.shape[1]
            out.beta_cov = Sinv[:p, :p]
            out.cond_var = self._cond_var(Ls, Srinv, U, Minv)
        return out

    def _cond_var(self, Ls, Srinv, U, Minv):
        """Var(gamma_{k,g} | y, beta_u) per level: diag of L (Cov u_g) L'."""
        lay, rest = self.layout, self.rest
        Ur = U[:, :, rest]
        pos = np.full(len(self.unpen), -1)
        pos[rest] = np.arange(len(rest))
        out = [None] * len(lay.terms)
        cov_b = Minv + np.einsum("iqa,ab,irb->iqr", Ur, Srinv, Ur, optimize=True)
        out[self.kb] = np.einsum("ja,iab,jb->ij", Ls[self.kb], cov_b, Ls[self.kb])
        for k, s in zip(self.others, self.starts):
            t = lay.terms[k]
            j = pos[s: s + t.m * t.q]
            blocks = np.einsum("iaib->iab", Srinv[np.ix_(j, j)].reshape(t.m, t.q, t.m, t.q))
            out[k] = np.einsum("ja,iab,jb->ij", Ls[k], blocks, Ls[k])
        return out


class Dual:
    """E-steps in the N x N observation space (module docstring)."""

    name = "dual"

    def __init__(self, layout, kernels, threads=1):
        self.layout = lay = layout
        Xp = lay.X[:, lay.penalized]
        self.K = Xp @ Xp.T
        self.Xu = lay.X[:, ~lay.penalized]
        self.unames = [n for n, pen in zip(lay.names, lay.penalized) if not pen]
        self.masks = [t.codes[:, None] == t.codes[None, :] for t in lay.terms]

    def estep(self, Ls, s2, lam, final=False):
        """The E-step at Sigma_k = Ls[k] Ls[k]' (lower Cholesky factors), sigma^2, lambda."""
        lay, n, pp = self.layout, self.layout.n, self.layout.p_pen
        C = s2 * np.eye(n)
        if pp:
            C += (s2 / lam) * self.K
        for L, t, mask in zip(Ls, lay.terms, self.masks):
            F = t.Z @ L
            C += np.where(mask, F @ F.T, 0.0)
        try:
            cf = cho_factor(C, lower=True)
        except np.linalg.LinAlgError:
            raise SingularMatrixError("the marginal covariance V of y is not positive definite") from None
        Cinv = cho_solve(cf, np.eye(n))
        CiXu = Cinv @ self.Xu
        A = self.Xu.T @ CiXu
        A = 0.5 * (A + A.T)
        cA = _factor(A, self.unames, "X'V^-1 X (the unpenalised fixed-effect columns)")
        beta_u = cho_solve(cA, CiXu.T @ lay.y)
        r = lay.y - self.Xu @ beta_u
        a = Cinv @ r
        beta = np.zeros(lay.X.shape[1])
        beta[~lay.penalized] = beta_u
        tr_cinv = float(np.trace(Cinv))
        B = 0.0
        if pp:
            bp = (s2 / lam) * (lay.X[:, lay.penalized].T @ a)
            beta[lay.penalized] = bp
            B = float(bp @ bp + pp * s2 / lam - (s2 / lam) ** 2 * np.sum(Cinv * self.K))
        gammas, Ts = [], []
        for L, t, mask in zip(Ls, lay.terms, self.masks):
            F = t.Z @ L
            u = np.stack([np.bincount(t.codes, weights=F[:, j] * a, minlength=t.m)
                          for j in range(t.q)], axis=1)  # u_g = L' Z_g' a_g
            gammas.append(u @ L.T)
            Ts.append(t.m * np.eye(t.q) - F.T @ np.where(mask, Cinv, 0.0) @ F + u.T @ u)
        R = s2 ** 2 * (a @ a) + n * s2 - s2 ** 2 * tr_cinv
        loglik = -0.5 * (n * LOG2PI + 2 * np.log(np.diag(cf[0])).sum() + r @ a)
        out = EStep(beta, gammas, Ts, float(R), B, float(loglik))
        if final:
            Ainv = cho_solve(cA, np.eye(len(A)))
            out.edf = float(n - s2 * (tr_cinv - np.sum(Ainv * (CiXu.T @ CiXu))))
            out.beta_cov = self._beta_cov(Cinv, CiXu, Ainv, s2, lam)
            out.cond_var = []
            for L, t in zip(Ls, lay.terms):
                Sig = L @ L.T
                cv = np.empty((t.m, t.q))
                for g in range(t.m):
                    rows = np.flatnonzero(t.codes == g)
                    ZS = t.Z[rows] @ Sig
                    cv[g] = np.diag(Sig) - np.einsum("ra,rs,sa->a", ZS, Cinv[np.ix_(rows, rows)], ZS)
                out.cond_var.append(cv)
        return out

    def _beta_cov(self, Cinv, CiXu, Ainv, s2, lam):
        """Posterior covariance of all fixed effects (flat prior on the unpenalised ones)."""
        lay = self.layout
        p, pen = lay.X.shape[1], lay.penalized
        cov = np.zeros((p, p))
        iu, ip = np.flatnonzero(~pen), np.flatnonzero(pen)
        cov[np.ix_(iu, iu)] = Ainv
        if len(ip):
            Xp = lay.X[:, pen]
            c = s2 / lam
            # Cov(beta_p | y) with beta_u integrated: c I - c^2 Xp' P Xp, P the REML projection
            P = Cinv - CiXu @ Ainv @ CiXu.T
            cov[np.ix_(ip, ip)] = c * np.eye(len(ip)) - c * c * Xp.T @ P @ Xp
            cov[np.ix_(ip, iu)] = -c * Xp.T @ CiXu @ Ainv
            cov[np.ix_(iu, ip)] = cov[np.ix_(ip, iu)].T
        return cov
