r"""``fit_federated``: the exact federated AGQ fit over any transport.

The objective is the pooled data's K-point adaptive Gauss–Hermite marginal
log-likelihood (the AGQ engine's; K = 1 is the Laplace approximation)

.. math::

    \ell(\beta, \phi) = \sum_{s} \sum_{c \in C_s} \ell_c(\beta, \phi),

summed over the sites :math:`s` and their clusters :math:`C_s` (a cluster lives
at one site), maximised over :math:`\beta` and the log-Cholesky parameters
:math:`\phi` of the random-effects covariance by Newton's method with the exact
Hessian (each site sends its sums of :math:`\ell_c`, :math:`\nabla\ell_c` and
:math:`\nabla^2\ell_c` per round).  The result equals the pooled AGQ fit.
"""

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...data.coding import FixedCoding
from ...data.formula import parse_formula
from ...data.validation import aliased_columns
from ...exceptions import DataError, SingularMatrixError
from ...families import get_family
from ...results.base import sigma_of
from ..agq.api import ColumnScales
from ..agq.kernels_numpy import lambda_matrix
from ..agq.model import LogCholesky, random_term
from ..agq.optimize import maximize
from ..agq.reporting import (SINGULAR, SeparationWatch, beta_covariance, fit_notes, huge_sd,
                              reporter)
from ..agq.result import AGQResult
from ..separation import verdict
from .coordinator import Coordinator, q_of
from .model import FAMILIES

log = logging.getLogger("pyglmm")


def fit_federated(connections, formula, family="binomial", nagq=1, timeout=60.0, *, weights=None,
                  trials=None, offset=None, tol=1e-12, max_iter=100, transport="custom",
                  callback=None):
    """Fit a GLMM by AGQ across sites that keep their rows.

    Parameters
    ----------
    connections : list
        One connection per site (:mod:`~pyglmm.engines.federated.transports`:
        :func:`~pyglmm.engines.federated.transports.in_process`,
        :class:`~pyglmm.engines.federated.transports.LocalProcess`; or Flower's,
        :mod:`~pyglmm.engines.federated.flower`).
    formula : str
        lme4-style with one grouping factor, e.g. ``"y ~ x + C(ward) + (1|patient)"``
        or ``(1 + t|patient)``; a cluster (level of the grouping factor) must not
        occur at two sites.
    family : {"binomial", "poisson"}
    nagq : int
        K, the quadrature points per random effect (1: Laplace).
    timeout : float
        Seconds to wait for each site's answer in each round.
    weights, trials, offset : str, optional
        Columns (at every site) of prior weights, binomial trials (the response
        is then the number of successes) and offsets, as in
        :func:`pyglmm.engines.agq.glmm_agq`.
    tol, max_iter, callback
        As :func:`pyglmm.engines.agq.glmm_agq` (Newton decrement, iterations,
        per-iteration records).  ``tol`` is 1e-12 here (1e-10 there): at most one
        more round, and the estimates are then within about 1e-11 of the optimum
        rather than 1e-6 (the decrement is quadratic in the distance to it).
    transport : str
        A label reported in the result.

    Returns
    -------
    FederatedResult
        As the pooled AGQ fit's result (estimates, standard errors from the
        observed information, log-likelihood, AIC, BIC) without the per-cluster
        and per-row outputs, which stay at the sites; plus ``rounds``,
        ``bytes_per_site`` and ``transport``.

    Raises
    ------
    FederatedError
        A site refused, failed, timed out or sent an invalid answer (named).
    SingularMatrixError
        The pooled fixed-effects design is rank deficient (columns named).

    Warns
    -----
    ConvergenceWarning, SeparationWarning, SingularFitWarning
        As :func:`pyglmm.engines.agq.glmm_agq`.  Separation is detected exactly as
        there: the coordinator watches Newton's iterates and asks the sites, in a
        ``certify`` round, whether a suspect direction of the fixed effects
        separates their rows' response (each answers two counts); the result names
        the columns in ``separation`` and their standard errors are NaN.  With a
        site that speaks schema version 1 only, separation cannot be checked and
        the result says so in its warnings.
    """
    start = time.perf_counter()
    columns = {"weights": weights, "trials": trials, "offset": offset}
    with Session(connections, formula, family, nagq, timeout, columns) as session:
        opt = maximize(session.working, session.x0, bounded=session.bounded, tol=tol,
                       max_iter=max_iter, callback=reporter(callback), watch=session.watch())
        session.check_estimates(opt)
        final = session.working(opt.x, 2) + (session.evaluate.sums,)
    return FederatedResult.build(session, opt, final, transport, time.perf_counter() - start,
                                 session.separation, session.units)


