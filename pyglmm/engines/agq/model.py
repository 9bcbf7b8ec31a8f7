r"""The AGQ engine's data and objective: the kernel's arrays from a frame and a
formula (:func:`build_arrays`), the Gauss–Hermite rule (:func:`gh_rule`), the
log-Cholesky parameters (:class:`LogCholesky`) and the log-likelihood with its
exact gradient and Hessian in them (:func:`evaluate_clusters`,
:class:`ClusterObjective`).

These are the seams the distributed engines use: a site builds its own arrays
from its rows with :func:`build_arrays` (clusters must not be split across
sites; pass the coordinator's ``coding`` so that every site codes the fixed
effects alike), wraps them in a :class:`ClusterObjective` (which keeps its
clusters' modes between calls) and answers ``objective(params, deriv)`` -- the
log-likelihood, gradient and Hessian of its clusters in the optimiser's
parameters; a coordinator sums the answers in its own ``evaluate(params,
deriv)`` and runs :func:`pyglmm.engines.agq.optimize.maximize`.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ...data.coding import FixedCoding
from ...data.formula import parse_fixed, parse_formula
from ...data.validation import (aliased_columns, check_column_roles, check_numeric, check_values,
                                factorize, prior_weights, role_values)
from ...exceptions import DataError, SingularMatrixError
from ..separation import row_counts, verdict
from .kernels_numpy import lambda_matrix, tri_index

MAX_Q = 3  # random effects per cluster the kernels take


def gh_rule(nagq):
    """Probabilists' Gauss–Hermite nodes and weights for N(0, 1), weights summing to 1
    (``nagq = 1``: node 0, weight 1, the Laplace approximation)."""
    from numpy.polynomial.hermite_e import hermegauss

    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or not 1 <= nagq <= 50:
        raise ValueError(f"nagq must be an integer in 1..50, got {nagq!r}")
    nodes, weights = hermegauss(int(nagq))
    return np.ascontiguousarray(nodes), np.ascontiguousarray(weights / weights.sum())


@dataclass
class AGQArrays:
    """One grouping factor's model in the kernel's layout: rows sorted by cluster.

    Attributes
    ----------
    X, Z : ndarray (n, p), (n, q) float64, C-contiguous
        Fixed and random-effect designs, rows sorted by cluster.
    y, weights, offset : ndarray (n,)
        Response (binomial: proportion), prior weights times trials, offset.
    starts : ndarray (m + 1,) int64
        Cluster ``c`` owns rows ``starts[c]:starts[c+1]``.
    levels : pandas.Index
        The clusters' labels, in cluster order.
    order : ndarray (n,) int64
        Row ``i`` here is the caller's row ``order[i]``.
    fixed_names, random_names : list of str
        Columns of X (``Intercept`` first if any) and of Z (lme4's names:
        ``(Intercept)``, slopes).
    group, response : str
    family : pyglmm.families.Family
    """

    X: np.ndarray
    Z: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    starts: np.ndarray
    levels: pd.Index
    order: np.ndarray
    fixed_names: list
    random_names: list
    group: str
    response: str
    family: object
    coding: object = field(default=None, repr=False)

    @property
    def n(self):
        return self.X.shape[0]

    @property
    def p(self):
        return self.X.shape[1]

    @property
    def q(self):
        return self.Z.shape[1]

    @property
    def m(self):
        return len(self.starts) - 1

    def separation_counts(self, bounds, delta):
        """These rows' part of a separation certificate for the fixed-effects direction
        ``delta`` (:func:`pyglmm.engines.separation.row_counts`; every weight is positive)."""
        return row_counts(self.X @ delta, self.y, bounds)

    def certificate(self, bounds, delta):
        """``(separated rows, complete)`` if ``delta`` separates the response on these
        rows, else None (:mod:`pyglmm.engines.separation`)."""
        return verdict(*self.separation_counts(bounds, delta), self.n)

    def weighted(self):
        """These arrays without their rows of prior weight 0, which contribute nothing
        to the likelihood; every cluster stays, one left without rows contributing a
        factor 1 (its mode is 0 and its conditional variance the prior's, as glmer's).
        Row ``i`` of the result is the caller's row ``order[i]``."""
        keep = self.weights > 0
        if keep.all():
            return self
        take = lambda a: np.ascontiguousarray(a[keep])  # noqa: E731
        starts = np.r_[0, np.cumsum(keep)][self.starts].astype(np.int64)
        return replace(self, X=take(self.X), Z=take(self.Z), y=take(self.y),
                       weights=take(self.weights), offset=take(self.offset), starts=starts,
                       order=self.order[keep])

    def to_caller_order(self, values):
        out = np.empty_like(values)
        out[self.order] = values
        return out


