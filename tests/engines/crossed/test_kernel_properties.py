"""Property tests: on random problems every compiled backend agrees with the numpy reference.

Problems are drawn by hypothesis: 1 to 300 rows (one row block) or 32,768 to
51,152 (two or three blocks of the threads' split), 1 to 3 factors, possibly one
with 200,000 levels (so many that the C++ kernels sum only the levels each block
touches, straight into the output when rows are sorted by it), empty levels,
one-row levels, and prior weights moderate, tiny (1e-200 to 1e-100), huge (1e100
to 1e200), with zeros (a third of the rows and all of a level), or all of these
mixed.  The arrays themselves come from a drawn seed.

Tolerance: every output entry must satisfy |got - want| <= RTOL * mag, where mag
is the sum of the absolute values of the terms summed into that entry (the same
kernel on absolute values, or the bound spelt out in ``_stats_bounds``).  Summed
in any order, n terms in float64 round by at most n * 2^-53 * mag (5.7e-12 * mag
for the 51,152 rows here); the IRLS weights and working responses add their
sensitivity to the linear predictor's rounding, about (p + k) * 2^-53 relative
to its terms (< 1e-13 here).  Backend and reference are each that close to the
exact value, so they differ by at most 1.2e-11 * mag: RTOL = 1e-10 leaves a
margin of 8.  An entry with mag = 0 (an empty level, a level weighing nothing)
must be exactly 0.  A lost, doubled or misplaced row changes an entry by a whole
term: far more than RTOL * mag unless it weighs 1e-10 of its neighbours.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyglmm import backends as _backend

REF = _backend.kernels("numpy")
COMPILED = [b for b in _backend.available_backends() if b != "numpy"]
BLOCK = 16384  # rows per row block at least (kMinRowsPerBlock)
MANY_LEVELS = 200_000
RTOL = 1e-10

pytestmark = pytest.mark.skipif(not COMPILED, reason="no compiled backend to compare")
examples = settings(max_examples=12, deadline=None)


def _local_codes(rng, n, q, empty, one_row):
    """Level indices 0..q-1 of n rows; with ``empty`` about a third of the levels have
    no row, with ``one_row`` up to three levels have exactly one row."""
    used = np.arange(q)
    if empty and q > 1:
        used = np.sort(rng.choice(q, max(1, 2 * q // 3), replace=False))
    single = used[:0]
    if one_row and used.size > 1 and n > 1:
        single = rng.choice(used, min(3, used.size - 1, n - 1), replace=False)
    common = np.setdiff1d(used, single)
    local = rng.choice(common, n)
    local[rng.choice(n, single.size, replace=False)] = single
    return local


def _weights(rng, n, kind, level):
    if kind == "tiny":
        return 10.0 ** rng.uniform(-200, -100, n)
    if kind == "huge":
        return 10.0 ** rng.uniform(100, 200, n)
    w = rng.uniform(0.1, 2.0, n)
    if kind in ("zeros", "mixed"):
        w[rng.random(n) < 1 / 3] = 0.0
        w[level == level[0]] = 0.0  # every row of one level
    if kind == "mixed":
        w *= 10.0 ** rng.uniform(-150, 150, n)
    return w


@st.composite
def problems(draw, weights=("moderate", "tiny", "huge", "zeros", "mixed")):
    large = draw(st.sampled_from([False, False, True]))  # one large problem in three
    n = draw(st.integers(2 * BLOCK, 3 * BLOCK + 2000) if large else st.integers(1, 300))
    levels = draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))
    if draw(st.booleans()):
        levels[0] = MANY_LEVELS
    p = draw(st.integers(1, 6))
    empty, one_row, sort = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    kind = draw(st.sampled_from(weights))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    local = np.column_stack([_local_codes(rng, n, q, empty, one_row) for q in levels])
    if sort:  # as pyglmm orders rows: by the factor with the most levels
        local = local[np.argsort(local[:, int(np.argmax(levels))], kind="stable")]
    offsets = np.concatenate([[0], np.cumsum(levels)]).astype(np.int64)
    codes = np.ascontiguousarray(local + offsets[:-1]).astype(np.int32)
    Q = int(offsets[-1])
    X = rng.standard_normal((n, p))
    X[:, 0] = 1.0
    family = draw(st.sampled_from([0, 1]))
    y = rng.random(n) if family == 1 else rng.standard_normal(n)
    if family == 1:  # proportions, half of them 0 or 1
        half = rng.random(n) < 0.5
        y[half] = np.round(y[half])
    return dict(n=n, p=p, Q=Q, X=X, codes=codes, offsets=offsets, family=family, y=y,
                w=_weights(rng, n, kind, codes[:, 0]), offset=rng.normal(0, 0.5, n),
                beta=rng.normal(0, 0.5, p), b=rng.normal(0, 0.5, Q), dbeta=rng.normal(0, 0.1, p),
                db=rng.normal(0, 0.1, Q), rng=rng, threads=draw(st.integers(1, 3)))


def agree(got, want, mag, what):
    """|got - want| <= RTOL * mag entrywise (so exact where mag = 0)."""
    got, want, mag = np.asarray(got), np.asarray(want), np.asarray(mag)
    bad = ~(np.abs(got - want) <= RTOL * mag)
    if bad.any():
        i = np.unravel_index(np.argmax(bad), bad.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} entries differ beyond RTOL * mag, first at "
                             f"{i}: got {got[i]!r}, want {want[i]!r}, mag {mag[i]!r}")


def _gather_abs(table, codes):
    return np.abs(table)[codes].sum(axis=1)


def _stats_bounds(P, prior, offset):
    """mag of every output of stats_pass: the terms' absolute values, with the IRLS
    quantities' sensitivity to the linear predictor (see the module docstring)."""
    X, codes = P["X"], P["codes"]
    zeta = X @ P["beta"] + P["b"][codes].sum(axis=1)
    zmag = np.abs(X) @ np.abs(P["beta"]) + _gather_abs(P["b"], codes)
    dmag = np.abs(X) @ np.abs(P["dbeta"]) + _gather_abs(P["db"], codes)
    mu, var = REF.family_point(P["family"], zeta + (offset if offset.size else 0.0))
    pw = prior if prior.size else np.ones(P["n"])
    res = np.abs(P["y"] - mu)
    w = pw * var
    zabs = np.abs(zeta) + res / var
    scalars = [np.sum(pw * (2 * res + res**2 / var) * (1 + zmag)), np.sum((2 * zmag) ** 2),
               np.sum((2 * dmag) ** 2), np.sum((2 * (zmag + dmag)) ** 2)]
    WX = w[:, None] * np.abs(X)
    S = np.zeros((P["Q"], P["p"] + 2))
    for j in range(codes.shape[1]):
        np.add.at(S, codes[:, j], np.column_stack([WX, w, w * zabs]))
    return np.array(scalars), w, np.abs(X).T @ WX, np.abs(X).T @ (w * zabs), S


