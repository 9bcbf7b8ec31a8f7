r"""Degenerate data: responses that leave some parameter without a finite estimate.

Checked before the fit by :func:`check_response_varies`, from the response and
the per-level event counts (errors: the cause is certain and cheap to see, and
no finite estimate exists):

* a binomial response that is 0 in every row, or 1 in every row (counting the
  rows of positive weight): the intercept diverges;
* a binomial response that is all 0 or all 1 within every level of a factor:
  the random effects of that factor separate the data.  The marginal
  likelihood then grows without bound in :math:`\sigma_k` (each level's
  probability of being all 0 or all 1 tends to its limit as
  :math:`\sigma_k \to \infty`), so :math:`\sigma_k` has no finite ML estimate,
  and the finite value PQL would return is an artefact of its approximation.

Watched during the fit:

* separation by the fixed effects (:class:`SeparationMonitor`): no check up
  front is cheap (it is a linear programme), but separation shows in the
  iterates.  A coefficient whose steps keep one sign without shrinking (O(p)
  per iteration; a converging fit's steps contract, while under separation a
  coefficient grows by about one unit of the linear predictor per iteration,
  or faster) prompts :func:`separation_certificate`, one pass over X: a
  direction :math:`\delta` of the fixed effects with :math:`x_i^\top\delta > 0`
  only on rows at the upper bound of the mean and :math:`< 0` only on rows at
  the lower bound proves that the fixed effects have no finite estimate (the
  random effects cannot stop it: :mod:`pyglmm.engines.separation`, shared with
  the AGQ and federated engines), so the loop stops and the result is flagged
  and warned about;
* an estimated dispersion that collapses to 0 (:func:`exact_fit_error`): the
  model reproduces the response exactly (a constant gaussian response, one
  constant within every level of a factor, or an exact linear function of the
  covariates); the error says which.  Detected from the Pearson statistic the
  fit computes anyway, it costs nothing up front.
"""

import numpy as np

from ...exceptions import DataError
from .. import separation
from ..separation import MEAN_BOUNDS

PHI_EXACT = 1e-14  # estimated dispersion / initial scale below this: the model fits exactly
CONSTANT = 1e-9  # spread / size of values below this: they are constant
SCREEN = 1 << 16  # rows checked first for a mix of outcomes (the rest only if they show none)


def _positive_rows(d):
    """Mask of the rows with positive prior weight (None: all rows)."""
    keep = d.prior > 0 if d.prior.size else None
    return None if keep is None or keep.all() else keep


def _level_sums(d, k, weights, rows=slice(None)):
    """Sums over the levels of factor k of ``weights`` given for ``rows`` (None: ones)."""
    lv = d.factor_slices()[k]
    return np.bincount(d.codes[rows, k], weights=weights, minlength=lv.stop)[lv]


def check_response_varies(d, family, at_bound=None, outcomes=None):
    """Raise :class:`DataError` when a response whose mean is bounded (binomial) leaves
    no finite estimate (see the module's docstring).

    The first ``SCREEN`` rows almost always show both outcomes, and (per factor)
    a level with both; only otherwise are all rows scanned (O(N)).
    ``at_bound(bound, rows)`` (whether the response is ``bound`` in all ``rows`` of
    positive weight) and ``outcomes(k, rows)`` (see :func:`_level_outcomes`) read
    d's rows unless given (the cluster passes give them over all partitions).
    """
    bounds = MEAN_BOUNDS.get(family.name)
    if bounds is None:
        return
    keep = None if at_bound is not None else _positive_rows(d)
    at_bound = at_bound or (lambda bound, rows: _all_at(d, keep, bound, rows))
    outcomes = outcomes or (lambda k, rows: _level_outcomes(d, k, rows))
    where = "every row" if d.n_eff == d.n else "every row with positive weight"
    for bound in bounds:
        if bound is not None and at_bound(bound, slice(0, SCREEN)) and at_bound(bound, slice(None)):
            raise DataError(f"the response {d.response_name!r} is {bound:g} in {where}: the "
                            f"intercept has no finite estimate (every fitted mean tends to {bound:g})")
    if None not in bounds:
        for k in range(len(d.factor_names)):
            if _pure(*outcomes(k, slice(0, SCREEN))) and _pure(*outcomes(k, slice(None))):
                _raise_level_separation(d, k, *bounds, *outcomes(k, slice(None)))


def _all_at(d, keep, bound, rows):
    """Whether the response is ``bound`` in all ``rows`` of positive weight."""
    at = d.y[rows] == bound
    return bool(np.all(at if keep is None else at | ~keep[rows]))