class Session:
    """A federated fit's set-up, as a context manager that tells the sites when it is
    over: the ``describe`` and ``setup`` rounds, the pooled checks (a response with
    a finite estimate, a full-rank fixed-effects design), the start (beta = 0,
    Lambda = I) and ``evaluate(x, deriv)`` for the AGQ engine's optimiser, in the
    data's units, and :meth:`working` in the pooled fit's units.

    Attributes
    ----------
    coord, coding (the merged coding, a dict), names, term (the random-effect
    term), family, nagq, param (:class:`~pyglmm.engines.agq.model.LogCholesky`),
    p, x0, bounded (the log-diagonal coordinates), evaluate, units (the pooled
    fit's :class:`~pyglmm.engines.agq.api.ColumnScales` from the sites' column
    maxima; 1 if a site does not send them).
    """

    def __init__(self, connections, formula, family, nagq, timeout, columns=None):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)} for a federated fit, "
                             f"got {family!r}")
        self.formula, self.family, self.nagq = formula, get_family(family), int(nagq)
        self.term = random_term(parse_formula(formula))
        self.coord = Coordinator(connections, timeout)
        try:
            self.columns = columns = columns or {}
            self.coding = self.coord.describe(formula, self.family.name, **columns)
            _check_events(self.coord, self.family, columns.get("trials") is not None)
            d = self.coord.setup(self.coding, self.nagq)
        except BaseException:
            self.coord.close()
            raise
        self.names = list(self.coding["names"])
        self.p = len(self.names)
        self.param = LogCholesky(q_of(d - self.p))
        self.bounded = self.p + np.flatnonzero(self.param.diagonal)
        self.x0 = np.r_[np.zeros(self.p), self.param.rho(_identity(self.param.q))]
        self.evaluate = _Rounds(self.coord)
        self.units = ColumnScales(*(self.coord.column_maxima or (np.ones(self.p),
                                                                 np.ones(self.param.q))))
        self._watch = None
        if self.coord.column_squares is not None:
            n = sum(c["rows"] for c in self.coord.counts.values())
            self._watch = SeparationWatch(self.family.name,
                                          self.coord.column_squares / self.units.x_scale**2, n,
                                          self.names, self._certificate)

    def working(self, x, deriv):
        """``evaluate`` in the optimiser's units (:attr:`units`): the columns of X and Z
        divided by their largest magnitudes over the pooled rows, as the pooled fit."""
        loglik, grad, hess = self.evaluate(self.units.params(x), deriv)
        return (loglik, *self.units.chain(grad, hess))

    def _certificate(self, bounds, delta):
        """The sites' certificate of ``delta`` (in the optimiser's units; each site uses
        its family's bounds)."""
        rows = sum(c["rows"] for c in self.coord.counts.values())
        return verdict(*self.coord.certify(self.units.beta(delta)), rows)

    def watch(self):
        """``watch(x, iteration)`` for the optimiser's iterates (None: the sites cannot
        certify separation)."""
        return None if self._watch is None else self._watch.stage("Newton iterations")

    def check_estimates(self, opt):
        """After the fit ``opt``: certify its coefficients one by one if the watch found
        nothing and one is huge (:meth:`~pyglmm.engines.agq.reporting.SeparationWatch.final`)."""
        if self._watch is not None:
            self._watch.final(opt.x, opt.iterations)

    @property
    def separation(self):
        """The :class:`~pyglmm.engines.separation.Separation` found, or None."""
        return None if self._watch is None else self._watch.found

    def __enter__(self):
        try:
            h0 = self.evaluate(self.x0, 2)[2]
            problems = aliased_columns(-h0[:self.p, :self.p], self.names)
            if problems:
                raise SingularMatrixError("fixed-effect columns of the pooled data are aliased "
                                          "(the information is singular): " + "; ".join(problems))
        except BaseException:
            self.coord.close()
            raise
        return self

    def __exit__(self, *exc):
        self.coord.close()