@pytest.mark.parametrize("backend", COMPILED)
@examples
@given(P=problems(), design=st.booleans(), optional=st.booleans())
def test_stats_pass(backend, P, design, optional):
    n, p, Q = P["n"], P["p"], P["Q"]
    prior, offset = (P["w"], P["offset"]) if optional else (np.empty(0), np.empty(0))
    outs = []
    for kern, threads in ((REF, 1), (_backend.kernels(backend), P["threads"])):
        bufs = [np.full(n, np.nan), np.full((p, p), np.nan), np.full(p, np.nan), np.full((Q, p + 2), np.nan)]
        sc = kern.stats_pass(P["family"], P["X"], P["codes"], P["y"], prior, offset, P["beta"], P["b"],
                             P["dbeta"], P["db"], design, *bufs, threads)
        outs.append([sc] + bufs)
    mags = _stats_bounds(P, prior, offset)
    for name, got, want, mag in zip(["scalars", "w", "G", "h", "S"], outs[1], outs[0], mags):
        if design or name == "scalars":
            agree(got, want, mag, name)


@pytest.mark.parametrize("backend", COMPILED)
@examples
@given(P=problems(), m=st.sampled_from([1, 3]), data=st.data())
def test_group_cross_sums(backend, P, m, data):
    factor = data.draw(st.integers(0, P["codes"].shape[1] - 1))
    lo, hi = P["offsets"][factor], P["offsets"][factor + 1]
    table = P["rng"].standard_normal((P["Q"], m))
    got, want, mag = (np.full((hi - lo, m), np.nan) for _ in range(3))
    REF.group_cross_sums(P["codes"], factor, lo, P["w"], 0.7, table, want, 1)
    REF.group_cross_sums(P["codes"], factor, lo, P["w"], 0.7, np.abs(table), mag, 1)
    _backend.kernels(backend).group_cross_sums(P["codes"], factor, lo, P["w"], 0.7, table, got,
                                               P["threads"])
    agree(got, want, mag, "out")


