"""Public fitting functions: :func:`glmm` (formula + DataFrame) and
:func:`glmm_from_arrays` (arrays)."""

import logging
import time
import warnings

import numpy as np
import pandas as pd

from ... import backends as _backend
from ...data.design import build_design
from ...exceptions import ConvergenceWarning, DataError, SeparationWarning, SingularFitWarning
from ...families import get_family
from ...data.coding import FixedCoding
from ...data.formula import arrays_formula, parse_formula, required_columns
from ...data.validation import check_column_roles, role_values
from ...results.base import RowData, compact
from .inference import beta_covariance, naive_comparison
from .cluster import is_dask_frame
from .passes import passes_of
from .result import CrossedResult
from .schall import BOUNDARY, FitOptions, fit_schall, level_precision

logger = logging.getLogger("pyglmm")

_FIT_DOC = r"""
    The model, for grouping factors :math:`k = 1..K` with levels :math:`g`:

    .. math::

        g(\mu_i) = \eta_i = o_i + x_i^\top\beta + \sum_k b_{k, g_k(i)}, \qquad
        b_{k,g} \overset{iid}{\sim} N(0, \sigma_k^2), \qquad
        \mathrm{Var}(y_i \mid b) = \phi V(\mu_i) / a_i,

    binomial-logit (:math:`V = \mu(1-\mu)`), poisson-log (:math:`V = \mu`; an
    offset :math:`\log(\text{exposure})` models rates) or gaussian-identity
    (:math:`V = 1`), prior weights :math:`a_i` (times trials).  It is fitted by Schall's PQL
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
    ``nAGQ=0``.  PQL has no likelihood: the result reports no log-likelihood,
    AIC or BIC, and its standard errors are approximate (see
    :class:`pyglmm.GLMMResult`).

    Common parameters
    -----------------
    family : {"binomial", "poisson", "gaussian"}
        A binomial response is 0/1, or successes with ``trials``; a poisson
        response is non-negative counts (non-integers are warned about and
        fitted as quasi-Poisson data).
    dispersion : {"fixed", "estimate"}, optional
        :math:`\phi` fixed at 1 (default for binomial and poisson, as in glmer) or estimated
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
    callback : callable, optional
        Called after every outer iteration with a dict: ``iteration``,
        ``inner_sweeps``, ``inner_rel``, ``rel_change`` (relative change of the
        linear predictor, the convergence criterion), ``phi``, ``sigma``
        (``{factor: sd}``), ``accelerated`` and ``seconds`` (of the iteration's
        inner solve).  The same report goes to ``logging.getLogger("pyglmm")`` at
        INFO level (``pyglmm fit --verbose`` shows it).

    Returns
    -------
    CrossedResult
        A :class:`pyglmm.GLMMResult` with the crossed engine's history.

    Raises
    ------
    DataError
        Input that cannot be fitted, naming the column, row, level or factor;
        also a response without a finite estimate: binomial 0 in every row or 1
        in every row, or all 0 or all 1 within every level of a factor, and an
        estimated dispersion that falls to 0 (a response reproduced exactly).
    SingularMatrixError
        A singular matrix in the fit or its standard errors (a subclass of
        DataError), naming the columns to blame.

    Warns
    -----
    SeparationWarning
        Fixed effects that (quasi-)separate the response: the fit stops as soon
        as that is certain and ``result.separation`` names the columns.
    ConvergenceWarning, SingularFitWarning
        An iteration limit reached; a variance estimated at ~0.
    """


