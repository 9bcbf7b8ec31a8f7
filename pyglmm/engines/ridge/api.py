r""":func:`ridge_lmm`: the regularised linear mixed model of Amestoy, van de Wiel &
van Wieringen (2021), reconstructed (the talk has no public code; see the
package docstring for what pyglmm chose where the talk is silent)."""

import math
import time
import warnings

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ... import backends as _backend
from ...data.coding import FixedCoding
from ...data.formula import parse_formula, required_columns
from ...data.validation import check_column_roles, factorize, named_column
from ...exceptions import ConvergenceWarning, DataError, SingularFitWarning
from ...results.base import RowData, compact, sigma_of
from .cv import check_cv, choose_b_cv
from .em import EM, Prior, State
from .laplace import choose_b
from .result import RidgeResult
from .solvers import Layout, Term, choose_solver, make_solver

LAM_BOUNDARY = 1e-6  # an empirical-Bayes lambda below this sits on its boundary 0
SINGULAR_TOL = 1e-4  # a diagonal entry of chol(Sigma)/sigma below this: singular fit (lme4's rule)


def ridge_lmm(formula, data, *, lam="auto", b="auto", A=None, unpenalized=(), solver="auto",
              tol=1e-10, max_iter=200, backend=None, cv_folds=5, cv_grid=None, cv_seed=0):
    r"""Fit a linear mixed model with a ridge prior on the fixed effects and an
    inverse-Wishart prior on the random-effect covariances.

    .. math::

        y = X_u\beta_u + X_p\beta_p + \sum_k Z_k\gamma_k + \varepsilon, \quad
        \varepsilon \sim N(0, \sigma^2 I), \quad
        \beta_p \sim N(0, \tfrac{\sigma^2}{\lambda} I), \quad
        \gamma_{k,g} \sim N(0, \Sigma_k), \quad
        \Sigma_k \sim IW(\nu_k, \Psi_k),

    with the inverse-Wishart in the talk's form: prior mode
    :math:`A_k = \Psi_k/(\nu_k+q_k+1)` and weight :math:`b = (\nu_k+q_k+1)/(m_k+\nu_k+q_k+1)`,
    so that the EM update is :math:`\Sigma_k \leftarrow bA_k + (1-b)\,\tfrac1{m_k}
    \sum_g E(\gamma_{k,g}\gamma_{k,g}^\top \mid y)`.  The estimate maximises the
    marginal likelihood (:math:`\beta_p` and :math:`\gamma` integrated out exactly,
    :math:`\beta_u` at its GLS value) plus the log prior of the :math:`\Sigma_k`
    (MAP), by EM steps finished with Newton steps on the same objective (see
    :mod:`pyglmm.engines.ridge.em`).  With ``b=0`` and no penalised column this
    is lme4's ``lmer(..., REML = FALSE)``.

    Parameters
    ----------
    formula : str
        ``y ~ x1 + ... + (1 + t + t2 | g)``; several random terms are allowed.
    data : pandas.DataFrame
    lam : "auto" or float
        :math:`\lambda > 0` on the standardised penalised columns, or ``"auto"``:
        empirical Bayes, maximising the same marginal likelihood over
        :math:`\lambda` (EM update :math:`\lambda = p_p\,E\|\varepsilon\|^2 / (N\,E\|\beta_p\|^2)`).
    b : "auto", "cv" or float in [0, 1)
        Weight on the targets; ``"auto"``: empirical Bayes on the Laplace
        approximation of the marginal likelihood over :math:`\Sigma` (see
        :mod:`pyglmm.engines.ridge.laplace`), searched where the prior is proper;
        ``"cv"``: grouped K-fold cross-validation of the held-out groups' marginal
        log-likelihood over ``cv_grid`` (one random term only; see
        :mod:`pyglmm.engines.ridge.cv`).
    A : None, float, array or dict
        The target (prior mode) of each factor's :math:`\Sigma_k`: a q x q
        symmetric positive semi-definite matrix (dict by factor for several
        terms), or a number a for :math:`aI`.  Default: :math:`A_k =
        \mathrm{diag}_j\big(s_y^2 / (2 q_k \overline{z_j^2})\big)`, where each effect's prior mode
        contributes :math:`s_y^2/(2q_k)` to the variance of the response (half
        of it shared by the q effects).
    unpenalized : sequence of str
        Further fixed-effect columns left unpenalised.  The intercept and every
        column that is also a random slope are always unpenalised (shrinking a
        mean slope pushes it into the random slopes).
    solver : {"auto", "primal", "dual"}
        Primal (block-Schur, dimension :math:`p + \sum_k m_kq_k`) when that is below
        N, dual (N x N) otherwise (``"auto"``).
    tol, max_iter : float, int
        Gradient tolerance (per row) and Newton iteration limit.
    backend : str, optional
        Kernel backend (default: the active one).
    cv_folds, cv_grid, cv_seed : int, sequence of float, int
        With ``b="cv"``: the number of folds (whole groups held out; default 5), the
        values of b tried (default 0, 0.05, 0.1, 0.2, ..., 0.9) and the seed of the
        random assignment of groups to folds.

    Returns
    -------
    RidgeResult

    Notes
    -----
    Penalised columns are centred (when the model has an intercept) and scaled to
    unit standard deviation before fitting, as glmnet and glmmLasso do; the
    coefficients are reported on the original scale.
    """
    t0 = time.perf_counter()
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if not (isinstance(max_iter, (int, np.integer)) and not isinstance(max_iter, bool) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    name = _backend.backend(backend)
    kern = _backend.kernels(name, "ridge")
    parsed = parse_formula(formula)
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    _check_columns(parsed, data)
    coding = FixedCoding.from_data(parsed.fixed, data)
    X = coding.matrix(data)
    names = list(coding.names)
    y = named_column(data, "response", parsed.response, data.index)
    terms = [_term(rt, data) for rt in parsed.random]
    slopes = {c for rt in parsed.random for c in rt.slopes}
    unpenalized = set(_names(unpenalized, names))
    penalized = np.array([not (n == "Intercept" or n in slopes or n in unpenalized) for n in names])
    Xs, centre, scale = _standardise(X, penalized, coding.intercept, names)
    layout = Layout(y, Xs, names, penalized, terms)
    lam_fixed = _lam(lam)
    targets = _targets(A, terms, y)
    b_value = _b(b)
    b_cv, folds = None, None
    if b_value == "cv":
        cv_folds, cv_grid = check_cv(parsed, cv_folds, cv_grid)
        b_value, b_cv, folds = choose_b_cv(
            ridge_lmm, parsed, data, cv_folds, cv_grid, cv_seed, {t.group: a for t, a in zip(terms, targets)},
            lam=lam, unpenalized=tuple(unpenalized), solver=solver, tol=tol, max_iter=max_iter, backend=name)
    sname = choose_solver(layout, solver)
    sol = make_solver(layout, sname, kern, _backend.get_num_threads())
    start = _start(layout, targets, lam_fixed)
    b_search = pd.DataFrame(columns=["b", "log_evidence"])
    # small dense algebra throughout: BLAS threads only spin against each other (100x slower
    # on a shared 2-core machine for a 200 x 200 Cholesky), so BLAS runs on one thread
    with threadpool_limits(limits=1, user_api="blas"):
        if b_value is None:
            fit0 = EM(sol, [Prior(0.5, A) for A in targets], lam_fixed).run(start, tol=1e-6, max_iter=max_iter)
            b_value, _, tried = choose_b(sol, targets, fit0.state)
            b_search = pd.DataFrame(tried, columns=["b", "log_evidence"])
            start = fit0.state
        fit = EM(sol, [Prior(b_value, A) for A in targets], lam_fixed).run(start, tol=tol, max_iter=max_iter)
    return _result(parsed, coding, layout, fit, targets, centre, scale, y, data.index, b_value,
                   lam == "auto", b == "auto", b_search, sname, name, time.perf_counter() - t0, b_cv, folds)


def _check_columns(parsed, data):
    for rt in parsed.random:
        for c in (rt.group, *rt.slopes):
            if c not in data.columns:
                effects = " + ".join(("1" if rt.intercept else "0",) + rt.slopes)
                raise DataError(f"column {c!r} of the random-effect term ({effects} | {rt.group}) "
                                "is not in the data")
    check_column_roles(data, parsed.response, parsed.groups,
                       [c for c in required_columns(parsed) if c not in (parsed.response, *parsed.groups)])


def _term(rt, data):
    codes, levels = factorize(rt.group, data[rt.group])
    if len(levels) < 2:
        raise DataError(f"grouping factor {rt.group!r} has {len(levels)} level: a random effect "
                        f"needs at least 2 levels")
    cols = [np.ones(len(data))] if rt.intercept else []
    cols += [named_column(data, f"random slope of {rt.group!r}", c, data.index) for c in rt.slopes]
    term = Term(rt.group, rt.names, codes, np.ascontiguousarray(np.column_stack(cols)), len(levels))
    term.levels = levels
    return term


def _names(given, names):
    given = [given] if isinstance(given, str) else list(given)
    for n in given:
        if n not in names:
            raise ValueError(f"unpenalized names {n!r}, which is not a fixed-effect column "
                             f"(columns: {', '.join(names)})")
    return given


def _standardise(X, penalized, intercept, names):
    centre = np.where(penalized & intercept, X.mean(axis=0), 0.0)
    sd = np.where(penalized, X.std(axis=0), 1.0)
    for j in np.flatnonzero(penalized & ~(sd > 0)):
        raise DataError(f"the penalised column {names[j]!r} is constant: it cannot be standardised "
                        "(drop it, or list it in unpenalized)")
    return (X - centre) / sd, centre, sd


def _lam(lam):
    if isinstance(lam, str) and lam == "auto":
        return None
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating, np.integer)) \
            or not np.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam must be 'auto' or a positive finite number, got {lam!r}")
    return float(lam)


