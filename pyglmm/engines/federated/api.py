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

import numpy as np

from ...families import get_family
from .coordinator import Coordinator

log = logging.getLogger("pyglmm")


def fit_federated(connections, formula, family="binomial", nagq=1, timeout=60.0,
                  transport="custom"):
    """Fit a GLMM by AGQ across sites that keep their rows.

    Parameters
    ----------
    connections : list
        One connection per site (:mod:`~pyglmm.engines.federated.transports`:
        :func:`~pyglmm.engines.federated.transports.in_process`,
        :class:`~pyglmm.engines.federated.transports.LocalProcess`; or Flower's,
        :mod:`~pyglmm.engines.federated.flower`).
    formula : str
        lme4-style with one grouping factor, e.g. ``"y ~ x + C(ward) + (1|patient)"``;
        a cluster (level of the grouping factor) must not occur at two sites.
    family : {"binomial", "poisson"}
    nagq : int
        K, the quadrature points per random effect (1: Laplace).
    timeout : float
        Seconds to wait for each site's answer in each round.
    transport : str
        A label reported in the result.

    Returns
    -------
    FederatedResult
        Estimates, standard errors from the observed information, the
        log-likelihood, and ``rounds``, ``bytes_per_site`` (bytes each site
        sent and received) and ``seconds``.

    Raises
    ------
    FederatedError
        A site refused, failed, timed out or sent an invalid answer (named).
    """
    fam = get_family(family)
    start = time.perf_counter()
    coord = Coordinator(connections, timeout)
    try:
        coding = coord.describe(formula, fam.name)
        d = coord.setup(coding, int(nagq))
        opt = _optimise(coord.evaluate, np.zeros(d))
    finally:
        coord.close()
    return FederatedResult.build(opt, coding, coord, formula, fam, nagq, transport,
                                 time.perf_counter() - start)


def _optimise(evaluate, x0):
    """TEMPORARY until the AGQ engine's optimiser lands: scipy's trust-region Newton
    with the exact Hessian on minus the log-likelihood; one round per new point."""
    from scipy.optimize import minimize

    cache = {}

    def at(x):
        key = x.tobytes()
        if key not in cache:
            cache.clear()
            ll, g, h = evaluate(x, 2)
            cache[key] = (-ll, -g, -h)
        return cache[key]

    res = minimize(lambda x: at(x)[0], x0, jac=lambda x: at(x)[1], hess=lambda x: at(x)[2],
                   method="trust-exact", options={"gtol": 1e-9, "maxiter": 200})
    ll, g, h = evaluate(res.x, 2)
    return {"x": res.x, "loglik": ll, "grad": g, "hess": h, "converged": bool(res.success),
            "iterations": int(res.nit)}


class FederatedResult:
    """TEMPORARY minimal result until the AGQ engine's result class lands."""

    @classmethod
    def build(cls, opt, coding, coord, formula, family, nagq, transport, seconds):
        self = cls()
        p = len(coding["names"])
        self.names = list(coding["names"])
        self.x = opt["x"]
        self.params = opt["x"][:p]
        self.cov = np.linalg.inv(-opt["hess"])
        self.bse = np.sqrt(np.diag(self.cov))[:p]
        self.theta = np.exp(opt["x"][p:])
        self.theta_se = np.sqrt(np.diag(self.cov))[p:] * self.theta
        self.loglik = opt["loglik"]
        self.converged = opt["converged"]
        self.rounds = coord.rounds
        self.bytes_per_site = {s: {"sent": coord.bytes_sent[s], "received": coord.bytes_received[s]}
                               for s in coord.names}
        self.counts = dict(coord.counts)
        self.seconds, self.transport, self.formula, self.nagq = seconds, transport, formula, nagq
        self.family = family.name
        return self

    def to_dict(self):
        return {"engine": "federated", "transport": self.transport, "formula": self.formula,
                "family": self.family, "nagq": self.nagq, "names": self.names,
                "params": self.params.tolist(), "bse": self.bse.tolist(),
                "theta": self.theta.tolist(), "loglik": self.loglik, "converged": self.converged,
                "rounds": self.rounds, "bytes_per_site": self.bytes_per_site,
                "seconds": self.seconds, "sites": self.counts}