@pytest.mark.parametrize("backend", COMPILED)
@examples
@given(P=problems(), with_A=st.booleans(), with_wm=st.booleans())
def test_sandwich_pass(backend, P, with_A, with_wm):
    p, Q = P["p"], P["Q"]
    A = P["rng"].standard_normal((Q, p)) if with_A else np.empty((0, 0))
    wm = P["w"][::-1].copy() if with_wm else np.empty(0)
    outs = []
    # mag: r = x - sum_j A[codes_j] bounded by |x| + sum_j |A[codes_j]| = |x| - sum_j (-|A|)[codes_j]
    for kern, X, A_, threads in ((REF, P["X"], A, 1), (_backend.kernels(backend), P["X"], A, P["threads"]),
                                 (REF, np.abs(P["X"]), -np.abs(A), 1)):
        bufs = [np.full((p, p), np.nan), np.full((Q, p), np.nan), np.full((p, p), np.nan)]
        kern.sandwich_pass(X, P["codes"], A_, P["w"], 1.5, wm, *bufs, threads)
        outs.append(bufs)
    for name, want, got, mag in zip(["H", "ZU", "M0"], *outs):
        agree(got, want, mag, name)


@pytest.mark.parametrize("backend", COMPILED)
@examples
@given(P=problems())
def test_linear_predictor_and_irls(backend, P):
    n = P["n"]
    codes = P["codes"].copy()
    codes[P["rng"].random(codes.shape) < 0.2] = -1  # unseen levels contribute nothing
    kern = _backend.kernels(backend)
    etas = [np.full(n, np.nan), np.full(n, np.nan)]
    REF.linear_predictor(P["X"], codes, P["beta"], P["b"], P["offset"], etas[0], 1)
    kern.linear_predictor(P["X"], codes, P["beta"], P["b"], P["offset"], etas[1], P["threads"])
    emag = np.abs(P["offset"]) + np.abs(P["X"]) @ np.abs(P["beta"]) + np.where(
        codes >= 0, np.abs(P["b"])[np.maximum(codes, 0)], 0.0).sum(axis=1)
    agree(etas[1], etas[0], emag, "eta")
    outs = []
    for k, threads in ((REF, 1), (kern, P["threads"])):  # the same eta: elementwise functions
        bufs = [np.full(n, np.nan) for _ in range(3)]
        dev = k.irls_quantities(P["family"], etas[0], P["y"], P["w"], P["offset"], *bufs, threads)
        outs.append([dev] + bufs)
    mu, var = REF.family_point(P["family"], etas[0])
    y = P["y"]
    if P["family"] == 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = np.nan_to_num(np.abs(y * np.log(y / mu))) + np.nan_to_num(np.abs((1 - y) * np.log((1 - y) / (1 - mu))))
        dmag = np.sum(P["w"] * 2 * (unit + 2))
    else:
        dmag = np.sum(P["w"] * (np.abs(y) + np.abs(mu)) ** 2)
    mags = [dmag, np.abs(mu), P["w"] * var, np.abs(etas[0]) + np.abs(P["offset"]) + np.abs(y - mu) / var]
    for name, got, want, mag in zip(["deviance", "mu", "w", "z"], outs[1], outs[0], mags):
        agree(got, want, mag, name)


