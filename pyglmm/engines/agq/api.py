r"""Maximum-likelihood fit of a GLMM with one grouping factor by adaptive
Gauss–Hermite quadrature: :func:`glmm_agq`."""

import time
from dataclasses import replace

import numpy as np
import pandas as pd

from ... import backends as _backend
from ...data.validation import HUGE
from ...exceptions import DataError
from ...families import POISSON_ETA_MAX, get_family
from ...results.base import RowData, compact, sigma_of
from .kernels_numpy import lambda_matrix, tri_index
from .model import ClusterObjective, build_arrays, evaluate_clusters, gh_rule
from .optimize import maximize
from .reporting import SINGULAR, SeparationWatch, beta_covariance, fit_notes, huge_sd, reporter
from .result import AGQResult

START_ITER = 25  # IRLS steps of the start's GLM fit


def glmm_agq(formula, data, family="binomial", *, nagq=1, weights=None, trials=None, offset=None,
             tol=1e-10, max_iter=100, se=True, backend=None, threads=None, callback=None):
    r"""Fit a GLMM with one grouping factor by maximum likelihood with ``nagq``-point
    adaptive Gauss–Hermite quadrature (glmer's ``nAGQ``).

    The model, for clusters :math:`c` (the levels of the grouping factor) and
    their rows :math:`j`:

    .. math::

        g(\mu_{cj}) = \eta_{cj} = o_{cj} + x_{cj}^\top\beta + z_{cj}^\top b_c, \qquad
        b_c = \Lambda v_c,\; v_c \overset{iid}{\sim} N(0, I_q),

    :math:`z_{cj}` the random intercept and slopes (``(1 + t | g)``,
    :math:`q \le 3`), :math:`\Sigma = \Lambda\Lambda^\top` unstructured
    through its Cholesky factor; binomial-logit (with trials), poisson-log or
    gaussian-identity with prior weights.  It maximises

    .. math::

        \ell(\beta, \Lambda) = \sum_c \log \int \prod_j p(y_{cj} \mid \eta_{cj})\,
        \phi(v)\, dv

    with each integral by ``nagq`` Gauss–Hermite points per dimension placed on
    the mode of the integrand and scaled by its curvature (tensor grid for
    :math:`q > 1`; ``nagq = 1`` is the Laplace approximation).  For
    :math:`q = 1` this is glmer's ``nAGQ = nagq`` objective; for :math:`q > 1`,
    ``nagq = 1`` is glmer's Laplace fit and ``nagq > 1`` goes beyond lme4.
    The densities include their constants, so :attr:`~AGQResult.loglik` is on
    lme4's scale.

    Optimiser: Newton on :math:`(\beta, \rho)`, :math:`\rho` the log-Cholesky
    parameters (log of :math:`\Lambda`'s diagonal, its other entries as they
    are), with exact gradient and Hessian and a backtracking line search
    (:func:`pyglmm.engines.agq.optimize.maximize`); it stops when the Newton
    decrement :math:`g^\top(-H)^{-1}g/2` falls below ``tol``.  Start: a GLM fit
    without random effects and :math:`\Lambda = I` (gaussian: the least-squares
    fit and :math:`\Lambda = \hat\sigma_{\rm LS} I`).  A diagonal of :math:`\Lambda` that falls
    below 0.05 (relative to :math:`\sigma` for gaussian) on its way down is
    tried at 0 and kept there if that does not lower the log-likelihood (and
    freed again if :math:`10^{-3}` is better at convergence); a diagonal below
    :math:`10^{-4}` is a singular fit (lme4's ``isSingular``), reported in
    ``result.singular`` with a :class:`~pyglmm.SingularFitWarning`.  A standard
    deviation that makes an effect of 10 or more on the linear predictor
    (binomial, poisson; times the column's largest magnitude for a slope) is an
    estimate the quadrature does not compute accurately, of a likelihood that may
    have no finite maximum (:func:`~pyglmm.engines.agq.reporting.huge_sd`):
    ``converged`` is False and a :class:`~pyglmm.ConvergenceWarning` names the
    random effect.

    Separation (binomial, poisson): a direction :math:`\delta` of the fixed
    effects with :math:`x_i^\top\delta > 0` only on rows at the upper bound of the
    mean and :math:`< 0` only on rows at the lower bound makes the marginal
    likelihood increase without end along :math:`\delta` whatever the random
    effects' covariance (:mod:`pyglmm.engines.separation`), so those estimates
    have no finite value.  The iterates of the start and of Newton's method are
    watched (O(p) each) and a coefficient that keeps moving one way prompts an
    exact check of that direction over the rows (and, at the end, a coefficient
    that is huge on the scale of the linear predictor a check of each column
    alone); once it holds, the fit is
    flagged: ``result.separation`` names the columns, a
    :class:`~pyglmm.SeparationWarning` says so, their standard errors are NaN
    and ``converged`` is False.  The fit then moves along that direction until
    the separated rows' contributions are below ``tol`` (doubling steps), fixes
    those coefficients there and maximises over the others, so the other
    estimates and the variances are their limits: the fit without the
    separated rows.

    Gaussian: the residual variance :math:`\sigma^2` is profiled out: Brent's
    method on :math:`\log\sigma` maximises the profile log-likelihood, each
    value a Newton fit of :math:`(\beta, \Lambda)` (warm-started); the fit is
    lmer's ``REML = FALSE`` fit, and the standard errors come from the
    :math:`\beta` block of the observed information given the variances (as
    lmer's ``vcov``).

    Units: the optimiser works on the columns of :math:`X` and :math:`Z`
    divided by their largest magnitudes and (gaussian) on the response
    residualised on the least-squares fit and divided by its residual standard
    deviation (:class:`Units`), so the fit does not depend on the scales of the
    covariates or on the response's location and scale; the estimates, standard
    errors, log-likelihood and modes are mapped back exactly.

    Parameters
    ----------
    formula : str
        ``y ~ x1 + C(cat) + (1 + t | g)``: the fixed part as :func:`pyglmm.glmm`
        codes it, one random-effect term ``(1|g)``, ``(1 + t|g)``, ``(t|g)`` or
        ``(0 + t|g)`` with numeric slope columns.
    data : pandas.DataFrame
    family : {"binomial", "poisson", "gaussian"}
    nagq : int
        Quadrature points per random effect, 1 (Laplace, default) to 50; the
        cost per cluster grows as ``nagq ** q``.
    weights, trials, offset : str or array-like, optional
        Prior weights, binomial trials (the response is then the number of
        successes) and offset: column names or per-row arrays.  Weights must be finite and
        non-negative; rows of weight (or trials) 0 contribute nothing to the
        likelihood.  As in glmer they count in ``n_obs`` and get fitted values,
        and a level whose every row has weight 0 keeps :math:`\hat b = 0` with
        the prior's variance (so it predicts at the population level).
    tol : float
        Newton decrement that stops the optimiser (log-likelihood units).
    max_iter : int
        Newton iterations at most (reaching it is reported and warned about).
    se : bool
        Compute the covariance of :math:`\hat\beta` (default True).
    backend : {"cpp", "numba", "numpy"}, optional
        Kernel backend (default: the fastest with AGQ kernels).
    threads : int, optional
    callback : callable, optional
        Called with each Newton iteration's record (a dict: ``iteration``,
        ``loglik``, ``decrement``, ``step``, ``fixed``).

    Returns
    -------
    AGQResult

    Raises
    ------
    DataError
        Input that cannot be fitted, naming the column, row or factor (also a
        formula with no or several grouping factors, or more than 3 random
        effects per level).

    Warns
    -----
    ConvergenceWarning, SeparationWarning, SingularFitWarning
    """
    start = time.perf_counter()
    fam = get_family(family)
    gh_rule(nagq)  # a bad nagq fails before the data are read
    arrays = build_arrays(formula, data, fam, weights=weights, trials=trials, offset=offset)
    fitted = arrays.weighted()  # the rows of positive weight
    _check_response(fitted)
    name = _backend.backend(backend, engine="agq")
    kern = _backend.kernels(name, engine="agq")
    if threads is not None and not (isinstance(threads, (int, np.integer)) and threads >= 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    threads = 1 if name == "numpy" else int(threads or _backend.get_num_threads())
    timings = {"design": time.perf_counter() - start}
    t0 = time.perf_counter()
    units = Units(fitted)
    work = units.arrays
    watch = SeparationWatch(fam.name, np.einsum("ij,ij->j", work.X, work.X), work.n,
                            work.fixed_names, work.certificate)
    beta0 = (np.zeros(arrays.p) if fam.name == "gaussian" else
             glm_start(work, watch.stage("iterations of the GLM start")))
    objective = ClusterObjective(kern, work, nagq, 1.0, threads)
    x0 = np.r_[beta0, objective.param.rho(_identity_theta(arrays.q))]
    callback = reporter(callback)
    with _backend.blas_single_thread(name):
        if fam.name == "gaussian":
            opt = _profile_sigma(objective, x0, tol, max_iter)
            opt = replace(opt, history=[units.row(row) for row in opt.history])
            for row in opt.history:
                callback(row)
        else:
            opt = _maximize(objective, x0, 1.0, tol, max_iter, callback,
                            watch.stage("Newton iterations"))
            watch.final(opt.x, opt.iterations)
        timings["optimise"] = time.perf_counter() - t0
        return _result(formula, arrays, objective, units, opt, se, name, threads, start, timings,
                       weights, trials, offset, data, watch.found)


class ColumnScales:
    r"""The optimiser's units of the fixed effects and of :math:`\Lambda`: the
    columns of :math:`X` and :math:`Z` divided by their largest magnitudes
    :math:`d_j`, :math:`e_a` (1 for a column of zeros), so that Newton's method
    sees a well-scaled Hessian: :math:`\beta_j = \beta'_j/d_j` and
    :math:`\Lambda = E^{-1}\Lambda'` (rows divided by :math:`e_a`; still lower
    triangular).  The federated coordinator (which holds no rows) builds it from
    the sites' column maxima and maps its optimiser's parameters with
    :meth:`params` and :meth:`chain`.

    Parameters
    ----------
    x_max, z_max : array-like (p,), (q,)
        The largest magnitude in each column of X and of Z over the rows of
        positive weight.
    """

    def __init__(self, x_max, z_max):
        self.x_scale, self.z_scale = _nonzero(x_max), _nonzero(z_max)
        tri = tri_index(len(self.z_scale))
        self.rows = np.array([a for a, _ in tri])  # theta's rows of Lambda
        self.diagonal = np.array([a == b for a, b in tri])

    def beta(self, beta):
        return beta / self.x_scale

    def theta(self, theta):
        return theta / self.z_scale[self.rows]

    def cov(self, cov):
        """The covariance of :meth:`beta` from that of the working beta."""
        return cov / np.outer(self.x_scale, self.x_scale)

    def params(self, x):
        r"""The optimiser's parameters :math:`(\beta', \rho')` (log-Cholesky,
        :class:`~pyglmm.engines.agq.model.LogCholesky`) in the data's units: a log
        diagonal less :math:`\log e_a`, an off-diagonal entry over :math:`e_a`."""
        p, e = len(self.x_scale), self.z_scale[self.rows]
        rho = np.asarray(x[p:], dtype=np.float64)
        return np.r_[self.beta(np.asarray(x[:p], dtype=np.float64)),
                     np.where(self.diagonal, rho - np.log(e), rho / e)]

    def chain(self, g, h):
        """The gradient and Hessian in the data's parameters -> in :meth:`params`' argument
        (the map is diagonal and affine; None stays None)."""
        jac = np.r_[1 / self.x_scale, np.where(self.diagonal, 1.0, 1 / self.z_scale[self.rows])]
        return (None if g is None else g * jac), (None if h is None else h * np.outer(jac, jac))


class Units(ColumnScales):
    r"""The units the optimiser works in, and the map of its estimates back.

    Every family: the columns of :math:`X` and :math:`Z` divided by their largest
    magnitudes (:class:`ColumnScales`).  Gaussian also: the response residualised
    on the weighted least-squares fit without random effects and divided by its residual
    standard deviation :math:`s`, :math:`y' = (y - o - X\hat\beta_0)/s`, with no
    offset and the prior weights divided by their largest, :math:`a' = a/k`; the
    fit then starts at :math:`\beta' = 0`, :math:`\Lambda' = I`,
    :math:`\sigma' = 1` whatever the response's location and scale.  The model is
    equivariant under these maps: :math:`\beta = \hat\beta_0 + sD^{-1}\beta'`,
    :math:`\Lambda = sE^{-1}\Lambda'`, :math:`\sigma^2 = k s^2\sigma'^2` (the
    modes :math:`v` are unchanged; the gaussian density depends on
    :math:`\sigma^2/a` only), and the log-likelihood is that of :math:`y'` less
    the Jacobian :math:`n\log s`.  ``arrays`` holds the working arrays.

    Parameters
    ----------
    arrays : AGQArrays
        The rows of positive weight.
    """

    def __init__(self, arrays):
        super().__init__(np.max(np.abs(arrays.X), axis=0), np.max(np.abs(arrays.Z), axis=0))
        X, Z = arrays.X / self.x_scale, arrays.Z / self.z_scale
        self.shift, self.scale, self.weight_scale = np.zeros(arrays.p), 1.0, 1.0
        y, weights, offset = arrays.y, arrays.weights, arrays.offset
        if arrays.family.name == "gaussian":
            k = float(weights.max())
            sw = np.sqrt(weights / k)
            t = y - offset
            c = float(np.max(np.abs(t))) or 1.0
            gamma = np.linalg.lstsq(X * sw[:, None], t / c * sw, rcond=None)[0]
            r = t / c - X @ gamma
            s = c * float(np.sqrt(np.sum(weights / k * r * r) / max(arrays.n - arrays.p, 1)))
            if 0 < s < 1 / HUGE:
                raise DataError(f"response {arrays.response!r} varies too little for double "
                                f"precision: its residual standard deviation {s:.3g} is below "
                                f"{1 / HUGE:.3g}, whose square underflows; rescale it")
            self.scale = s if s > 0 else c  # s = 0: an exact fit
            self.shift, self.weight_scale = c * gamma / self.x_scale, k
            if not np.isfinite(self.shift).all():
                raise DataError(f"response {arrays.response!r}: its least-squares fit on the "
                                "fixed effects overflows (the response is too large for the "
                                "scale of the fixed-effect columns); rescale them")
            y, weights, offset = r / (self.scale / c), weights / k, np.zeros(arrays.n)
        self.jacobian = arrays.n * np.log(self.scale)
        c = np.ascontiguousarray
        self.arrays = replace(arrays, X=c(X), Z=c(Z), y=c(y), weights=c(weights), offset=c(offset))

    def beta(self, beta):
        return self.shift + self.scale * super().beta(beta)

    def theta(self, theta):
        return self.scale * super().theta(theta)

    def cov(self, cov):
        """The covariance of :meth:`beta` from that of the working beta."""
        return super().cov(cov) * self.scale**2

    def dispersion(self, dispersion):
        return self.weight_scale * self.scale**2 * dispersion

    def loglik(self, loglik):
        return loglik - self.jacobian

    def row(self, row):
        """An iteration's record with the log-likelihood on the response's scale."""
        return {**row, "loglik": self.loglik(row["loglik"])}


def _nonzero(scale):
    """Column scales: ``scale`` with 1 for a column of zeros."""
    scale = np.asarray(scale, dtype=np.float64)
    return np.where(scale > 0, scale, 1.0)


def _check_response(arrays):
    fam, y = arrays.family, arrays.y
    if fam.name == "binomial" and (np.all(y == 0) or np.all(y == 1)):
        raise DataError(f"response {arrays.response!r} is {int(y[0])} in every row: the binomial "
                        "model has no finite estimate")
    if fam.name == "poisson" and np.all(y == 0):
        raise DataError(f"response {arrays.response!r} is 0 in every row: the poisson model has "
                        "no finite estimate")


def _identity_theta(q):
    return np.array([float(a == b) for a in range(q) for b in range(a + 1)])


def glm_start(arrays, watch=None):
    """Start values: the GLM fit without random effects by IRLS (``START_ITER``
    steps at most); ``watch(beta, iteration)`` sees each IRLS iterate."""
    fam, X, y, a, o = arrays.family, arrays.X, arrays.y, arrays.weights, arrays.offset
    smoothed = {"binomial": (a * y + 0.5) / (a + 1), "poisson": y + 0.1}.get(fam.name, y)
    eta, beta = fam.linkfun(smoothed), np.zeros(arrays.p)
    for it in range(1, START_ITER + 1):
        mu = fam.irls_mean(eta)
        var = fam.variance(mu)
        sw = np.sqrt(a * var)
        new = np.linalg.lstsq(X * sw[:, None], (eta - o + (y - mu) / var) * sw, rcond=None)[0]
        done = np.max(np.abs(new - beta)) < 1e-8 * (1 + np.max(np.abs(new)))
        beta, eta = new, o + X @ new
        if watch is not None:
            watch(beta, it)
        if done:
            break
    return beta


def _maximize(objective, x0, scale, tol, max_iter, callback, watch=None):
    p = objective.arrays.p
    bounded = p + np.flatnonzero(objective.param.diagonal)
    try:
        return maximize(objective, x0, bounded=bounded, scale=scale, tol=tol, max_iter=max_iter,
                        callback=callback, watch=watch)
    except FloatingPointError:
        bad = np.flatnonzero(~np.isfinite(objective.loglik))
        if not bad.size:
            raise
        raise _unevaluable(objective.arrays, bad) from None


def _unevaluable(arrays, bad):
    r"""The DataError for clusters whose log-likelihood is not finite at the start.

    The integrand's curvature :math:`H = I + \Lambda^\top Z^\top W Z\Lambda` at the
    mode is then not positive definite to rounding: with fewer rows than random
    effects, :math:`Z^\top WZ` has rank below q and a weight :math:`W` beyond about
    :math:`10^{16}` (a poisson mean near :math:`e^{37}`) swamps the identity, so
    the Laplace and quadrature terms cannot be computed in double precision (the
    mode exists: :math:`\tilde h` is strictly concave).  With enough rows: a poisson
    mean beyond the fit's cap :math:`e^{100}` (``POISSON_ETA_MAX``), whose counts
    the model cannot reach."""
    labels = ", ".join(repr(label) for label in arrays.levels[bad[:5]]) + (
        f" and {bad.size - 5} more" if bad.size > 5 else "")
    rows = np.diff(arrays.starts)[bad]
    cause = (f"the curvature of the random effects at the mode is singular to rounding (fewer "
             f"rows than the {arrays.q} random effects and a fitted mean beyond ~1e16"
             if rows.min() < arrays.q else "the fitted means are too large (a poisson mean is "
             f"capped at e^{POISSON_ETA_MAX:g} ~ {np.exp(POISSON_ETA_MAX):.2g}")
    rows = f"{rows.min()}" + (f"-{rows.max()}" if rows.max() > rows.min() else "")
    return DataError(
        f"the marginal log-likelihood of cluster(s) {labels} of {arrays.group!r} ({rows} "
        f"row(s)) cannot be computed at the start: {cause}, e.g. a huge count or offset); "
        "drop those clusters or the random slopes, or rescale the response or offset")


def _profile_sigma(objective, x0, tol, max_iter):
    """Gaussian: maximise the profile log-likelihood over log sigma by Brent's method
    from sigma = 1 (the objective's response is standardised: :class:`Units`)."""
    from scipy.optimize import minimize_scalar

    warm = {"x": x0, "opt": None, "iterations": 0}

    def negative_profile(log_sigma):
        sigma = float(np.exp(log_sigma))
        objective.dispersion = sigma**2
        x = warm["x"].copy()
        x[~np.isfinite(x)] = np.log(1e-3 * sigma)  # a fixed boundary is tried afresh
        opt = _maximize(objective, x, sigma, tol, max_iter, None)
        warm["x"] = opt.x
        warm["iterations"] += opt.iterations
        if warm["opt"] is None or opt.loglik > warm["opt"][1].loglik:
            warm["opt"] = (sigma, opt)
        return -opt.loglik

    minimize_scalar(negative_profile, bracket=(-0.5, 0.0), method="brent",
                    options={"xtol": 1e-7})
    sigma, opt = warm["opt"]
    objective.dispersion = sigma**2
    return replace(opt, iterations=warm["iterations"])  # Newton iterations of all the inner fits


def _result(formula, arrays, objective, units, opt, se, name, threads, start, timings, weights,
            trials, offset, data, separation):
    fam, p, q = arrays.family, arrays.p, arrays.q
    beta, theta = opt.x[:p], objective.param.theta(opt.x[p:])  # in the optimiser's units
    t0 = time.perf_counter()
    loglik, _, hess, condvar, failed = evaluate_clusters(
        objective.kern, objective.arrays, beta, theta, objective.nagq, objective.modes,
        2 if se else 0, objective.dispersion, objective.threads)
    diverging = [] if separation is None else separation.columns
    cov = units.cov(beta_covariance(hess, p, theta, q, fam.name == "gaussian",
                                    arrays.fixed_names, separation)) if se else None
    timings["covariance"] = time.perf_counter() - t0
    beta, theta = units.beta(beta), units.theta(theta)  # in the data's units
    dispersion = units.dispersion(objective.dispersion)
    sigma_res = np.sqrt(dispersion) if fam.name == "gaussian" else 1.0
    diag = theta[objective.param.diagonal]
    singular = [arrays.group] if np.any(np.abs(diag) < SINGULAR * sigma_res) else []
    lam = lambda_matrix(theta, q)
    b = objective.modes @ lam.T                                   # (m, q): Lambda v
    b_var = np.einsum("ab,cbd,ad->ca", lam, condvar, lam)         # diag(Lambda H^-1 Lambda')
    names = arrays.random_names
    eta = arrays.offset + arrays.X @ beta + np.einsum("nq,nq->n", arrays.Z,
                                                      np.repeat(b, np.diff(arrays.starts), axis=0))
    mu = fam.irls_mean(eta)  # clamped as in the crossed engine (pyglmm.families), finite V(mu)
    deviance = fam.deviance(arrays.y, mu, arrays.weights)
    pearson = float(np.sum(arrays.weights * (arrays.y - mu) ** 2 / fam.variance(mu)))
    re_cov = {arrays.group: pd.DataFrame(lam @ lam.T, names, names)}
    if names == ["(Intercept)"]:
        b_frame = pd.Series(b[:, 0], index=arrays.levels, name=arrays.group)
        var_frame = pd.Series(b_var[:, 0], index=arrays.levels, name=arrays.group)
    else:
        b_frame = pd.DataFrame(b, index=arrays.levels, columns=names)
        var_frame = pd.DataFrame(b_var, index=arrays.levels, columns=names)
    huge = huge_sd(fam.name, theta, q, names, units.z_scale)
    notes = fit_notes(opt, failed, singular, arrays.group, separation, huge)
    y_given, index = data[arrays.response].to_numpy(), data.index
    given = {k: (data[v].to_numpy() if isinstance(v, str) else v)
             for k, v in (("trials", trials), ("weights", weights))}
    rows = RowData(arrays.to_caller_order(mu), compact(y_given), compact(given["trials"]),
                   compact(given["weights"]), index)
    history = pd.DataFrame([{k: v for k, v in row.items() if k != "fixed"} for row in opt.history])
    res = AGQResult(
        formula=formula, family=fam.name, link=fam.link,
        dispersion_mode="estimate" if fam.name == "gaussian" else "fixed",
        coef=pd.Series(beta, index=arrays.fixed_names, name="coef"), cov=cov,
        sigma=sigma_of(re_cov), dispersion=float(dispersion),
        b={arrays.group: b_frame}, b_var={arrays.group: var_frame},
        re_cov=None if names == ["(Intercept)"] else re_cov,
        loglik=units.loglik(float(loglik.sum())),
        n_obs=arrays.n, n_levels={arrays.group: arrays.m}, df_resid=0.0, pearson_chi2=pearson,
        deviance=float(deviance), iterations=opt.iterations,
        converged=opt.converged and not failed and separation is None and not huge,
        singular=singular,
        separation=list(diverging), seconds=0.0, timings=timings, backend=name, threads=threads,
        warnings=notes, intercept=False, offset_name=offset if isinstance(offset, str) else None,
        has_offset=offset is not None, coding=arrays.coding, rows=rows, nagq=objective.nagq,
        history=history)
    res.df_resid = float(arrays.n - res.df_model)
    res.seconds = time.perf_counter() - start
    return res
