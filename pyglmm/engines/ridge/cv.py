r"""The inverse-Wishart weight b by grouped cross-validation (``ridge_lmm(..., b="cv")``).

Whole groups are held out: the G levels of the (single) grouping factor are put in a
random order (``numpy.random.default_rng(seed).permutation(G)``) and level number
``order[j]`` goes to fold ``j % K``, so folds differ in size by at most one group and never
split a group.  For each b of the grid and each fold k, the model is fitted to the other
folds' rows and scored by the held-out marginal log-likelihood of the fold's responses,

.. math::

    \ell_k(b) = \sum_{i \in \text{fold } k} \log N\big(y_i;\; X_i\hat\beta,\;
        Z_i\hat\Sigma Z_i^\top + \hat\sigma^2 I_{n_i} + X_i C X_i^\top\big),

with :math:`(\hat\beta, \hat\Sigma, \hat\sigma^2)` the training fit's estimates and
:math:`C` its posterior covariance of :math:`\beta` (:attr:`RidgeResult.cov`): the
predictive density of a new group's responses, its random effects and :math:`\beta`
integrated out.  (Without :math:`C` the score ignores the error of :math:`\hat\beta`, which
dominates when p is near or above N: at p = 500, N = 280 the plug-in score of b = 0 was
-3.8e6 against -4.5e3 for b > 0, from training fits whose random effects absorb
nothing.)  The CV score is :math:`\sum_k \ell_k(b)` and the chosen b maximises it.  :math:`\lambda` is chosen by empirical Bayes inside each training fit
(``lam="auto"``) or held at the given value.

The prior :math:`(\nu, \Psi)` is held fixed across folds, not b: b on the grid is the weight
for all G groups, and a training fit with :math:`G_k` groups uses :math:`b_k = c/(G_k + c)`
with :math:`c = bG/(1-b) = \nu + q + 1` (same :math:`\nu`, same target A, computed once
from all the data), so the chosen b is the one the final fit on all groups uses.
"""

import warnings

import numpy as np
import pandas as pd
from scipy.linalg import cho_factor, cho_solve

from ...data.validation import factorize

#: Default grid of b.
B_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def check_cv(parsed, folds, grid):
    """Validate the CV arguments; returns (folds, grid as a float array)."""
    if len(parsed.random) != 1:
        raise ValueError(f"b='cv' holds out whole groups of one grouping factor; the formula has "
                         f"{len(parsed.random)} random terms ({', '.join(parsed.groups)}): give b a value")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"cv_folds must be an integer >= 2, got {folds!r}")
    grid = np.asarray(B_GRID if grid is None else grid, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or grid.min() < 0 or grid.max() >= 1:
        raise ValueError(f"cv_grid must be a non-empty sequence of b values in [0, 1), got {grid.tolist()}")
    return int(folds), np.unique(grid)


def group_folds(n_groups, folds, seed):
    """Fold (0..folds-1) of each of ``n_groups`` group codes (module docstring)."""
    out = np.empty(n_groups, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n_groups)] = np.arange(n_groups) % folds
    return out


def fold_b(b, n_all, n_train):
    """b for a training fit on ``n_train`` of ``n_all`` groups, the prior held fixed."""
    c = b * n_all / (1 - b)
    return c / (n_train + c)


def heldout_loglik(fit, test, term, response):
    """sum_i log N(y_i; X_i beta, Z_i Sigma Z_i' + sigma^2 I + X_i C X_i') over the groups of
    ``test`` (``term``: the formula's random term, ``response``: its column)."""
    X = fit.coding.matrix(test)
    r = test[response].to_numpy(np.float64) - X @ fit.params.to_numpy()
    XC = X @ fit.cov.to_numpy()
    cols = ([np.ones(len(test))] if term.intercept else []) + [test[c].to_numpy(np.float64) for c in term.slopes]
    Z = np.column_stack(cols)
    Sigma, s2 = fit.re_cov[term.group].to_numpy(), fit.dispersion
    total = 0.0
    for rows in pd.RangeIndex(len(test)).groupby(test[term.group].to_numpy()).values():
        Zi, ri = Z[rows], r[rows]
        c = cho_factor(Zi @ Sigma @ Zi.T + s2 * np.eye(len(rows)) + XC[rows] @ X[rows].T, lower=True)
        total -= 0.5 * (len(rows) * np.log(2 * np.pi) + 2 * np.sum(np.log(np.diag(c[0]))) + ri @ cho_solve(c, ri))
    return float(total)


def choose_b_cv(fit_fn, parsed, data, folds, grid, seed, A, **options):
    """Grouped K-fold CV over ``grid`` with ``fit_fn`` (:func:`ridge_lmm`): (best b, table with
    columns b, cv_loglik and one per fold, the fold of each level as a Series)."""
    term = parsed.random[0]
    codes, levels = factorize(term.group, data[term.group])
    G = len(levels)
    if folds > G:
        raise ValueError(f"cv_folds = {folds} exceeds the {G} levels of {term.group!r}")
    if G - -(-G // folds) < 2:
        raise ValueError(f"cv_folds = {folds} leaves a training fold with fewer than 2 of the {G} "
                         f"levels of {term.group!r}")
    fold_of = group_folds(G, folds, seed)
    row_fold = fold_of[codes]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular training fits at small b are expected
        for b in grid:
            scores = []
            for k in range(folds):
                fit = fit_fn(parsed.text, data[row_fold != k], b=fold_b(b, G, int(np.sum(fold_of != k))),
                             A=A, **options)
                scores.append(heldout_loglik(fit, data[row_fold == k], term, parsed.response))
            rows.append([b, sum(scores), *scores])
    table = pd.DataFrame(rows, columns=["b", "cv_loglik", *[f"fold{k}" for k in range(folds)]])
    best = float(table.b[table.cv_loglik.idxmax()])
    return best, table, pd.Series(fold_of, index=levels, name="fold")