def random_term(parsed):
    """The formula's one random-effect term; an error naming the factors if it has
    none or several."""
    if len(parsed.random) != 1:
        if not parsed.random:
            raise DataError("the model has no random-effect term such as (1|group)")
        raise DataError("the AGQ engine fits one grouping factor; the formula has "
                        f"{len(parsed.random)}: " + ", ".join(repr(t.group) for t in parsed.random)
                        + " (use engine='crossed' for crossed random intercepts)")
    term = parsed.random[0]
    if term.q > MAX_Q:
        raise DataError(f"({' + '.join(term.names)}|{term.group}) has {term.q} random effects per "
                        f"level: the AGQ engine takes at most {MAX_Q}")
    return term


def build_arrays(formula, data, family, *, weights=None, trials=None, offset=None, coding=None,
                 check_aliased=True):
    """The kernel's arrays (:class:`AGQArrays`) of ``formula`` on the frame ``data``.

    ``weights``, ``trials`` and ``offset`` are column names or per-row arrays;
    ``coding`` (a :class:`~pyglmm.data.coding.FixedCoding`) codes the fixed part
    as an earlier fit did (default: fitted to ``data``).  Errors name the column,
    row or factor at fault.  ``check_aliased=False`` skips the check that X has
    full rank (a federated site's rows alone may not have it; the pooled X must).
    """
    parsed = parse_formula(formula)
    term = random_term(parsed)
    named = {"weights": weights, "trials": trials, "offset": offset}
    fixed = [t.column for t in parse_fixed(parsed.fixed)[1]]
    check_column_roles(data, parsed.response, parsed.groups, fixed, slopes=[term], **named)
    index = data.index
    extra = {k: role_values(data, k, v) for k, v in named.items()}
    if extra["trials"] is not None and family.name != "binomial":
        raise DataError(f"trials are for the binomial family, not {family.name}")
    y = check_numeric(parsed.response, data[parsed.response].to_numpy(), role="response")
    check_values(parsed.response, y, index, role="response")
    y = family.check_response(y, extra["trials"], parsed.response, index)
    prior = prior_weights(extra["weights"], extra["trials"], index)
    prior = np.ones(len(y)) if prior is None else prior
    codes, levels = factorize(term.group, data[term.group])
    order = np.argsort(codes, kind="stable")
    coding = coding or FixedCoding.from_data(parsed.fixed, data)
    X = np.ascontiguousarray(coding.matrix(data)[order])
    if X.shape[1] == 0:
        raise DataError("the model has no fixed-effect column (add an intercept)")
    Z = np.ones((len(y), term.q))
    for j, name in enumerate(term.slopes, start=int(term.intercept)):
        col = check_numeric(name, data[name].to_numpy(), role="random slope")
        check_values(name, col, index, role="random slope")
        Z[:, j] = col
    positive = prior[order] > 0
    weighted = X if positive.all() else X[positive]  # rows of weight 0 do not inform the fit
    problems = aliased_columns(weighted.T @ weighted, list(coding.names)) if check_aliased else []
    if problems:
        where = "" if len(weighted) == len(X) else " over the rows of positive weight"
        raise SingularMatrixError(f"fixed-effect columns are aliased{where} (X'X is singular): "
                                  + "; ".join(problems))
    starts = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(levels)))].astype(np.int64)
    off = np.zeros(len(y)) if extra["offset"] is None else extra["offset"]
    take = lambda a: np.ascontiguousarray(a[order], dtype=np.float64)  # noqa: E731
    return AGQArrays(X, take(Z), take(y), take(prior), take(off), starts, levels, order,
                     list(coding.names), list(term.names), term.group, parsed.response, family,
                     coding)