def _b(b):
    if isinstance(b, str) and b in ("auto", "cv"):
        return None if b == "auto" else b
    if isinstance(b, bool) or not isinstance(b, (int, float, np.floating, np.integer)) \
            or not 0 <= b < 1:
        raise ValueError(f"b must be 'auto', 'cv' or a number in [0, 1), got {b!r}")
    return float(b)


def _targets(A, terms, y):
    if isinstance(A, dict):
        unknown = set(A) - {t.group for t in terms}
        if unknown:
            raise ValueError(f"A names grouping factor(s) {sorted(unknown)} that the formula has not")
    out = []
    for t in terms:
        a = A.get(t.group) if isinstance(A, dict) else A
        if a is None:
            out.append(np.diag(np.var(y) / (2 * t.q * np.mean(t.Z ** 2, axis=0))))
            continue
        a = np.asarray(a, dtype=np.float64)
        a = a * np.eye(t.q) if a.ndim == 0 else a
        what = f"A of {t.group!r}"
        if a.shape != (t.q, t.q):
            raise ValueError(f"{what} must be {t.q} x {t.q} (effects {', '.join(t.names)}), got shape {a.shape}")
        if not np.all(np.isfinite(a)) or not np.allclose(a, a.T):
            raise ValueError(f"{what} must be a finite symmetric matrix")
        if np.linalg.eigvalsh(a).min() < -1e-12 * max(1.0, np.abs(a).max()):
            raise ValueError(f"{what} must be positive semi-definite (a covariance matrix); "
                             f"its smallest eigenvalue is {np.linalg.eigvalsh(a).min():.3g}")
        out.append(a)
    return out


