"""Public fitting functions: :func:`glmm` (formula + DataFrame) and
:func:`glmm_from_arrays` (arrays)."""

import time
import warnings

import numpy as np
import pandas as pd

from ... import backends as _backend
from ...data.design import build_design
from ...exceptions import ConvergenceWarning, SingularFitWarning
from ...families import get_family
from ...data.formula import check_columns, fixed_matrix, parse_formula, required_columns
from .inference import beta_covariance, naive_comparison
from ...results.base import GLMMResult
from .schall import BOUNDARY, FitOptions, fit_schall, level_precision

_FIT_DOC = r"""
    The model, for grouping factors :math:`k = 1..K` with levels :math:`g`:

    .. math::

        g(\mu_i) = \eta_i = o_i + x_i^\top\beta + \sum_k b_{k, g_k(i)}, \qquad
        b_{k,g} \overset{iid}{\sim} N(0, \sigma_k^2), \qquad
        \mathrm{Var}(y_i \mid b) = \phi V(\mu_i) / a_i,

    binomial-logit (:math:`V = \mu(1-\mu)`) or gaussian-identity (:math:`V = 1`),
    prior weights :math:`a_i` (times trials).  It is fitted by Schall's PQL
    (Ghosh, Hastie & Owen 2022): each outer iteration solves the penalised
    weighted least squares problem

    .. math::

        \min_{\beta, b}\; \sum_i w_i (z_i - x_i^\top\beta - \textstyle\sum_k b_{k,g_k(i)})^2
        + \sum_k \|b_k\|^2 / \sigma_k^2

    for the working response :math:`z` and weights :math:`w_i = a_i V(\mu_i)/\phi`
    by clubbed backfitting, then updates :math:`\sigma_k^2 = \|b_k\|^2/(q_k-\nu_k)`
    with the diagonal trace approximation :math:`\nu_k = \lambda_k\sum_g
    (W_{k,g}+\lambda_k)^{-1}`, and :math:`\phi` by Pearson's statistic (eq. 15)
    when estimated.  Each iteration costs O(N): one pass over X, then passes over
    the weights and level codes only.  For binary data PQL is known to shrink
    :math:`\hat\beta_0` and :math:`\hat\sigma_k` slightly: it sits near glmer's
    ``nAGQ=0``.

    Common parameters
    -----------------
    family : {"binomial", "gaussian"}
    dispersion : {"fixed", "estimate"}, optional
        :math:`\phi` fixed at 1 (default for binomial, as in glmer) or estimated
        by eq. (15) (the paper's code always estimates it; default for gaussian,
        where :math:`\phi` is the residual variance).
    tol, inner_tol : float
        Relative change of the linear predictor that stops the outer loop
        (default 1e-8, as the paper) and the inner backfitting loop (1e-8).
    var_tol : float
        The outer loop also waits until every :math:`\sigma_k` changes by at
        most this much (relative, default 1e-3) or reaches the boundary
        :math:`\sigma_k/\sqrt\phi < 10^{-4}`, which is then reported as a
        singular fit.
    max_iter, max_inner_iter : int
        Iteration limits (100 and 1000); reaching one is reported and warned about.
    se : bool
        Compute :math:`\widehat{\mathrm{cov}}(\hat\beta)` by eq. (24) (default True).
    compare_naive : bool
        Also fit the naive regression without random effects and report the
        naivete and inefficiency ratios of Section 6.
    backend : {"cpp", "numba", "numpy"}, optional
        Kernel backend (default: the active one, see :func:`pyglmm.backend`).
    threads : int, optional
        Kernel threads (default: :func:`pyglmm.get_num_threads`).
    progress : callable, optional
        Called after every outer iteration with a dict (``iteration``,
        ``inner_sweeps``, ``rel_change``, ``seconds``, ``phi``, ``sigma``).

    Returns
    -------
    GLMMResult
    """


def glmm(formula, data, family="binomial", *, weights=None, trials=None, offset=None,
         dispersion=None, tol=1e-8, inner_tol=1e-8, var_tol=1e-3, max_iter=100,
         max_inner_iter=1000, se=True, compare_naive=False, backend=None, threads=None, progress=None):
    start = time.perf_counter()
    parsed = parse_formula(formula)
    named = {"weights": weights, "trials": trials, "offset": offset}
    check_columns(data, required_columns(parsed, [v for v in named.values() if isinstance(v, str)]))
    X, names, spec = fixed_matrix(parsed.fixed, data)
    extra = {k: (data[v].to_numpy() if isinstance(v, str) else v) for k, v in named.items()}
    fam = get_family(family)
    opts = _options(fam, dispersion, tol, inner_tol, var_tol, max_iter, max_inner_iter)
    name, kern, threads = _kernels(backend, threads)
    with _backend.blas_single_thread(name):
        d = build_design(X, data[parsed.response].to_numpy(), {g: data[g] for g in parsed.groups},
                         fam, feature_names=names, response_name=parsed.response,
                         index=data.index, kern=kern, nthreads=threads, **extra)
        return _fit(d, fam, formula, start, opts, se, compare_naive, name, kern, threads, progress,
                    intercept=False, offset_name=offset if isinstance(offset, str) else None,
                    has_offset=offset is not None, model_spec=spec)


