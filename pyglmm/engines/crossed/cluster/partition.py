"""One partition of a distributed fit, on its worker: its rows in the kernels' layout
and the passes over them.

Plain functions of pandas and numpy objects (this module imports no Dask): the
driver (:mod:`.passes`) runs them as Dask tasks, one per partition, with the
kernels of the worker's best backend on one thread (Dask runs as many tasks at
once as the worker has threads).

A partition keeps its own levels only: its :class:`~pyglmm.data.design.Design`
numbers the levels present in its rows 0, 1, ... (factor by factor, sorted by
global id) and :attr:`Partition.ids` maps them to the global level ids, so that
every per-level table a pass reads or returns has the partition's levels, not
the whole model's (at 10^6 levels and p = 35 a full table is 280 MB).
"""

import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ....backends import kernels
from ....data.design import EMPTY, build_design
from ....data.validation import factorize, named_column
from ....exceptions import DataError
from ....families import get_family
from .. import degenerate

ROLES = ("weights", "trials", "offset")
# warnings.catch_warnings swaps process-wide state: builds on the threads of one
# worker record their warnings one at a time
_RECORDING = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """What every partition needs to build its rows (one task argument for all)."""

    coding: object  # FixedCoding
    response: str
    groups: tuple
    levels: tuple  # per factor, the global levels (sorted)
    offsets: np.ndarray  # global level offsets per factor (K + 1)
    family: str
    roles: dict  # weights / trials / offset -> column name or None
    backend: object  # backend name or None (the worker's best)


@dataclass
class Partition:
    """A partition's rows (:attr:`d`, local level ids) and their global level ids."""

    d: object
    ids: np.ndarray  # int64, global id of each local level
    backend: object
    where: str
    warnings: list = field(default_factory=list)  # (category, message) raised by the build

    @property
    def kern(self):
        return kernels(self.backend)

    def __sizeof__(self):
        """The bytes of its arrays: what Dask counts (``dask.sizeof``) to run the passes'
        tasks where the partition is and to manage (spill) the worker's memory."""
        arrays = [v for v in vars(self.d).values() if isinstance(v, np.ndarray)]
        return int(self.ids.nbytes + sum(a.nbytes for a in arrays)) + 1000

    def factor_ids(self, factor):
        """The global ids of the partition's levels of ``factor``."""
        return self.ids[self.d.offsets[factor]:self.d.offsets[factor + 1]]


def _in(where, exc):
    return DataError(f"{where}: {exc}")


def uniques(frame, columns, where):
    """The sorted distinct values of each of ``columns`` (grouping columns: a missing
    label is an error naming the column, the row and ``where``) and the row count."""
    out = {}
    try:
        for col, grouping in columns.items():
            values = frame[col]
            if grouping:
                out[col] = factorize(col, values)[1]
            else:
                out[col] = pd.Index(pd.unique(values.dropna()))
    except DataError as exc:
        raise _in(where, exc) from None
    return out, len(frame)


def build(frame, spec, where):
    """The :class:`Partition` of ``frame``: validated (errors name the column, the row and
    ``where``), X coded (categoricals as codes: ``FixedCoding.split``), level ids
    mapped, rows in the kernels' order.  The warnings the build raises are recorded in
    :attr:`Partition.warnings` (the worker's would be lost): :func:`summary` takes
    them to the driver, which raises them."""
    with _RECORDING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        part = _build(frame, spec, where)
    part.warnings = [(w.category, str(w.message)) for w in caught]
    return part


def _build(frame, spec, where):
    try:
        extra = {role: None if col is None else named_column(frame, role, col, frame.index,
                                                             whole=False)
                 for role, col in spec.roles.items()}
        groups = {}
        for g, levels in zip(spec.groups, spec.levels):
            ids = levels.get_indexer(frame[g])
            if (ids < 0).any():
                pos = int(np.flatnonzero(ids < 0)[0])
                raise DataError(f"grouping column {g!r} has label {frame[g].iloc[pos]!r} at row "
                                f"{frame.index[pos]!r} that the level pass did not see (did the data "
                                "change during the fit?)")
            groups[g] = ids
        X, xcat = spec.coding.split(frame)
        d = build_design(X, frame[spec.response].to_numpy(), groups, get_family(spec.family),
                         xcat=xcat, feature_names=spec.coding.design_names,
                         coef_order=spec.coding.coef_order, response_name=spec.response,
                         index=frame.index, kern=kernels(spec.backend), nthreads=1,
                         whole=False, **extra)
    except DataError as exc:
        raise _in(where, exc) from None
    ids = np.concatenate([first + lv.to_numpy(np.int64) for first, lv in
                          zip(spec.offsets[:-1], d.levels)])
    return Partition(d, ids, spec.backend, where)


