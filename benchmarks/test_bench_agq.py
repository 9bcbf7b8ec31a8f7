"""pytest-benchmark suite of the AGQ kernel: one evaluation of ``cluster_eval``
(log-likelihood, and with ``deriv`` 2 the gradient and Hessian) per backend.

``pytest benchmarks/test_bench_agq.py --benchmark-enable`` times it at 10^6
binary rows in 10^4 clusters, q = 1 (random intercept), K = 7, p = 5, with the
modes warm from the evaluation before (as in a fit, where the parameters move
little between evaluations); the numpy reference runs one round.  In the
normal test run benchmarks are disabled and every case runs once at 2 x 10^4
rows, as a smoke test.
"""

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

import pyglmm
from pyglmm.families import BINOMIAL

FULL = (1_000_000, 10_000)
SMOKE = (20_000, 200)
P, K = 5, 7


def smoke(config):
    return config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")


@pytest.fixture(scope="module")
def problem(request):
    """Binary rows in equal clusters, eta = X beta + b_c, b_c ~ N(0, 0.8^2); parameters near the truth."""
    n, m = SMOKE if smoke(request.config) else FULL
    rng = np.random.default_rng(0)
    X = np.c_[np.ones(n), rng.normal(size=(n, P - 1))]
    starts = np.linspace(0, n, m + 1).astype(np.int64)
    beta = rng.normal(scale=0.3, size=P)
    eta = X @ beta + np.repeat(rng.normal(scale=0.8, size=m), np.diff(starts))
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    nodes, w = hermegauss(K)
    return dict(X=X, Z=np.ones((n, 1)), y=y, weights=np.ones(n), offset=np.zeros(n), starts=starts,
                beta=beta + 0.01, theta=np.array([0.8]), nodes=nodes, gh_weights=w / np.sqrt(2 * np.pi))


@pytest.fixture(params=pyglmm.available_backends("agq"))
def backend(request):
    with pyglmm.backends.blas_single_thread(request.param):  # as during a fit
        yield request.param


@pytest.mark.parametrize("deriv", [2, 0])
def test_cluster_eval(benchmark, backend, problem, deriv):
    kern = pyglmm.backends.kernels(backend, engine="agq")
    m, d = len(problem["starts"]) - 1, P + 1
    out = dict(modes=np.zeros((m, 1)), deriv=deriv, loglik_out=np.empty(m), grad_out=np.empty(d),
               hess_out=np.empty((d, d)), condvar_out=np.empty((m, 1, 1)),
               nthreads=pyglmm.get_num_threads())

    def one():
        return kern.cluster_eval(family=BINOMIAL, dispersion=1.0, **problem, **out)
    one()  # warm modes (and numba's compilation)
    failed = benchmark.pedantic(one, rounds=1 if backend == "numpy" else 5)
    assert failed == 0 and np.isfinite(out["loglik_out"]).all()
    if deriv == 2:
        assert np.isfinite(out["hess_out"]).all() and np.all(np.linalg.eigvalsh(out["hess_out"]) < 0)
