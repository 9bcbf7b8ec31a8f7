r"""Regularised linear mixed models for high-dimensional data (issue 11).

A reconstruction of Amestoy, van de Wiel & van Wieringen (2021), "Linear mixed
models for high-dimensional data" (talk slides; no public code): a ridge prior
:math:`\beta_p \sim N(0, \sigma^2/\lambda\, I)` on the penalised fixed effects, an
inverse-Wishart prior on each random-effect covariance in the talk's (b, A)
form, the MAP by an EM whose latent variables are :math:`\beta_p` and the
random effects (so that it maximises the exact marginal likelihood plus the
prior), :math:`\lambda` by empirical Bayes on that marginal likelihood and b by
empirical Bayes on its Laplace approximation over :math:`\Sigma` or by grouped
cross-validation.

Modules: ``api`` (:func:`ridge_lmm`), ``solvers`` (the E-step, primal and dual),
``em`` (the EM map, its gradient and the Newton finish), ``laplace`` (EB for b),
``cv`` (b by grouped cross-validation),
``result`` (:class:`~pyglmm.engines.ridge.result.RidgeResult`), and the kernel
twins ``kernels_numpy`` (reference) and ``kernels_numba`` of ``csrc/ridge/``.

Where the talk is silent, pyglmm chose (and documents in the modules):
the IW prior on the absolute-scale :math:`\Sigma` (as the talk and Amestoy's
code; lme4's relative scale would profile :math:`\sigma^2` but not match the
talk's update); unpenalised columns (intercept, random-slope columns) as
parameters at their GLS value, so that b = 0 without penalised columns is
lme4's ML; penalised columns standardised; the Laplace approximation in
log-Cholesky coordinates with a flat prior on :math:`\log\sigma^2` and
:math:`\lambda` held at its EB value; b searched where the IW is proper
(:math:`\nu \ge q`); the default target :math:`A` a diagonal matrix scaled to
the response (see :func:`ridge_lmm`).
"""

from .api import ridge_lmm

__all__ = ["ridge_lmm"]
