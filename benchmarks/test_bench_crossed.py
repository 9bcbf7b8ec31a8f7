"""pytest-benchmark suites: one outer iteration, one inner sweep and a whole fit, per backend.

``pytest benchmarks --benchmark-enable`` times them at N = 1e5, 1e6 and the
Stitch-Fix shape (N = 5e6, p = 34; C++ and numba only: the numpy reference
needs minutes and several GB there).  In the normal test run benchmarks are
disabled and every case runs once at a small size, as a smoke test.
"""

import numpy as np
import pytest

import pyglmm
from pyglmm.families import get_family
from pyglmm.engines.crossed.schall import SchallState

import problems

FULL = {"1e5": ("seed", 100_000), "1e6": ("seed", 1_000_000), "stitchfix": ("stitchfix", 5_000_000)}
SMOKE = {"1e5": ("seed", 5_000), "1e6": ("seed", 20_000), "stitchfix": ("stitchfix", 20_000)}
WARM_ITERATIONS = 3


def smoke(config):
    """Benchmarks off (the normal test run): run every case once, small."""
    return config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")


@pytest.fixture(scope="module", params=list(FULL))
def problem(request):
    name, n = (SMOKE if smoke(request.config) else FULL)[request.param]
    return request.param, problems.make(name, n)


def warm_state(d, backend):
    """A Schall state after a few outer iterations, and a function restoring it."""
    kern = pyglmm.backends.kernels(backend)
    st = SchallState(d, get_family("binomial"), kern, pyglmm.get_num_threads(), False)
    for _ in range(WARM_ITERATIONS):
        st.pass_()
        st.solve(1e-8, 1000)
    snap = {k: getattr(st, k).copy() for k in ("beta", "b", "dbeta", "db", "sigma2", "nu")}
    phi = st.phi

    def restore():
        for k, v in snap.items():
            getattr(st, k)[...] = v
        st.phi = phi
    return st, restore


def skip_numpy_at_scale(problem, backend, request):
    if backend == "numpy" and problem[0] == "stitchfix" and not smoke(request.config):
        pytest.skip("the numpy reference is not benchmarked at the Stitch Fix scale")


def test_outer_iteration(benchmark, backend, problem, request):
    skip_numpy_at_scale(problem, backend, request)
    st, restore = warm_state(problems.design(problem[1], backend), backend)

    def one():
        st.pass_()
        return st.solve(1e-8, 1000)
    sweeps, rel, _ = benchmark.pedantic(one, setup=restore, rounds=5 if problem[0] != "stitchfix" else 2)
    assert rel <= 1e-8 and sweeps >= 1


def test_inner_sweep(benchmark, backend, problem, request):
    skip_numpy_at_scale(problem, backend, request)
    st, restore = warm_state(problems.design(problem[1], backend), backend)
    st.pass_()
    inputs = st.prepare()
    sweeps, rel = benchmark.pedantic(st.backfit, args=(inputs, 0.0, 1), setup=restore, rounds=5)
    assert sweeps == 1 and np.isfinite(rel)


def test_full_fit(benchmark, backend, problem, request):
    skip_numpy_at_scale(problem, backend, request)
    X, y, groups, names = problem[1]
    res = benchmark.pedantic(pyglmm.glmm_from_arrays, args=(X, y, groups),
                             kwargs=dict(intercept=False, feature_names=names, backend=backend),
                             rounds=1 if problem[0] == "stitchfix" else 3)
    assert res.converged and res.backend == backend
