"""The passes of a fit over partitions persisted on a Dask cluster (the driver's side).

Each pass sends its per-level inputs (beta, b, or the smoother's per-level fits)
to the cluster once, as one task that the pass's tasks depend on (the workers
fetch it from each other), and runs one task per worker thread: a function of
:mod:`.partition` over the consecutive run of partitions that thread holds,
whose tables over each partition's own levels are added **in partition order**
over the union of their levels.  The driver gathers p x p matrices and those
per-level tables, never rows, and adds them in batch order: the sums do not
depend on which worker finished first, nor on where the tasks ran.  The working
weights stay on the workers as the results of the last fused pass.

Fault tolerance is Dask's: every object a pass reads (the partitions, the
weights, the broadcast inputs) is a task result with its lineage, so a lost
worker's data are recomputed from the input files and the same inputs, giving
the same numbers.
"""

import contextlib
import functools
import time
from dataclasses import dataclass, field

import numpy as np

from ....data.design import Design
from ....exceptions import ClusterError
from ..degenerate import certificate_verdict, check_response_varies, exact_fit_error
from ..kernels_numpy import club_sweeps, smooth_update
from ..passes import RowPasses
from ..schall import _relative
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
    coef_order: np.ndarray  # as Design.coef_order: the partitions keep categoricals as codes

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


STALL_SECONDS = 60.0  # how long no worker may run a task before a fit stops
_ADVICE = ("most often a worker over its memory limit: give the workers more memory "
           "(memory_limit), use more workers, or split the data into more partitions; "
           "the workers' logs say more")


@contextlib.contextmanager
def cluster_failures(what="the fit"):
    """While active, the ways a Dask cluster fails to run work reach the caller as a
    :class:`~pyglmm.exceptions.ClusterError` saying what happened and what to do: Dask
    gave up on a task whose workers kept dying (``KilledWorker``), the connection to the
    scheduler was lost (Dask then cancels every task), or a call to the scheduler failed
    or timed out.  Errors the tasks raise (a :class:`~pyglmm.exceptions.DataError`, a
    file a worker cannot read) and bugs pass unchanged."""
    from concurrent.futures import CancelledError

    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    try:
        yield
    except KilledWorker as exc:
        limit = _limits({0: {"memory_limit": getattr(exc.last_worker, "memory_limit", 0)}})
        raise ClusterError(f"{what} stopped: Dask gave up on its task {exc.task!r} after "
                           f"{exc.allowed_failures + 1} worker(s) died running it (the last with a "
                           f"memory limit of {limit}); " + _ADVICE) from exc
    except CancelledError as exc:
        raise ClusterError(f"{what} stopped: the Dask scheduler cancelled its tasks (most often the "
                           "connection to the scheduler was lost: is it still running?)") from exc
    except CommClosedError as exc:
        raise ClusterError(f"{what} stopped: the connection to the Dask scheduler or a worker "
                           f"closed ({exc})") from exc


def gather(client, futures, poll=2.0, stall=None, what="the fit"):
    """``client.gather(futures)``, or a clear :class:`~pyglmm.exceptions.ClusterError`
    (saying that ``what`` stopped) where Dask would wait for ever or say little: when for
    ``stall`` seconds (``STALL_SECONDS``) the cluster has no worker or every worker is
    paused (over 80% of its memory limit, with nothing it can spill), and the failures
    of :func:`cluster_failures`."""
    from distributed import TimeoutError as Waiting, wait

    stall = STALL_SECONDS if stall is None else stall
    since = None
    with cluster_failures(what):
        while True:
            try:
                with client.as_current():
                    wait(futures, timeout=poll)
                break
            except Waiting:
                workers = client.scheduler_info().get("workers", {})
                if workers and any(w.get("status") != "paused" for w in workers.values()):
                    since = None
                    continue
                since = time.monotonic() if since is None else since
                if time.monotonic() - since >= stall:
                    state = ("has no worker" if not workers else
                             f"has had every worker paused at its memory limit ({_limits(workers)})")
                    raise ClusterError(f"{what} stopped: for {stall:.0f} s the Dask cluster {state}; "
                                       + _ADVICE) from None
        return client.gather(futures)


