"""The agq engine in the backend registry: backends without AGQ kernels (a C++
build or a numba twin that predates them) are skipped by default and refused by
name; every backend that has them agrees with the numpy reference."""

import numpy as np
import pytest
from test_agq_kernel_numpy import CASES, params, problem

from pyglmm import backends
from pyglmm.engines.agq import kernels_numpy


def test_default_backend_is_the_first_with_agq_kernels():
    have = backends.available_backends("agq")
    assert have[-1] == "numpy" and backends.backend(engine="agq") == have[0]
    assert backends.kernels(engine="agq") is backends.kernels(have[0], engine="agq")


@pytest.mark.parametrize("name", [b for b in backends.BACKENDS if b != "numpy"])
def test_a_backend_without_agq_kernels_is_refused_naming_the_engine(name):
    if name in backends.available_backends("agq"):
        pytest.skip(f"{name} has agq kernels")
    with pytest.raises(backends.BackendUnavailableError, match=f"'{name}'.*agq"):
        backends.kernels(name, engine="agq")


def run(kern, family, data, psi, K, threads):
    p, q = data["X"].shape[1], data["Z"].shape[1]
    m, d = len(data["starts"]) - 1, len(psi)
    nodes, w = np.polynomial.hermite_e.hermegauss(K)
    out = dict(ll=np.zeros(m), g=np.zeros(d), h=np.zeros((d, d)), modes=np.zeros((m, q)),
               cv=np.zeros((m, q, q)))
    out["failed"] = kern.cluster_eval(family, 1.3, data["X"], data["Z"], data["y"], data["weights"],
                                      data["offset"], data["starts"], psi[:p], psi[p:], nodes,
                                      w / np.sqrt(2 * np.pi), out["modes"], 2, out["ll"], out["g"],
                                      out["h"], out["cv"], threads)
    return out


@pytest.mark.parametrize("family,q,K", CASES)
@pytest.mark.parametrize("name", [b for b in backends.BACKENDS if b != "numpy"])
def test_compiled_kernels_match_the_reference(name, family, q, K):
    if name not in backends.available_backends("agq"):
        pytest.skip(f"no {name} kernels for the agq engine")
    data, psi = problem(family, q), params(q)
    ref = run(kernels_numpy, family, data, psi, K, 1)
    for threads in (1, 2):
        got = run(backends.kernels(name, engine="agq"), family, data, psi, K, threads)
        for key in ("ll", "g", "h", "modes", "cv"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-9, atol=1e-9, err_msg=key)
        assert got["failed"] == ref["failed"] == 0