def _notes(session, opt, singular, group, separation, huge):
    notes = fit_notes(opt, 0, singular, group, separation, huge)
    old = session.coord.version1_sites
    if old:  # (both federated families can separate)
        notes.append("separation by the fixed effects was not checked: site(s) "
                     f"{', '.join(map(repr, old))} speak schema version 1 (no 'certify' request)")
        warnings.warn(notes[-1], UserWarning, stacklevel=4)
    return notes


def _unscaled(session, units):
    """The note (warned) that the optimiser worked in the data's units because a site
    did not send its column maxima (schema version < 3); none for a fit in the data's
    units by design (``units`` None: the penalised path)."""
    old = session.coord.unscaled_sites
    if not old or units is None:
        return []
    note = ("the optimiser worked in the data's units, not the pooled fit's column scales: "
            f"site(s) {', '.join(map(repr, old))} do not send column maxima (schema version < 3)")
    warnings.warn(note, UserWarning, stacklevel=4)
    return [note]


def _identity(q):
    return np.array([float(a == b) for a in range(q) for b in range(a + 1)])


def _check_events(coord, fam, trials):
    rows = sum(c["rows"] for c in coord.counts.values())
    events = sum(c["events"] for c in coord.counts.values())
    if events == 0 or (fam.name == "binomial" and not trials and events == rows):
        raise DataError(f"the response is {0 if events == 0 else 1} in every row at every site: "
                        f"the {fam.name} model has no finite estimate")


class _Rounds:
    """``evaluate(x, deriv)`` for the optimiser: one round per new point, always with
    the gradient and Hessian (the line search's value-only trials then cost no
    second round when accepted), and the answers' conditional-fit sums.

    As the pooled fit, a value-only trial where a site cannot evaluate its
    likelihood (NaN or infinite values, e.g. at a huge variance) counts as
    ``-inf``, so the line search steps back; the derivatives and sums of such a
    point are refused (naming the site and field) if the fit needs them."""

    def __init__(self, coord):
        self.coord, self.key, self.value, self.sums, self.nonfinite = coord, None, None, None, []

    def __call__(self, x, deriv):
        key = np.asarray(x, dtype=np.float64).tobytes()
        if key != self.key:
            self.value, self.key = self.coord.evaluate(x, 2), key
            self.sums, self.nonfinite = dict(self.coord.sums), list(self.coord.nonfinite)
        if deriv >= 1:
            self.coord.require_finite(self.nonfinite, np.asarray(x, dtype=np.float64))
        return self.value


