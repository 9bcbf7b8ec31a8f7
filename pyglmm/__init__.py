"""pyglmm: generalized linear mixed models at scale.

Crossed random-effects GLMMs at millions of rows by Schall's PQL with clubbed
backfitting (Ghosh, Hastie & Owen 2022; in process or on Dask), maximum-likelihood
GLMMs with one grouping factor and random slopes by adaptive Gauss-Hermite
quadrature, exact federated fits across sites (:func:`fit_federated`), one-shot
federation from summary statistics (:func:`site_summary`, :func:`fit_summaries`)
and regularised high-dimensional LMMs (:func:`ridge_lmm`), on C++, numba or numpy
kernels.

>>> import pyglmm
>>> res = pyglmm.glmm("y ~ x1 + x2 + (1|user) + (1|item)", df)      # doctest: +SKIP
>>> print(res)                                                        # doctest: +SKIP

``import pyglmm`` is cheap: the engines, pandas and scipy are
imported when first used (site processes, scoring jobs and the command line
pay only for what they run).
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

from .backends import (BackendUnavailableError, available_backends, backend,
                       get_num_threads, set_num_threads)
from .exceptions import (ClusterError, ConvergenceWarning, DataError, SeparationWarning,
                         SingularFitWarning, SingularMatrixError)

try:
    __version__ = version("pyglmm")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

# Public names imported on first access (PEP 562): name -> module.
_LAZY = {
    "glmm": ".engines.dispatch", "glmm_from_arrays": ".engines.crossed",
    "ridge_lmm": ".engines.ridge", "fit_federated": ".engines.federated.api",
    "site_summary": ".engines.summaries", "fit_summaries": ".engines.summaries",
    "GLMMResult": ".results", "load": ".results",
    "simulate_crossed": ".simulate", "simulate_stitchfix": ".simulate",
}

__all__ = [
    "glmm", "glmm_from_arrays", "ridge_lmm", "fit_federated", "site_summary", "fit_summaries",
    "GLMMResult", "load",
    "backend", "available_backends", "get_num_threads", "set_num_threads",
    "BackendUnavailableError", "ClusterError", "ConvergenceWarning", "DataError", "SeparationWarning",
    "SingularFitWarning", "SingularMatrixError",
    "simulate_crossed", "simulate_stitchfix", "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pyglmm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
