"""The model's arrays in the layout the kernels take, built from validated input."""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import DataError, SingularMatrixError
from ..families import GAUSSIAN
from .validation import (aliased_columns, check_finite, check_numeric, check_values, check_weights,
                         factorize, prior_weights)

EMPTY = np.empty(0)
# Rows are reordered by the factor with the most levels when its per-level
# sums (levels x p doubles) exceed this: every pass then streams that table
# instead of scattering into it at random, which is what limits throughput.
SORT_ABOVE_BYTES = 1 << 22
MAX_LEVELS = 2**31  # levels of all factors together: int32 ids 0 .. 2^31 - 1


@dataclass
class Design:
    """Rows of a crossed random-effects model, ready for the kernels.

    Attributes
    ----------
    X : ndarray (n, p), C-contiguous float64
        Fixed-effects design.
    y : ndarray (n,)
        Response; for binomial, the proportion of successes.
    prior : ndarray (n,) or empty
        Prior weights times binomial trials (empty: all ones).
    offset : ndarray (n,) or empty
    codes : ndarray (n, K), C-contiguous int32
        Global level ids: factor k's levels are ``offsets[k]:offsets[k+1]``.
    offsets : ndarray (K + 1,) int64
    counts : ndarray (Q,)
        Rows per level.
    XtX : ndarray (p, p)
        Unweighted X'X (the inner loop's convergence norm, the alias check).
    order : ndarray (n,) int64 or None
        The permutation applied to the caller's rows (row ``i`` here is the
        caller's row ``order[i]``), or None if they are in the caller's order.
        Rows are reordered when that pays (see ``SORT_ABOVE_BYTES``); nothing in
        a fit depends on row order, and per-row outputs are put back in the
        caller's order with :meth:`to_caller_order`.
    xcat : ndarray (n, m) int32, optional
        Categorical fixed effects kept as codes instead of dummy columns: the
        model's p fixed-effect columns are X's, then the dummies of m
        categoricals; row i has a 1 in column ``xcat[i, j]`` (in
        ``[X.shape[1], p)``) for categorical j, or none where it is -1 (the
        reference level).  Default: none (every column is in X).
    coef_order : ndarray (p,) of int, optional
        The column (of ``feature_names``) of each coefficient in the order users
        see, the formula's (this design has the dense columns first): a fit
        estimates in the design's order and reorders once, when it assembles
        its result.  Default: the same order.
    """

    X: np.ndarray
    y: np.ndarray
    prior: np.ndarray
    offset: np.ndarray
    codes: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    XtX: np.ndarray
    feature_names: list
    factor_names: list
    levels: list
    response_name: str
    has_intercept: bool
    order: object = None
    xcat: np.ndarray = None
    coef_order: np.ndarray = None

    def __post_init__(self):
        if self.xcat is None:
            self.xcat = np.empty((self.X.shape[0], 0), dtype=np.int32)

    @property
    def n(self):
        return self.X.shape[0]

    @property
    def p(self):
        """Fixed-effect columns: X's, then the dummies coded by ``xcat``."""
        return len(self.feature_names)

    @property
    def n_levels(self):
        return np.diff(self.offsets)

    @property
    def n_eff(self):
        """Rows with positive prior weight."""
        return int(np.count_nonzero(self.prior)) if self.prior.size else self.n

    def x_dot(self, beta):
        """X beta over all p fixed-effect columns (X's, then the dummies of ``xcat``)."""
        t = self.X @ beta[: self.X.shape[1]]
        for u in range(self.xcat.shape[1]):
            c = self.xcat[:, u]
            t += np.where(c >= 0, beta[c], 0.0)  # code -1 (reference level): no column
        return t

    def to_caller_order(self, values):
        """Per-row ``values`` in this design's row order, put in the caller's."""
        if self.order is None:
            return values
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def factor_slices(self):
        """Slices of the concatenated level space, one per factor."""
        return [slice(int(a), int(b)) for a, b in zip(self.offsets[:-1], self.offsets[1:])]


