"""pyglmm: generalized linear mixed models at scale.

Crossed random-effects logistic (and linear) regression at millions of rows by
Schall's PQL with clubbed backfitting (Ghosh, Hastie & Owen 2022), on C++,
numba or numpy kernels.

>>> import pyglmm
>>> res = pyglmm.glmm("y ~ x1 + x2 + (1|user) + (1|item)", df)      # doctest: +SKIP
>>> print(res)                                                        # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from .backends import (BackendUnavailableError, available_backends, backend,
                       get_num_threads, set_num_threads)
from .engines.crossed import glmm, glmm_from_arrays
from .exceptions import (ConvergenceWarning, DataError, SeparationWarning,
                         SingularFitWarning, SingularMatrixError)
from .results import GLMMResult, load
from .simulate import simulate_crossed, simulate_stitchfix

try:
    __version__ = version("pyglmm")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "glmm", "glmm_from_arrays", "GLMMResult", "load",
    "backend", "available_backends", "get_num_threads", "set_num_threads",
    "BackendUnavailableError", "ConvergenceWarning", "DataError", "SeparationWarning",
    "SingularFitWarning", "SingularMatrixError",
    "simulate_crossed", "simulate_stitchfix", "__version__",
]
