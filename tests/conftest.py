import os

import pytest

import pyglmm

BACKENDS = pyglmm.available_backends()
if os.environ.get("PYGLMM_REQUIRE_ALL_BACKENDS") == "1":
    assert BACKENDS == ["cpp", "numba", "numpy"], f"only {BACKENDS} are available"


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param
