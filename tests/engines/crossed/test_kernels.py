"""Every backend's kernels against the numpy reference, on random inputs and edge cases."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from pyglmm import backends as _backend

REF = _backend.kernels("numpy")


def make_problem(seed, n=3000, p=4, levels=(40, 7), edge=None, sort=False):
    """Random kernel inputs; ``edge`` adds one edge case; ``sort`` orders rows by factor 0."""
    rng = np.random.default_rng(seed)
    levels = list(levels)
    local = np.column_stack([rng.integers(0, q, n) for q in levels]).astype(np.int32)
    w = rng.uniform(0.05, 0.25, n)
    if edge == "empty_level":        # the last level of factor 0 has no rows
        local[:, 0] = np.minimum(local[:, 0], levels[0] - 2)
    elif edge == "one_level":        # factor 0 has a single level
        levels[0] = 1
        local[:, 0] = 0
    elif edge == "zero_weights":     # a third of the rows weigh nothing, and all of level 0
        w[rng.random(n) < 1 / 3] = 0.0
        w[local[:, 0] == 0] = 0.0
    elif edge == "single_row_level":  # level 0 of factor 0 has exactly one row
        local[:, 0] = np.maximum(local[:, 0], 1)
        local[5, 0] = 0
    if sort:
        order = np.argsort(local[:, 0], kind="stable")
        local, w = local[order], w[order]
    offsets = np.concatenate([[0], np.cumsum(levels)]).astype(np.int64)
    codes = np.ascontiguousarray(local + offsets[:-1].astype(np.int32))
    Q = int(offsets[-1])
    X = np.column_stack([np.ones(n), rng.standard_normal((n, p - 1))])
    y = (rng.random(n) < 0.3).astype(float)
    return dict(X=X, codes=codes, offsets=offsets, Q=Q, w=w, y=y, rng=rng,
                prior=rng.uniform(0.5, 2, n), offset=rng.normal(0, 0.1, n),
                beta=rng.normal(0, 0.5, p), b=rng.normal(0, 0.5, Q),
                dbeta=rng.normal(0, 0.1, p), db=rng.normal(0, 0.1, Q))


EDGES = [None, "empty_level", "one_level", "zero_weights", "single_row_level"]
# A small problem; one big enough for several row blocks (threads); and ones with
# so many levels that the C++ blocks accumulate only the levels their rows touch
# (rows in random order, or sorted by the big factor as pyglmm sorts them).
SIZES = [dict(n=3000), dict(n=70000, levels=(900, 31)),
         dict(n=70000, levels=(150000, 31)), dict(n=70000, levels=(150000, 31), sort=True)]
SIZE_IDS = ["small", "blocks", "many_levels", "many_levels_sorted"]


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("family", [0, 1, 2], ids=["gaussian", "binomial", "poisson"])
@pytest.mark.parametrize("optional", [True, False], ids=["prior+offset", "absent"])
def test_stats_pass(compiled_backend, edge, size, family, optional):
    P = make_problem(1, edge=edge, **size)
    n, p, Q = P["X"].shape[0], P["X"].shape[1], P["Q"]
    prior = P["prior"] if optional else np.empty(0)
    offset = P["offset"] if optional else np.empty(0)
    outs = {}
    for name, kern in [("ref", REF), ("test", _backend.kernels(compiled_backend))]:
        bufs = [np.full(n, np.nan), np.empty((p, p)), np.empty(p), np.full((Q, p + 2), np.nan)]
        sc = kern.stats_pass(family, P["X"], P["codes"], P["y"], prior, offset, P["beta"], P["b"],
                             P["dbeta"], P["db"], True, *bufs, 2)
        outs[name] = [sc] + bufs
    for got, want in zip(outs["test"], outs["ref"]):
        close(got, want)
    if edge == "empty_level":
        assert outs["test"][4][P["offsets"][1] - 1, p] == 0.0  # no weight on the empty level


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_group_cross_sums(compiled_backend, edge, size):
    P = make_problem(2, edge=edge, **size)
    kern = _backend.kernels(compiled_backend)
    for factor in range(P["codes"].shape[1]):
        lo, hi = P["offsets"][factor], P["offsets"][factor + 1]
        for m in (1, 3):
            table = P["rng"].standard_normal((P["Q"], m))
            want, got = np.empty((hi - lo, m)), np.empty((hi - lo, m))
            REF.group_cross_sums(P["codes"], factor, lo, P["w"], 0.7, table, want, 1)
            kern.group_cross_sums(P["codes"], factor, lo, P["w"], 0.7, table, got, 2)
            close(got, want)


def club_inputs(P):
    """Consistent inputs for the clubbed inner loop, built with the reference kernels."""
    n, p, Q = P["X"].shape[0], P["X"].shape[1], P["Q"]
    w, G, h, S = np.empty(n), np.empty((p, p)), np.empty(p), np.empty((Q, p + 2))
    zero = np.zeros(Q)
    REF.stats_pass(1, P["X"], P["codes"], P["y"], np.empty(0), np.empty(0), P["beta"], zero,
                   np.zeros(p), zero, True, w, G, h, S, 1)
    s, Wq, tq = S[:, :p].copy(), S[:, p].copy(), S[:, p + 1].copy()
    lam = np.array([1.3, 2.1, 0.8])[: P["codes"].shape[1]]
    D = Wq + np.repeat(lam, np.diff(P["offsets"]))
    chol = np.stack([np.linalg.cholesky(G - s[a:b].T @ (s[a:b] / D[a:b, None]))
                     for a, b in zip(P["offsets"][:-1], P["offsets"][1:])])
    counts = np.bincount(P["codes"].ravel(), minlength=Q).astype(float)
    return dict(w=w, h=h, s=s, D=D, tq=tq, chol=chol, XtX=P["X"].T @ P["X"], counts=counts,
                G=G, Wq=Wq, lam=lam)


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("levels", [(40, 7), (40, 7, 5), (25,), (40000, 31)],
                         ids=["K2", "K3", "K1", "K2_level_blocks"])
def test_club_backfit(compiled_backend, edge, levels):
    # (40000 levels: the per-level loops run in two blocks of levels)
    P = make_problem(3, levels=levels, edge=edge, n=70000 if levels[0] > 10000 else 3000)
    I = club_inputs(P)
    results = {}
    for name, kern in [("ref", REF), ("test", _backend.kernels(compiled_backend))]:
        beta, b = np.zeros(P["X"].shape[1]), np.zeros(P["Q"])
        sweeps, rel = kern.club_backfit(P["codes"], P["offsets"], I["w"], 1.0, I["h"], I["s"],
                                        I["D"], I["tq"], I["chol"], I["XtX"], I["counts"], beta, b,
                                        1e-12, 500, 2)
        results[name] = (sweeps, rel, beta, b)
    assert results["test"][0] == results["ref"][0]
    assert results["ref"][1] <= 1e-12
    close(results["test"][2], results["ref"][2])
    close(results["test"][3], results["ref"][3])


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("centre", [True, False])
def test_smooth_step(backend, edge, size, centre):
    P = make_problem(12, edge=edge, **size)
    p, Q, offsets = P["X"].shape[1], P["Q"], P["offsets"]
    rng = P["rng"]
    s = rng.standard_normal((Q, p))
    counts = np.bincount(P["codes"].ravel(), minlength=Q).astype(float)
    D = np.bincount(P["codes"].ravel(), np.repeat(P["w"], P["codes"].shape[1]), Q) + 0.7
    A0 = rng.standard_normal((Q, p))
    kern = _backend.kernels(backend)
    for factor in range(P["codes"].shape[1]):
        lv = slice(offsets[factor], offsets[factor + 1])
        outs = {}
        for name, k in [("ref", REF), ("test", kern)]:
            A, work = A0.copy(), np.full((lv.stop - lv.start + 3, p), np.nan)
            norms = k.smooth_step(P["codes"], offsets, factor, P["w"], s, D, counts, centre, A,
                                  work, 2)
            outs[name] = (np.array(norms), A)
        close(outs["test"][0], outs["ref"][0])
        close(outs["test"][1], outs["ref"][1])
        A = outs["ref"][1]
        np.testing.assert_array_equal(np.delete(A, np.r_[lv], axis=0), np.delete(A0, np.r_[lv], axis=0))
        # the block step by its definition
        cross = np.empty((lv.stop - lv.start, p))
        REF.group_cross_sums(P["codes"], factor, lv.start, P["w"], 1.0, A0, cross, 1)
        want = (s[lv] - cross) / D[lv, None]
        if centre:
            want -= np.outer(1 / D[lv], want.sum(axis=0) / np.sum(1 / D[lv]))
            assert np.all(np.abs(A[lv].sum(axis=0)) <= 1e-13 * np.abs(A[lv]).sum(axis=0))
        close(A[lv], want)
        close(outs["ref"][0], [counts[lv] @ ((A0[lv] - want) ** 2).sum(1), counts[lv] @ (A0[lv] ** 2).sum(1)])


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("size", SIZES + [dict(n=70000, levels=(40000, 30000, 5))],
                         ids=SIZE_IDS + ["K3_blocks"])
def test_club_prepare(backend, edge, size):
    P = make_problem(13, edge=edge, **size)
    p, Q, offsets = P["X"].shape[1], P["Q"], P["offsets"]
    K = len(offsets) - 1
    n = P["X"].shape[0]
    S = np.empty((Q, p + 2))
    prior = np.where(P["w"] > 0, P["prior"], 0.0)  # zero where the edge case puts zero weights
    REF.stats_pass(1, P["X"], P["codes"], P["y"], prior, np.empty(0), P["beta"], P["b"],
                   P["dbeta"], P["db"], True, np.empty(n), np.empty((p, p)), np.empty(p), S, 1)
    if edge == "zero_weights":
        assert S[offsets[0], p] == 0.0  # a level whose rows weigh nothing: D = lam
    lam = np.array([1.3, 0.02, 4.0])[:K]
    outs = {}
    for name, kern in [("ref", REF), ("test", _backend.kernels(backend))]:
        bufs = [np.full((Q, p), np.nan), np.full(Q, np.nan), np.full(Q, np.nan),
                np.full(Q, np.nan), np.full((K, p, p), np.nan)]
        kern.club_prepare(S, offsets, lam, *bufs, 2)
        outs[name] = bufs
    for got, want in zip(outs["test"], outs["ref"]):
        close(got, want)
    s, Wq, tq, D, R = outs["ref"]
    np.testing.assert_array_equal(s, S[:, :p])
    np.testing.assert_array_equal(Wq, S[:, p])
    np.testing.assert_array_equal(tq, S[:, p + 1])
    np.testing.assert_array_equal(D, S[:, p] + np.repeat(lam, np.diff(offsets)))
    for f in range(K):
        sf, Df = S[offsets[f]:offsets[f + 1], :p], D[offsets[f]:offsets[f + 1]]
        close(R[f], sum(np.outer(sg, sg) / dg for sg, dg in zip(sf, Df)))
        if backend != "numpy":  # (BLAS's product need not be exactly symmetric)
            np.testing.assert_array_equal(outs["test"][4][f], outs["test"][4][f].T)


def test_cpp_club_prepare_rejects_bad_arrays():
    if "cpp" not in _backend.available_backends():
        pytest.skip("C++ backend not built")
    kern = _backend.kernels("cpp")
    Q, p = 5, 3
    args = dict(S=np.ones((Q, p + 2)), offsets=np.array([0, 2, 5]), lam=np.ones(2),
                s=np.empty((Q, p)), Wq=np.empty(Q), tq=np.empty(Q), D=np.empty(Q),
                R=np.empty((2, p, p)), nthreads=1)
    kern.club_prepare(**args)
    for change, message in [(dict(offsets=np.array([0, 2, 4])),
                             r"offsets: must end at the number of levels Q = len\(s\) = 5, got 4"),
                            (dict(offsets=np.array([0, 2])), "offsets: wrong shape"),
                            (dict(S=np.ones((Q, p + 1))), "S: wrong shape"),
                            (dict(lam=np.ones((2, 1))), "lam: wrong shape"),
                            (dict(R=np.empty((1, p, p))), "R: wrong shape"),
                            (dict(D=np.empty(Q - 1)), "D: wrong shape"),
                            (dict(tq=np.empty(Q, dtype=np.float32)), "tq: wrong dtype")]:
        with pytest.raises(ValueError, match=message):
            kern.club_prepare(**{**args, **change})


def test_cpp_smooth_step_rejects_bad_arrays():
    if "cpp" not in _backend.available_backends():
        pytest.skip("C++ backend not built")
    kern = _backend.kernels("cpp")
    codes = np.array([[0, 2], [1, 3]], dtype=np.int32)
    offsets = np.array([0, 2, 4], dtype=np.int64)
    args = dict(codes=codes, offsets=offsets, factor=0, w=np.ones(2), s=np.ones((4, 3)),
                D=np.ones(4), counts=np.ones(4), centre=True, A=np.zeros((4, 3)),
                work=np.empty((2, 3)), nthreads=1)
    kern.smooth_step(**args)
    for change, message in [(dict(factor=2), "factor: out of range"),
                            (dict(offsets=np.array([0, 2, 5])),
                             r"offsets: must end at the number of levels Q = len\(A\) = 4, got 5"),
                            (dict(offsets=np.array([0, 3, 2])), "offsets: decrease at position 2"),
                            (dict(work=np.empty((1, 3))), "work: fewer rows"),
                            (dict(work=np.empty((2, 2))), "work: wrong shape"),
                            (dict(s=np.ones((4, 2))), "s: wrong shape"),
                            (dict(D=np.ones(3)), "D: wrong shape"),
                            (dict(w=np.ones(3)), "w: wrong shape")]:
        with pytest.raises(ValueError, match=message):
            kern.smooth_step(**{**args, **change})


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("with_A", [True, False])
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_sandwich_pass(compiled_backend, edge, with_A, size):
    P = make_problem(4, edge=edge, **size)
    p, Q = P["X"].shape[1], P["Q"]
    A = P["rng"].standard_normal((Q, p)) if with_A else np.empty((0, 0))
    wm = np.empty(0) if with_A else P["prior"]
    outs = {}
    for name, kern in [("ref", REF), ("test", _backend.kernels(compiled_backend))]:
        bufs = [np.empty((p, p)), np.empty((Q, p)), np.empty((p, p))]
        kern.sandwich_pass(P["X"], P["codes"], A, P["w"], 1.5, wm, *bufs, 2)
        outs[name] = bufs
    for got, want in zip(outs["test"], outs["ref"]):
        close(got, want)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_linear_predictor_and_irls(backend, size):
    P = make_problem(5, **size)
    n = P["X"].shape[0]
    codes = P["codes"].copy()
    codes[::7, 1] = -1  # unseen levels score 0
    kern = _backend.kernels(backend)
    want, got = np.empty(n), np.empty(n)
    REF.linear_predictor(P["X"], codes, P["beta"], P["b"], P["offset"], want, 1)
    kern.linear_predictor(P["X"], codes, P["beta"], P["b"], P["offset"], got, 2)
    close(got, want)
    manual = P["offset"] + P["X"] @ P["beta"] + P["b"][P["codes"][:, 0]]
    manual += np.where(codes[:, 1] >= 0, P["b"][np.maximum(codes[:, 1], 0)], 0.0)
    close(want, manual)
    eta = 40 * P["rng"].standard_normal(n)  # far beyond exp's comfort zone on both sides
    eta[:4] = [800.0, -800.0, 100.5, -37.0]  # beyond every clamp (exp(800) overflows)
    y = np.where(np.arange(n) % 5 == 0, 0.25, P["y"])  # proportions too, not only 0/1
    y[np.arange(n) % 11 == 0] = 3.0  # and counts above 1 (only for poisson)
    for family in (0, 1, 2):
        yf = np.minimum(y, 1.0) if family == 1 else y
        outs = {}
        for name, k in [("ref", REF), ("test", kern)]:
            bufs = [np.empty(n), np.empty(n), np.empty(n)]
            dev = k.irls_quantities(family, eta, yf, P["prior"], P["offset"], *bufs, 2)
            outs[name] = [np.array(dev)] + bufs
        for got_, want_ in zip(outs["test"], outs["ref"]):
            assert np.all(np.isfinite(got_))
            close(got_, want_)
        mu, w = outs["ref"][1], outs["ref"][2]
        # the clamps by their definitions (pyglmm/families.py)
        if family == 1:
            close(mu[:2], [1 / (1 + np.exp(-30.0)), 1 / (1 + np.exp(30.0))])
        if family == 2:
            close(mu[:4], [np.exp(100.0), np.finfo(float).eps, np.exp(100.0), np.finfo(float).eps])
            close(w, P["prior"] * mu)  # V(mu) = mu
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 log 0 = 0
            ylog = np.nan_to_num(yf * np.log(yf / mu))
            unit = {0: (yf - mu) ** 2,
                    1: 2 * (ylog + np.nan_to_num((1 - yf) * np.log((1 - yf) / (1 - mu)))),
                    2: 2 * (ylog - (yf - mu))}[family]
        close(outs["test"][0], np.sum(P["prior"] * unit))


@pytest.mark.parametrize("size", SIZES[:2], ids=SIZE_IDS[:2])
def test_take_rows(backend, size):
    P = make_problem(8, **size)
    order = P["rng"].permutation(P["X"].shape[0])
    for X in (P["X"], P["codes"]):  # float64 rows (a design), int32 rows (level codes)
        got = np.empty_like(X)
        _backend.kernels(backend).take_rows(X, order, got, 2)
        np.testing.assert_array_equal(got, X[order])
    with pytest.raises(ValueError, match="order: index out of range"):
        _backend.kernels(backend).take_rows(P["X"], np.array([0, P["X"].shape[0]]),
                                            np.empty((2, P["X"].shape[1])), 1)


@pytest.mark.parametrize("size", SIZES[:2], ids=SIZE_IDS[:2])
def test_order_rows_is_the_stable_sort_by_a_factor(backend, size):
    P = make_problem(8, **size)
    codes, offsets = P["codes"], P["offsets"]
    kern = _backend.kernels(backend)
    for k in range(codes.shape[1]):
        order = np.empty(codes.shape[0], dtype=np.int64)
        kern.order_rows(codes, k, int(offsets[k]), int(offsets[k + 1] - offsets[k]), order)
        np.testing.assert_array_equal(order, np.argsort(codes[:, k], kind="stable"))
    with pytest.raises(ValueError, match="codes: .*outside"):  # factor 1's levels are not factor 0's
        kern.order_rows(codes, 1, 0, int(offsets[1]), order)


@pytest.mark.parametrize("edge", EDGES)
def test_schall_update(compiled_backend, edge):
    P = make_problem(6, edge=edge)
    I = club_inputs(P)
    outs = {}
    for name, kern in [("ref", REF), ("test", _backend.kernels(compiled_backend))]:
        nu, s2 = np.empty(len(I["lam"])), np.empty(len(I["lam"]))
        kern.schall_update(P["offsets"], I["Wq"], P["b"], I["lam"], nu, s2)
        outs[name] = (nu, s2)
    close(outs["test"][0], outs["ref"][0])
    close(outs["test"][1], outs["ref"][1])
    # the diagonal trace by its definition
    a, b = P["offsets"][0], P["offsets"][1]
    nu0 = I["lam"][0] * np.sum(1 / (I["Wq"][a:b] + I["lam"][0]))
    close(outs["ref"][0][0], nu0)
    close(outs["ref"][1][0], np.sum(P["b"][a:b] ** 2) / ((b - a) - nu0))


def test_results_identical_for_a_thread_count(backend):
    P = make_problem(7, n=70000, levels=(900, 31))
    n, p, Q = P["X"].shape[0], P["X"].shape[1], P["Q"]
    kern = _backend.kernels(backend)
    runs = []
    for _ in range(2):
        bufs = [np.empty(n), np.empty((p, p)), np.empty(p), np.empty((Q, p + 2))]
        sc = kern.stats_pass(1, P["X"], P["codes"], P["y"], P["prior"], P["offset"], P["beta"],
                             P["b"], P["dbeta"], P["db"], True, *bufs, 2)
        runs.append([sc] + bufs)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def sorted_runs_problem(seed):
    """Rows sorted by a factor with 600,000 levels (so many that the C++ kernels add
    its sums straight into the output) used in runs of 40 rows, except one run of
    40,000: every block boundary for 2, 3 or 4 threads falls inside it, so blocks
    share their end levels, and with 4 threads two blocks hold nothing else."""
    P = make_problem(seed, n=70000, levels=(600_000, 31))
    used = np.sort(P["rng"].choice(600_000, 70000 // 40, replace=False))
    local = np.repeat(used, 40)
    local[15000:55000] = local[15000]
    P["codes"][:, 0] = local
    return P


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_level_sums_shared_between_blocks(compiled_backend, threads):
    P = sorted_runs_problem(9)
    n, p, Q = P["X"].shape[0], P["X"].shape[1], P["Q"]
    kern = _backend.kernels(compiled_backend)
    outs = {}
    for name, k, t in [("ref", REF, 1), ("test", kern, threads)]:
        stats = [np.empty(n), np.empty((p, p)), np.empty(p), np.full((Q, p + 2), np.nan)]
        sc = k.stats_pass(1, P["X"], P["codes"], P["y"], P["prior"], P["offset"], P["beta"], P["b"],
                          P["dbeta"], P["db"], True, *stats, t)
        sandwich = [np.empty((p, p)), np.full((Q, p), np.nan), np.empty((p, p))]
        A = np.linspace(-1, 1, Q * p).reshape(Q, p)
        k.sandwich_pass(P["X"], P["codes"], A, P["w"], 1.5, np.empty(0), *sandwich, t)
        cross = []
        for m in (1, 3):
            table = np.cos(np.arange(Q * m)).reshape(Q, m)
            out = np.full((600_000, m), np.nan)
            k.group_cross_sums(P["codes"], 0, 0, P["w"], 0.7, table, out, t)
            cross.append(out)
        outs[name] = [sc] + stats + sandwich + cross
    for got, want in zip(outs["test"], outs["ref"]):
        close(got, want)
    big = P["codes"][15000, 0]  # the level of the long run: its weight is the run's
    close(outs["test"][4][big, p], outs["ref"][1][15000:55000].sum())


def test_schall_update_factor_without_weight(backend):
    """A factor whose rows all weigh nothing has no information: sigma2 = 0 on every backend."""
    offsets = np.array([0, 3, 5], dtype=np.int64)
    Wq = np.array([0.0, 0.0, 0.0, 1.5, 2.0])
    b = np.array([0.1, -0.2, 0.3, 0.4, -0.1])
    nu, s2 = np.empty(2), np.empty(2)
    _backend.kernels(backend).schall_update(offsets, Wq, b, np.array([1.0, 2.0]), nu, s2)
    assert s2[0] == 0.0 and nu[0] == 3.0
    np.testing.assert_allclose(s2[1], 0.17 / (1.5 / 3.5 + 2.0 / 4.0))


GRAM_CHECK = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_kernels import REF, close, make_problem
from pyglmm import backends as _backend
kern = _backend.kernels("cpp")
from pyglmm import _core
print(_core.gram_isa())
for p in (1, 4, 7, 8, 9, 13, 17):  # every mix of 4 x 8 and 4 x 4 blocks, padded or not
    P = make_problem(10 + p, n=40000, p=p, levels=(300, 20))
    n, Q = P["X"].shape[0], P["Q"]
    outs = []
    for k in (REF, kern):
        st = [np.empty(n), np.empty((p, p)), np.empty(p), np.empty((Q, p + 2))]
        k.stats_pass(1, P["X"], P["codes"], P["y"], P["prior"], P["offset"], P["beta"], P["b"],
                     P["dbeta"], P["db"], True, *st, 2)
        sw = [np.empty((p, p)), np.empty((Q, p)), np.empty((p, p))]
        k.sandwich_pass(P["X"], P["codes"], np.cos(np.arange(Q * p)).reshape(Q, p), P["w"], 1.5,
                        P["prior"], *sw, 2)
        outs.append(st + sw)
    for got, want in zip(outs[1], outs[0]):
        close(got, want)
print("ok")
"""


