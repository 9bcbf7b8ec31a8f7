"""The C++ bindings refuse every kind of wrong argument with a ValueError naming it.

Each binding runs all its bad calls in one subprocess (so that a crash fails the
test instead of killing pytest), which prints one JSON verdict per call; the
subprocesses run at the same time.  Also: the bindings' argument names are the
twins', and the guard on the total number of levels (32-bit level ids).
"""

import importlib.machinery
import importlib.util
import inspect
import os

import numpy as np
import pytest
from bindingcheck import array_cases, assert_verdicts, collect, print_verdicts, put, set_, spawn

# pyglmm is imported inside the tests: the subprocesses import this module for
# its cases and load only the extension (importing pyglmm takes seconds).

N, P, LEVELS, M = 40000, 3, (7, 5), 2  # N rows: the checks' scans run on 2 row blocks
Q, K = sum(LEVELS), len(LEVELS)
OFFSETS = np.array([0, LEVELS[0], Q], dtype=np.int64)


def _inputs():
    """Valid arguments of every binding, by name in signature order."""
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.integers(0, q, N) for q in LEVELS]).astype(np.int32)
    codes += OFFSETS[:-1].astype(np.int32)
    X = rng.standard_normal((N, P))
    vec = lambda m: rng.uniform(0.5, 1.5, m)  # noqa: E731
    chol = np.stack([np.eye(P)] * K)
    y = rng.random(N)
    return {
        "linear_predictor": dict(X=X, codes=codes, beta=vec(P), b=vec(Q), offset=vec(N),
                                 eta=np.empty(N), nthreads=2),
        "take_rows": dict(X=X, order=rng.permutation(N).astype(np.int64), out=np.empty((N, P)),
                          nthreads=2),
        "order_rows": dict(codes=codes, factor=1, lo=LEVELS[0], q=LEVELS[1],
                           order=np.empty(N, dtype=np.int64)),
        "irls_quantities": dict(family=1, eta=vec(N), y=y, prior=vec(N), offset=vec(N),
                                mu=np.empty(N), w=np.empty(N), z=np.empty(N), nthreads=2),
        "stats_pass": dict(family=1, X=X, codes=codes, y=y, prior=vec(N), offset=vec(N),
                           beta=vec(P), b=vec(Q), dbeta=vec(P), db=vec(Q), design=True,
                           w=np.empty(N), G=np.empty((P, P)), h=np.empty(P),
                           S=np.empty((Q, P + 2)), nthreads=2),
        "group_cross_sums": dict(codes=codes, factor=0, lo=0, w=vec(N), scale=0.7,
                                 table=rng.standard_normal((Q, M)), out=np.empty((LEVELS[0], M)),
                                 nthreads=2),
        "club_backfit": dict(codes=codes, offsets=OFFSETS.copy(), w=vec(N), scale=1.0, h=vec(P),
                             s=rng.standard_normal((Q, P)), D=vec(Q) + N, tq=vec(Q), chol=chol,
                             XtX=np.eye(P) * N, counts=vec(Q), beta=np.zeros(P), b=np.zeros(Q),
                             tol=1e-8, max_iter=3, nthreads=2),
        "sandwich_pass": dict(X=X, codes=codes, A=rng.standard_normal((Q, P)), wu=vec(N),
                              scale=1.5, wm=vec(N), H=np.empty((P, P)), ZU=np.empty((Q, P)),
                              M0=np.empty((P, P)), nthreads=2),
        "schall_update": dict(offsets=OFFSETS.copy(), Wq=vec(Q), b=vec(Q), lam=vec(K),
                              nu=np.empty(K), sigma2=np.empty(K)),
    }


BINDINGS = list(_inputs())
OUTPUTS = {"linear_predictor": {"eta"}, "take_rows": {"out"}, "order_rows": {"order"},
           "irls_quantities": {"mu", "w", "z"},
           "stats_pass": {"w", "G", "h", "S"}, "group_cross_sums": {"out"},
           "club_backfit": {"beta", "b"}, "sandwich_pass": {"H", "ZU", "M0"},
           "schall_update": {"nu", "sigma2"}}
