import os

import pytest

import pyglmm

BACKENDS = pyglmm.available_backends()
if os.environ.get("PYGLMM_REQUIRE_ALL_BACKENDS") == "1":
    assert BACKENDS == ["cpp", "numba", "numpy"], f"only {BACKENDS} are available"


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=[b for b in BACKENDS if b != "numpy"] or
                [pytest.param("numpy", marks=pytest.mark.skip(reason="no backend besides numpy"))])
def compiled_backend(request):
    """A backend to compare with the numpy reference (comparing numpy with itself
    would prove nothing)."""
    return request.param