@pytest.mark.parametrize("no_avx2", ["0", "1"], ids=["as_detected", "portable"])
def test_cpp_gram_versions_agree_with_reference(no_avx2):
    """Both versions of the C++ Gram accumulation (AVX2 where the CPU has it, and the
    portable one) at numbers of columns that use every block shape."""
    if "cpp" not in _backend.available_backends():
        pytest.skip("C++ backend not built")
    env = {**os.environ, "PYGLMM_NO_AVX2": no_avx2}
    code = GRAM_CHECK.format(tests=os.path.dirname(__file__))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tempfile.gettempdir())  # import the installed pyglmm, not the source tree
    assert run.returncode == 0, run.stderr
    isa, ok = run.stdout.split()
    assert ok == "ok"
    assert isa == "portable" if no_avx2 == "1" else isa in ("avx2", "portable")


def _stats(kern, P, threads):
    n, p, Q = P["X"].shape[0], P["X"].shape[1], P["Q"]
    bufs = [np.empty(n), np.empty((p, p)), np.empty(p), np.empty((Q, p + 2))]
    sc = kern.stats_pass(1, P["X"], P["codes"], P["y"], P["prior"], P["offset"], P["beta"], P["b"],
                         P["dbeta"], P["db"], True, *bufs, threads)
    return [sc] + bufs


