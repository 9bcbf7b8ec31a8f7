r"""Separation of a bounded response by the fixed effects, shared by the engines.

A direction :math:`\delta` of the fixed effects *separates* the response when,
with :math:`t = X\delta`, every row of positive weight with :math:`t_i > 0`
has its response at the upper bound of the mean (binomial: a proportion of
1) and every row with :math:`t_i < 0` at the lower bound (binomial 0, poisson
0; poisson has no upper bound, so no row may have :math:`t_i > 0`), and some
row has :math:`t_i \ne 0`.

Why that proves that the fixed effects have no finite estimate, also in a
GLMM: each row's conditional density :math:`p(y_i \mid \eta_i)` is then
strictly increasing in :math:`s` along :math:`\eta_i + s t_i` for every value
of the random effects (and unchanged where :math:`t_i = 0`), so the integrand
of every cluster's marginal likelihood :math:`\int \prod_j p(y_j \mid
x_j^\top\beta + z_j^\top b)\, \phi_\Sigma(b)\, db` grows pointwise and the
marginal likelihood :math:`L(\beta + s\delta, \Sigma)` is strictly increasing
in :math:`s` for *every* :math:`\Sigma`: :math:`(\beta + \delta, \Sigma)` beats
:math:`(\beta, \Sigma)`, so no point is a maximum.  The random effects do not
absorb it, not even when the separating covariate is constant within clusters
(the sup is approached as :math:`s \to \infty` at any fixed :math:`\Sigma`).
The certificate is exact: it never fires on data that have a finite maximum.
Separation *within* clusters only (a direction that needs each cluster's
random effect too, with a variance growing without bound) is not certified by
it: such data show as a huge random-effects variance.

:class:`SeparationMonitor` watches an iterative fit's fixed effects (O(p) per
iterate) and asks a certificate -- a callable ``certificate(bounds, delta) ->
(rows, complete)`` or None, one pass over the rows wherever they are (in
process, in a cluster's partitions, at federated sites) -- only when a
coefficient keeps moving one way without slowing down.  :func:`row_counts` is
that pass on one block of rows, :func:`verdict` combines the blocks' counts.
"""

from dataclasses import dataclass

import numpy as np

# Range of the mean of the families whose fits can separate: (lower, upper); None: unbounded.
MEAN_BOUNDS = {"binomial": (0.0, 1.0), "poisson": (0.0, None)}
# A coefficient whose steps shrink by less than this factor looks divergent.  Under quasi-
# separation the steps tend to one unit of the linear predictor (measured ratios 0.89-0.93),
# under complete separation they grow; IRLS steps towards a finite estimate shrink faster
# (measured 0.52 at most at the third step on the seed design).
SLOW = 0.75
# A coefficient this large on the scale of the linear predictor (|beta_j| times the root mean
# square of its column) puts its rows' means within e^-10 of a bound or beyond e^10 in a regular
# fit only rarely; one that still moves one way slowly is suspect however small its steps.
HUGE_EFFECT = 10.0


@dataclass
class Separation:
    """The fixed effects that (quasi-)separate the response, as found by the monitor."""

    columns: list  # names of the fixed-effect columns whose estimates diverge
    rows: int  # rows whose fitted means tend to a bound of their range
    complete: bool  # every row (of positive weight) is separated
    iterations: int  # iterations done when separation was certified
    limits: str  # the bounds, e.g. "0 or 1"
    stage: str = "outer iterations"  # what ``iterations`` counts
    stopped: bool = True  # the fit stopped there (else it went on to its limit)
    delta: np.ndarray = None  # the separating direction of the fixed effects (certified)

    def describe(self):
        kind = "complete" if self.complete else "quasi-complete"
        cols = ", ".join(map(repr, self.columns))
        when = (f"the fit stopped after {self.iterations} {self.stage}" if self.stopped else
                f"found after {self.iterations} {self.stage}")
        return (f"{kind} separation by {cols}: the fitted means of {self.rows} row(s) tend to "
                f"{self.limits} as the estimates of {cols} diverge; {when}. Those estimates have "
                "no finite value (their standard errors are NaN): drop or merge the separating "
                "columns or levels")