def wait_for_workers(client, what="the fit"):
    """Return once the cluster has a worker; a :class:`~pyglmm.exceptions.ClusterError`
    if none joins in ``STALL_SECONDS``."""
    if client.nthreads():
        return
    try:
        client.wait_for_workers(1, timeout=STALL_SECONDS)
    except TimeoutError:
        raise ClusterError(f"{what} stopped: no worker joined the Dask cluster (scheduler "
                           f"{client.scheduler.address}) in {STALL_SECONDS:.0f} s: start its "
                           "workers, or use a cluster that has some") from None


def _limits(workers):
    limits = sorted({w.get("memory_limit") or 0 for w in workers.values()})
    return ", ".join(f"{x / 2**30:.2f} GiB" if x else "none" for x in limits)


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
    batches : list of list of int
        Runs of partitions (positions in ``parts``) held by one worker (one batch per
        worker thread, see ``fit._batches``): a pass is one task per batch, which Dask
        runs where its partitions are and which adds their tables in partition order;
        the driver adds the batches' in batch order.  The sums are thus the same
        whatever the timing and wherever the tasks run.
    """

    def __init__(self, client, parts, summaries, d, batches):
        self.client, self.parts, self.d = client, parts, d
        self.ids = [s["ids"] for s in summaries]
        self.local_offsets = [s["offsets"] for s in summaries]
        self.batches = [positions for positions in batches if positions]
        self.batch_parts = [[parts[i] for i in positions] for positions in self.batches]
        self.w0 = None  # futures of the last design pass, one per batch
        self.traffic = Traffic()

    @functools.cached_property
    def whole(self):
        """The factor with the most levels if each of its levels lies in one batch only
        (as after ``shuffle="largest"``), else None."""
        big = int(np.argmax(self.d.n_levels))
        seen = np.concatenate([np.unique(np.concatenate(
            [self.ids[i][self.local_offsets[i][big]:self.local_offsets[i][big + 1]] for i in batch]))
            for batch in self.batches])
        return big if np.unique(seen).size == seen.size else None

    # --- mechanics ---------------------------------------------------------------
    def _put(self, value):
        """``value`` as one task result that the partitions' tasks depend on."""
        return self.client.submit(_value, value, pure=False)

    def _run(self, fn, *args, states=None):
        """Futures of ``fn(batch's parts, [state], *args)``, one per batch (Dask runs it
        where its partitions and state are; a state may be a tuple of several)."""
        states = [()] * len(self.batches) if states is None else [
            st if isinstance(st, tuple) else (st,) for st in states]
        return [self.client.submit(fn, parts, *st, *args, pure=False)
                for parts, st in zip(self.batch_parts, states)]

    def _gather(self, kind, futures, start, sent):
        out = gather(self.client, futures)
        self.traffic.add(kind, time.perf_counter() - start, sent, _nbytes(out))
        return out

    def _map(self, kind, fn, *args, sent=0):
        """``fn(part, *args)`` for every partition; results in partition order."""
        start = time.perf_counter()
        out = [None] * len(self.parts)
        batch_results = self._gather(kind, self._run(P.each, fn, *args), start, sent)
        for positions, results in zip(self.batches, batch_results):
            for i, r in zip(positions, results):
                out[i] = r
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
        states = self._run(P.batch_stats, family, self._put(params), design)
        sums = self._gather("stats", [self.client.submit(P.batch_sums, s, pure=False)
                                      for s in states], start, _nbytes(params))
        if design:
            self.w0 = states
            G[:], h[:], S[:] = 0.0, 0.0, 0.0
            for _, g, hh, union, table in sums:  # in batch order
                G += g
                h += hh
                S[union] += table
        return np.sum([s[0] for s in sums], axis=0)

    def _cross_sums(self, w0, factor, lo, table, out):
        """The group cross sums of ``table`` over the levels [lo, lo + len(out)) of
        ``factor``: only the other factors' rows of ``table`` are sent (with a small
        factor and a large one, the large factor's pass sends the small one's rows)."""
        start = time.perf_counter()
        hi = lo + out.shape[0]
        others = np.concatenate([table[:lo], table[hi:]])
        futures = self._run(P.batch_cross_sums, factor, self._put((others, lo, hi)), states=w0)
        out[:] = 0.0
        for union, sums in self._gather("cross_sums", futures, start, others.nbytes):
            out[union - lo] += sums

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
        start = time.perf_counter()
        futures = self._run(P.batch_sandwich, self._put(np.array(A)), scale, states=w0)
        H[:], ZU[:], M0[:] = 0.0, 0.0, 0.0
        for h, union, zu, m in self._gather("sandwich", futures, start, A.nbytes):
            H += h
            ZU[union] += zu
            M0 += m

    def covariance_sums(self, fit, tol, max_iter):
        """See :meth:`RowPasses.covariance_sums`: when each level of the largest factor L
        lies in one batch (``self.whole``), its part of the smoother (its per-level fits,
        Z'W0X rows, D, counts) stays on the workers, and only the other factors' fits,
        p-vectors and p x p matrices cross the network; the same steps, sums and stopping
        rule as ``inference.smooth_columns`` and ``_sandwich``."""
        L = self.whole
        if L is None:
            return None
        d = self.d
        lv = d.factor_slices()
        s = fit.s0
        D = fit.Wq0 + fit.phi * np.repeat(1.0 / fit.sigma2, d.n_levels)  # L's rows unused
        A = np.zeros(s.shape)  # the other factors' fits
        work = np.empty((int(d.n_levels.max()), d.p))
        blocks = self._run(P.local_block, L, lv[L].start, lv[L].stop, fit.phi,
                           1.0 / fit.sigma2[L], states=fit.w0)
        rel, it = np.inf, 0
        for it in range(1, max_iter + 1):
            num = den = 0.0
            for k in range(len(d.n_levels)):
                start = time.perf_counter()
                tables = {j: (A[lv[j]], lv[j].start) for j in range(len(lv)) if j not in (k, L)}
                sent, tables = _nbytes(tables), self._put(tables)
                if k == L:
                    blocks, (dn, dd) = self._block_step(fit.w0, blocks, tables, start, sent)
                else:
                    new = work[: lv[k].stop - lv[k].start]
                    new[:] = 0.0
                    futures = self._run(P.block_cross_sums, k, tables,
                                        states=list(zip(fit.w0, blocks)))
                    for union, sums in self._gather("smoother", futures, start, sent):
                        new[union - lv[k].start] += sums
                    dn, dd = smooth_update(lv[k], new, s, D, d.counts, d.has_intercept, A)
                num, den = num + dn, den + dd
            rel = _relative(num, den)
            if rel <= tol:
                break
        start = time.perf_counter()
        tables = {j: (A[lv[j]], lv[j].start) for j in range(len(lv)) if j != L}
        futures = self._run(P.block_sandwich, self._put(tables), 1.0 / fit.phi,
                            states=list(zip(fit.w0, blocks)))
        H, M0, ZU, own = (np.zeros((d.p, d.p)), np.zeros((d.p, d.p)), np.zeros(s.shape),
                          np.zeros((d.p, d.p)))
        for h, m, union, zu, zz in self._gather("sandwich", futures, start, _nbytes(tables)):
            H += h
            M0 += m
            ZU[union] += zu
            own += zz
        M = M0 + sum(s2 * own if k == L else s2 * ZU[lv[k]].T @ ZU[lv[k]]
                     for k, s2 in enumerate(fit.sigma2))
        return H, M, it, rel

    def _block_step(self, w0, blocks, tables, start, sent):
        """The smoother's step for the factor kept on the workers: (new blocks, (num, den))."""
        steps = self._run(P.block_step, tables, states=list(zip(w0, blocks)))
        shift = None
        if self.d.has_intercept:  # centred along 1/D: sum_g new_g = 0
            sums = self._gather("smoother", [self.client.submit(P.block_centre_sums, st, pure=False)
                                             for st in steps], start, sent)
            shift = np.sum([c for c, _ in sums], axis=0) / np.sum([w for _, w in sums])
            start, sent = time.perf_counter(), shift.nbytes
        blocks = [self.client.submit(P.block_finish, bl, st, shift, pure=False)
                  for bl, st in zip(blocks, steps)]
        changes = self._gather("smoother", [self.client.submit(P.block_change, bl, pure=False)
                                            for bl in blocks], start, sent)
        return blocks, (sum(n for n, _ in changes), sum(m for _, m in changes))

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