# Arrays whose extents define the others' (n, p, Q, k, ...): a short one is reported
# through another argument, so they get their own cases below instead of "short".
DEFINING = {"linear_predictor": {"X", "b"}, "take_rows": {"X", "order"}, "order_rows": {"codes"},
            "irls_quantities": {"eta"},
            "stats_pass": {"X", "b"}, "group_cross_sums": {"codes", "table", "out"},
            "club_backfit": {"codes", "beta", "b"}, "sandwich_pass": {"X", "ZU"},
            "schall_update": {"b", "lam"}}
def _code(row, col, value):
    def mutate(args):
        args["codes"] = args["codes"].copy()
        args["codes"][row, col] = value
    return mutate


def _offsets(values):
    return put("offsets", np.array(values, dtype=np.int64))


def _cases(binding):
    """(case, regex the ValueError's message must match, mutation of the valid arguments).
    A regex of None: the call must succeed."""
    args = _inputs()[binding]
    cases = array_cases(args, OUTPUTS[binding], DEFINING[binding])
    if "nthreads" in args:
        cases.append(("nthreads: 0", r"^nthreads: must be at least 1", put("nthreads", 0)))
    if "family" in args:
        cases += [("family: -1", r"^family: unknown family id -1", put("family", -1)),
                  ("family: 99", r"^family: unknown family id 99", put("family", 99))]
    if "scale" in args:
        cases += [("scale: nan", r"^scale: must be finite", put("scale", np.nan)),
                  ("scale: inf", r"^scale: must be finite", put("scale", np.inf))]
    if "codes" in args:  # the bad code sits in the last row: the second row block of the scan
        below = -2 if binding == "linear_predictor" else -1
        cases += [("codes: beyond the levels", rf"^codes: row {N - 1}, column 1 holds {Q}: outside",
                   _code(N - 1, 1, Q)),
                  ("codes: negative", rf"^codes: row {N - 1}, column 0 holds {below}: level ids are >= 0",
                   _code(N - 1, 0, below)),
                  ("codes: factor 1 holds a level of factor 0",
                   r"^codes: (columns 0 and 1 share level ids|row 5, column 1 holds 0: outside factor 1)",
                   _code(5, 1, 0))]
    if "offsets" in args:
        cases += [("offsets: not from 0", r"^offsets: must start at 0", _offsets([1, 7, Q])),
                  ("offsets: decreasing", r"^offsets: decrease at position 2", _offsets([0, 7, 6])),
                  ("offsets: not to Q", rf"^offsets: must end at .*len\(b\) = {Q}, got {Q - 1}",
                   _offsets([0, 7, Q - 1]))]
    cases += EXTRA.get(binding, [])
    return cases


def _resize(name, rows):
    return set_(name, lambda a: np.ascontiguousarray(a[:rows]) if rows <= len(a) else
                np.concatenate([a, a[: rows - len(a)]]))