glmm.__doc__ = r"""Fit a crossed random-effects GLMM from an lme4-style formula.

    Parameters
    ----------
    formula : str
        ``y ~ x1 + C(cat) + (1|user) + (1|item)``: fixed effects as formulaic
        reads them (treatment coding, first sorted level as reference, intercept
        ``Intercept``) and one ``(1|g)`` term per grouping column.
    data : pandas.DataFrame
    weights, trials, offset : str or array-like, optional
        Prior weights, binomial trials (the response is then the number of
        successes) and offset: column names or per-row arrays.
""" + _FIT_DOC


def glmm_from_arrays(X, y, groups, family="binomial", *, feature_names=None, intercept=True,
                     weights=None, trials=None, offset=None, dispersion=None, tol=1e-8,
                     inner_tol=1e-8, var_tol=1e-3, max_iter=100, max_inner_iter=1000, se=True,
                     compare_naive=False, backend=None, threads=None, progress=None):
    start = time.perf_counter()
    if isinstance(X, pd.DataFrame):
        feature_names = feature_names or [str(c) for c in X.columns]
        X = X.to_numpy(dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-dimensional, got shape {X.shape}")
    names = list(feature_names) if feature_names is not None else [f"x{j + 1}" for j in range(X.shape[1])]
    if len(names) != X.shape[1]:
        raise ValueError(f"feature_names has {len(names)} names for {X.shape[1]} columns")
    if intercept and "Intercept" in names:
        raise ValueError("X already has a column named 'Intercept'; pass intercept=False "
                         "(intercept=True adds one)")
    if intercept:
        X = np.column_stack([np.ones(X.shape[0]), X])
        names = ["Intercept"] + names
    if not isinstance(groups, dict):
        raise TypeError("groups must be a dict {factor name: per-row labels}")
    fam = get_family(family)
    opts = _options(fam, dispersion, tol, inner_tol, var_tol, max_iter, max_inner_iter)
    name, kern, threads = _kernels(backend, threads)
    formula = "y ~ " + " + ".join((["1"] if intercept else ["0"]) + names[int(intercept):]
                                  + [f"(1|{g})" for g in groups])
    with _backend.blas_single_thread(name):
        d = build_design(X, y, groups, fam, feature_names=names, response_name="y",
                         weights=weights, trials=trials, offset=offset, kern=kern, nthreads=threads)
        return _fit(d, fam, formula, start, opts, se, compare_naive, name, kern, threads, progress,
                    intercept=intercept, has_offset=offset is not None)


glmm_from_arrays.__doc__ = r"""Fit a crossed random-effects GLMM from arrays.

    Parameters
    ----------
    X : array-like or DataFrame, shape (n, p)
        Covariates (float64, C-contiguous avoids a copy when ``intercept=False``).
    y : array-like, shape (n,)
        0/1 response, successes when ``trials`` is given, or a gaussian response.
    groups : dict
        ``{factor name: per-row labels}``; labels may be any hashable values.
    feature_names : list of str, optional
        Names of X's columns (default ``x1..xp`` or the DataFrame's columns).
    intercept : bool
        Prepend a column of ones named ``Intercept`` (default True).
    weights, trials, offset : array-like, optional
""" + _FIT_DOC


def _options(fam, dispersion, tol, inner_tol, var_tol, max_iter, max_inner_iter):
    dispersion = dispersion or fam.default_dispersion
    if dispersion not in ("fixed", "estimate"):
        raise ValueError(f"dispersion must be 'fixed' or 'estimate', got {dispersion!r}")
    return FitOptions(tol, inner_tol, var_tol, max_iter, max_inner_iter, dispersion == "estimate")


def _kernels(backend, threads):
    """The backend's name, kernel module and the thread count a fit uses."""
    name = _backend.backend(backend)
    if threads is not None and not (isinstance(threads, (int, np.integer)) and threads >= 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    threads = 1 if name == "numpy" else (int(threads) if threads is not None
                                          else _backend.get_num_threads())
    return name, _backend.kernels(name), threads


def _fit(d, fam, formula, start, opts, se, compare_naive, name, kern, threads, progress,
         **predict_info):
    timings = {"design": time.perf_counter() - start}
    t = time.perf_counter()
    fit = fit_schall(d, fam, opts, kern, threads, _named_progress(progress, d.factor_names))
    timings["schall"] = time.perf_counter() - t
    names = d.feature_names
    cov, cov_note = None, None
    if se or compare_naive:
        t = time.perf_counter()
        cov_arr, cov_note = beta_covariance(d, fit, kern, threads)
        cov = pd.DataFrame(cov_arr, names, names) if se else None
        timings["covariance"] = time.perf_counter() - t
    naive = naive_summary = None
    if compare_naive:
        t = time.perf_counter()
        naive, naive_summary = naive_comparison(d, fam, fit, cov_arr, kern, threads)
        timings["naive"] = time.perf_counter() - t
    t = time.perf_counter()
    deviance = _deviance(d, fam, fit, kern, threads)
    timings["deviance"] = time.perf_counter() - t

    sigma = pd.Series(np.sqrt(fit.sigma2), index=d.factor_names, name="sd")
    singular = [f for f, s in sigma.items() if s / np.sqrt(fit.phi) < BOUNDARY]
    notes = _warn_about(fit, opts, singular, naive_summary, cov_note)
    b, b_var = _random_effects(d, fit)
    return GLMMResult(
        formula=formula, family=fam.name, link=fam.link,
        dispersion_mode="estimate" if opts.estimate_dispersion else "fixed",
        coef=pd.Series(fit.beta, index=names, name="coef"), cov=cov, sigma=sigma,
        dispersion=fit.phi, b=b, b_var=b_var, n_obs=d.n,
        n_levels=dict(zip(d.factor_names, d.n_levels.tolist())),
        df_resid=float(d.n_eff - d.p - np.sum(d.n_levels - fit.nu)),
        pearson_chi2=fit.pearson, deviance=deviance, iterations=len(fit.history),
        inner_sweeps=int(sum(h["inner_sweeps"] for h in fit.history)),
        converged=fit.converged and fit.inner_converged, singular=singular,
        history=_history_frame(fit.history, d.factor_names),
        seconds=time.perf_counter() - start, timings=timings, backend=name, threads=threads,
        warnings=notes, naive=naive, naive_summary=naive_summary, **predict_info)


def _warn_about(fit, opts, singular, naive_summary, cov_note):
    """Warn about non-convergence and boundary fits; return the notes for the summary."""
    notes = [] if cov_note is None else [cov_note]
    if not fit.converged:
        notes.append(f"Schall's loop did not converge in {opts.max_iter} iterations (relative "
                     f"change {fit.rel_change:.3g}, tol {opts.tol:g}, var_tol {opts.var_tol:g})")
    if not fit.inner_converged:
        notes.append(f"the last inner backfitting loop stopped at {opts.max_inner_iter} sweeps "
                     f"before inner_tol {opts.inner_tol:g}")
    for note in notes:
        warnings.warn(note, ConvergenceWarning, stacklevel=4)
    if singular:
        note = ("boundary (singular) fit: the variance of " + ", ".join(map(repr, singular))
                + " is estimated at ~0; consider dropping that term")
        warnings.warn(note, SingularFitWarning, stacklevel=4)
        notes.append(note)
    if naive_summary is not None and not naive_summary["naive_converged"]:
        notes.append("the naive regression did not converge (separation?)")
    return notes


def _random_effects(d, fit):
    """Conditional modes and diagonal conditional variances, per factor, by level."""
    cond_var = 1.0 / level_precision(fit.Wq0, fit.phi, fit.sigma2, d.n_levels)
    b, b_var = {}, {}
    for f, lv, levels in zip(d.factor_names, d.factor_slices(), d.levels):
        b[f] = pd.Series(fit.b[lv], index=levels, name=f)
        b_var[f] = pd.Series(cond_var[lv], index=levels, name=f)
    return b, b_var


def _history_frame(history, names):
    """The per-iteration history as a DataFrame with one sigma_<factor> column each."""
    if not history:
        return pd.DataFrame()
    columns = {key: [row[key] for row in history] for key in history[0]
               if key not in ("sigma2", "old_sigma2")}
    sd = np.sqrt(np.array([row["sigma2"] for row in history]))
    columns.update({f"sigma_{f}": sd[:, j] for j, f in enumerate(names)})
    return pd.DataFrame(columns)


def _named_progress(progress, names):
    """Wrap a progress callback so that it gets {"sigma": {factor: sd}} rows."""
    if progress is None:
        return None

    def report(row):
        shown = {k: v for k, v in row.items() if k not in ("sigma2", "old_sigma2")}
        progress({**shown, "sigma": dict(zip(names, np.sqrt(row["sigma2"]).tolist()))})
    return report


def _deviance(d, fam, fit, kern, threads):
    """Deviance of the conditional model at the modes (linear_predictor + IRLS kernels;
    IRLS clamps eta to [-30, 30], which keeps the logarithms finite)."""
    eta, mu, w, z = (np.empty(d.n) for _ in range(4))
    kern.linear_predictor(d.X, d.codes, fit.beta, fit.b, d.offset, eta, threads, d.xcat)
    return kern.irls_quantities(fam.code, eta, d.y, d.prior, d.offset, mu, w, z, threads)