def glmm(formula, data, family="binomial", *, weights=None, trials=None, offset=None,
         dispersion=None, tol=1e-8, inner_tol=1e-8, var_tol=1e-3, max_iter=100,
         max_inner_iter=1000, se=True, compare_naive=False, backend=None, threads=None, callback=None,
         shuffle=None):
    start = time.perf_counter()
    parsed = parse_model(formula)
    if is_dask_frame(data):  # rows on a Dask cluster: cluster/fit.py
        from .cluster.fit import glmm_dask

        return glmm_dask(parsed, formula, data, family, weights=weights, trials=trials,
                         offset=offset, dispersion=dispersion, tol=tol, inner_tol=inner_tol,
                         var_tol=var_tol, max_iter=max_iter, max_inner_iter=max_inner_iter, se=se,
                         compare_naive=compare_naive, backend=backend, callback=callback, shuffle=shuffle)
    if shuffle is not None:
        raise TypeError("shuffle is for a dask DataFrame; data is a " + type(data).__name__)
    named = {"weights": weights, "trials": trials, "offset": offset}
    _check_roles(data, parsed, named)
    coding = FixedCoding.from_data(parsed.fixed, data)
    extra = {k: role_values(data, k, v) for k, v in named.items()}
    fam = get_family(family)
    opts = _options(fam, dispersion, tol, inner_tol, var_tol, max_iter, max_inner_iter)
    name, kern, threads = _kernels(backend, threads)
    with _backend.blas_single_thread(name):
        y = data[parsed.response].to_numpy()
        X, xcat = coding.split(data)
        d = build_design(X, y, {g: data[g] for g in parsed.groups}, fam, xcat=xcat,
                         feature_names=coding.design_names, coef_order=coding.coef_order,
                         response_name=parsed.response, index=data.index, kern=kern,
                         nthreads=threads, **extra)
        del X, xcat  # the design holds them (or their rows reordered)
        given = (y, extra["trials"], extra["weights"], data.index)
        del data, extra  # if the caller keeps no reference (the CLI), the frame goes before the fit
        return _fit(d, fam, formula, start, opts, se, compare_naive, name, kern, threads, callback,
                    given, intercept=False, offset_name=offset if isinstance(offset, str) else None,
                    has_offset=offset is not None, coding=coding)


glmm.__doc__ = r"""Fit a crossed random-effects GLMM from an lme4-style formula.

    Parameters
    ----------
    formula : str
        ``y ~ x1 + C(cat) + (1|user) + (1|item)``: fixed main effects coded as
        R and formulaic code them (see :mod:`pyglmm.data.coding`: numeric and
        boolean columns as they are; ``C(x)`` and non-numeric columns by
        treatment contrasts against the first sorted level, or a categorical's
        first category; intercept ``Intercept`` unless ``0 +`` or ``- 1``) and
        one ``(1|g)`` term per grouping column.  Interactions and transforms
        are refused: compute them as columns first.
    data : pandas.DataFrame or dask.dataframe.DataFrame
        A dask DataFrame is fitted on the default ``distributed.Client``'s cluster,
        with the same answer (see :mod:`pyglmm.engines.crossed.cluster.fit`); then
        ``weights``, ``trials`` and ``offset`` must be column names, and the
        keyword ``shuffle="largest"`` first moves each level of the factor with the
        most levels to one partition (fewer bytes per pass).
    weights, trials, offset : str or array-like, optional
        Prior weights, binomial trials (the response is then the number of
        successes) and offset: column names or per-row arrays.
""" + _FIT_DOC


def glmm_from_arrays(X, y, groups, family="binomial", *, feature_names=None, intercept=True,
                     weights=None, trials=None, offset=None, dispersion=None, tol=1e-8,
                     inner_tol=1e-8, var_tol=1e-3, max_iter=100, max_inner_iter=1000, se=True,
                     compare_naive=False, backend=None, threads=None, callback=None):
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
    if not groups:
        raise DataError("groups is empty: give at least one grouping factor, "
                        "groups={factor name: per-row labels}")
    fam = get_family(family)
    opts = _options(fam, dispersion, tol, inner_tol, var_tol, max_iter, max_inner_iter)
    name, kern, threads = _kernels(backend, threads)
    formula = arrays_formula(names[int(intercept):], intercept, groups)
    with _backend.blas_single_thread(name):
        d = build_design(X, y, groups, fam, feature_names=names, response_name="y",
                         weights=weights, trials=trials, offset=offset, kern=kern, nthreads=threads)
        index = y.index if isinstance(y, pd.Series) else pd.RangeIndex(d.n)
        given = (y, trials, weights, index)
        return _fit(d, fam, formula, start, opts, se, compare_naive, name, kern, threads, callback,
                    given, intercept=intercept, has_offset=offset is not None)


