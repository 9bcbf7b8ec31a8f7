"""pytest-benchmark suites: one outer iteration, one inner sweep, the covariance of
beta (eq. 24: smoother and sandwich pass) and a whole fit, per backend.

``pytest benchmarks --benchmark-enable`` times them at N = 1e5, 1e6 and the
Stitch-Fix shape (N = 5e6, p = 34; C++ and numba only: the numpy reference
needs minutes and several GB there), the latter also with its three
categoricals as codes (``stitchfix_codes``: Design.xcat, 5 dense columns).  In
the normal test run benchmarks are disabled and every case runs once at a
small size, as a smoke test.
"""

import numpy as np
import pytest

import pyglmm
from pyglmm.families import get_family
from pyglmm.engines.crossed.inference import beta_covariance
from pyglmm.engines.crossed.schall import SchallFit, SchallState

import problems

FULL = {"1e5": ("seed", 100_000), "1e6": ("seed", 1_000_000), "stitchfix": ("stitchfix", 5_000_000),
        "stitchfix_codes": ("stitchfix", 5_000_000)}
SMOKE = {"1e5": ("seed", 5_000), "1e6": ("seed", 20_000), "stitchfix": ("stitchfix", 20_000),
         "stitchfix_codes": ("stitchfix", 20_000)}
WARM_ITERATIONS = 3


def smoke(config):
    """Benchmarks off (the normal test run): run every case once, small."""
    return config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")


@pytest.fixture(scope="module", params=list(FULL))
def problem(request):
    name, n = (SMOKE if smoke(request.config) else FULL)[request.param]
    return request.param, problems.make(name, n)


def design(problem, backend):
    """The problem's Design, with the Stitch-Fix categoricals as codes for ``stitchfix_codes``."""
    d = problems.design(problem[1], backend)
    if problem[0] == "stitchfix_codes":
        d = problems.with_categoricals(d, problems.STITCHFIX_CATEGORICALS)
    return d


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
    if backend == "numpy" and problem[0].startswith("stitchfix") and not smoke(request.config):
        pytest.skip("the numpy reference is not benchmarked at the Stitch Fix scale")


def test_outer_iteration(benchmark, backend, problem, request):
    skip_numpy_at_scale(problem, backend, request)
    st, restore = warm_state(design(problem, backend), backend)

    def one():
        st.pass_()
        return st.solve(1e-8, 1000)
    sweeps, rel, _ = benchmark.pedantic(one, setup=restore, rounds=2 if problem[0].startswith("stitchfix") else 5)
    assert rel <= 1e-8 and sweeps >= 1


def test_inner_sweep(benchmark, backend, problem, request):
    skip_numpy_at_scale(problem, backend, request)
    st, restore = warm_state(design(problem, backend), backend)
    st.pass_()
    inputs = st.prepare()
    sweeps, rel = benchmark.pedantic(st.backfit, args=(inputs, 0.0, 1), setup=restore, rounds=5)
    assert sweeps == 1 and np.isfinite(rel)


def test_covariance(benchmark, backend, problem, request):
    skip_numpy_at_scale(problem, backend, request)
    d = design(problem, backend)
    st, _ = warm_state(d, backend)
    st.pass_()
    fit = SchallFit(st.beta, st.b, st.sigma2, st.phi, st.nu, 0.0, st.rows.w0, st.s0, st.Wq0, True, True, 0.0)
    kern, threads = pyglmm.backends.kernels(backend), pyglmm.get_num_threads()
    cov, note = benchmark.pedantic(beta_covariance, args=(d, fit, kern, threads),
                                   rounds=2 if problem[0].startswith("stitchfix") else 5)
    assert note is None and np.all(np.linalg.eigvalsh(cov) > 0)


def test_full_fit(benchmark, backend, problem, request):
    skip_numpy_at_scale(problem, backend, request)
    if problem[0] == "stitchfix_codes":
        pytest.skip("glmm_from_arrays builds no codes: the whole fit is timed with dense X")
    X, y, groups, names = problem[1]
    res = benchmark.pedantic(pyglmm.glmm_from_arrays, args=(X, y, groups),
                             kwargs=dict(intercept=False, feature_names=names, backend=backend),
                             rounds=1 if problem[0] == "stitchfix" else 3)
    assert res.converged and res.backend == backend
