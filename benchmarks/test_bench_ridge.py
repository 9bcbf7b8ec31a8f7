"""pytest-benchmark suites of the ridge engine's kernels per backend, and its two
whole-fit goals (issue 11).

Kernels: ``group_reductions`` (one pass over the rows: cost N q (q + p)) and
``batched_spd_solve`` (m Cholesky factorisations and solves: cost m (q^3/3 + q^2 k)),
at m = 1e3 and 1e4 groups of 10 rows, q = 2, 4 and 8 effects, p = 50 dense columns.
Fits: the talk's q = 500 case (280 rows, 500 penalised columns, lambda by empirical
Bayes, b = 0.1) and 10^4 individuals x 10 repeats with 50 penalised columns.
``pytest benchmarks/test_bench_ridge.py --benchmark-enable``; in the normal test run
every case runs once at a small size, as a smoke test.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import pyglmm

sys.path.insert(0, str(Path(__file__).parent))
from ridge_talk_tables import simulate  # noqa: E402


def smoke(config):
    return config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")


@pytest.mark.parametrize("m", [1_000, 10_000])
@pytest.mark.parametrize("q", [2, 4, 8])
def test_group_reductions(benchmark, backend, m, q, request):
    m = 50 if smoke(request.config) else m
    rng = np.random.default_rng(0)
    offsets = np.arange(0, 10 * m + 1, 10, dtype=np.int64)
    Z, D, y = rng.normal(size=(10 * m, q)), rng.normal(size=(10 * m, 50)), rng.normal(size=10 * m)
    kern = pyglmm.backends.kernels(backend, "ridge")
    ZtZ = benchmark(kern.group_reductions, offsets, Z, D, y, pyglmm.get_num_threads())[0]
    assert ZtZ.shape == (m, q, q)


@pytest.mark.parametrize("m", [1_000, 10_000])
@pytest.mark.parametrize("q", [2, 4, 8])
def test_batched_spd_solve(benchmark, backend, m, q, request):
    m = 50 if smoke(request.config) else m
    rng = np.random.default_rng(0)
    G = rng.normal(size=(m, q, q))
    M = G @ np.swapaxes(G, 1, 2) + np.eye(q)
    R = rng.normal(size=(m, q, 50 + 1 + q))  # the primal solver's right-hand sides
    kern = pyglmm.backends.kernels(backend, "ridge")
    X, logdet = benchmark(kern.batched_spd_solve, M, R, pyglmm.get_num_threads())
    assert np.all(np.isfinite(logdet))


@pytest.mark.parametrize("case", ["talk_q500", "m1e4_p50"])
def test_fit(benchmark, backend, case, request):
    rng = np.random.default_rng(3)
    small = smoke(request.config)
    m, r, p = {"talk_q500": (40, 7, 500), "m1e4_p50": (10_000, 10, 50)}[case]
    if small:
        m, r, p = 20, 5, min(p, 30)
    df, _, _ = simulate(rng, m, r, p, 2, 6)
    formula = "y ~ " + " + ".join(f"x{j + 1}" for j in range(p)) + " + t + (1 + t | ind)"
    res = benchmark.pedantic(pyglmm.ridge_lmm, args=(formula, df), rounds=1 if small else 3,
                             kwargs=dict(b=0.1, A=np.eye(2), backend=backend))
    assert res.converged