def build_design(X, y, groups, family, *, feature_names, response_name, kern, nthreads,
                 weights=None, trials=None, offset=None, index=None, xcat=None, coef_order=None,
                 whole=True):
    """Validate the pieces of a model and assemble its :class:`Design`.

    ``X`` is an (n, d) array of dense columns and ``xcat`` (optional, (n, m)
    int32) the categoricals' codes (``Design.xcat``), as ``FixedCoding.split``
    writes them.  ``feature_names`` names the p columns (X's, then the
    dummies) and ``coef_order`` (optional) orders them as users see them
    (``Design.coef_order``; aliased columns are named in that order).
    ``groups`` maps factor names to per-row labels (any hashable values).
    ``weights``, ``trials`` and ``offset`` are per-row arrays or None.
    ``kern`` (a kernel module) with ``nthreads`` reorders the rows when that
    pays (see ``SORT_ABOVE_BYTES``; one threaded gather per array) and forms X'X.
    ``whole=False``: the rows are a part of the data (a partition of a distributed
    fit), whose columns may be aliased and whose weights may all be zero where the
    whole data's are not: those two checks are the caller's.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"X must be 2-dimensional, got shape {X.shape}")
    n = X.shape[0]
    check_finite("X", X, index, feature_names)
    p = len(feature_names)
    if n == 0:
        raise DataError("the data have no rows")
    if p == 0:
        raise DataError("the model has no fixed-effect column (add an intercept)")
    if not groups:
        raise DataError("the model has no random-effect term such as (1|group)")
    repeated = sorted(f for f, count in Counter(feature_names).items() if count > 1)
    if repeated:
        raise DataError("fixed-effect column names repeat: " + ", ".join(map(repr, repeated)))
    y = check_numeric(response_name, y)
    _check_length(response_name, y, n)
    check_values(response_name, y, index, role="response")
    if trials is not None and family.name != "binomial":
        raise DataError(f"trials are for the binomial family, not {family.name}")
    if trials is not None:
        trials = check_numeric("trials", trials)
        _check_length("trials", trials, n)
        check_values("trials", trials, index)
    if weights is not None:
        weights = check_numeric("weights", weights)
        _check_length("weights", weights, n)
        check_weights("weights", weights, index, whole=whole)
    y = family.check_response(y, trials, response_name, index)
    prior = prior_weights(weights, trials, index)
    prior = EMPTY if prior is None else prior
    if offset is not None:
        offset = check_numeric("offset", offset)
        _check_length("offset", offset, n)
        check_values("offset", offset, index)
    offset = EMPTY if offset is None else np.ascontiguousarray(offset)

    codes = np.empty((n, len(groups)), dtype=np.int32)
    levels, counts, sizes = [], [], [0]
    for k, (name, values) in enumerate(groups.items()):
        _check_length(f"grouping column {name!r}", values, n)
        sized = dict(zip(groups, np.diff(sizes).tolist()))
        lv, count = _factorize_into(name, values, codes[:, k], sizes[-1],
                                    lambda q: check_level_ids({**sized, name: q}))
        levels.append(lv)
        counts.append(count)
        sizes.append(sizes[-1] + len(lv))
    offsets = np.asarray(sizes, dtype=np.int64)
    counts = np.concatenate(counts).astype(np.float64)

    order = _row_order(codes, offsets, p, kern)
    if order is not None:
        X, xcat, y, prior, offset, codes = (_take_rows(kern, a, order, nthreads)
                                            for a in (X, xcat, y, prior, offset, codes))

    XtX, colsum = _gram(X, xcat, p, kern, nthreads)
    shown = np.arange(p) if coef_order is None else np.asarray(coef_order)
    problems = (aliased_columns(XtX[np.ix_(shown, shown)], [feature_names[j] for j in shown])
                if whole else [])
    if problems:
        raise SingularMatrixError("fixed-effect columns are aliased (X'X is singular): "
                                  + "; ".join(problems))
    has_intercept = bool(np.any((colsum != 0) & np.isclose(colsum**2, n * np.diag(XtX), rtol=1e-12)))
    return Design(X, y, prior, offset, codes, offsets, counts, XtX, list(feature_names),
                  list(groups), levels, response_name, has_intercept, order, xcat,
                  None if coef_order is None else shown)


def _take_rows(kern, a, order, nthreads):
    """Per-row array ``a`` (1-d or 2-d; None or empty: as it is) with its rows in ``order``."""
    if a is None or a.size == 0:
        return a
    a = np.ascontiguousarray(a)
    out = np.empty_like(a)
    kern.take_rows(a.reshape(len(a), -1), order, out.reshape(len(a), -1), nthreads)
    return out


def _gram(X, xcat, p, kern, nthreads):
    """X'X and the column sums 1'X of the p columns (X's, then xcat's dummies), from
    one fused pass of the kernels: the gaussian family at beta = 0 with response 1
    has weights 1 and working response 1, so its X'WX is X'X and its X'Wz is 1'X."""
    n = X.shape[0]
    G, colsum, zero = np.empty((p, p)), np.empty(p), np.zeros(p)
    kern.stats_pass(GAUSSIAN, X, np.empty((n, 0), dtype=np.int32), np.ones(n), EMPTY, EMPTY,
                    zero, EMPTY, zero, EMPTY, True, np.empty(n), G, colsum,
                    np.empty((0, p + 2)), nthreads, xcat)
    return G, colsum


def _factorize_into(name, values, out, first, check):
    """Write ``first`` + each row's level position (sorted levels) into ``out``;
    return the levels and the rows per level.  ``check(number of levels)`` runs
    before anything is written (it raises when the ids would not fit ``out``).

    Integer labels in a compact range take a fast path (a table of counts
    instead of a hash table and a sort: several times faster)."""
    arr = values.to_numpy() if isinstance(values, pd.Series) else values
    if isinstance(arr, np.ndarray) and arr.ndim == 1 and arr.dtype.kind in "iu" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo < max(1024, arr.size) and -2**62 < lo and hi < 2**62:
            shifted = arr - lo if lo else arr
            count = np.bincount(shifted, minlength=hi - lo + 1)
            present = count > 0
            check(int(np.count_nonzero(present)))
            lookup = np.cumsum(present, dtype=np.int64) + (first - 1)
            np.take(lookup.astype(out.dtype), shifted, out=out)
            return pd.Index((np.flatnonzero(present) + lo).astype(arr.dtype), name=name), count[present]
    local, levels = factorize(name, values)
    check(len(levels))
    np.add(local, first, out=out)
    if isinstance(levels, pd.CategoricalIndex):  # plain labels, as a saved model restores them
        levels = pd.Index(levels.astype(levels.dtype.categories.dtype), name=name)
    return levels, np.bincount(local, minlength=len(levels))


def _row_order(codes, offsets, p, kern):
    """The stable permutation that sorts rows by the largest factor's levels (the
    kernels' counting sort), or None when that does not pay (see
    ``SORT_ABOVE_BYTES``) or they are sorted already."""
    n_levels = np.diff(offsets)
    k = int(np.argmax(n_levels))
    if n_levels[k] * p * 8 <= SORT_ABOVE_BYTES:
        return None
    key = codes[:, k]
    if np.all(key[1:] >= key[:-1]):
        return None
    order = np.empty(len(key), dtype=np.int64)
    kern.order_rows(codes, k, int(offsets[k]), int(n_levels[k]), order)
    return order


def check_level_ids(n_levels):
    """Refuse factors (name -> number of levels) with more levels in all than
    ``MAX_LEVELS``: the kernels number them with int32 ids 0, 1, ..., Q - 1."""
    total = sum(n_levels.values())
    if total > MAX_LEVELS:
        each = ", ".join(f"{name!r} ({count:,} levels)" for name, count in n_levels.items())
        raise DataError(f"the grouping factors have {total:,} levels in all ({each}): more than "
                        f"the {MAX_LEVELS:,} that pyglmm's 32-bit level ids can number")


def _check_length(name, values, n):
    if len(values) != n:
        raise DataError(f"{name} has {len(values)} rows, expected {n}")
