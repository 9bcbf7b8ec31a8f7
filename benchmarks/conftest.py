import pytest

import pyglmm


@pytest.fixture(params=pyglmm.available_backends())
def backend(request):
    with pyglmm.backends.blas_single_thread(request.param):  # as during a fit
        yield request.param