def each(parts, fn, *args):
    """``fn(part, *args)`` for each partition of a batch, in order."""
    return [fn(part, *args) for part in parts]


def level_sum(tables, ids):
    """Per-level tables of several partitions (``tables[i]`` over the global levels
    ``ids[i]``) added in order over the union of their levels: (union, sum)."""
    union = np.unique(np.concatenate(ids))
    out = np.zeros((union.size,) + tables[0].shape[1:])
    for table, i in zip(tables, ids):
        out[np.searchsorted(union, i)] += table
    return union, out


def batch_stats(parts, family, params, design):
    """:func:`stats` of a batch: (the partitions' weights, their sums added in partition
    order: scalars, G, h and S over the union of their levels with its ids)."""
    results = [stats(part, family, params, design) for part in parts]
    weights, sums = [w for w, _ in results], [s for _, s in results]
    scalars = _ordered_sum([s[0] for s in sums])
    if not design:
        return weights, (scalars,)
    union, S = level_sum([s[3] for s in sums], [part.ids for part in parts])
    return weights, (scalars, _ordered_sum([s[1] for s in sums]), _ordered_sum([s[2] for s in sums]),
                     union, S)


def batch_sums(state):
    """The sums of a :func:`batch_stats` result (its weights stay on the worker)."""
    return state[1]


def batch_cross_sums(parts, state, factor, others):
    """:func:`cross_sums` of a batch at its weights, added over the union of the
    partitions' levels of ``factor``: (global ids, sums)."""
    outs = [cross_sums(part, w0, factor, others) for part, w0 in zip(parts, state[0])]
    return level_sum(outs, [part.factor_ids(factor) for part in parts])


def batch_sandwich(parts, state, A, scale):
    """:func:`sandwich` of a batch: (H, global ids, ZU, M0) added in partition order."""
    results = [sandwich(part, w0, A, scale) for part, w0 in zip(parts, state[0])]
    union, ZU = level_sum([r[1] for r in results], [part.ids for part in parts])
    return _ordered_sum([r[0] for r in results]), union, ZU, _ordered_sum([r[2] for r in results])


def _ordered_sum(arrays):
    out = np.array(arrays[0], dtype=np.float64)
    for a in arrays[1:]:
        out += a
    return out


def summary(part):
    """What the driver's view of the whole design sums: n, rows of positive weight,
    X'X, the column sums of the p columns (X's, then the dummies of ``xcat``), the
    global ids and row counts of the partition's levels, its local factor offsets, and
    the warnings of its build with its name."""
    d = part.d
    dummies = np.bincount(d.xcat[d.xcat >= 0], minlength=d.p)[d.X.shape[1]:]
    return dict(n=d.n, n_eff=d.n_eff, XtX=d.XtX, colsum=np.concatenate([np.ones(d.n) @ d.X, dummies]),
                ids=part.ids, counts=d.counts, offsets=d.offsets, warnings=part.warnings,
                where=part.where)


def stats(part, family, params, design):
    """The fused pass at the global ``params`` = (beta, b, dbeta, db); returns
    (w0 or None, (scalars, G, h, S) with S over the partition's levels)."""
    d, kern = part.d, part.kern
    beta, b, dbeta, db = params
    p, Q = d.p, part.ids.size
    w0 = np.empty(d.n)
    G, h, S = np.empty((p, p)), np.empty(p), np.empty((Q, p + 2))
    sc = kern.stats_pass(family, d.X, d.codes, d.y, d.prior, d.offset, beta,
                         np.ascontiguousarray(b[part.ids]), dbeta,
                         np.ascontiguousarray(db[part.ids]), design, w0, G, h, S, 1, d.xcat)
    return (w0, (sc, G, h, S)) if design else (None, (sc,))