def _level_outcomes(d, k, rows):
    """Per level of factor k on ``rows``: the weight of the rows, and the weight of
    the rows times the response (the number of events for binomial)."""
    w, y = (d.prior[rows] if d.prior.size else None), d.y[rows]
    return _level_sums(d, k, w, rows), _level_sums(d, k, y if w is None else w * y, rows)


def _pure(total, events):
    """Whether every level (``total`` weight, ``events``) has its response at 0, or at 1,
    in all its rows of positive weight (the response lies in [0, 1])."""
    used = total > 0
    return bool(np.all((events[used] == 0) | (events[used] == total[used])))


def _raise_level_separation(d, k, lo, hi, total, events):
    f = d.factor_names[k]
    used = total > 0
    n_low, n_high = int(np.sum(events[used] == 0)), int(np.sum(events[used] == total[used]))
    single = " (every level has a single row)" if d.counts[d.factor_slices()[k]].max() <= 1 else ""
    raise DataError(f"the response {d.response_name!r} is all {lo:g} or all {hi:g} within every level "
                    f"of factor {f!r}{single}: {n_low} levels all {lo:g}, {n_high} all {hi:g}. The random "
                    f"effects (1|{f}) separate the data, so the standard deviation of {f!r} has no "
                    f"finite estimate; drop (1|{f}) or aggregate its rows")


def exact_fit_error(d, phi, start, cause=None):
    """The :class:`DataError` for an estimated dispersion ``phi`` that collapsed to
    (almost) 0 from ``start``: the response is reproduced exactly.  Says whether the
    response is constant, or names the factor within whose levels it is (O(N) per
    factor, on this error path only), unless the ``cause`` is given."""
    cause = cause or _exact_fit_cause(d)
    return DataError(f"the estimated dispersion fell to {phi:.3g} ({phi / start:.2g} of its start): "
                     f"{cause}, so there is no residual variation to estimate it from. Fit with "
                     "dispersion='fixed' (a known residual variance) or drop the terms that "
                     "reproduce the response")


def _exact_fit_cause(d):
    keep = _positive_rows(d)
    r = d.y - d.offset if d.offset.size else d.y
    kept = r if keep is None else r[keep]
    what = f"the response {d.response_name!r}" + (" minus the offset" if d.offset.size else "")
    size = np.abs(kept).max()
    if np.ptp(kept) <= CONSTANT * size:
        rows = "every row" if keep is None else "every row with positive weight"
        return f"{what} is constant ({kept[0]:g} in {rows})"
    w = d.prior if d.prior.size else None
    for k, f in enumerate(d.factor_names):
        total = _level_sums(d, k, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nan_to_num(_level_sums(d, k, r if w is None else w * r) / total)
        dev = np.abs(r - mean[d.codes[:, k] - d.offsets[k]])
        if (dev if keep is None else dev[keep]).max() <= CONSTANT * size:
            return f"{what} is constant within every level of factor {f!r}"
    return f"the fixed and random effects reproduce {what} exactly"


class SeparationMonitor(separation.SeparationMonitor):
    """:class:`pyglmm.engines.separation.SeparationMonitor` for Schall's loop on design
    ``d``: the columns' scale from ``d.XtX``, their names in the user's order, and
    ``certificate`` (default: :func:`separation_certificate` on d's rows)."""

    def __init__(self, d, family, certificate=None):
        self.d = d
        super().__init__(family.name, np.sqrt(np.diag(d.XtX) / d.n), d.feature_names,
                         certificate or (lambda bounds, delta: separation_certificate(d, bounds, delta)),
                         shown=d.coef_order)


def separation_certificate(d, bounds, delta):
    r"""Whether the fixed-effects direction ``delta`` separates the response.

    With :math:`t = X\delta`, rows of positive weight with :math:`t > 0` must all
    sit at the upper bound of the mean and rows with :math:`t < 0` at the lower
    one (and some row must have :math:`t \ne 0`); moving :math:`\beta` along
    :math:`\delta` then improves the fit without end.  Returns
    ``(separated rows, complete)`` or None.
    """
    return certificate_verdict(*certificate_counts(d, bounds, delta), d.n_eff)


certificate_verdict = separation.verdict  # the verdict from counts summed over parts


def certificate_counts(d, bounds, delta):
    """(whether every row with t != 0 sits at its bound, how many rows have t != 0)."""
    return separation.row_counts(d.x_dot(delta), d.y, bounds, _positive_rows(d))
