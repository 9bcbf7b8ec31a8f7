r"""The crossed engine on a Dask cluster: :func:`glmm` with a ``dask.dataframe.DataFrame``.

Data flow (the driver is this process; the rows never come to it):

1. **Level pass.**  Every partition sends the sorted distinct labels of each
   grouping column (and of each categorical fixed-effect column); the driver
   merges them in partition order into the global levels, sorted as an
   in-process fit sorts them, and fits the fixed-effects coding.
2. **Build.**  Every partition is read and converted once, on its worker, into
   the kernels' layout (:func:`.partition.build`: X coded with the categoricals
   as codes, ``Design.xcat``; checked; level ids) and kept there; the raw frames
   are released; Dask decides where (see ``_read``).  Its summary (X'X, rows,
   the global ids of its levels, the warnings of its build) comes back, and each
   worker's partitions are split into one run per worker thread (``_batches``).
3. **Schall's loop, the standard errors and the deviance** run on the driver
   exactly as in process (:mod:`pyglmm.engines.crossed.schall`), through
   :class:`.passes.ClusterPasses`: per outer iteration one fused pass, per inner
   sweep one cross-sum pass per factor, each moving per-level vectors and p x p
   matrices.  When each level of the largest factor lies in one batch, the
   standard errors' smoother keeps that factor's per-level fits on the workers
   (``ClusterPasses.covariance_sums``).

Per pass a worker thread returns tables over its partitions' levels only.  With rows
spread over partitions at random, every partition holds most levels of a small
factor and a few of a large one; ``shuffle="largest"`` first moves all rows of
each level of the factor with the most levels to one partition (a Dask
shuffle), so that factor's tables are disjoint across partitions and the bytes
per pass are about the large factor's levels once plus the small factors'
levels per worker thread.  When the largest factor has fewer levels than the data
have partitions (or one level holds most rows), shuffling by it would leave
partitions empty or unbalanced: then keep the partitioning as it is (the
default), which is always correct, at more bytes per pass.
"""

import time
import warnings

import numpy as np
import pandas as pd

from ....data.coding import FixedCoding, _is_numeric
from ....data.design import check_level_ids
from ....data.formula import parse_fixed
from ....data.validation import aliased_columns, factorize
from ....exceptions import DataError, SingularMatrixError
from ..api import _check_roles, _fit, _kernels, _options
from ....families import get_family
from . import partition as P
from .passes import (ClusterDesign, ClusterPasses, _value, cluster_failures, gather,
                     wait_for_workers)

SHUFFLE = (None, "largest")