def cross_sums(part, w0, factor, others):
    """Kernel group_cross_sums at the weights ``w0`` over the partition's levels of
    ``factor``, of the global table without that factor's levels: ``others`` = (the
    table's rows of the other factors, in order, (Q - q) x m; lo; hi), the factor's
    levels being [lo, hi) (the kernel reads only the other factors' rows)."""
    d = part.d
    a, z = int(d.offsets[factor]), int(d.offsets[factor + 1])
    table, lo, hi = others
    rows = np.zeros((part.ids.size, table.shape[1]))  # the factor's own rows stay 0, unread
    rows[:a] = table[part.ids[:a]]  # the partition's levels of the factors before it ...
    rows[z:] = table[part.ids[z:] - (hi - lo)]  # ... and after it
    out = np.empty((z - a, table.shape[1]))
    part.kern.group_cross_sums(d.codes, factor, a, w0, 1.0, rows, out, 1)
    return out


def sandwich(part, w0, A, scale):
    """Kernel sandwich_pass with the global per-level fits ``A`` (Q x p): (H, ZU, M0)
    with ZU over the partition's levels."""
    d = part.d
    p = d.p
    H, ZU, M0 = np.empty((p, p)), np.empty((part.ids.size, p)), np.empty((p, p))
    part.kern.sandwich_pass(d.X, d.codes, np.ascontiguousarray(A[part.ids]), w0, scale,
                            EMPTY, H, ZU, M0, 1, d.xcat)
    return H, ZU, M0


def response_sums(part, centre):
    """For the starting values: [sum a, sum a r, sum a y, max o] with prior weights a,
    r = y - o and offset o (0 if none); with ``centre`` = (mean, top) instead
    [sum a (r - mean)^2, sum a exp(o - top)]."""
    d = part.d
    a = d.prior if d.prior.size else np.ones(d.n)
    o = d.offset if d.offset.size else np.zeros(d.n)
    r = d.y - o
    if centre is None:
        return np.array([a.sum(), a @ r, a @ d.y, o.max() if d.n else -np.inf])
    mean, top = centre
    return np.array([a @ (r - mean) ** 2, a @ np.exp(o - top)])


def outcomes(part):
    """For the separation checks: whether the response is 0 (and 1) in all rows of
    positive weight, and per factor the weight and events of the partition's levels."""
    d = part.d
    keep = degenerate._positive_rows(d)
    at = {bound: degenerate._all_at(d, keep, bound, slice(None)) for bound in (0.0, 1.0)}
    return at, [degenerate._level_outcomes(d, k, slice(None)) for k in range(len(d.factor_names))]


def certificate(part, bounds, delta):
    return degenerate.certificate_counts(part.d, bounds, delta)


def deviance(part, family, beta, b):
    """The deviance of the partition's rows at (beta, b) (kernels linear_predictor and
    irls_quantities: the fitted means clamped as in the fit)."""
    d, kern = part.d, part.kern
    eta, mu, w, z = (np.empty(d.n) for _ in range(4))
    kern.linear_predictor(d.X, d.codes, beta, np.ascontiguousarray(b[part.ids]), d.offset, eta, 1,
                          d.xcat)
    return kern.irls_quantities(family, eta, d.y, d.prior, d.offset, mu, w, z, 1)


# --- the standard errors' smoother with one factor's levels kept on the workers --------
@dataclass
class LocalBlock:
    """A batch's share of the smoother of X's columns (``inference.smooth_columns``) for
    the factor ``factor`` whose levels each lie in this batch only: over its levels
    ``ids`` (global, sorted) the rows of s = Z'W0X, D, the row counts and the per-level
    fits ``A``; ``num``, ``den`` the last step's change (as ``smooth_update``)."""

    factor: int
    ids: np.ndarray
    s: np.ndarray
    D: np.ndarray
    counts: np.ndarray
    A: np.ndarray
    num: float = 0.0
    den: float = 0.0