class LogCholesky:
    r"""The optimiser's parameters :math:`\rho` of :math:`\Lambda` (q x q lower
    triangular): the diagonal :math:`\Lambda_{aa} = e^{\rho}`, off-diagonal
    entries as they are; ``-inf`` is the boundary :math:`\Lambda_{aa} = 0`.
    Order: the row-major lower triangle (as the kernel's theta)."""

    def __init__(self, q):
        self.q = q
        self.diagonal = np.array([a == b for a, b in tri_index(q)])

    def theta(self, rho):
        rho = np.asarray(rho, dtype=np.float64)
        with np.errstate(under="ignore"):
            return np.where(self.diagonal, np.exp(rho), rho)

    def rho(self, theta):
        theta = np.asarray(theta, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.where(self.diagonal, np.log(np.abs(theta)), theta)

    def chain(self, theta, g, h, p):
        """Gradient and Hessian in (beta, theta) -> in (beta, rho); the first ``p`` are beta."""
        jac = np.r_[np.ones(p), np.where(self.diagonal, theta, 1.0)]
        g_rho = g * jac
        h_rho = None
        if h is not None:
            h_rho = h * np.outer(jac, jac)
            k = p + np.flatnonzero(self.diagonal)
            h_rho[k, k] += g_rho[k]
        return g_rho, h_rho

    def covariance(self, theta, scale=1.0):
        """The random effects' covariance :math:`s\\,\\Lambda\\Lambda^\\top`."""
        lam = lambda_matrix(theta, self.q)
        return scale * lam @ lam.T


def evaluate_clusters(kern, arrays, beta, theta, nagq, modes, deriv, dispersion=1.0, threads=1):
    r"""The kernel on ``arrays``' clusters at :math:`(\beta, \theta)`.

    Returns ``(loglik, grad, hess, condvar, failed)``: per-cluster log-likelihoods
    (m,), the sums of the gradient (d,) and Hessian (d, d) in
    :math:`(\beta, \theta)` (None below ``deriv`` 1 / 2), :math:`H_c^{-1}`
    (m, q, q) and the number of clusters whose mode search did not converge.
    ``modes`` (m, q) is the warm start and receives the modes.
    """
    nodes, weights = gh_rule(nagq)
    d = arrays.p + len(theta)
    loglik, grad, hess = np.empty(arrays.m), np.zeros(d), np.zeros((d, d))
    condvar = np.empty((arrays.m, arrays.q, arrays.q))
    failed = kern.cluster_eval(arrays.family.code, float(dispersion), arrays.X, arrays.Z, arrays.y,
                               arrays.weights, arrays.offset, arrays.starts,
                               np.ascontiguousarray(beta, dtype=np.float64),
                               np.ascontiguousarray(theta, dtype=np.float64), nodes, weights,
                               modes, int(deriv), loglik, grad, hess, condvar, int(threads))
    return (loglik, grad if deriv >= 1 else None, hess if deriv == 2 else None, condvar, failed)


class ClusterObjective:
    r"""``objective(params, deriv) -> (loglik, grad, hess)`` of the pooled fit, in the
    optimiser's parameters ``params`` = :math:`(\beta, \rho)` (:class:`LogCholesky`),
    the total log-likelihood :math:`\sum_c\ell_c`.  Keeps the modes as the next
    call's warm start and the last call's per-cluster outputs (``loglik``,
    ``condvar``, ``failed``)."""

    def __init__(self, kern, arrays, nagq, dispersion=1.0, threads=1):
        self.kern, self.arrays, self.nagq = kern, arrays, nagq
        self.dispersion, self.threads = dispersion, threads
        self.param = LogCholesky(arrays.q)
        self.modes = np.zeros((arrays.m, arrays.q))
        self.loglik = self.condvar = None
        self.failed = 0

    def __call__(self, params, deriv):
        p = self.arrays.p
        theta = self.param.theta(params[p:])
        ll, g, h, self.condvar, self.failed = evaluate_clusters(
            self.kern, self.arrays, params[:p], theta, self.nagq, self.modes, deriv,
            self.dispersion, self.threads)
        self.loglik = ll
        total = float(ll.sum())
        if deriv == 0:
            return total, None, None
        g, h = self.param.chain(theta, g, h, p)
        return total, g, h