def _start(layout, targets, lam_fixed):
    """A start without a fit: half the response's variance to the residual and the
    random effects' prior-mode scale; lambda = p_p (signal-to-noise 1 for
    standardised columns)."""
    v = float(np.var(layout.y))
    Sigmas = [np.diag(v / (2 * t.q * np.mean(t.Z ** 2, axis=0))) for t in layout.terms]
    lam = lam_fixed if lam_fixed is not None else float(max(layout.p_pen, 1))
    return State(Sigmas, 0.5 * v, lam)


def _result(parsed, coding, layout, fit, targets, centre, scale, y, index, b_value, lam_auto,
            b_auto, b_search, sname, backend_name, seconds, b_cv, folds):
    e, st = fit.estep, fit.state
    names = layout.names
    beta = e.beta / scale
    cov = e.beta_cov / np.outer(scale, scale)
    if coding.intercept and layout.penalized.any():
        shift = centre / scale  # x_std = (x - c)/s: intercept absorbs -sum beta_std c/s
        beta[0] -= np.sum(e.beta * shift)
        J = np.eye(len(names)) / scale[None, :]
        J[0] = np.where(np.arange(len(names)) == 0, 1.0, -shift)
        cov = J @ e.beta_cov @ J.T
    mu = layout.X @ e.beta
    for t, g in zip(layout.terms, e.gammas):
        mu += np.einsum("nq,nq->n", t.Z, g[t.codes])
    re_cov, b, b_var, A, singular = {}, {}, {}, {}, []
    # the fit's own Cholesky factors: refactoring Sigma = LL' fails when L is (nearly) singular
    for t, Sig, L, g, cv, a in zip(layout.terms, st.Sigmas, st.factors(), e.gammas, e.cond_var, targets):
        eff = list(t.names)
        re_cov[t.group] = pd.DataFrame(Sig, eff, eff)
        A[t.group] = pd.DataFrame(a, eff, eff)
        b[t.group] = pd.DataFrame(g, index=t.levels, columns=eff)
        b_var[t.group] = pd.DataFrame(cv, index=t.levels, columns=eff)
        if np.min(np.abs(np.diag(L))) < SINGULAR_TOL * np.sqrt(st.s2):
            singular.append(t.group)
    rss = float(np.sum((y - mu) ** 2))
    warn = []
    if not fit.converged:
        warn.append(f"the fit did not converge (largest gradient per row {fit.history[-1]:.2g})")
        warnings.warn(warn[-1], ConvergenceWarning, stacklevel=3)
    if layout.p_pen and lam_auto and st.lam < LAM_BOUNDARY:
        warn.append(f"lambda went to its boundary 0 ({st.lam:.2g}): the marginal likelihood does not "
                    "separate the residual variance from the penalised fixed effects (typical when "
                    "p >= N and X'X is nearly spherical); give lam a value")
        warnings.warn(warn[-1], ConvergenceWarning, stacklevel=3)
    if singular:
        warn.append(f"singular fit: the random-effect covariance of {', '.join(map(repr, singular))} "
                    "is (nearly) singular; consider b > 0")
        warnings.warn(warn[-1], SingularFitWarning, stacklevel=3)
    cnames = pd.Index(names)
    return RidgeResult(
        formula=parsed.text, family="gaussian", link="identity", dispersion_mode="estimate",
        coef=pd.Series(beta, index=cnames, name="coef"), cov=pd.DataFrame(cov, cnames, cnames),
        sigma=sigma_of(re_cov), dispersion=float(st.s2), b=b, b_var=b_var, re_cov=re_cov,
        loglik=float(e.loglik), n_obs=layout.n, n_levels={t.group: t.m for t in layout.terms},
        df_resid=float(layout.n - e.edf), pearson_chi2=rss / st.s2, deviance=rss,
        iterations=int(fit.iterations), converged=bool(fit.converged), singular=singular,
        seconds=seconds, timings={}, backend=backend_name, threads=_backend.get_num_threads(),
        warnings=warn, intercept=bool(coding.intercept), coding=coding,
        rows=RowData(mu=mu, y=compact(y), trials=None, weights=None, index=index),
        lam=float(st.lam) if layout.p_pen else None, b_weight=float(b_value), A=A,
        penalized=[n for n, p in zip(names, layout.penalized) if p], edf=float(e.edf), solver=sname,
        lam_auto=bool(lam_auto and layout.p_pen), b_auto=bool(b_auto), b_search=b_search,
        **({} if b_cv is None else {"b_cv": b_cv, "cv_folds": folds}))
