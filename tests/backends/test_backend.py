"""The kernel backend registry and the build's C++ guarantee."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import pyglmm
from pyglmm import backends as _backend


def run_python(code, **env):
    """Run code in a fresh interpreter outside the source tree (so that it imports the
    installed package, as a user would)."""
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                          cwd=tempfile.gettempdir())


def test_automatic_choice_is_the_fastest_available():
    assert pyglmm.backend() == pyglmm.available_backends()[0]
    assert pyglmm.available_backends()[-1] == "numpy"


@pytest.mark.parametrize("name", pyglmm.available_backends())
def test_env_forces_a_backend_and_results_record_it(name):
    code = ("import pyglmm, pandas as pd, numpy as np\n"
            "rng = np.random.default_rng(0)\n"
            "X = rng.standard_normal((300, 1)); g = {'a': rng.integers(0, 9, 300)}\n"
            "r = pyglmm.glmm_from_arrays(X, (rng.random(300) < .4).astype(float), g)\n"
            "print(pyglmm.backend(), r.backend)")
    run = run_python(code, PYGLMM_BACKEND=name)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [name, name]


def test_unknown_backend_is_an_error():
    run = run_python("import pyglmm; pyglmm.backend()", PYGLMM_BACKEND="cuda")
    assert run.returncode != 0
    assert "ValueError: unknown backend 'cuda'; choose one of cpp, numba, numpy" in run.stderr


def test_unavailable_forced_backend_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setitem(_backend._MODULES, "numba", "pyglmm._no_such_module")
    monkeypatch.delitem(_backend._loaded, ("numba", "crossed"), raising=False)
    monkeypatch.setenv("PYGLMM_BACKEND", "numba")
    with pytest.raises(pyglmm.BackendUnavailableError, match="backend 'numba' is not available"):
        pyglmm.backend()
    assert "numba" not in pyglmm.available_backends()


def test_thread_setting(monkeypatch):
    monkeypatch.setenv("PYGLMM_NUM_THREADS", "3")
    assert pyglmm.get_num_threads() == 3
    pyglmm.set_num_threads(1)
    try:
        assert pyglmm.get_num_threads() == 1
    finally:
        pyglmm.set_num_threads(None)
    assert pyglmm.get_num_threads() == 3
    monkeypatch.setenv("PYGLMM_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="PYGLMM_NUM_THREADS must be a positive integer"):
        pyglmm.get_num_threads()
    for bad in (0, "a", 2.5, True):
        with pytest.raises(ValueError, match=f"number of threads must be a positive integer, got {bad!r}"):
            pyglmm.set_num_threads(bad)


@pytest.mark.skipif(os.environ.get("PYGLMM_REQUIRE_CPP") != "1", reason="C++ not required here")
def test_required_cpp_backend_is_built():
    assert "cpp" in pyglmm.available_backends() and pyglmm.backend() == "cpp"


@pytest.mark.parametrize("name", pyglmm.available_backends())
def test_blas_runs_on_one_thread_during_a_kernel_backend_fit(name):
    """cpp and numba fits hold BLAS to one thread (its idle threads would spin on the
    kernels' cores); the numpy backend, whose kernels are BLAS calls, keeps its threads."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = lambda: {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
                    if i["user_api"] == "blas"}
    before, seen = blas(), []
    rng = np.random.default_rng(0)
    g = rng.integers(0, 20, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-rng.normal(0, 1.5, 20)[g]))).astype(float)
    pyglmm.glmm_from_arrays(rng.standard_normal((2000, 1)), y, {"a": g}, backend=name,
                            callback=lambda row: seen.append(blas()))
    assert seen and all(s == ({k: 1 for k in before} if name != "numpy" else before) for s in seen)
    assert blas() == before
