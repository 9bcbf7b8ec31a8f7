"""The AGQ kernel's compiled backends (C++, numba) against the numpy reference:
every output of ``cluster_eval`` (per-cluster log-likelihood, the gradient and
Hessian sums, modes, conditional variances, the count of failed mode
searches) on the hard cases, a property test over random shapes, and results
that do not depend on the thread count."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numpy.polynomial.hermite_e import hermegauss

from bindingcheck import array_cases, assert_verdicts, collect, entry, print_verdicts, put, set_, spawn

from pyglmm import backends
from pyglmm.engines.agq import kernels_numpy as kn

GAUSSIAN, BINOMIAL, POISSON = kn.GAUSSIAN, kn.BINOMIAL, kn.POISSON
COMPILED = [b for b in backends.available_backends("agq") if b != "numpy"]
pytestmark = pytest.mark.skipif(not COMPILED, reason="no compiled AGQ backend")
# Measured largest normwise relative difference from numpy over CASES (C++ and numba alike):
# 3e-13 for the Hessian (poisson, q = 1, K = 5: the row at eta 40), at most 2e-15 for every
# other output; the kernels sum in other orders (the node variance of A_k as
# sum pi (A - Abar)^2, not sum pi A^2 - Abar^2) and use log(u) e / (u - 1) for log1p on [0, 1].
RTOL = 1e-11
DISPERSION = 0.7


def stress_data(family, q, p=3, seed=0):
    """Clusters of 1 to 12 rows (two single rows with eta near +40 and -40, one all-0 and
    one all-1 cluster), prior weights (binomial: 1 to 4 trials), offsets.

    Not poisson with eta near +40 in a single row when q > 1: there H = I + 2e17 R R' is
    numerically of rank 1 and the reference's Newton step fails (np.linalg.solve: singular
    matrix); that is the reference's limit, not the twins' to match."""
    rng = np.random.default_rng(seed)
    sizes = [1, 1, 1, 5, 6, 8, 3, 12, 2, 7]
    n = sum(sizes)
    starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    X = np.c_[np.ones(n), rng.normal(size=(n, p - 1))]
    Z = np.c_[np.ones(n), rng.normal(size=(n, q - 1))]
    offset = 0.2 * rng.normal(size=n)
    offset[0], offset[1] = (40.0 if family != POISSON or q == 1 else 3.0), -40.0
    eta = offset + X @ rng.normal(scale=0.5, size=p) + np.repeat(rng.normal(size=len(sizes)), sizes)
    if family == BINOMIAL:
        trials = rng.integers(1, 5, n).astype(float)
        y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))) / trials
        weights = trials
    elif family == POISSON:
        y = rng.poisson(np.exp(np.minimum(eta, 3.0))).astype(float)
        weights = rng.uniform(0.5, 2.0, n)
    else:
        y = eta + rng.normal(size=n)
        weights = rng.uniform(0.5, 2.0, n)
    all0, all1 = slice(starts[3], starts[4]), slice(starts[4], starts[5])
    if family != GAUSSIAN:
        y[all0] = 0.0
        y[all1] = 1.0
    return dict(X=X, Z=Z, y=y, weights=weights, offset=offset, starts=starts)


def parameters(q, p=3, singular=False, seed=1):
    rng = np.random.default_rng(seed)
    theta = 0.3 * rng.normal(size=q * (q + 1) // 2) + 0.9 * np.eye(q)[np.tril_indices(q)]
    if singular:  # the last diagonal entry of Lambda at 0 (q = 1: no random effect at all)
        theta[-1] = 0.0
    return rng.normal(scale=0.4, size=p), theta


def run(kernels, family, data, beta, theta, K, deriv, nthreads=2, modes=None):
    """Every output of one cluster_eval call."""
    m, q = len(data["starts"]) - 1, data["Z"].shape[1]
    d = len(beta) + len(theta)
    nodes, w = hermegauss(K)
    out = dict(loglik=np.full(m, np.nan), grad=np.full(d, np.nan), hess=np.full((d, d), np.nan),
               modes=np.zeros((m, q)) if modes is None else modes.copy(), condvar=np.full((m, q, q), np.nan))
    out["failed"] = kernels.cluster_eval(
        family, DISPERSION, data["X"], data["Z"], data["y"], data["weights"], data["offset"], data["starts"],
        beta, theta, nodes, w / np.sqrt(2 * np.pi), out["modes"], deriv, out["loglik"], out["grad"],
        out["hess"], out["condvar"], nthreads)
    return out


def assert_matches(got, ref, deriv, rtol=RTOL):
    assert got["failed"] == ref["failed"]
    names = ["loglik", "modes", "condvar"] + ["grad"] * (deriv >= 1) + ["hess"] * (deriv == 2)
    for name in names:
        a, b = got[name], ref[name]
        assert np.all(np.isfinite(a)), name
        scale = max(np.abs(b).max(), 1.0 if name == "modes" else 1e-300)
        err = np.abs(a - b).max() / scale
        assert err <= rtol, f"{name}: relative difference {err:.2e}"
    if deriv < 2:  # outputs above deriv are not written
        assert np.all(np.isnan(got["hess"]))
    if deriv < 1:
        assert np.all(np.isnan(got["grad"]))


CASES = [(f, q, K, singular) for f in (BINOMIAL, POISSON, GAUSSIAN) for q in (1, 2, 3) for K in (1, 2, 5)
         for singular in (False, True)]


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("family,q,K,singular", CASES)
def test_backend_matches_numpy(backend, family, q, K, singular):
    kern, ref = backends.kernels(backend, engine="agq"), backends.kernels("numpy", engine="agq")
    data = stress_data(family, q)
    beta, theta = parameters(q, singular=singular)
    for deriv in (0, 1, 2):
        assert_matches(run(kern, family, data, beta, theta, K, deriv),
                       run(ref, family, data, beta, theta, K, deriv), deriv)


@pytest.mark.parametrize("backend", COMPILED)
def test_warm_started_modes_are_overwritten_alike(backend):
    """Modes start from the caller's values (non-finite ones from 0), as the reference."""
    kern, ref = backends.kernels(backend, engine="agq"), backends.kernels("numpy", engine="agq")
    data = stress_data(BINOMIAL, 2)
    beta, theta = parameters(2)
    start = np.random.default_rng(3).normal(scale=2.0, size=(len(data["starts"]) - 1, 2))
    start[2] = [np.nan, np.inf]
    assert_matches(run(kern, BINOMIAL, data, beta, theta, 3, 2, modes=start),
                   run(ref, BINOMIAL, data, beta, theta, 3, 2, modes=start), 2)