glmm_from_arrays.__doc__ = r"""Fit a crossed random-effects GLMM from arrays.

    Parameters
    ----------
    X : array-like or DataFrame, shape (n, p)
        Covariates (float64, C-contiguous avoids a copy when ``intercept=False``).
    y : array-like, shape (n,)
        0/1 response, successes when ``trials`` is given, counts (poisson) or a
        gaussian response.
    groups : dict
        ``{factor name: per-row labels}``; labels may be any hashable values.
    feature_names : list of str, optional
        Names of X's columns (default ``x1..xp`` or the DataFrame's columns).
    intercept : bool
        Prepend a column of ones named ``Intercept`` (default True).
    weights, trials, offset : array-like, optional
""" + _FIT_DOC


def parse_model(formula):
    """The parsed formula of a crossed model (random intercepts only)."""
    parsed = parse_formula(formula)
    if parsed.has_slopes:
        term = next(t for t in parsed.random if t.slopes or not t.intercept)
        raise NotImplementedError(
            f"the crossed engine fits random intercepts only; ({' + '.join(term.names)}|{term.group}) "
            "has random slopes: fit one grouping factor with slopes by adaptive quadrature instead")
    return parsed


def _check_roles(data, parsed, named):
    """Name a missing column by its role (response, weights, grouping factor, ...)."""
    special = {parsed.response, *parsed.groups}
    fixed = [c for c in required_columns(parsed) if c not in special]
    check_column_roles(data, parsed.response, parsed.groups, fixed, **named)


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


def _fit(d, fam, formula, start, opts, se, compare_naive, name, kern, threads, callback, given,
         **predict_info):
    """Schall's loop, covariance, naive comparison and the result; ``d`` is a Design or
    the :class:`~pyglmm.engines.crossed.passes.RowPasses` of rows elsewhere (then ``given``
    is None: no per-row outputs), ``given`` the caller's (y, trials, weights, row index)
    for the per-row outputs."""
    passes = passes_of(d, kern, threads)
    d = passes.d
    passes.check_response(fam)
    timings = {"design": time.perf_counter() - start}
    t = time.perf_counter()
    fit = fit_schall(passes, fam, opts, kern, threads, _reporter(callback, d.factor_names))
    timings["schall"] = time.perf_counter() - t
    cov_arr = cov_note = naive = naive_summary = None
    if se or compare_naive:
        t = time.perf_counter()
        cov_arr, cov_note = beta_covariance(passes, fit, kern, threads)
        if fit.separation is not None:  # diverging estimates have no (finite) variance
            diverging = np.isin(d.feature_names, fit.separation.columns)
            cov_arr[diverging, :] = cov_arr[:, diverging] = np.nan
        timings["covariance"] = time.perf_counter() - t
    if compare_naive and fit.separation is None:  # the naive regression would diverge too
        t = time.perf_counter()
        naive, naive_summary = naive_comparison(d, fam, fit, cov_arr, kern, threads)
        timings["naive"] = time.perf_counter() - t
    names, beta, cov_arr, naive = _in_user_order(d, fit.beta, cov_arr, naive)
    cov = pd.DataFrame(cov_arr, names, names) if se else None
    t = time.perf_counter()
    deviance, mu = passes.conditional_fit(fam, fit.beta, fit.b)
    rows = None
    if given is not None:
        y, trials, weights, index = given
        rows = RowData(mu, compact(y), compact(trials), compact(weights), index)
    timings["fitted"] = time.perf_counter() - t

    sigma = pd.Series(np.sqrt(fit.sigma2), index=d.factor_names, name="sd")
    singular = [f for f, s in sigma.items() if s / np.sqrt(fit.phi) < BOUNDARY]
    notes = _warn_about(fit, opts, singular, naive_summary, cov_note, compare_naive)
    b, b_var = _random_effects(d, fit)
    seconds = time.perf_counter() - start
    converged = fit.converged and fit.inner_converged
    logger.info("%s after %d iterations in %.3f s", "converged" if converged else
                "stopped (not converged)", len(fit.history), seconds)
    return CrossedResult(
        formula=formula, family=fam.name, link=fam.link,
        dispersion_mode="estimate" if opts.estimate_dispersion else "fixed",
        coef=pd.Series(beta, index=names, name="coef"), cov=cov, sigma=sigma,
        dispersion=fit.phi, b=b, b_var=b_var, n_obs=d.n,
        n_levels=dict(zip(d.factor_names, d.n_levels.tolist())),
        df_resid=float(d.n_eff - d.p - np.sum(d.n_levels - fit.nu)),
        pearson_chi2=fit.pearson, deviance=deviance, iterations=len(fit.history),
        converged=converged, singular=singular,
        seconds=seconds, timings=timings, backend=name, threads=threads,
        warnings=notes, rows=rows, inner_sweeps=int(sum(h["inner_sweeps"] for h in fit.history)),
        history=_history_frame(fit.history, d.factor_names), naive=naive,
        naive_summary=naive_summary,
        separation=[] if fit.separation is None else fit.separation.columns, **predict_info)


