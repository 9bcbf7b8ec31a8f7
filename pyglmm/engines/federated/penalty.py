r"""The L2-penalised federated fit along a path of penalties (Li et al. 2022, Sec. 2.4).

For each :math:`\lambda` of a grid, the coordinator maximises

.. math::

    \ell_\lambda(\beta, \rho) = \ell(\beta, \rho) - \lambda \sum_{j \in P} \beta_j^2

(:math:`\ell` the sites' summed AGQ log-likelihood, :math:`P` the fixed effects
other than the intercept) with the same Newton rounds as
:func:`~pyglmm.engines.federated.api.fit_federated`, each :math:`\lambda` starting
from the previous optimum (the grid in increasing order).  The penalty lives at
the coordinator: the sites answer exactly as for an unpenalised fit.  Each
:math:`\lambda` is scored by AIC :math:`-2\ell + 2\,\mathrm{df}` and BIC
:math:`-2\ell + \log(N)\,\mathrm{df}` at its optimum, with the unpenalised
log-likelihood and the effective degrees of freedom
:math:`\mathrm{df} = \mathrm{tr}\{(-H_\lambda)^{-1}(-H)\}` (:math:`H` and
:math:`H_\lambda` the Hessians of :math:`\ell` and :math:`\ell_\lambda`;
df is the number of parameters at :math:`\lambda = 0`).
"""

import time

import numpy as np
import pandas as pd

from ..agq.optimize import maximize
from ..agq.reporting import reporter
from .api import FederatedResult, Session

CRITERIA = ("aic", "bic")


def penalty_path(connections, formula, lambdas, family="binomial", nagq=1, timeout=60.0, *,
                 weights=None, trials=None, offset=None, criterion="bic", tol=1e-12, max_iter=100,
                 transport="custom", callback=None):
    """Fit along a grid of L2 penalties and choose one by AIC or BIC.

    Parameters
    ----------
    connections, formula, family, nagq, timeout, weights, trials, offset
        As :func:`~pyglmm.engines.federated.api.fit_federated`, and so are
        ``tol``, ``max_iter``, ``transport`` and ``callback``.
    lambdas : sequence of float
        Penalties :math:`\\lambda \\ge 0` (fitted in increasing order; include 0
        for the unpenalised fit).
    criterion : {"bic", "aic"}
        How the penalty is chosen.

    Returns
    -------
    table : pandas.DataFrame
        One row per penalty: ``lambda``, ``loglik`` (unpenalised),
        ``penalized_loglik``, ``df`` (effective), ``aic``, ``bic``, ``iterations``,
        ``converged``, ``rounds`` (the path's rounds so far), then the
        coefficients; the chosen row has ``chosen`` True.
    result : FederatedResult
        The fit at the chosen penalty; its covariance is the inverse of minus the
        penalised Hessian.
    """
    lambdas = np.sort(np.asarray(lambdas, dtype=np.float64))
    if lambdas.size == 0 or not np.all(np.isfinite(lambdas)) or lambdas[0] < 0:
        raise ValueError(f"lambdas must be finite and >= 0, got {lambdas.tolist()}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    start = time.perf_counter()
    rows, fits = [], []
    columns = {"weights": weights, "trials": trials, "offset": offset}
    with Session(connections, formula, family, nagq, timeout, columns) as session:
        pen = np.zeros(len(session.x0))
        pen[[j for j, name in enumerate(session.names) if name != "Intercept"]] = 1.0
        n = sum(c["rows"] for c in session.coord.counts.values())
        x = session.x0
        for lam in lambdas:
            evaluate = _Penalized(session.evaluate, lam * pen)
            opt = maximize(evaluate, x, bounded=session.bounded, tol=tol, max_iter=max_iter,
                           callback=reporter(callback))
            x = opt.x
            ll, _, hess = session.evaluate(x, 2)
            pll, _, hess_pen = evaluate(x, 2)
            df = _effective_df(hess, hess_pen, np.isfinite(x))
            rows.append({"lambda": lam, "loglik": ll, "penalized_loglik": pll, "df": df,
                         "aic": -2 * ll + 2 * df, "bic": -2 * ll + np.log(n) * df,
                         "iterations": opt.iterations, "converged": opt.converged,
                         "rounds": session.coord.rounds,
                         **dict(zip(session.names, x[:session.p]))})
            fits.append((opt, (ll, None, hess_pen, dict(session.evaluate.sums))))
    table = pd.DataFrame(rows)
    best = int(np.argmin(table[criterion].to_numpy()))
    table["chosen"] = np.arange(len(table)) == best
    result = FederatedResult.build(session, *fits[best], transport, time.perf_counter() - start)
    return table, result


class _Penalized:
    """``evaluate`` of the penalised log-likelihood: ``weights`` holds lambda for each
    penalised coordinate (0 elsewhere)."""

    def __init__(self, evaluate, weights):
        self.inner, self.weights = evaluate, weights

    def __call__(self, x, deriv):
        ll, g, h = self.inner(x, deriv)
        beta = np.where(self.weights > 0, x, 0.0)
        return (ll - float(np.sum(self.weights * beta**2)), g - 2 * self.weights * beta,
                h - 2 * np.diag(self.weights))


def _effective_df(hess, hess_pen, free):
    """tr{(-H_pen)^-1 (-H)} over the free coordinates."""
    ix = np.ix_(free, free)
    return float(np.trace(np.linalg.solve(-hess_pen[ix], -hess[ix])))