def local_block(parts, state, factor, lo, hi, phi, inv_sigma2):
    """The :class:`LocalBlock` of a batch from its last fused pass's sums (``state``, a
    :func:`batch_stats` result): D = Z'w0 + phi / sigma2 as the driver forms it, A = 0."""
    union, S = state[1][3], state[1][4]
    keep = (union >= lo) & (union < hi)
    p = S.shape[1] - 2
    ids, counts = level_sum([part.d.counts[part.d.offsets[factor]:part.d.offsets[factor + 1]]
                             for part in parts], [part.factor_ids(factor) for part in parts])
    return LocalBlock(factor, ids, np.ascontiguousarray(S[keep, :p]), S[keep, p] + phi * inv_sigma2,
                      counts, np.zeros((ids.size, p)))


def _fits_at(part, skip, tables, block):
    """The per-level fits A at the partition's levels (rows of a local table): the
    block's factor's from ``block``, factor j's from ``tables[j]`` = (its rows, its
    first global level); factor ``skip``'s (None: none) zero, which the kernels do not read."""
    d = part.d
    out = np.zeros((part.ids.size, block.A.shape[1]))
    for j in range(len(d.offsets) - 1):
        a, z = int(d.offsets[j]), int(d.offsets[j + 1])
        if j == skip or a == z:
            continue
        if j == block.factor:
            out[a:z] = block.A[np.searchsorted(block.ids, part.ids[a:z])]
        else:
            rows, first = tables[j]
            out[a:z] = rows[part.ids[a:z] - first]
    return out


def block_cross_sums(parts, state, block, factor, tables):
    """The group cross sums of A over the levels of ``factor`` at the batch's weights,
    added over the union of the partitions' levels: (global ids, sums)."""
    outs = []
    for part, w0 in zip(parts, state[0]):
        d = part.d
        a, z = int(d.offsets[factor]), int(d.offsets[factor + 1])
        out = np.empty((z - a, block.A.shape[1]))
        part.kern.group_cross_sums(d.codes, factor, a, w0, 1.0, _fits_at(part, factor, tables, block),
                                   out, 1)
        outs.append(out)
    return level_sum(outs, [part.factor_ids(factor) for part in parts])


def block_step(parts, state, block, tables):
    """The first half of ``smooth_update`` for the block's factor: (new fits, their
    column sums, sum 1/D) with new = (s - cross sums) / D."""
    _, sums = block_cross_sums(parts, state, block, block.factor, tables)
    new = (block.s - sums) / block.D[:, None]
    return new, new.sum(axis=0), np.sum(1.0 / block.D)


def block_centre_sums(step):
    return step[1], step[2]


def block_finish(block, step, shift):
    """The block with the step's fits (centred by ``shift`` along 1/D unless None) and
    its change num, den."""
    new = step[0] if shift is None else step[0] - np.outer(1.0 / block.D, shift)
    num = float(block.counts @ np.sum((block.A - new) ** 2, axis=1))
    den = float(block.counts @ np.sum(block.A ** 2, axis=1))
    return LocalBlock(block.factor, block.ids, block.s, block.D, block.counts, new, num, den)


def block_change(block):
    return block.num, block.den


def block_sandwich(parts, state, block, tables, scale):
    """:func:`batch_sandwich` with the block's fits: (H, M0, global ids and ZU of the
    other factors' levels, ZU'ZU of the block's levels, whole in this batch)."""
    results = []
    for part, w0 in zip(parts, state[0]):
        d = part.d
        H, ZU, M0 = np.empty((d.p, d.p)), np.empty((part.ids.size, d.p)), np.empty((d.p, d.p))
        part.kern.sandwich_pass(d.X, d.codes, _fits_at(part, None, tables, block), w0, scale, EMPTY,
                                H, ZU, M0, 1, d.xcat)
        results.append((H, ZU, M0))
    union, ZU = level_sum([r[1] for r in results], [part.ids for part in parts])
    own = np.isin(union, block.ids)
    return (_ordered_sum([r[0] for r in results]), _ordered_sum([r[2] for r in results]),
            union[~own], ZU[~own], ZU[own].T @ ZU[own])