def _in_user_order(d, beta, cov, naive):
    """The coefficients' names, estimates, covariance (or None) and naive table (or
    None), from the design's column order (dense columns first) to the user's
    (``Design.coef_order``): the one place where the fixed effects are reordered."""
    ix = np.arange(d.p) if d.coef_order is None else d.coef_order
    return ([d.feature_names[j] for j in ix], beta[ix],
            None if cov is None else cov[np.ix_(ix, ix)], None if naive is None else naive.iloc[ix])


def _warn_about(fit, opts, singular, naive_summary, cov_note, compare_naive):
    """Warn about non-convergence, separation and boundary fits; return the notes for
    the summary."""
    notes = [] if cov_note is None else [cov_note]
    if not fit.converged and fit.separation is None:
        notes.append(f"Schall's loop did not converge in {opts.max_iter} iterations (relative "
                     f"change {fit.rel_change:.3g}, tol {opts.tol:g}, var_tol {opts.var_tol:g})")
    if not fit.inner_converged:
        notes.append(f"the last inner backfitting loop stopped at {opts.max_inner_iter} sweeps "
                     f"before inner_tol {opts.inner_tol:g}")
    for note in notes:
        warnings.warn(note, ConvergenceWarning, stacklevel=4)
    if fit.separation is not None:
        note = fit.separation.describe()
        warnings.warn(note, SeparationWarning, stacklevel=4)
        notes.append(note)
        if compare_naive:
            notes.append("the naive comparison was skipped: the naive regression separates too")
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


def _reporter(callback, names):
    """The per-iteration report of fit_schall: a log line at INFO on the "pyglmm"
    logger (with the wall time since the previous report: the iteration's inner
    solve and fused pass) and ``callback`` (if given) with a dict whose ``sigma``
    is {factor: sd}."""
    last = [time.perf_counter()]

    def report(row):
        shown = {k: v for k, v in row.items() if k not in ("sigma2", "old_sigma2")}
        shown["sigma"] = dict(zip(names, np.sqrt(row["sigma2"]).tolist()))
        now = time.perf_counter()
        elapsed, last[0] = now - last[0], now
        if logger.isEnabledFor(logging.INFO):
            sig = ", ".join(f"sigma_{k}={v:.4g}" for k, v in shown["sigma"].items())
            logger.info("iteration %3d: relative change %.3g, %s, phi=%.4g; %d inner sweeps "
                        "(%.3f s)", row["iteration"], row["rel_change"], sig, row["phi"],
                        row["inner_sweeps"], elapsed)
        if callback is not None:
            callback(shown)
    return report