EXTRA = {
    "linear_predictor": [
        ("codes: -1 is an unseen level", None, _code(N - 1, 1, -1)),
        ("b: short", r"^codes: .*outside the levels \[0, len\(b\)\)", _resize("b", Q - 1)),
        ("beta: long", r"^beta: wrong shape", _resize("beta", P + 1)),
    ],
    "take_rows": [
        ("order: beyond X", rf"^order: index out of range: order\[{N - 1}\] = {N}",
         lambda a: a["order"].__setitem__(N - 1, N)),
        ("order: negative", r"^order: index out of range: order\[3\] = -1",
         lambda a: a["order"].__setitem__(3, -1)),
        ("out: not X's dtype", r"^out: wrong dtype float64, expected int32",
         put("X", np.zeros((N, P), dtype=np.int32))),
    ],
    "order_rows": [
        ("factor: k", r"^factor: 2 is not a column of codes", put("factor", 2)),
        ("lo: -1", r"^lo: .*\[-1, 4\)", put("lo", -1)),
        ("q: short", rf"^codes: row \d+, column 1 holds {Q - 1}: outside factor 1's levels",
         put("q", LEVELS[1] - 1)),
        ("order: long", r"^order: wrong shape", _resize("order", N + 1)),
    ],
    "irls_quantities": [("y: long", r"^y: wrong shape", _resize("y", N + 1))],
    "stats_pass": [
        ("S: wrong width", r"^S: wrong shape", put("S", np.empty((Q, P + 1)))),
        ("no design, still checked", r"^S: wrong shape",
         lambda a: a.update(design=False, S=np.empty((Q - 1, P + 2)))),
    ],
    "group_cross_sums": [
        ("factor: k", r"^factor: 2 is not a column of codes", put("factor", 2)),
        ("factor: -1", r"^factor: -1 is not a column of codes", put("factor", -1)),
        ("lo: -1", r"^lo: .*\[-1, 6\)", put("lo", -1)),
        ("lo: beyond the table", rf"^lo: .*\[{Q - 6}, {Q + 1}\)", put("lo", Q - 6)),
        ("table: fewer rows than levels", r"^codes: .*outside \[0, rows of table\)",
         _resize("table", Q - 1)),
        ("out: fewer rows than the factor's levels", r"^codes: .*rows of out", _resize("out", LEVELS[0] - 1)),
        ("out: wrong width", r"^out: wrong shape", put("out", np.empty((LEVELS[0], M + 1)))),
        ("codes: the factor's levels outside [lo, lo + rows of out)",
         r"^codes: row \d+, column 1 holds \d+: outside the factor's levels", put("factor", 1)),
    ],
    "club_backfit": [
        ("tol: -1", r"^tol: must be non-negative", put("tol", -1.0)),
        ("tol: nan", r"^tol: must be finite", put("tol", np.nan)),
        ("max_iter: -1", r"^max_iter: must be non-negative", put("max_iter", -1)),
        ("chol: zero on the diagonal", r"^chol: factor 1's Cholesky factor has diagonal entry 2 = 0",
         lambda a: a["chol"].__setitem__((1, 2, 2), 0.0)),
        ("chol: wrong shape", r"^chol: wrong shape", put("chol", np.stack([np.eye(P)] * (K + 1)))),
        ("D: zero", r"^D: entry 4 is 0", lambda a: a["D"].__setitem__(4, 0.0)),
        ("D: nan", r"^D: entry 4 is nan", lambda a: a["D"].__setitem__(4, np.nan)),
        ("b: short", r"^offsets: must end at", _resize("b", Q - 1)),
        ("beta: long", r"^h: wrong shape", _resize("beta", P + 1)),
    ],
    "sandwich_pass": [
        ("ZU: fewer rows than levels, no A", r"^codes: .*outside \[0, rows of ZU\)",
         lambda a: a.update(A=np.empty((0, 0)), ZU=np.empty((Q - 1, P)))),
        ("ZU: wrong width", r"^ZU: wrong shape", put("ZU", np.empty((Q, P + 1)))),
    ],
    "schall_update": [
        ("lam: zero", r"^lam: entry 1 is 0", lambda a: a["lam"].__setitem__(1, 0.0)),
        ("lam: inf", r"^lam: entry 0 is inf", lambda a: a["lam"].__setitem__(0, np.inf)),
        ("b: short", r"^offsets: must end at", _resize("b", Q - 1)),
    ],
}


def _load_core():
    """pyglmm._core, without importing the pyglmm package (seconds of imports per subprocess)."""
    spec = importlib.util.find_spec("pyglmm")
    for folder in spec.submodule_search_locations:
        for name in sorted(os.listdir(folder)):
            if name.startswith("_core.") and name.endswith((".so", ".pyd")):
                path = os.path.join(folder, name)
                loader = importlib.machinery.ExtensionFileLoader("pyglmm._core", path)
                module = importlib.util.module_from_spec(importlib.util.spec_from_loader("pyglmm._core", loader))
                loader.exec_module(module)
                return module
    raise ImportError("pyglmm._core is not built")