def test_kernels_called_from_many_python_threads_at_once(backend):
    """The kernels release the GIL; concurrent calls (the C++ pool is then busy and the
    others start their own threads) give the results of a lone call."""
    from concurrent.futures import ThreadPoolExecutor

    P = make_problem(11, n=70000, levels=(900, 31))
    kern = _backend.kernels(backend)
    want = _stats(kern, P, 2)
    with ThreadPoolExecutor(4) as ex:
        runs = list(ex.map(lambda t: _stats(kern, P, t % 2 + 2), range(16)))
    for t, got in enumerate(runs):
        if t % 2 + 2 == 2:
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
        else:
            for a, b in zip(got, want):
                close(a, b)


FORK_CHECK = """
import os, sys, numpy as np
sys.path.insert(0, {tests!r})
from test_kernels import _stats, make_problem
from pyglmm import backends as _backend
kern = _backend.kernels("cpp")
P = make_problem(12, n=70000, levels=(900, 31))
want = _stats(kern, P, 2)  # starts the parent's worker threads
pid = os.fork()
if pid == 0:  # the child has none of them: it must not wait for them
    got = _stats(kern, P, 2)
    os._exit(0 if all(np.array_equal(a, b) for a, b in zip(got, want)) else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_cpp_kernels_work_in_a_forked_child():
    if "cpp" not in _backend.available_backends():
        pytest.skip("C++ backend not built")
    code = FORK_CHECK.format(tests=os.path.dirname(__file__))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=tempfile.gettempdir())
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0"]


def with_categoricals(P, sizes=(3, 1, 6), all_reference=False):
    """P's X split as a dense block and categoricals kept as codes (xcat), and the
    same columns as one dense matrix (dense block first, then the dummies)."""
    rng, n = P["rng"], P["X"].shape[0]
    p = P["X"].shape[1]
    starts = p + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    local = np.column_stack([rng.integers(-1, s, n) for s in sizes])  # -1: reference level
    if all_reference:
        local[:] = -1
    xcat = np.ascontiguousarray(np.where(local >= 0, local + starts, -1).astype(np.int32))
    T = p + sum(sizes)
    full = np.zeros((n, T))
    full[:, :p] = P["X"]
    for j in range(len(sizes)):
        has = xcat[:, j] >= 0
        full[np.flatnonzero(has), xcat[has, j]] = 1.0
    coef = np.concatenate([P["beta"], rng.normal(0, 0.5, T - p)])
    return xcat, full, coef


CATS = [dict(sizes=(3, 1, 6)), dict(sizes=(4,)), dict(sizes=(2, 5), all_reference=True)]
CAT_IDS = ["three", "one", "all_reference"]


@pytest.mark.parametrize("cat", CATS, ids=CAT_IDS)
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_passes_with_categoricals(backend, cat, size):
    """Categorical fixed effects as codes give the passes of their dummy columns."""
    P = make_problem(14, edge="zero_weights", **size)
    xcat, full, beta = with_categoricals(P, **cat)
    n, T, Q = full.shape[0], full.shape[1], P["Q"]
    dbeta = 0.1 * np.cos(np.arange(T))
    kern = _backend.kernels(backend)
    prior = np.where(P["w"] > 0, P["prior"], 0.0)
    outs = {}
    for name, k, X, extra in [("ref", REF, full, ()), ("test", kern, P["X"], (xcat,))]:
        st = [np.empty(n), np.empty((T, T)), np.empty(T), np.full((Q, T + 2), np.nan)]
        sc = k.stats_pass(1, X, P["codes"], P["y"], prior, P["offset"], beta, P["b"], dbeta,
                          P["db"], True, *st, 2, *extra)
        A = np.linspace(-1, 1, Q * T).reshape(Q, T)
        sw = [np.empty((T, T)), np.full((Q, T), np.nan), np.empty((T, T))]
        k.sandwich_pass(X, P["codes"], A, P["w"], 1.5, np.empty(0), *sw, 2, *extra)
        eta = np.empty(n)
        k.linear_predictor(X, P["codes"], beta, P["b"], P["offset"], eta, 2, *extra)
        outs[name] = [sc] + st + sw + [eta]
    for got, want in zip(outs["test"], outs["ref"]):
        close(got, want)


def test_cpp_categorical_codes_argument():
    """The C++ kernels' optional xcat: an empty xcat is the dense pass; bad codes and
    column counts are rejected, naming the row and column."""
    if "cpp" not in _backend.available_backends():
        pytest.skip("C++ backend not built")
    kern = _backend.kernels("cpp")
    P = make_problem(15, n=5000)
    n, p, Q = P["X"].shape[0], P["X"].shape[1], P["Q"]
    none = np.empty((n, 0), dtype=np.int32)
    runs = []
    for extra in [(), (none,)]:
        st = [np.empty(n), np.empty((p, p)), np.empty(p), np.empty((Q, p + 2))]
        sc = kern.stats_pass(1, P["X"], P["codes"], P["y"], P["prior"], P["offset"], P["beta"],
                             P["b"], P["dbeta"], P["db"], True, *st, 2, *extra)
        runs.append([sc] + st)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    xcat, full, beta = with_categoricals(P, sizes=(3, 2))
    eta = np.empty(n)
    args = (P["X"], P["codes"], beta, P["b"], P["offset"], eta, 1)
    kern.linear_predictor(*args, xcat)
    bad = xcat.copy()
    bad[7, 1] = p + 5  # one past the last dummy column
    for codes, message in [(bad, r"xcat: row 7, column 1 holds 9: outside the dummy columns \[4, 9\)"),
                           (np.where(xcat == p, p - 1, xcat).astype(np.int32),
                            r"xcat: row \d+, column 0 holds 3: outside the dummy columns \[4, 9\)"),
                           (xcat.astype(np.int64), "xcat: wrong dtype"),
                           (xcat[:-1], "xcat: wrong shape"),
                           (none, "xcat: 5 dummy columns for 0 categoricals")]:
        with pytest.raises(ValueError, match=message):
            kern.linear_predictor(*args, codes)
