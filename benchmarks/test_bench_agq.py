"""pytest-benchmark suites of the AGQ engine, per backend that has AGQ kernels.

* ``test_evaluation``: one kernel evaluation (log-likelihood, gradient and
  Hessian: ``deriv=2``) at 10^5 rows in 10^3 clusters, q = 1 and 2, nagq = 1
  and 7.
* ``test_cluster_eval_1e6``: the kernel alone (``cluster_eval``, deriv 0 and
  2) at 10^6 binary rows in 10^4 clusters, q = 1, K = 7, p = 5, modes warm
  from the evaluation before (as in a fit); every backend in one run, the
  numpy reference one round.
* ``test_fit_1e6``: a whole fit at 10^6 rows in 10^4 clusters, q = 1, nagq = 7
  (the issue's goal: <= 3 s with the C++ kernel on 2 cores; compiled backends
  only: the numpy reference takes about a minute per evaluation there).
* ``test_glmer_1e5``: the same model on a 10^5-row subset (10^3 clusters) by
  pyglmm and by glmer (nAGQ = 1 and 7) in the same run, their ratio in
  ``extra_info`` (runs R only if ``Rscript`` with lme4 exists).

``pytest benchmarks/test_bench_agq.py --benchmark-enable`` times them; in the
normal test run every case runs once at a small size, as a smoke test.
"""

import shutil
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import backends
from pyglmm.engines.agq.model import build_arrays, evaluate_clusters
from pyglmm.families import BINOMIAL, get_family

GLMER = """
suppressMessages(library(lme4))
d <- read.csv("{path}")
for (k in c(1, 7)) {{
  t <- system.time(fit <- glmer(y ~ x1 + x2 + (1 | g), d, binomial, nAGQ = k))[["elapsed"]]
  cat(k, t, format(as.numeric(logLik(fit)), digits = 15), "\\n")
}}
"""


def smoke(config):
    return config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")