class SeparationMonitor:
    """Tells, from a fit's iterates of the fixed effects, when they certainly separate
    the response.

    :meth:`check` costs O(p) per iteration; only a coefficient whose last three
    steps share one sign, shrink by less than ``SLOW`` each and are not small beside
    the coefficient prompts a certificate (one pass over the rows).  After a
    certificate fails the next one waits 1, 2, 4, ... iterations, so that a slowly
    converging fit pays a few passes at most.

    Parameters
    ----------
    family : str
        The family's name (only binomial and poisson fits can separate).
    scale : array (p,)
        Root mean square of each fixed-effect column (the size of a step on the
        scale of the linear predictor).
    names : list of str
        The columns' names; ``shown`` (optional) the order in which to name them.
    certificate : callable
        ``certificate(bounds, delta)`` -> ``(separated rows, complete)`` or None
        (see :func:`row_counts`, :func:`verdict`).
    stage : str
        What the iterations are, for :meth:`Separation.describe`.
    """

    STEPS = 3

    def __init__(self, family, scale, names, certificate, shown=None, stage="outer iterations",
                 stops=True):
        self.bounds = MEAN_BOUNDS.get(family)
        self.scale, self.names, self.certificate = np.asarray(scale, dtype=np.float64), names, certificate
        self.shown = range(len(names)) if shown is None else shown
        self.stage, self.stops = stage, stops
        self.betas, self.next_check, self.wait = [], 0, 1

    def check(self, beta, iteration):
        """Record ``beta``, the fixed effects after ``iteration`` iterations; return a
        :class:`Separation` once separation is certain, else None."""
        if self.bounds is None:
            return None
        self.betas = (self.betas + [np.array(beta, dtype=np.float64)])[-(self.STEPS + 1):]
        if len(self.betas) <= self.STEPS or iteration < self.next_check:
            return None
        steps = np.diff(self.betas, axis=0)
        last = np.abs(steps[-1])
        same_sign = np.all(np.sign(steps) == np.sign(steps[-1]), axis=0) & (last > 0)
        slow = np.all(np.abs(steps[1:]) >= SLOW * np.abs(steps[:-1]), axis=0)
        # a diverging coefficient moves by a fair share of its size (about 1/iteration
        # when it grows linearly) or is huge already (it grew with the random effects'
        # variance, as when the clusters separate the rows too, and then creeps alone:
        # Li et al. setting 5 rep 13, b2 = -120 by steps of 1), and it moves visibly on
        # the scale of the linear predictor
        huge = np.abs(beta) * self.scale >= HUGE_EFFECT
        moving = ((last >= 0.02 * np.abs(beta)) | huge) & (last * self.scale >= 1e-3)
        suspect = same_sign & slow & moving
        if not np.any(suspect):
            return None
        found = (self._certify(steps[-1], iteration)
                 or self._alone(self.betas[-1], suspect & huge, iteration))
        if found is None:
            self.next_check, self.wait = iteration + self.wait, 2 * self.wait
        return found

    def final(self, beta, iteration):
        """At the end of a fit (``beta`` after ``iteration`` iterations) with a huge
        coefficient: certify each coefficient alone, in the direction of its sign; a
        :class:`Separation` or None (no certificate when none is huge).

        The fixed effects can reach a flat stretch of the likelihood together with the
        random effects' variance (the clusters separate the rows) and stop there, a
        separating coefficient among them that never crept where :meth:`check` sees it (Li
        et al. setting 6 rep 94: b1 = -15 beside an intercept of -103 from beta = 0, while
        the GLM start shows b1 diverge)."""
        beta = np.asarray(beta, dtype=np.float64)
        if self.bounds is None or not np.any(np.abs(beta) * self.scale >= HUGE_EFFECT):
            return None
        return self._alone(beta, beta != 0, iteration)

    def _certify(self, step, iteration):
        """Try the last step with its coordinates below 10% or 1% of the largest (on the
        scale of the columns) set to 0, then the step as it is."""
        size = np.abs(step) * self.scale
        masks = [(size >= share * size.max()) & (size > 0) for share in (0.1, 0.01, 0.0)]
        for i, main in enumerate(masks):
            if not any(np.array_equal(main, m) for m in masks[:i]):
                found = self._try(np.where(main, step, 0.0), iteration)
                if found is not None:
                    return found
        return None

    def _alone(self, beta, which, iteration):
        """Try each coordinate in ``which`` by itself in the direction of its sign, largest
        first on the scale of the columns (a huge separating coefficient can creep beside
        one that does not separate but follows it: Li et al. setting 5 rep 89, b2 with b1)."""
        for j in np.argsort(-np.abs(beta) * self.scale):
            if which[j]:
                found = self._try(np.where(np.arange(len(beta)) == j, np.sign(beta), 0.0),
                                  iteration)
                if found is not None:
                    return found
        return None

    def _try(self, delta, iteration):
        """The certificate of ``delta`` as a :class:`Separation`, or None."""
        found = self.certificate(self.bounds, delta)
        if found is None:
            return None
        names = [self.names[j] for j in self.shown if delta[j] != 0]  # the user's order
        limits = " or ".join(f"{b:g}" for b in self.bounds if b is not None)
        return Separation(names, *found, iteration, limits, self.stage, self.stops, delta)


def row_counts(t, y, bounds, keep=None):
    """One block of rows' part of a certificate: (whether every row with t != 0 sits at
    its bound, how many rows have t != 0).

    ``t`` is :math:`X\\delta` on the block's rows, ``y`` their response (binomial: the
    proportion), ``bounds`` the mean's (lower, upper) (None: unbounded) and ``keep``
    the rows of positive weight (None: all)."""
    if keep is not None:
        t = np.where(keep, t, 0.0)
    lo, hi = bounds
    up, down = t > 0, t < 0  # exact: rows off the columns of delta give exact zeros
    consistent = not ((up.any() and (hi is None or np.any(y[up] != hi)))
                      or (down.any() and (lo is None or np.any(y[down] != lo))))
    return consistent, int(np.count_nonzero(up) + np.count_nonzero(down))


def verdict(consistent, rows, n_eff):
    """The certificate from :func:`row_counts` (summed over blocks: ``consistent`` for
    all of them, ``rows`` added up) and the rows of positive weight ``n_eff``:
    ``(separated rows, complete)``, or None when ``delta`` does not separate."""
    return (rows, rows == n_eff) if consistent and rows else None