@pytest.mark.parametrize("backend", COMPILED)
@examples
@given(P=problems(weights=("moderate", "zeros")))
def test_club_backfit_and_schall_update(backend, P):
    """Three sweeps from zero (tol = 0: fewer only if a sweep changes nothing) on consistent
    inputs, then Schall's update of the reference's b.  Sweeps compose sums with
    solves, so entrywise bounds do not apply: the tolerance is norm-wise, RTOL times
    the largest |b|, |beta| (D >= 1 and well-conditioned Cholesky factors keep the
    sweeps' error near the sums')."""
    p, Q, codes, offsets = P["p"], P["Q"], P["codes"], P["offsets"]
    K = codes.shape[1]
    w = P["w"]
    WX = w[:, None] * P["X"]
    s = np.zeros((Q, p))
    Wq, tq = np.zeros(Q), np.zeros(Q)
    z = P["y"] + P["offset"]
    for j in range(K):
        np.add.at(s, codes[:, j], WX)
        np.add.at(Wq, codes[:, j], w)
        np.add.at(tq, codes[:, j], w * z)
    G = P["X"].T @ WX + np.eye(p)  # + I: a positive definite G even when every weight is 0
    lam = P["rng"].uniform(1.0, 3.0, K)
    D = Wq + np.repeat(lam, np.diff(offsets))
    chol = np.stack([np.linalg.cholesky(G - s[a:b].T @ (s[a:b] / D[a:b, None]))
                     for a, b in zip(offsets[:-1], offsets[1:])])
    counts = np.bincount(codes.ravel(), minlength=Q).astype(float)
    h = P["X"].T @ (w * z)
    results = []
    for kern, threads in ((REF, 1), (_backend.kernels(backend), P["threads"])):
        beta, b = np.zeros(p), np.zeros(Q)
        sweeps, _ = kern.club_backfit(codes, offsets, w, 1.0, h, s, D, tq, chol, P["X"].T @ P["X"],
                                      counts, beta, b, 0.0, 3, threads)
        results.append((sweeps, beta, b))
    (s0, beta0, b0), (s1, beta1, b1) = results
    assert s0 <= 3 and s1 <= 3
    scale = max(np.max(np.abs(beta0)), np.max(np.abs(b0)))
    agree(beta1, beta0, np.full(p, scale), "beta")
    agree(b1, b0, np.where(counts > 0, scale, 0.0), "b")  # b = 0 exactly on empty levels
    # Schall's update on the same b: per factor, sums of terms in [0, 1] (nu) and a
    # ratio of sums of positive terms (sigma2: relative error at most the sum of theirs)
    outs = []
    for kern in (REF, _backend.kernels(backend)):
        nu, sigma2 = np.full(K, np.nan), np.full(K, np.nan)
        kern.schall_update(offsets, Wq, b0, lam, nu, sigma2)
        outs.append((nu, sigma2))
    agree(outs[1][0], outs[0][0], np.diff(offsets).astype(float), "nu")
    agree(outs[1][1], outs[0][1], 2 * np.abs(outs[0][1]), "sigma2")


@pytest.mark.skipif("numba" not in COMPILED, reason="numba not installed")
@pytest.mark.parametrize("kernel", ["stats_pass", "group_cross_sums", "sandwich_pass", "club_backfit"])
def test_numba_reuses_its_workspace(kernel):
    """The numba kernels' per-level slabs live in one buffer kept between calls (no
    allocation proportional to the levels per call), and nothing of its previous
    contents reaches a result: a buffer filled with NaN between two calls changes
    nothing.  A call made while the buffer is held gets a fresh array and the same
    result."""
    from pyglmm.engines.crossed import numba_blocks
    from test_kernels import club_inputs, make_problem

    P = make_problem(13, n=2 * BLOCK + 5000, levels=(900, 31))  # two row blocks on 2 threads
    n, p, Q = P["X"].shape[0], P["X"].shape[1], P["Q"]
    I = club_inputs(P)
    kern = _backend.kernels("numba")

    def call():
        if kernel == "stats_pass":
            bufs = [np.empty(n), np.empty((p, p)), np.empty(p), np.empty((Q, p + 2))]
            sc = kern.stats_pass(1, P["X"], P["codes"], P["y"], P["prior"], P["offset"], P["beta"],
                                 P["b"], P["dbeta"], P["db"], True, *bufs, 2)
            return [sc] + bufs
        if kernel == "group_cross_sums":
            out = np.empty((900, 3))
            kern.group_cross_sums(P["codes"], 0, 0, P["w"], 0.7, np.cos(np.arange(Q * 3)).reshape(Q, 3), out, 2)
            return [out]
        if kernel == "sandwich_pass":
            bufs = [np.empty((p, p)), np.empty((Q, p)), np.empty((p, p))]
            kern.sandwich_pass(P["X"], P["codes"], np.cos(np.arange(Q * p)).reshape(Q, p), P["w"], 1.5,
                               np.empty(0), *bufs, 2)
            return bufs
        beta, b = np.zeros(p), np.zeros(Q)
        sweeps, rel = kern.club_backfit(P["codes"], P["offsets"], I["w"], 1.0, I["h"], I["s"], I["D"],
                                        I["tq"], I["chol"], I["XtX"], I["counts"], beta, b, 1e-12, 50, 2)
        return [np.array([sweeps, rel]), beta, b]

    width = {"stats_pass": p + 2, "group_cross_sums": 3, "sandwich_pass": p, "club_backfit": 1}[kernel]
    levels = {"group_cross_sums": 900, "club_backfit": 2 * 900}.get(kernel, Q)  # club: u and a slab
    workspace = numba_blocks.workspace
    workspace._buffer = np.empty(0)
    first = call()
    buffer = workspace._buffer
    assert buffer.size == levels * width  # one slab: the second of two row blocks
    buffer.fill(np.nan)
    second = call()
    assert workspace._buffer is buffer
    with workspace._lock:  # held, as by a call from another thread
        third = call()
    assert workspace._buffer is buffer
    for a, b, c in zip(first, second, third):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
