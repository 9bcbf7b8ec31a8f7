"""Maximum-likelihood GLMMs with one grouping factor by adaptive Gauss–Hermite
quadrature (glmer ``nAGQ = K``; random slopes with K > 1 go beyond lme4).

Modules: ``kernels_numpy`` (the reference per-cluster kernel: log-likelihood,
exact gradient and Hessian; its docstring is the contract of the C++ and numba
twins), ``model`` (the kernel's arrays from a frame, the log-Cholesky
parameters, the objective: the seams the federated and summary engines use),
``optimize`` (Newton with line search and boundary handling on any
``evaluate(x, deriv)``), ``api`` (:func:`glmm_agq`) and ``result``
(:class:`~pyglmm.engines.agq.result.AGQResult`).
"""

from .api import glmm_agq

__all__ = ["glmm_agq"]
