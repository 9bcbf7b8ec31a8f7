"""Maximum-likelihood GLMMs with one grouping factor by adaptive Gauss–Hermite
quadrature (glmer ``nAGQ = K``; random slopes with K > 1 go beyond lme4).

Modules: ``kernels_numpy`` (the reference per-cluster kernel: log-likelihood,
exact gradient and Hessian; the C++ and numba twins follow its contract).
"""