def simulate(n, m, q=1, seed=0):
    """Binary data: n rows in m equal clusters, x1, x2 ~ N(0, 1), random intercept sd 1
    (and a random slope on x1 with sd 0.5 for q = 2)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), -(-n // m))[:n]
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    eta = -0.5 + 0.6 * x1 - 0.4 * x2 + rng.normal(0, 1, m)[g] + (q > 1) * rng.normal(0, 0.5, m)[g] * x1
    return pd.DataFrame({"y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.int8),
                         "x1": x1, "x2": x2, "g": g})


@pytest.fixture(params=backends.available_backends("agq"))
def agq_backend(request):
    with backends.blas_single_thread(request.param):
        yield request.param


@pytest.mark.parametrize("q", [1, 2])
@pytest.mark.parametrize("nagq", [1, 7])
def test_evaluation(benchmark, agq_backend, q, nagq, request):
    n, m = (2_000, 20) if smoke(request.config) else (100_000, 1_000)
    formula = "y ~ x1 + x2 + " + ("(1|g)" if q == 1 else "(1 + x1|g)")
    arrays = build_arrays(formula, simulate(n, m, q), get_family("binomial"))
    kern = backends.kernels(agq_backend, engine="agq")
    threads = 1 if agq_backend == "numpy" else pyglmm.get_num_threads()
    theta = np.array([1.0] if q == 1 else [1.0, 0.0, 0.5])
    modes = np.zeros((arrays.m, arrays.q))
    beta = np.array([-0.5, 0.6, -0.4])
    evaluate_clusters(kern, arrays, beta, theta, nagq, modes, 2, threads=threads)  # warm modes
    ll = benchmark.pedantic(lambda: evaluate_clusters(kern, arrays, beta, theta, nagq, modes, 2,
                                                      threads=threads)[0], rounds=3)
    benchmark.extra_info.update(rows=n, clusters=m)
    assert np.isfinite(ll).all()


@pytest.fixture(scope="module")
def problem_1e6(request):
    """Binary rows in equal clusters, eta = X beta + b_c, b_c ~ N(0, 0.8^2), p = 5; the kernel's
    arguments at parameters near the truth."""
    n, m = (20_000, 200) if smoke(request.config) else (1_000_000, 10_000)
    rng = np.random.default_rng(0)
    X = np.c_[np.ones(n), rng.normal(size=(n, 4))]
    starts = np.linspace(0, n, m + 1).astype(np.int64)
    beta = rng.normal(scale=0.3, size=5)
    eta = X @ beta + np.repeat(rng.normal(scale=0.8, size=m), np.diff(starts))
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    nodes, w = np.polynomial.hermite_e.hermegauss(7)
    return dict(X=X, Z=np.ones((n, 1)), y=y, weights=np.ones(n), offset=np.zeros(n), starts=starts,
                beta=beta + 0.01, theta=np.array([0.8]), nodes=nodes, gh_weights=w / np.sqrt(2 * np.pi))


@pytest.mark.parametrize("deriv", [2, 0])
def test_cluster_eval_1e6(benchmark, agq_backend, problem_1e6, deriv):
    kern = backends.kernels(agq_backend, engine="agq")
    m, d = len(problem_1e6["starts"]) - 1, 6
    out = dict(modes=np.zeros((m, 1)), deriv=deriv, loglik_out=np.empty(m), grad_out=np.empty(d),
               hess_out=np.empty((d, d)), condvar_out=np.empty((m, 1, 1)),
               nthreads=pyglmm.get_num_threads())

    def one():
        return kern.cluster_eval(family=BINOMIAL, dispersion=1.0, **problem_1e6, **out)
    one()  # warm modes (and numba's compilation)
    failed = benchmark.pedantic(one, rounds=1 if agq_backend == "numpy" else 5)
    assert failed == 0 and np.isfinite(out["loglik_out"]).all()
    if deriv == 2:
        assert np.isfinite(out["hess_out"]).all() and np.all(np.linalg.eigvalsh(out["hess_out"]) < 0)


def test_fit_1e6(benchmark, agq_backend, request):
    if smoke(request.config):
        n, m = 5_000, 50
    elif agq_backend == "numpy":
        pytest.skip("the numpy reference is not benchmarked at 10^6 rows")
    else:
        n, m = 1_000_000, 10_000
    df = simulate(n, m)
    res = benchmark.pedantic(lambda: pyglmm.glmm("y ~ x1 + x2 + (1|g)", df, nagq=7,
                                                 backend=agq_backend), rounds=1 if n > 10**5 else 2)
    benchmark.extra_info.update(rows=n, clusters=m, iterations=res.iterations)
    assert res.converged


def _glmer_seconds(df, tmp_path):
    """{nagq: (seconds, loglik)} of glmer on ``df``, or None without R and lme4."""
    if shutil.which("Rscript") is None:
        return None
    path = tmp_path / "subset.csv"
    df.to_csv(path, index=False)
    run = subprocess.run(["Rscript", "-e", GLMER.format(path=path)], capture_output=True, text=True)
    if run.returncode != 0:
        return None
    return {int(k): (float(t), float(ll)) for k, t, ll in (line.split() for line in run.stdout.splitlines())}


def test_glmer_1e5(benchmark, agq_backend, tmp_path, request):
    n, m = (2_000, 20) if smoke(request.config) else (100_000, 1_000)
    if agq_backend == "numpy" and not smoke(request.config):
        pytest.skip("the numpy reference is compared with glmer in the smoke run only")
    df = simulate(n, m, seed=1)
    ours = {}
    for k in (1, 7):
        start = time.perf_counter()
        ours[k] = pyglmm.glmm("y ~ x1 + x2 + (1|g)", df, nagq=k, backend=agq_backend)
        ours[k] = (time.perf_counter() - start, ours[k].loglik)
    benchmark.pedantic(lambda: pyglmm.glmm("y ~ x1 + x2 + (1|g)", df, nagq=7, backend=agq_backend),
                       rounds=1)
    peers = None if smoke(request.config) else _glmer_seconds(df, tmp_path)
    info = {f"pyglmm_nagq{k}_s": t for k, (t, _) in ours.items()}
    if peers:
        for k, (t, ll) in peers.items():
            info[f"glmer_nagq{k}_s"] = t
            info[f"ratio_nagq{k}"] = t / ours[k][0]
            # same objective (glmer's nAGQ > 1 scale leaves out the saturated
            # log-likelihood, which is 0 for 0/1 data): our maximum is not below glmer's,
            # whose default optimiser stops up to ~1e-3 short at this size (measured
            # 1.05e-3 at nAGQ = 1, 2026-11-30), and not far above it
            assert ll - 1e-6 <= ours[k][1] <= ll + 1e-2
    benchmark.extra_info.update(rows=n, clusters=m, **info)
