"""Each backend's ridge kernels agree with the numpy reference (random inputs with
ragged groups, an empty group and a non-positive-definite block)."""

import numpy as np
import pytest

from pyglmm import backends
from pyglmm.engines.ridge import kernels_numpy


def inputs(seed=0, m=7, q=3, p=5):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 6, m)
    sizes[2] = 0
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    return offsets, rng.normal(size=(n, q)), rng.normal(size=(n, p)), rng.normal(size=n)


def test_group_reductions(backend):
    kern = backends.kernels(backend, "ridge")
    offsets, Z, D, y = inputs()
    for got, want in zip(kern.group_reductions(offsets, Z, D, y, 2),
                         kernels_numpy.group_reductions(offsets, Z, D, y)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    # against the definition
    ZtZ = kern.group_reductions(offsets, Z, D, y, 1)[0]
    np.testing.assert_allclose(ZtZ[1], Z[offsets[1]:offsets[2]].T @ Z[offsets[1]:offsets[2]], atol=1e-13)
    assert not ZtZ[2].any()


def test_batched_spd_solve(backend):
    kern = backends.kernels(backend, "ridge")
    rng = np.random.default_rng(1)
    G = rng.normal(size=(6, 4, 4))
    M = G @ np.swapaxes(G, 1, 2) + 0.1 * np.eye(4)
    M[3] = np.diag([1.0, -1.0, 1.0, 1.0])  # not positive definite
    R = rng.normal(size=(6, 4, 3))
    X, logdet = kern.batched_spd_solve(M, R, 2)
    ok = np.arange(6) != 3
    np.testing.assert_allclose(np.einsum("iab,ibk->iak", M[ok], X[ok]), R[ok], atol=1e-10)
    np.testing.assert_allclose(logdet[ok], np.linalg.slogdet(M[ok])[1], atol=1e-12)
    assert np.isnan(logdet[3]) and not X[3].any()
    Xr, lr = kernels_numpy.batched_spd_solve(M, R)
    np.testing.assert_allclose(X, Xr, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(logdet), np.isnan(lr))


@pytest.mark.skipif("cpp" not in backends.available_backends(), reason="C++ extension not built")
@pytest.mark.parametrize("call, name", [
    (lambda k, a: k.group_reductions(np.array([0, 2, 5]), *a), "offsets: must end at the number of rows"),
    (lambda k, a: k.group_reductions(np.array([1, 2, 6]), *a), "offsets: must start at 0"),
    (lambda k, a: k.group_reductions(np.array([0, 4, 3, 6]), *a), "offsets: decrease at position 2"),
    (lambda k, a: k.group_reductions(np.array([0, 6]), a[0], a[1][:5], a[2]), "D: wrong shape"),
    (lambda k, a: k.group_reductions(np.array([0, 6]), a[0].astype(np.float32), a[1], a[2]), "Z: wrong dtype"),
    (lambda k, a: k.group_reductions(np.array([0, 6]), *a, nthreads=0), "nthreads"),
    (lambda k, a: k.batched_spd_solve(np.ones((2, 2, 3)), np.ones((2, 2, 1))), "M: blocks must be square"),
    (lambda k, a: k.batched_spd_solve(np.eye(2)[None], np.ones((1, 3, 1))), "R: wrong shape"),
    (lambda k, a: k.batched_spd_solve(np.full((1, 2, 2), np.nan), np.ones((1, 2, 1))), "M: holds a non-finite"),
])
def test_cpp_bindings_check_arguments(call, name):
    rng = np.random.default_rng(2)
    args = (rng.normal(size=(6, 2)), rng.normal(size=(6, 3)), rng.normal(size=6))
    with pytest.raises(ValueError, match=name):
        call(backends.kernels("cpp", "ridge"), args)