@dataclass(repr=False)
class FederatedResult(AGQResult):
    """The federated fit: an :class:`~pyglmm.engines.agq.result.AGQResult` without
    the random effects' conditional modes and per-row outputs (they stay at the
    sites), plus the protocol's costs.

    Attributes
    ----------
    rounds : int
        Request rounds (describe, setup and one per evaluated point).
    bytes_per_site : dict
        Per site, ``{"sent": bytes, "received": bytes}`` over the whole fit.
    transport : str
    """

    rounds: int = 0
    bytes_per_site: dict = field(default_factory=dict)
    transport: str = ""

    engine = "federated"

    @classmethod
    def build(cls, session, opt, final, transport, seconds, separation=None, units=None):
        """The result at the optimum ``opt`` (:class:`~pyglmm.engines.agq.optimize.Optimum`)
        of a :class:`Session`; ``final`` = (loglik, grad, hess, sums) there (``hess``
        the one whose inverse is the covariance); ``separation`` what the watch found;
        ``units`` the :class:`~pyglmm.engines.agq.api.ColumnScales` that ``opt`` and
        ``hess`` are in (default: the data's)."""
        fam, term, coord, param = session.family, session.term, session.coord, session.param
        p, names = session.p, session.names
        scales = units or ColumnScales(np.ones(p), np.ones(param.q))
        working = param.theta(opt.x[p:])
        theta = scales.theta(working)
        loglik, _, hess, sums = final
        group = term.group
        singular = [group] if np.any(np.abs(theta[param.diagonal]) < SINGULAR) else []
        diverging = [] if separation is None else separation.columns
        cov = scales.cov(beta_covariance(hess, p, working, param.q, False, names, separation))
        lam = lambda_matrix(theta, param.q)
        terms = list(term.names)
        re_cov = {group: pd.DataFrame(lam @ lam.T, terms, terms)}
        huge = huge_sd(fam.name, theta, param.q, terms, scales.z_scale)
        n = sum(c["rows"] for c in coord.counts.values())
        m = sum(c["clusters"] for c in coord.counts.values())
        history = pd.DataFrame([{k: v for k, v in row.items() if k != "fixed"}
                                for row in opt.history])
        res = cls(
            formula=session.formula, family=fam.name, link=fam.link, dispersion_mode="fixed",
            coef=pd.Series(scales.beta(opt.x[:p]), index=names, name="coef"), cov=cov,
            sigma=sigma_of(re_cov),
            dispersion=1.0, b={}, b_var={}, offset_name=session.columns.get("offset"),
            has_offset=session.columns.get("offset") is not None,
            re_cov=None if terms == ["(Intercept)"] else re_cov,
            loglik=float(loglik), n_obs=n, n_levels={group: m}, df_resid=0.0,
            pearson_chi2=sums["pearson"], deviance=sums["deviance"],
            iterations=opt.iterations, converged=opt.converged and separation is None and not huge,
            singular=singular, separation=list(diverging),
            seconds=seconds, timings={}, backend="sites", threads=1,
            warnings=(_notes(session, opt, singular, group, separation, huge)
                      + _unscaled(session, units)),
            coding=FixedCoding.from_dict(session.coding),
            nagq=session.nagq, history=history, rounds=coord.rounds,
            bytes_per_site={s: {"sent": coord.bytes_sent[s], "received": coord.bytes_received[s]}
                            for s in coord.names},
            transport=transport)
        res.df_resid = float(n - res.df_model)
        return res

    @property
    def method(self):
        return f"federated {super().method} over {len(self.bytes_per_site)} sites"

    def iterations_text(self):
        return f"{self.iterations} Newton iterations, {self.rounds} rounds ({self.transport})"

    def to_dict(self, full=False):
        """The core's JSON plus ``rounds``, ``bytes_per_site``, ``transport`` (and
        ``seconds``, as every result); a federated fit is not saved as a model file
        (its random effects stay at the sites)."""
        if full:
            self.save(None)
        return {**super().to_dict(), "nagq": int(self.nagq), "rounds": int(self.rounds),
                "bytes_per_site": self.bytes_per_site, "transport": self.transport}

    def _rows(self, name):
        raise AttributeError(f"{name} is not available: the rows stay at the sites")

    def predict(self, newdata=None, **options):
        """Not available: predictions need the clusters' modes, which stay at the sites."""
        raise NotImplementedError("a federated fit cannot predict: the random effects' modes stay "
                                  "at the sites (population-level scores are X @ fixef())")

    def save(self, path):
        """Not available: a model file holds the random effects' modes, which stay at the sites."""
        raise NotImplementedError("a federated fit cannot be saved as a model file: the random "
                                  "effects' modes stay at the sites; use to_dict() or to_json()")
