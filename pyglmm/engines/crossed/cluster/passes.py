"""The passes of a fit over partitions persisted on a Dask cluster (the driver's side).

Each pass sends its per-level inputs (beta, b, or the smoother's per-level fits)
to the cluster once, as one task that every partition's task depends on (the
workers fetch it from each other), maps a function of
:mod:`.partition` over the partitions and gathers what each returns: p x p
matrices and vectors or tables over the partition's own levels, never rows.
The driver adds them up **in partition order**, so that the fit does not depend
on which worker finished first.  The working weights stay on the workers as the
results of the last fused pass.

Fault tolerance is Dask's: every object a pass reads (the partitions, the
weights, the broadcast inputs) is a task result with its lineage, so a lost
worker's data are recomputed from the input files and the same inputs, giving
the same numbers.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ....data.design import Design
from ..degenerate import certificate_verdict, check_response_varies, exact_fit_error
from ..kernels_numpy import club_sweeps, smooth_update
from ..passes import RowPasses
from . import partition as P


@dataclass
class ClusterDesign:
    """The per-level side of a distributed design (what the driver knows of the rows)."""

    n: int
    n_eff: int
    XtX: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    feature_names: list
    factor_names: list
    levels: list
    response_name: str
    has_intercept: bool

    # the per-level views an in-process Design has (they read only the fields above)
    p = Design.p
    n_levels = Design.n_levels
    factor_slices = Design.factor_slices


@dataclass
class Traffic:
    """Per kind of pass: how many, seconds, bytes sent (each broadcast input counted
    once) and bytes gathered to the driver."""

    table: dict = field(default_factory=dict)

    def add(self, kind, seconds, sent, received):
        row = self.table.setdefault(kind, dict(passes=0, seconds=0.0, bytes_sent=0, bytes_received=0))
        row["passes"] += 1
        row["seconds"] += seconds
        row["bytes_sent"] += int(sent)
        row["bytes_received"] += int(received)


def _nbytes(value):
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 8


def _value(x):
    return x


def _batches(client, parts):
    """Partition numbers grouped by the worker thread that will run them: each worker's
    partitions (where the built partitions are) dealt round-robin to its threads."""
    who, threads = client.who_has(parts), client.nthreads()
    by_worker = {}
    for i, part in enumerate(parts):
        by_worker.setdefault((who.get(part.key) or ("",))[0], []).append(i)
    batches = []
    for worker, numbers in sorted(by_worker.items()):
        n = max(1, threads.get(worker, 1))
        batches += [numbers[t::n] for t in range(n) if numbers[t::n]]
    return batches


class ClusterPasses(RowPasses):
    """The :class:`~pyglmm.engines.crossed.passes.RowPasses` of partitions on a cluster.

    Parameters
    ----------
    client : distributed.Client
    parts : list of Future
        The built :class:`.partition.Partition` of every (non-empty) partition, in order.
    summaries : list of dict
        Their :func:`.partition.summary`, in the same order.
    d : ClusterDesign
    """

    def __init__(self, client, parts, summaries, d):
        self.client, self.parts, self.d = client, parts, d
        self.ids = [s["ids"] for s in summaries]
        self.local_offsets = [s["offsets"] for s in summaries]
        self.batches = _batches(client, parts)
        self.batch_parts = [[parts[i] for i in batch] for batch in self.batches]
        self.w0 = None  # futures of the last design pass, one per batch
        self.traffic = Traffic()

    # --- mechanics ---------------------------------------------------------------
    def _put(self, value):
        """``value`` as one task result that the partitions' tasks depend on."""
        return self.client.submit(_value, value, pure=False)

    def _run(self, fn, *args, states=None):
        """Futures of ``fn(part, [state], *args)`` for every partition, one per batch."""
        states = [None] * len(self.batches) if states is None else states
        return [self.client.submit(P.each, fn, parts, st, *args, pure=False)
                for parts, st in zip(self.batch_parts, states)]

    def _ordered(self, batch_results):
        """Per-batch lists of results as one list in partition order."""
        out = [None] * len(self.parts)
        for batch, results in zip(self.batches, batch_results):
            for i, r in zip(batch, results):
                out[i] = r
        return out

    def _map(self, kind, fn, *args, states=None, sent=0):
        """``fn(part, [state], *args)`` for every partition; results in partition order."""
        start = time.perf_counter()
        out = self._ordered(self.client.gather(self._run(fn, *args, states=states)))
        self.traffic.add(kind, time.perf_counter() - start, sent, _nbytes(out))
        return out

    def _scatter_add(self, results, factor, out, lo=0):
        """Add each partition's rows over its levels of ``factor`` (all levels when None)
        into ``out`` (rows ``lo``...), in partition order."""
        for r, ids, offs in zip(results, self.ids, self.local_offsets):
            if factor is not None:
                ids = ids[offs[factor]:offs[factor + 1]]
            out[ids - lo] += r

    # --- the passes ----------------------------------------------------------------
    def stats(self, family, beta, b, dbeta, db, design, G, h, S):
        params = (beta.copy(), b.copy(), dbeta.copy(), db.copy())
        start = time.perf_counter()
        states = self._run(P.stats, family, self._put(params), design)
        sums = self._ordered(self.client.gather([self.client.submit(P.sums_of, s, pure=False)
                                                 for s in states]))
        self.traffic.add("stats", time.perf_counter() - start, _nbytes(params), _nbytes(sums))
        if design:
            self.w0 = states
            G[:], h[:], S[:] = 0.0, 0.0, 0.0
            for (_, g, hh, _s) in sums:
                G += g
                h += hh
            self._scatter_add([s[3] for s in sums], None, S)
        return np.sum([s[0] for s in sums], axis=0)

    def _cross_sums(self, w0, factor, lo, table, out):
        results = self._map("cross_sums", P.cross_sums, factor, self._put(np.array(table)),
                            states=w0, sent=table.nbytes)
        out[:] = 0.0
        self._scatter_add(results, factor, out, lo)

    def backfit(self, c, beta, b, tol, max_iter):
        d = self.d

        def cross(f, lo, table, out):
            self._cross_sums(self.w0, f, lo, table, out)

        sweeps, rel = club_sweeps(cross, d.offsets, c.h, c.s, c.D, c.tq, c.chol, d.XtX, d.counts,
                                  beta, b, tol, max_iter)
        return int(sweeps), float(rel)

    def smooth_step(self, k, w0, s, D, A, work):
        d = self.d
        lv = d.factor_slices()[k]
        new = work[: lv.stop - lv.start]
        self._cross_sums(w0, k, lv.start, A, new)
        return smooth_update(lv, new, s, D, d.counts, d.has_intercept, A)

    def sandwich(self, A, w0, scale, H, ZU, M0):
        results = self._map("sandwich", P.sandwich, self._put(np.array(A)), scale, states=w0,
                            sent=A.nbytes)
        H[:], ZU[:], M0[:] = 0.0, 0.0, 0.0
        for h, _, m in results:
            H += h
            M0 += m
        self._scatter_add([r[1] for r in results], None, ZU)

    def initial_values(self, family):
        from ....families import POISSON

        first = np.array(self._map("start", P.response_sums, None))
        total_a, total_ar, total_ay = (first[:, j].sum() for j in range(3))
        top = float(first[:, 3].max())
        mean = total_ar / total_a
        second = np.sum(self._map("start", P.response_sums, (mean, top)), axis=0) \
            if not family.irls or family.code == POISSON else None
        scale = 1.0
        if not family.irls:
            var = float(second[0] / total_a)
            scale = var if var > 0 else 1.0
        shift = 0.0
        if family.code == POISSON and total_ay > 0:
            shift = float(np.log(total_ay) - top - np.log(second[1]))
        return scale, shift

    def certificate(self, bounds, delta):
        counts = self._map("certificate", P.certificate, bounds, delta)
        return certificate_verdict(all(c for c, _ in counts), sum(r for _, r in counts), self.d.n_eff)

    def check_response(self, family):
        d = self.d
        results = self._map("outcomes", P.outcomes)

        def at_bound(bound, rows):
            return all(at[bound] for at, _ in results)

        def outcomes(k, rows):
            lv = d.factor_slices()[k]
            total, events = np.zeros(lv.stop - lv.start), np.zeros(lv.stop - lv.start)
            self._scatter_add([levels[k][0] for _, levels in results], k, total, lv.start)
            self._scatter_add([levels[k][1] for _, levels in results], k, events, lv.start)
            return total, events

        check_response_varies(d, family, at_bound, outcomes)

    def exact_fit_error(self, phi, start):
        return exact_fit_error(self.d, phi, start, cause=f"the model reproduces the response "
                               f"{self.d.response_name!r} exactly")

    def conditional_fit(self, family, beta, b):
        params = self._put((beta.copy(), b.copy()))
        dev = self._map("deviance", _deviance, family.code, params, sent=beta.nbytes + b.nbytes)
        return float(np.sum(dev)), None


def _deviance(part, family, params):
    return P.deviance(part, family, *params)

