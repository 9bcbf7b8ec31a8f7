"""Row blocks, per-level slabs and Gram tiles shared by the numba kernels
(``kernels_numba``): the block rule of csrc/common/common.hpp, the scratch
workspace kept between calls, and the tile product."""

import contextlib
import math
import threading

import numba
import numpy as np
from numba import njit

MIN_ROWS_PER_BLOCK = 16384  # as kMinRowsPerBlock in csrc/common/common.hpp
TILE = 64  # rows per Gram tile, as kTile in csrc/common/common.hpp


def n_blocks(n, nthreads):
    """Row blocks for n rows: one per thread, each at least MIN_ROWS_PER_BLOCK rows."""
    return max(1, min(max(1, nthreads), n // MIN_ROWS_PER_BLOCK))


def set_threads(nthreads):
    """Numba's thread count for the next parallel kernel (at most what numba has)."""
    numba.set_num_threads(max(1, min(nthreads, numba.config.NUMBA_NUM_THREADS)))


class Workspace:
    """Scratch memory for the private per-level slabs of the blocks after the first.

    One flat buffer, shared by the kernels and kept between calls, grown when a
    call needs more; a call views its start in the shape it needs.  Its pages
    are touched only at the levels that blocks' rows have: with rows sorted by
    a factor (as pyglmm sorts them), a block's slab takes memory only for its
    share of that factor's levels.  A call made while another holds the buffer
    (from another Python thread) gets a fresh array.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._buffer = np.empty(0)

    @contextlib.contextmanager
    def get(self, shape):
        size = math.prod(shape)
        if not self._lock.acquire(blocking=False):
            yield np.empty(shape)
            return
        try:
            if self._buffer.size < size:
                self._buffer = np.empty(0)  # free the old buffer first
                self._buffer = np.empty(size)
            yield self._buffer[:size].reshape(shape)
        finally:
            self._lock.release()


workspace = Workspace()


@njit(cache=True)
def block_spans(codes, begin, end, only, spans):
    """The levels that rows [begin, end) touch (only factor ``only`` if >= 0), as
    disjoint, sorted closed ranges ``spans[r] = (lo, hi)`` (lo > hi: unused)."""
    k = codes.shape[1]
    spans[:, 0] = 1 << 62
    spans[:, 1] = -1
    for f in range(k):
        if only >= 0 and f != only:
            continue
        lo, hi = spans[f, 0], spans[f, 1]
        for i in range(begin, end):
            lo = min(lo, codes[i, f])
            hi = max(hi, codes[i, f])
        spans[f, 0], spans[f, 1] = lo, hi
    # factors' levels are disjoint ranges of one level space; merge any that are not
    order = np.argsort(spans[:, 0])
    merged = spans[order].copy()
    r = 0
    for f in range(1, k):
        if merged[f, 0] > merged[f, 1]:
            break
        if merged[f, 0] <= merged[r, 1]:
            merged[r, 1] = max(merged[r, 1], merged[f, 1])
        else:
            r += 1
            merged[r] = merged[f]
    spans[:] = merged
    spans[r + 1:, 0] = 1 << 62
    spans[r + 1:, 1] = -1


@njit(cache=True)
def block_slab(codes, begin, end, only, t, out, ws, spans, shift):
    """Where block t (rows [begin, end)) adds its per-level sums, level g at row
    g - shift: block 0 into ``out`` (zeroed here), block t >= 1 into its slab
    ``ws[t - 1]``, zeroed over the levels its rows touch (kept in ``spans[t]``)."""
    if t == 0:
        out[:] = 0.0
        return out
    block_spans(codes, begin, end, only, spans[t])
    slab = ws[t - 1]
    for r in range(spans.shape[1]):
        if spans[t, r, 0] <= spans[t, r, 1]:
            slab[spans[t, r, 0] - shift:spans[t, r, 1] - shift + 1, :] = 0.0
    return slab


@njit(cache=True)
def add_slabs(out, ws, spans, shift):
    """out[g - shift] += ws[t - 1, g - shift] over the levels g that block t >= 1
    touched, in block order."""
    for t in range(1, spans.shape[0]):
        for r in range(spans.shape[1]):
            for g in range(spans[t, r, 0], spans[t, r, 1] + 1):
                out[g - shift, :] += ws[t - 1, g - shift, :]


@njit(cache=True, fastmath={"reassoc", "contract"})
def gram_tile(nr, At, Bt, out, upper):
    """out += A'B over the nr rows of a tile stored by columns (At[j, r] = A[r, j]).

    Reassociation is allowed here only, so that the dot products vectorise."""
    p = out.shape[0]
    for j in range(p):
        for l in range(j if upper else 0, p):
            acc = 0.0
            for r in range(nr):
                acc += At[j, r] * Bt[l, r]
            out[j, l] += acc
