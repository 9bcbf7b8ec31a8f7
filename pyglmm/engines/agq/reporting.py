r"""What the AGQ engine's fits (pooled, :mod:`pyglmm.engines.federated`) report
besides the estimates: the covariance of :math:`\hat\beta`
(:func:`beta_covariance`), the singular-fit rule (``SINGULAR``), the
per-iteration log (:func:`reporter`), the watch for separation
(:class:`SeparationWatch`) and the warnings and notes (:func:`fit_notes`)."""

import logging
import warnings

import numpy as np
import pandas as pd

from ...exceptions import ConvergenceWarning, SeparationWarning, SingularFitWarning
from ..separation import HUGE_EFFECT, SeparationMonitor
from .kernels_numpy import lambda_matrix, tri_index

logger = logging.getLogger("pyglmm")
SINGULAR = 1e-4  # lme4's isSingular: a diagonal of Lambda (relative to sigma for gaussian) below this


def beta_covariance(hess, p, theta, q, gaussian, names, separation=None):
    r"""cov(beta): the beta block of the inverse of minus the Hessian over beta and the
    entries of theta, leaving out the columns of Lambda whose diagonal is on the
    boundary (0: their entries are not identified there); gaussian: the inverse of
    the beta block (the information given the variances, as lmer's ``vcov``).

    The fixed effects that a :class:`~pyglmm.engines.separation.Separation` names
    (no finite estimate) are left out too and get NaN rows and columns; when every row
    is separated the other parameters have no finite estimate either (the likelihood
    tends to its supremum, 1, whatever they are) and the whole covariance is NaN."""
    from ...data.validation import checked_inverse

    tri = tri_index(q)
    zero_columns = {b for (a, b), value in zip(tri, theta) if a == b and value == 0}
    diverging = [] if separation is None else names if separation.complete else separation.columns
    kept = ~np.isin(names, list(diverging))
    free = np.r_[kept, [not gaussian and b not in zero_columns for _, b in tri]]
    labels = [str(name) for name in np.asarray(names)[kept]] + [
        f"theta[{i}]" for i in np.flatnonzero(free[p:])]
    cov = np.full((p, p), np.nan)
    if kept.any():
        inv = checked_inverse(-hess[np.ix_(free, free)], labels, "the observed information")
        cov[np.ix_(kept, kept)] = inv[:kept.sum(), :kept.sum()]
    return pd.DataFrame(cov, names, names)


def reporter(callback):
    """Each Newton iteration's record to the "pyglmm" logger (INFO) and ``callback``."""
    def report(row):
        logger.info("Newton iteration %3d: loglik %.10g, decrement %.3g, step %g",
                    row["iteration"], row["loglik"], row["decrement"], row["step"])
        if callback is not None:
            callback(row)
    return report


class SeparationWatch:
    """Watches the stages of an AGQ fit (the GLM start's IRLS, Newton's method) for
    separation of the fixed effects, each stage with its own
    :class:`~pyglmm.engines.separation.SeparationMonitor`; ``found`` holds the first
    :class:`~pyglmm.engines.separation.Separation` (None so far).

    ``column_squares`` are the sums over the ``n`` rows of each fixed-effect column
    squared, ``certificate(bounds, delta)`` is the certificate over all the fit's rows.
    """

    def __init__(self, family, column_squares, n, names, certificate):
        self.family, self.names, self.certificate = family, list(names), certificate
        self.scale = np.sqrt(np.asarray(column_squares, dtype=np.float64) / n)
        self.found = None

    def stage(self, name):
        """``watch(x, iteration)`` for the iterates of one stage (``x`` starts with beta):
        when separation is found (or at this stage's first call if an earlier stage
        found it) the separating direction over all of ``x`` (zero past beta) and the
        coordinates to fix: its own, or all of them under complete separation (the
        likelihood then tends to its supremum whatever the others are); else None (see
        :func:`pyglmm.engines.agq.optimize.maximize`)."""
        monitor = SeparationMonitor(self.family, self.scale, self.names, self.certificate,
                                    stage=name, stops=False)
        state = {"told": False}

        def watch(x, iteration):
            p = len(self.names)
            if self.found is None:
                self.found = monitor.check(np.asarray(x)[:p], iteration)
            if self.found is None or state["told"]:
                return None
            state["told"] = True
            delta = np.zeros(len(x))
            delta[:p] = self.found.delta
            return delta, np.full(len(x), True) if self.found.complete else delta != 0
        return watch

    def final(self, x, iterations):
        """After the fit, at its estimates ``x`` (starting with beta) after ``iterations``
        Newton iterations: if nothing was found and a coefficient is huge, certify the
        coefficients one by one (:meth:`pyglmm.engines.separation.SeparationMonitor.final`);
        returns ``found``."""
        if self.found is None:
            monitor = SeparationMonitor(self.family, self.scale, self.names, self.certificate,
                                        stage="Newton iterations (at the estimates)", stops=False)
            self.found = monitor.final(np.asarray(x)[:len(self.names)], iterations)
        return self.found


