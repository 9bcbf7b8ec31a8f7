r"""Schall's PQL outer loop with clubbed backfitting (Ghosh, Hastie & Owen 2022).

Model, for factors k = 1..K with levels g and rows i:

.. math::

    \eta_i = o_i + x_i^\top\beta + \sum_k b_{k, g_k(i)}, \qquad
    b_{k,g} \sim N(0, \sigma_k^2), \qquad
    \mathrm{Var}(y_i \mid b) = \phi\, V(\mu_i) / a_i,

with prior weights :math:`a_i` (times binomial trials).  Outer iteration
:math:`\ell` (Sections 3.1-4 of the paper):

1. one fused pass at the current fit gives :math:`\zeta = X\beta + Zb`, the
   working weights :math:`w_i = a_i V(\mu_i)/\phi` and response
   :math:`z_i = \zeta_i + (y_i - \mu_i)/V(\mu_i)`, and every sum the inner loop
   needs (``X'WX``, ``X'Wz``, ``Z_k'WX``, ``Z_k'w``, ``Z_k'Wz``), plus the
   Pearson statistic and the relative change
   :math:`\|\zeta^{(\ell)} - \zeta^{(\ell-1)}\|^2 / \|\zeta^{(\ell-1)}\|^2`
   (stop when it is at most ``tol``);
2. with dispersion estimated, eq. (15):
   :math:`\phi = \sum_i a_i (y_i-\mu_i)^2/V(\mu_i) \,/\, (N - p - \sum_k (q_k - \nu_k))`;
3. clubbed backfitting (eqs. 35, 37) solves the penalised weighted least squares
   problem (12),
   :math:`\min_{\beta,b} \sum_i w_i (z_i - x_i^\top\beta - \sum_k b_{k,g_k(i)})^2
   + \sum_k \|b_k\|^2/\sigma_k^2`, warm-started, to ``inner_tol``;
4. Schall's update with the diagonal trace approximation (eqs. 14, 25):
   :math:`\nu_k = \lambda_k \sum_g 1/(W_{k,g} + \lambda_k)`, :math:`\lambda_k = 1/\sigma_k^2`,
   :math:`\sigma_k^2 \leftarrow \|b_k\|^2 / (q_k - \nu_k)`.

Besides the paper's criterion on :math:`\zeta`, the loop also waits until every
:math:`\sigma_k` changes by at most ``var_tol`` (relative) per iteration or
has reached the boundary :math:`\sigma_k/\sqrt\phi <` ``BOUNDARY`` (lme4's
singular-fit threshold): Schall's update approaches a zero variance slowly
(geometrically), and the change of :math:`\zeta` alone would stop it half-way.
When a :math:`\sigma_k` converges that slowly (three successive changes of one
sign whose ratios agree and lie in [0.5, 1), once :math:`\zeta` has nearly
settled), Aitken's :math:`\Delta^2` extrapolation jumps it to the limit of
the geometric sequence; the fixed point, and so the estimate, is unchanged.
A fit makes at most ``MAX_JUMPS`` such jumps: where the variances are coupled
(through an estimated :math:`\phi`, say) and converge very slowly, the
extrapolated limits are inexact, and jumping on would keep the loop
oscillating around the fixed point instead of letting it settle.

Start: :math:`\beta = 0, b = 0`, :math:`\sigma_k^2 = \phi = 1` (the paper's
defaults) for binomial; for gaussian both start at the weighted variance of
:math:`y - o`, which makes the iterations equivariant to the response's scale.
For poisson :math:`\sigma_k^2 = \phi = 1` and the first factor's effects start
at the log of the mean rate, :math:`c = \log(\sum_i a_i y_i / \sum_i a_i e^{o_i})`,
so that the first pass linearises at :math:`\eta = o + c` instead of
:math:`\eta = o`: from zero, counts in the hundreds give a first working
response of that size and the loop diverges.  (Every row has one level of the
first factor, so this shifts every row alike; the penalised problem's solution
does not depend on the start, and the first inner solve moves the shift into
the intercept.)
The gaussian family has fixed weights (no IRLS): its sums are computed once and
later passes only evaluate the residual sum of squares and the change of
:math:`\zeta`.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ...data.validation import dependent_columns, singular_matrix_error
from ...exceptions import DataError
from ...families import POISSON
from .degenerate import PHI_EXACT, SeparationMonitor
from .passes import passes_of

SIGMA2_FLOOR = 1e-12  # relative to phi: keeps lambda finite once a variance collapses
BOUNDARY = 1e-4  # sigma_k / sqrt(phi) below this is a boundary (singular) fit, as lme4
AITKEN_ZETA = 1e-4  # extrapolate variances only once zeta's relative change is this small
MAX_JUMPS = 50  # extrapolations per fit: past them, natural updates only (see the module docstring)


@dataclass
class FitOptions:
    """Tolerances and limits of the outer and inner loops."""

    tol: float = 1e-8
    inner_tol: float = 1e-8
    var_tol: float = 1e-3
    max_iter: int = 100
    max_inner_iter: int = 1000
    estimate_dispersion: bool = False

    def __post_init__(self):
        for name in ("tol", "inner_tol", "var_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_iter", "max_inner_iter"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")


@dataclass
class SchallFit:
    """Raw output of :func:`fit_schall` (the public result wraps it)."""

    beta: np.ndarray
    b: np.ndarray
    sigma2: np.ndarray
    phi: float
    nu: np.ndarray
    pearson: float
    w0: object  # final unscaled working weights (w = w0 / phi), as the passes hold them
    s0: np.ndarray  # final Z'W0X (Q x p, a view)
    Wq0: np.ndarray  # final Z'w0 (Q, a view)
    converged: bool
    inner_converged: bool
    rel_change: float
    history: list = field(default_factory=list)
    separation: object = None  # a separation.Separation when the loop stopped on separation
    rows: object = None  # the passes.RowPasses the loop ran on


def _relative(num, den):
    if den > 0:
        return num / den
    return np.inf if num > 0 else 0.0


def _variances_settled(history, phi, var_tol):
    """Whether the last Schall update moved every sigma_k by at most var_tol
    (relative), or left it at the boundary."""
    new, old = np.sqrt(history[-1]["sigma2"]), np.sqrt(history[-1]["old_sigma2"])
    return bool(np.all((np.abs(new - old) <= var_tol * old) | (new / np.sqrt(phi) < BOUNDARY)))


def _aitken(history, sigma2, floor):
    """Aitken's extrapolation of the sds from the natural updates since the last jump
    (the last three rows and ``sigma2``); None unless every factor's series is
    in its linear regime and at least one converges slowly."""
    since = [h["sigma2"] for h in history[-3:]]
    if len(since) < 3 or any(h["accelerated"] for h in history[-2:]):
        return None
    s = np.sqrt(np.array(since + [sigma2.tolist()]))  # (4, K)
    d = np.diff(s, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = d[1:] / d[:-1]
    slow = (r[1] >= 0.5) & (r[1] < 1) & (np.abs(r[1] - r[0]) < 0.05) & (r[0] > 0)
    settled = np.abs(d[-1]) <= 1e-12 * np.maximum(s[-1], 1e-300)
    if not np.any(slow) or not np.all(slow | settled):
        return None
    limit = np.where(slow, s[-1] + d[-1] * r[1] / (1 - np.where(slow, r[1], 0)), s[-1])
    return np.maximum(np.maximum(limit, 0.0) ** 2, floor)


def _initial_scale(d, family):
    """Starting value of every sigma2_k (and of phi when it is estimated)."""
    if family.irls:
        return 1.0
    prior = d.prior if d.prior.size else np.ones(d.n)
    r = d.y - (d.offset if d.offset.size else 0.0)
    mean = np.average(r, weights=prior)
    var = float(np.average((r - mean) ** 2, weights=prior))
    return var if var > 0 else 1.0


def _initial_shift(d, family):
    """The start of the first factor's effects: 0, or for poisson the log of the
    mean rate (0 if there are no counts)."""
    if family.code != POISSON:
        return 0.0
    prior = d.prior if d.prior.size else np.ones(d.n)
    total = float(np.dot(prior, d.y))
    if not total > 0:
        return 0.0
    o = d.offset if d.offset.size else np.zeros(d.n)
    top = float(o.max())
    return float(np.log(total) - top - np.log(np.dot(prior, np.exp(o - top))))


def level_precision(Wq0, phi, sigma2, n_levels):
    """D = Z'w0 / phi + 1 / sigma_k^2 per level: the diagonal of the random-effect
    block of the penalised normal equations (each factor's own block)."""
    return Wq0 / phi + np.repeat(1.0 / sigma2, n_levels)


def _club_factors(G, R, names, factors):
    """Cholesky factors of A_k = X'WX - s_k' D_k^{-1} s_k (``R[k]``), one per factor."""
    chol = np.empty(R.shape)
    for k in range(R.shape[0]):
        A = G - R[k]
        try:
            chol[k] = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            raise _club_singular(G, A, names, factors[k]) from None
    return chol


def _club_singular(G, A, names, factor):
    """The error for a clubbed block A_k = X'W(I - S_k)X that is not positive
    definite: the columns to blame at the working weights (G = X'WX), else beside
    the factor's random effects (A_k on the scale of G)."""
    if not np.all(np.isfinite(G)) or dependent_columns(G, names):
        return singular_matrix_error("X'WX (the fixed effects at the working weights)", G, names,
                                     zero="is zero on every row with positive weight",
                                     within=" on the rows with positive weight")
    return singular_matrix_error(
        f"X'W(I - S)X beside the random effects of {factor!r}", A, names,
        zero=f"is constant within every level of {factor!r}, so it is not estimable beside (1|{factor})",
        within=f" within the levels of {factor!r}", scale=np.sqrt(np.diag(G)))


@dataclass
class ClubInputs:
    """What the clubbed inner loop reads besides the rows (see ``club_backfit``), in
    the unscaled weights w0 = phi w: the penalised problem times phi has the same
    minimiser, with penalties lam = phi / sigma^2 and D = Z'w0 + lam."""

    h: np.ndarray
    s: np.ndarray
    Wq: np.ndarray
    D: np.ndarray
    tq: np.ndarray
    chol: np.ndarray
    lam: np.ndarray


class SchallState:
    """The iterate of Schall's loop and the buffers of its fused pass.

    One outer iteration is :meth:`pass_` (the fused pass at the current fit)
    followed by :meth:`solve` (clubbed backfitting and Schall's update).
    """

    def __init__(self, d, family, kern, nthreads, estimate_dispersion):
        self.rows = rows = passes_of(d, kern, nthreads)  # the seam: see passes.py
        self.d = d = rows.d
        K, p, Q = len(d.factor_names), d.p, int(d.offsets[-1])
        self.family, self.kern, self.nthreads = family, kern, nthreads
        self.start, shift = rows.initial_values(family)
        self.beta, self.b = np.zeros(p), np.zeros(Q)
        self.b[: d.offsets[1]] = shift
        self.dbeta, self.db = np.zeros(p), np.zeros(Q)
        self.phi = self.start if estimate_dispersion else 1.0
        self.sigma2 = np.full(K, self.start)
        self.nu = np.zeros(K)
        self.G0, self.h0 = np.empty((p, p)), np.empty(p)
        self.S0 = np.empty((Q, p + 2))  # Z'W0 [X, 1, z]: views s0, Wq0, tq0
        self.s0, self.Wq0, self.tq0 = self.S0[:, :p], self.S0[:, p], self.S0[:, p + 1]
        # contiguous copies of s0, Wq0, tq0, D and s_k' D_k^-1 s_k (prepare)
        self.s, self.R = np.empty((Q, p)), np.empty((K, p, p))
        self.Wq, self.tq, self.D = np.empty(Q), np.empty(Q), np.empty(Q)
        self.passes = 0

    def pass_(self):
        """The fused pass; returns [pearson, |zeta|^2, |dzeta|^2, |zeta - dzeta|^2].

        The gaussian family's sums do not change after the first pass."""
        design = self.family.irls or self.passes == 0
        self.passes += 1
        return self.rows.stats(self.family.code, self.beta, self.b, self.dbeta, self.db, design,
                               self.G0, self.h0, self.S0)

    def prepare(self):
        """Inputs of the clubbed inner loop at the current weights and variances
        (unscaled, see :class:`ClubInputs`): D and the Cholesky factors."""
        lam = self.phi / self.sigma2
        self.kern.club_prepare(self.S0, self.d.offsets, lam, self.s, self.Wq, self.tq, self.D,
                               self.R, self.nthreads)
        chol = _club_factors(self.G0, self.R, self.d.feature_names, self.d.factor_names)
        return ClubInputs(self.h0, self.s, self.Wq, self.D, self.tq, chol, lam)

    def backfit(self, c, inner_tol, max_inner_iter):
        """Clubbed backfitting from the current (beta, b); returns (sweeps, rel)."""
        return self.rows.backfit(c, self.beta, self.b, inner_tol, max_inner_iter)

    def solve(self, inner_tol, max_inner_iter):
        """Clubbed backfitting at the current weights, then Schall's update.

        Returns ``(sweeps, inner_rel, old_sigma2)``; ``self.sigma2`` is updated."""
        c = self.prepare()
        beta_old, b_old = self.beta.copy(), self.b.copy()
        sweeps, inner_rel = self.backfit(c, inner_tol, max_inner_iter)
        np.subtract(self.beta, beta_old, out=self.dbeta)
        np.subtract(self.b, b_old, out=self.db)
        new_sigma2 = np.empty_like(self.sigma2)
        self.kern.schall_update(self.d.offsets, c.Wq, self.b, c.lam, self.nu, new_sigma2)
        old_sigma2, self.sigma2 = self.sigma2, np.maximum(new_sigma2, SIGMA2_FLOOR * self.phi)
        return sweeps, inner_rel, old_sigma2


def fit_schall(d, family, opts, kern, nthreads, progress=None):
    """Run Schall's algorithm on design ``d`` with kernel module ``kern`` (or on the
    rows of ``d``, a :class:`~pyglmm.engines.crossed.passes.RowPasses`)."""
    st = SchallState(d, family, kern, nthreads, opts.estimate_dispersion)
    d = st.d
    monitor = SeparationMonitor(d, family, st.rows.certificate)
    q = d.n_levels.astype(np.float64)
    history, converged, rel, pearson, separation = [], False, np.inf, np.nan, None
    jumps = 0
    for it in range(1, opts.max_iter + 2):
        start = time.perf_counter()
        sc = st.pass_()
        pearson = float(sc[0])
        if history:
            rel = _relative(sc[2], sc[3])
            history[-1]["rel_change"] = rel
            if progress is not None:
                progress(history[-1])
            # an extrapolated step is always followed by a natural one, so that the
            # returned modes are the solution at the returned variances
            converged = (rel <= opts.tol and not history[-1]["accelerated"]
                         and _variances_settled(history, st.phi, opts.var_tol))
            separation = None if converged else monitor.check(st.beta, len(history))
            if separation is not None:
                break
            if opts.estimate_dispersion:
                dof = d.n_eff - d.p - np.sum(q - st.nu)
                if dof <= 0:
                    raise DataError(f"too few rows to estimate the dispersion ({dof:.1f} "
                                    "residual degrees of freedom)")
                st.phi = pearson / dof
                if st.phi <= PHI_EXACT * st.start:
                    raise st.rows.exact_fit_error(st.phi, st.start)
        if converged or it > opts.max_iter:
            break
        sweeps, inner_rel, old_sigma2 = st.solve(opts.inner_tol, opts.max_inner_iter)
        row = {"iteration": it, "inner_sweeps": sweeps, "inner_rel": inner_rel,
               "seconds": 0.0, "rel_change": np.nan, "sigma2": st.sigma2.tolist(),
               "old_sigma2": old_sigma2.tolist(), "phi": st.phi, "accelerated": False}
        if rel <= AITKEN_ZETA and jumps < MAX_JUMPS:
            jumped = _aitken(history, st.sigma2, SIGMA2_FLOOR * st.phi)
            if jumped is not None:
                st.sigma2, jumps = jumped, jumps + 1
                row.update(sigma2=jumped.tolist(), accelerated=True)
        row["seconds"] = time.perf_counter() - start
        history.append(row)
    inner_ok = bool(history) and history[-1]["inner_rel"] <= opts.inner_tol
    return SchallFit(st.beta, st.b, st.sigma2, float(st.phi), st.nu, pearson, st.rows.w0, st.s0,
                     st.Wq0, bool(converged), inner_ok, float(rel), history, separation, st.rows)
