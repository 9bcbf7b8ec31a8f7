"""The model's arrays in the layout the kernels take, built from validated input."""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import DataError
from .validation import (aliased_columns, check_finite, check_numeric,
                          check_response, check_weights, factorize)

EMPTY = np.empty(0)
# Rows are reordered by the factor with the most levels when its per-level
# sums (levels x p doubles) exceed this: every pass then streams that table
# instead of scattering into it at random, which is what limits throughput.
SORT_ABOVE_BYTES = 1 << 22


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
    xcat : ndarray (n, m) int32, optional
        Categorical fixed effects kept as codes instead of dummy columns: the
        model's p fixed-effect columns are X's, then the dummies of m
        categoricals; row i has a 1 in column ``xcat[i, j]`` (in
        ``[X.shape[1], p)``) for categorical j, or none where it is -1 (the
        reference level).  Default: none (every column is in X).
    Rows may have been reordered (see ``SORT_ABOVE_BYTES``): nothing in a fit
    depends on row order, and no result is per row.
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
    xcat: np.ndarray = None

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

    def factor_slices(self):
        """Slices of the concatenated level space, one per factor."""
        return [slice(int(a), int(b)) for a, b in zip(self.offsets[:-1], self.offsets[1:])]


def level_codes(levels, values_by_factor, offsets, n):
    """Global level ids of new rows; unseen levels become -1."""
    codes = np.full((n, len(levels)), -1, dtype=np.int32)
    for k, (lv, values) in enumerate(zip(levels, values_by_factor)):
        local = lv.get_indexer(pd.Index(values))
        codes[:, k] = np.where(local >= 0, local + offsets[k], -1)
    return codes


def build_design(X, y, groups, family, *, feature_names, response_name, kern, nthreads,
                 weights=None, trials=None, offset=None, index=None):
    """Validate the pieces of a model and assemble its :class:`Design`.

    ``groups`` maps factor names to per-row labels (any hashable values).
    ``weights``, ``trials`` and ``offset`` are per-row arrays or None.
    ``kern`` (a kernel module) with ``nthreads`` reorders the rows when that
    pays (see ``SORT_ABOVE_BYTES``).
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"X must be 2-dimensional, got shape {X.shape}")
    n, p = X.shape
    if n == 0:
        raise DataError("the data have no rows")
    if p == 0:
        raise DataError("the model has no fixed-effect column (add an intercept)")
    if not groups:
        raise DataError("the model has no random-effect term such as (1|group)")
    repeated = sorted(f for f, count in Counter(feature_names).items() if count > 1)
    if repeated:
        raise DataError("fixed-effect column names repeat: " + ", ".join(map(repr, repeated)))
    check_finite("X", X, index, feature_names)
    y = check_numeric(response_name, y)
    _check_length(response_name, y, n)
    check_finite(response_name, y, index)
    prior = EMPTY
    if trials is not None and family.name != "binomial":
        raise DataError(f"trials are for the binomial family, not {family.name}")
    if trials is not None:
        trials = check_numeric("trials", trials)
        _check_length("trials", trials, n)
        check_finite("trials", trials, index)
    if weights is not None:
        weights = check_numeric("weights", weights)
        _check_length("weights", weights, n)
        check_weights("weights", weights, index)
    y = check_response(family, y, trials, response_name, index)
    if weights is not None or trials is not None:
        prior = (weights if weights is not None else 1.0) * (trials if trials is not None else 1.0)
        prior = np.ascontiguousarray(prior, dtype=np.float64)
    if offset is not None:
        offset = check_numeric("offset", offset)
        _check_length("offset", offset, n)
        check_finite("offset", offset, index)
    offset = EMPTY if offset is None else np.ascontiguousarray(offset)

    codes = np.empty((n, len(groups)), dtype=np.int32)
    levels, sizes = [], [0]
    for k, (name, values) in enumerate(groups.items()):
        _check_length(f"grouping column {name!r}", values, n)
        local, lv = factorize(name, values)
        codes[:, k] = local + sizes[-1]
        levels.append(lv)
        sizes.append(sizes[-1] + len(lv))
    offsets = np.asarray(sizes, dtype=np.int64)
    counts = np.bincount(codes.ravel(), minlength=int(offsets[-1])).astype(np.float64)

    XtX = X.T @ X
    problems = aliased_columns(XtX, list(feature_names))
    if problems:
        raise DataError("fixed-effect columns are aliased (linearly dependent): " + "; ".join(problems))
    colsum = np.ones(n) @ X  # BLAS: several times faster than X.sum(axis=0) on C order
    has_intercept = bool(np.any((colsum != 0) & np.isclose(colsum**2, n * np.diag(XtX), rtol=1e-12)))
    d = Design(X, y, prior, offset, codes, offsets, counts, XtX, list(feature_names),
               list(groups), levels, response_name, has_intercept)
    return _sorted_by_largest_factor(d, kern, nthreads)


def _stable_order(key):
    """Stable argsort of non-negative int32 keys (packing key and position into one
    int64 sorts about 3x faster than a stable argsort when they fit)."""
    n = key.size
    shift = max(1, (n - 1).bit_length())
    if shift + max(1, int(key.max()).bit_length()) > 62:
        return np.argsort(key, kind="stable")
    return np.sort((key.astype(np.int64) << shift) | np.arange(n)) & ((1 << shift) - 1)


def _sorted_by_largest_factor(d, kern, nthreads):
    """``d`` with rows in the order of its largest factor's levels, when that pays."""
    k = int(np.argmax(d.n_levels))
    if d.n_levels[k] * d.p * 8 <= SORT_ABOVE_BYTES:
        return d
    key = d.codes[:, k]
    if np.all(key[1:] >= key[:-1]):
        return d
    order = _stable_order(key)
    X = np.empty_like(d.X)
    kern.take_rows(d.X, order, X, nthreads)
    take = lambda a: np.ascontiguousarray(a[order]) if a.size else a  # noqa: E731
    d.X, d.y, d.prior, d.offset, d.codes, d.xcat = X, *(take(a) for a in (d.y, d.prior, d.offset,
                                                                          d.codes, d.xcat))
    return d


def _check_length(name, values, n):
    if len(values) != n:
        raise DataError(f"{name} has {len(values)} rows, expected {n}")