@cluster_failures()
def glmm_dask(parsed, formula, ddf, family, *, weights, trials, offset, dispersion, tol,
              inner_tol, var_tol, max_iter, max_inner_iter, se, compare_naive, backend, callback,
              shuffle=None, partition_names=None):
    """:func:`pyglmm.glmm` on a dask DataFrame (see the module's docstring); runs on the
    default ``distributed.Client``.  ``partition_names`` (one per partition, e.g. the
    files) name partitions in errors.  The ways the cluster can fail to run the fit
    are a :class:`~pyglmm.exceptions.ClusterError` (:func:`.passes.cluster_failures`)."""
    start = time.perf_counter()
    client = _client()
    named = {"weights": weights, "trials": trials, "offset": offset}
    for role, value in named.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{role} must be a column name with a dask DataFrame, got "
                            f"{type(value).__name__}")
    if compare_naive:
        raise NotImplementedError("compare_naive is not available for a dask DataFrame yet: fit a "
                                  "sample in process for the naive comparison")
    if shuffle not in SHUFFLE:
        raise ValueError(f"shuffle must be None or 'largest', got {shuffle!r}")
    meta = ddf._meta
    _check_roles(meta, parsed, named)
    fam = get_family(family)
    opts = _options(fam, dispersion, tol, inner_tol, var_tol, max_iter, max_inner_iter)
    name, kern, _ = _kernels(backend, None)
    fixed_terms = parse_fixed(parsed.fixed)[1]
    categorical = [t.column for t in fixed_terms
                   if t.forced_categorical or not _is_numeric(meta[t.column])]
    needed = list(dict.fromkeys([parsed.response, *parsed.groups, *(t.column for t in fixed_terms),
                                 *(v for v in named.values() if v)]))
    ddf = ddf[needed]
    names = list(partition_names) if partition_names is not None else [
        f"partition {i}" for i in range(ddf.npartitions)]
    frames = _read(client, ddf)
    columns = {**{g: True for g in parsed.groups}, **{c: False for c in categorical}}
    seen = gather(client, [client.submit(P.uniques, f, columns, where, pure=False)
                           for f, where in zip(frames, names)])
    keep = [i for i, (_, n) in enumerate(seen) if n > 0]
    if not keep:
        raise DataError("the data have no rows")
    levels = {c: _merge(c, [seen[i][0][c] for i in keep], grouping) for c, grouping in columns.items()}
    group_levels = [levels[g] for g in parsed.groups]
    check_level_ids({g: len(lv) for g, lv in zip(parsed.groups, group_levels)})
    coding = FixedCoding.from_data(parsed.fixed, _levels_frame(meta, needed, levels))
    if shuffle == "largest":
        big = parsed.groups[int(np.argmax([len(lv) for lv in group_levels]))]
        ddf = ddf.shuffle(on=big)
        frames = _read(client, ddf)
        names = [f"partition {i} (after the shuffle by {big!r})" for i in range(ddf.npartitions)]
        counts = gather(client, [client.submit(len, f) for f in frames])
        keep = [i for i, n in enumerate(counts) if n > 0]
    spec = P.ModelSpec(coding, parsed.response, tuple(parsed.groups), tuple(group_levels),
                       np.cumsum([0] + [len(lv) for lv in group_levels]).astype(np.int64),
                       fam.name, named, backend)
    shared = client.submit(_value, spec, pure=False)
    parts = [client.submit(P.build, frames[i], shared, names[i], pure=False) for i in keep]
    del frames  # each frame goes once its partition is built (it stays recomputable)
    summaries = gather(client, [client.submit(P.summary, p, pure=False) for p in parts])
    _warn_from_partitions(summaries)
    d = _design(summaries, spec, coding)
    passes = ClusterPasses(client, parts, summaries, d, _batches(client, parts))
    res = _fit(passes, fam, formula, start, opts, se, False, name, kern, 1, callback, None,
               intercept=False, offset_name=offset, has_offset=offset is not None, coding=coding,
               cluster=_cluster(client, len(parts), shuffle, passes))
    return res


def _read(client, ddf):
    """Futures of the partitions of ``ddf``, read where Dask places them (once the
    cluster has a worker: :func:`.passes.wait_for_workers`).  No task of a
    fit is restricted to a worker: Dask keeps each task next to the data it reads (the
    partitions report their size, ``Partition.__sizeof__``), and recomputes lost data
    on any worker (distributed 2026.8 leaves a task restricted to a worker that died
    waiting for ever when no worker was alive at the time, as after the restart of the
    only worker over its memory limit)."""
    wait_for_workers(client)
    return [client.compute(part) for part in ddf.to_delayed()]


def _batches(client, parts):
    """The batches of the passes: each worker's partitions (positions in ``parts``, in
    order) in as many consecutive runs as it has threads, in order of their first
    partition, so that every pass is one task per thread over partitions it holds."""
    who, threads = client.who_has(parts), client.nthreads()
    by_worker = {}
    for i, future in enumerate(parts):
        by_worker.setdefault(min(who.get(future.key) or [""]), []).append(i)
    runs = [run.tolist() for worker, positions in by_worker.items()
            for run in np.array_split(positions, min(len(positions), max(1, threads.get(worker, 1))))]
    return sorted(runs)