@pytest.mark.parametrize("backend", COMPILED)
def test_results_do_not_depend_on_the_thread_count(backend):
    """4000 clusters make several chunks: the sums are bit for bit the same on 1, 2 and 3 threads."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 9, 4000)
    n = int(sizes.sum())
    starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    data = dict(X=np.c_[np.ones(n), rng.normal(size=n)], Z=np.c_[np.ones(n), rng.normal(size=n)],
                y=rng.integers(0, 2, n).astype(float), weights=np.ones(n), offset=np.zeros(n), starts=starts)
    kern = backends.kernels(backend, engine="agq")
    beta, theta = np.array([0.1, -0.4]), np.array([0.8, 0.2, 0.5])
    outs = [run(kern, BINOMIAL, data, beta, theta, 3, 2, nthreads=t) for t in (1, 2, 3)]
    for out in outs[1:]:
        for name in ("loglik", "grad", "hess", "modes", "condvar"):
            assert np.array_equal(out[name], outs[0][name]), name


@st.composite
def shapes(draw):
    family = draw(st.sampled_from([BINOMIAL, POISSON, GAUSSIAN]))
    q = draw(st.integers(1, 3))
    p = draw(st.integers(0, 3))
    K = draw(st.integers(1, 4 if q < 3 else 3))
    sizes = draw(st.lists(st.integers(0, 6), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**16))
    deriv = draw(st.integers(0, 2))
    return family, q, p, K, sizes, seed, deriv


@pytest.mark.parametrize("backend", COMPILED)
@settings(max_examples=30, deadline=None)
@given(case=shapes())
def test_random_shapes_match_numpy(backend, case):
    """Any sizes: no fixed effect, empty clusters, one cluster, q up to 3, K up to 4."""
    family, q, p, K, sizes, seed, deriv = case
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    mean = rng.normal(size=n)
    y = {BINOMIAL: rng.integers(0, 2, n), POISSON: rng.poisson(np.exp(mean)), GAUSSIAN: mean}[family]
    data = dict(X=rng.normal(size=(n, p)), Z=rng.normal(size=(n, q)), y=np.asarray(y, dtype=float),
                weights=rng.uniform(0.5, 2.0, n), offset=rng.normal(scale=0.5, size=n), starts=starts)
    if family == BINOMIAL:
        data["weights"] = np.ones(n)
    beta, theta = rng.normal(scale=0.5, size=p), rng.normal(scale=0.8, size=q * (q + 1) // 2)
    kern, ref = backends.kernels(backend, engine="agq"), backends.kernels("numpy", engine="agq")
    assert_matches(run(kern, family, data, beta, theta, K, deriv),
                   run(ref, family, data, beta, theta, K, deriv), deriv)


# --- the C++ binding refuses every wrong argument with a ValueError naming it ------------------

def binding_inputs():
    """Valid arguments of _core.agq.cluster_eval, by name in signature order."""
    rng = np.random.default_rng(0)
    n, m, p, q, K = 30, 5, 2, 2, 3
    nodes, w = hermegauss(K)
    d = p + q * (q + 1) // 2
    return dict(family=BINOMIAL, dispersion=1.0, X=rng.normal(size=(n, p)), Z=rng.normal(size=(n, q)),
                y=rng.integers(0, 2, n).astype(float), weights=np.ones(n), offset=np.zeros(n),
                starts=np.array([0, 4, 10, 10, 21, n], dtype=np.int64), beta=np.zeros(p),
                theta=np.array([0.8, 0.1, 0.5]), nodes=nodes, gh_weights=w / np.sqrt(2 * np.pi),
                modes=np.zeros((m, q)), deriv=2, loglik_out=np.empty(m), grad_out=np.empty(d),
                hess_out=np.empty((d, d)), condvar_out=np.empty((m, q, q)), nthreads=2)


OUTPUTS = {"modes", "loglik_out", "grad_out", "hess_out", "condvar_out"}
DEFINING = {"X", "starts", "nodes"}  # a short one is reported through another argument (cases below)
def _four_effects(args):
    n, m = args["X"].shape[0], len(args["starts"]) - 1
    args.update(Z=np.ones((n, 4)), theta=np.ones(10), modes=np.zeros((m, 4)), grad_out=np.empty(12),
                hess_out=np.empty((12, 12)), condvar_out=np.empty((m, 4, 4)))


def binding_cases():
    """(case, regex the ValueError's message must match (None: the call succeeds), mutation)."""
    args = binding_inputs()
    cases = array_cases(args, OUTPUTS, DEFINING)
    n = args["X"].shape[0]
    cases += [
        ("family: -1", r"^family: unknown family id -1", put("family", -1)),
        ("family: 3", r"^family: unknown family id 3", put("family", 3)),
        ("deriv: 3", r"^deriv: must be 0, 1 or 2, got 3", put("deriv", 3)),
        ("deriv: -1", r"^deriv: must be 0, 1 or 2, got -1", put("deriv", -1)),
        ("nthreads: 0", r"^nthreads: must be at least 1", put("nthreads", 0)),
        ("dispersion: nan", r"^dispersion: must be finite", put("dispersion", np.nan)),
        ("dispersion: 0, gaussian", r"^dispersion: must be positive",
         lambda a: a.update(family=GAUSSIAN, dispersion=0.0)),
        ("dispersion: 0, binomial (ignored)", None, put("dispersion", 0.0)),
        ("X: short", r"^Z: wrong shape", set_("X", lambda a: a[:-1].copy())),
        ("Z: 4 random effects", r"^Z: 4 random effects per cluster", _four_effects),
        ("Z: none", r"^Z: 0 random effects per cluster", set_("Z", lambda a: a[:, :0].copy())),
        ("starts: empty", r"^starts: must hold at least one entry", put("starts", np.zeros(0, np.int64))),
        ("starts: not from 0", r"^starts: must start at 0, got 1", entry("starts", 0, 1)),
        ("starts: decreasing", r"^starts: decrease at position 3 \(10 then 9\)", entry("starts", 3, 9)),
        ("starts: not to n", rf"^starts: must end at the number of rows n = {n}, got {n - 1}",
         entry("starts", -1, n - 1)),
        ("starts: beyond n", rf"^starts: must end at the number of rows n = {n}, got {n + 5}",
         entry("starts", -1, n + 5)),
        ("starts: short", r"^modes: wrong shape", set_("starts", lambda a: np.r_[a[:-2], a[-1]])),
        ("nodes: none", r"^nodes: must hold at least one node",
         lambda a: a.update(nodes=np.zeros(0), gh_weights=np.zeros(0))),
        ("nodes: short", r"^gh_weights: wrong shape", set_("nodes", lambda a: a[:-1].copy())),
        ("nodes: nan", r"^nodes: entry 1 is nan", entry("nodes", 1, np.nan)),
        ("gh_weights: 0", r"^gh_weights: entry 1 is 0", entry("gh_weights", 1, 0.0)),
        ("weights: 0", r"^weights: entry 7 is 0", entry("weights", 7, 0.0)),
        ("weights: -1", r"^weights: entry 7 is -1", entry("weights", 7, -1.0)),
        ("weights: nan", r"^weights: entry 7 is nan", entry("weights", 7, np.nan)),
        ("beta: nan", r"^beta: entry 1 is nan", entry("beta", 1, np.nan)),
        ("theta: inf", r"^theta: entry 2 is inf", entry("theta", 2, np.inf)),
        ("modes: nan (a start at 0)", None, entry("modes", (1, 0), np.nan)),
        ("theta: zero diagonal", None, entry("theta", 2, 0.0)),
    ]
    return cases


def run_binding_cases():
    """In the child: the verdicts of the C++ binding's cases (positional calls)."""
    print_verdicts(backends.kernels("cpp", engine="agq").cluster_eval, binding_cases(), binding_inputs)


@pytest.mark.skipif("cpp" not in COMPILED, reason="C++ backend not built")
def test_binding_refuses_wrong_arguments():
    """All bad calls run in one subprocess, so that a crash fails this test instead of pytest."""
    assert_verdicts(binding_cases(), *collect(spawn("test_backends", "run_binding_cases()"), timeout=300))


@pytest.mark.parametrize("backend", COMPILED)
def test_kernels_take_the_references_argument_names(backend):
    """py::arg names (and the numba twin's parameters) are the reference's: calls by keyword work."""
    import inspect

    ref = backends.kernels("numpy", engine="agq").cluster_eval
    assert list(inspect.signature(ref).parameters) == list(binding_inputs())
    out = binding_inputs()
    failed = backends.kernels(backend, engine="agq").cluster_eval(**out)
    assert failed == 0 and np.all(np.isfinite(out["hess_out"]))