def huge_sd(family, theta, q, names, z_scale):
    r"""The random effects, as (name, sd), whose standard deviation times the largest
    magnitude of their column (``z_scale``: 1 for an intercept) is at least
    :data:`~pyglmm.engines.separation.HUGE_EFFECT` (binomial, poisson): an effect of that size
    on the linear predictor, whatever the column's units.

    Such an estimate is not reliable: K-point quadrature is no longer accurate out
    there, and the likelihood may have no finite maximum, the clusters' effects with
    the fixed effects separating the rows.  Li et al.'s simulation has both cases
    (seed 1).  Setting 5 rep 99 (tests/fixtures): the exact integral at the K = 1
    estimates, sigma = 470, is -4.93 (the quadrature's value -2.58) and rises to
    -4.83, -4.80, -4.79 as they are doubled, 4- and 16-fold, so K-point quadrature
    showed a spurious maximum.  Setting 2 rep 73 (one site's 500 responses all 0, the
    other's 95 % 1): sigma is 15.6, 7.1, 10.6 and 9.46 at K = 1, 2, 5 and 25 (glmer,
    not converged: 12.7, 10.3, 9.34 at K = 1, 5, 25): the maximum looks finite, and
    the fits at K = 1 and 5 are flagged for their inaccuracy alone."""
    if family == "gaussian":
        return []
    lam = lambda_matrix(theta, q)
    sd = np.sqrt(np.einsum("ij,ij->i", lam, lam))
    return [(name, float(s)) for name, s, e in zip(names, sd, z_scale) if s * e >= HUGE_EFFECT]


def fit_notes(opt, failed, singular, group, separation=None, huge=()):
    """Warn (ConvergenceWarning, SeparationWarning, SingularFitWarning) about the fit
    that :func:`pyglmm.engines.agq.optimize.maximize` returned as ``opt``, ``failed``
    clusters whose mode search did not converge, a ``singular`` fit, a
    :class:`~pyglmm.engines.separation.Separation` and ``huge`` random-effect sds
    (:func:`huge_sd`); return the notes for the result."""
    notes = []
    if not opt.converged and separation is None:  # separation says why
        notes.append(f"Newton's method did not converge in {opt.iterations} iterations (Newton "
                     f"decrement {opt.decrement:.3g})")
    if failed:
        notes.append(f"the mode search did not converge in {failed} cluster(s)")
    for name, sd in huge:
        notes.append(f"the standard deviation of the random effect {name!r} of {group!r} is "
                     f"{sd:.3g}: with an effect that large on the linear predictor the "
                     "quadrature is not accurate, and the likelihood may have no finite "
                     "maximum (the clusters' effects separating the rows with the fixed "
                     "effects); the estimates are not reliable: compare a fit with more "
                     "quadrature points (nagq), or drop the random effect or the separating "
                     "columns")
    for note in notes:
        warnings.warn(note, ConvergenceWarning, stacklevel=4)
    extra = [(separation.describe(), SeparationWarning)] if separation is not None else []
    if singular:
        extra.append((f"boundary (singular) fit: the covariance of the random effects of {group!r} "
                      "is singular (a diagonal of its Cholesky factor is ~0); consider simplifying "
                      "the term", SingularFitWarning))
    for note, category in extra:
        warnings.warn(note, category, stacklevel=4)
        notes.append(note)
    return notes