def _client():
    try:
        from distributed import default_client
    except ImportError as exc:
        raise ImportError("fitting a dask DataFrame needs dask.distributed: pip install "
                          f"'pyglmm[dask]' ({exc})") from exc
    try:
        return default_client()
    except ValueError:
        raise ValueError("fitting a dask DataFrame needs a dask.distributed Client: start one "
                         "first, e.g. distributed.Client(distributed.LocalCluster()) or "
                         "distributed.Client('tcp://scheduler:8786')") from None


def _merge(column, parts, grouping):
    """The global levels of ``column`` from each partition's sorted distinct values, sorted
    as an in-process fit sorts them (grouping factors: as ``factorize``)."""
    values = pd.concat([pd.Series(p) for p in parts], ignore_index=True)
    if grouping:
        levels = factorize(column, values)[1]
        if isinstance(levels, pd.CategoricalIndex):  # plain labels, as in an in-process fit
            levels = pd.Index(levels.astype(levels.dtype.categories.dtype), name=column)
        return levels
    return pd.Index(pd.unique(values))


def _levels_frame(meta, needed, levels):
    """A small frame that FixedCoding.from_data codes as it would code the whole data:
    the categorical columns' distinct values, the numeric columns' dtypes."""
    size = max([len(v) for v in levels.values()] + [1])
    out = {}
    for c in needed:
        if c in levels and len(levels[c]):
            values = np.resize(levels[c].to_numpy(), size)
            out[c] = pd.Series(values, dtype=meta[c].dtype) if isinstance(
                meta[c].dtype, pd.CategoricalDtype) else pd.Series(values)
        else:
            out[c] = pd.Series(np.zeros(size), dtype=meta[c].dtype) if _is_numeric(meta[c]) \
                else pd.Series([None] * size, dtype=meta[c].dtype)
    return pd.DataFrame(out)


def _warn_from_partitions(summaries, shown=5):
    """Raise on the driver the warnings the partitions' builds recorded on the workers:
    per warning class one warning, naming the partitions (the first ``shown`` of them
    with their messages)."""
    by_class = {}
    for s in summaries:
        for category, message in s["warnings"]:
            by_class.setdefault(category, []).append(f"{s['where']}: {message}")
    for category, notes in by_class.items():
        more = f" (and {len(notes) - shown} more partition warnings)" if len(notes) > shown else ""
        warnings.warn("; ".join(notes[:shown]) + more, category, stacklevel=4)


def _design(summaries, spec, coding):
    """The driver's ClusterDesign from the partitions' summaries (summed in order)."""
    n, n_eff = sum(s["n"] for s in summaries), sum(s["n_eff"] for s in summaries)
    if n_eff == 0:  # a partition's weights may all be zero, not the whole data's
        raise DataError(f"weights column {spec.roles['weights']!r}: every weight is zero")
    XtX = np.sum([s["XtX"] for s in summaries], axis=0)
    colsum = np.sum([s["colsum"] for s in summaries], axis=0)
    counts = np.zeros(int(spec.offsets[-1]))
    for s in summaries:
        counts[s["ids"]] += s["counts"]
    names, shown = list(coding.design_names), coding.coef_order  # named in the user's order
    problems = aliased_columns(XtX[np.ix_(shown, shown)], [names[j] for j in shown])
    if problems:
        raise SingularMatrixError("fixed-effect columns are aliased (X'X is singular): "
                                  + "; ".join(problems))
    has_intercept = bool(np.any((colsum != 0) & np.isclose(colsum**2, n * np.diag(XtX), rtol=1e-12)))
    return ClusterDesign(n, n_eff, XtX, spec.offsets, counts, names,
                         list(spec.groups), list(spec.levels), spec.response, has_intercept, shown)


def _cluster(client, n_parts, shuffle, passes):
    """What the result records of the cluster: workers, threads, partitions, traffic."""
    workers = client.scheduler_info().get("workers", {})
    return {"workers": len(workers), "threads": int(sum(w.get("nthreads", 0) for w in workers.values())),
            "partitions": n_parts, "shuffle": shuffle, "scheduler": client.scheduler.address,
            "traffic": passes.traffic.table}