def run_cases(binding):
    """In the child: the verdicts of ``binding``'s cases (positional calls, as the old bindings took them)."""
    print_verdicts(getattr(_load_core().crossed, binding), _cases(binding), lambda: _inputs()[binding])


@pytest.fixture(scope="module")
def verdicts():
    """Starts one subprocess per binding at once; maps binding -> (returncode, verdicts, stderr)."""
    from pyglmm import backends as _backend

    if "cpp" not in _backend.available_backends():
        pytest.skip("C++ backend not built")
    procs = {b: spawn("test_bindings", f"run_cases({b!r})") for b in BINDINGS}
    return {b: collect(proc, timeout=120) for b, proc in procs.items()}


@pytest.mark.parametrize("binding", BINDINGS)
def test_binding_refuses_wrong_arguments(verdicts, binding):
    assert_verdicts(_cases(binding), *verdicts[binding])


@pytest.mark.parametrize("binding", BINDINGS)
def test_bindings_take_the_twins_argument_names(binding):
    """Every binding has py::arg names, the numba and numpy twins' parameter names:
    a call by keyword works on every backend."""
    from pyglmm import backends as _backend

    if "cpp" not in _backend.available_backends():
        pytest.skip("C++ backend not built")
    ref = getattr(_backend.kernels("numpy"), binding)
    args = _inputs()[binding]
    params = list(inspect.signature(ref).parameters)
    # the optional trailing xcat (categorical fixed effects as codes) is an overload in C++
    assert params[:len(args)] == list(args) and params[len(args):] in ([], ["xcat"])
    for name in _backend.available_backends():
        getattr(_backend.kernels(name), binding)(**_inputs()[binding])


# --- 32-bit level ids --------------------------------------------------------

def test_level_total_guard_names_the_factors():
    from pyglmm.data import design as design_module
    from pyglmm.exceptions import DataError

    with pytest.raises(DataError, match=r"'user' \(2,000,000,000 levels\).*'item' \(200,000,000 levels\)"):
        design_module.check_level_ids({"user": 2_000_000_000, "item": 200_000_000})
    design_module.check_level_ids({"user": 2**31 - 1, "item": 1})  # exactly 2^31 ids: 0 .. 2^31 - 1


def test_build_design_refuses_too_many_levels_before_any_kernel(monkeypatch):
    from pyglmm.backends import kernels
    from pyglmm.data import design as design_module
    from pyglmm.exceptions import DataError
    from pyglmm.families import get_family

    class NoKernels:  # build_design must stop before it reaches a kernel
        def __getattr__(self, name):
            raise AssertionError(f"kernel {name} ran")

    monkeypatch.setattr(design_module, "MAX_LEVELS", 10)
    rng = np.random.default_rng(1)
    groups = {"user": rng.integers(0, 6, 50), "item": rng.integers(0, 5, 50)}
    X = np.column_stack([np.ones(50), rng.standard_normal(50)])
    with pytest.raises(DataError, match=r"'user' \(6 levels\), 'item' \(5 levels\)"):
        design_module.build_design(X, rng.random(50), groups, get_family("gaussian"),
                                   feature_names=["Intercept", "x"], response_name="y",
                                   kern=NoKernels(), nthreads=1)
    groups["item"] = np.minimum(groups["item"], 3)  # 10 levels in all: accepted
    d = design_module.build_design(X, rng.random(50), groups, get_family("gaussian"),
                                   feature_names=["Intercept", "x"], response_name="y",
                                   kern=kernels("numpy"), nthreads=1)
    assert d.codes.dtype == np.int32 and int(d.offsets[-1]) == 10 == d.codes.max() + 1
    assert list(d.levels[1]) == [0, 1, 2, 3]
