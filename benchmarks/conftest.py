import pytest

import pyglmm


@pytest.fixture(params=pyglmm.available_backends())
def backend(request):
    return request.param
