"""Exact federated GLMM fits across sites (issue 9).

Sites keep their rows; each round they send the sums over their clusters of the
AGQ log-likelihood, gradient and Hessian, which the coordinator adds and
optimises.  Because the marginal log-likelihood is a sum over clusters and a
cluster lives at one site, the fit equals the pooled AGQ fit.  Modules:
:mod:`.schema` (messages), :mod:`.model` (what a site computes), :mod:`.site`,
:mod:`.coordinator`, :mod:`.api` (``fit_federated``), :mod:`.penalty` (the L2
penalty path), :mod:`.transports` (in-process, local processes), :mod:`.flower`
(Flower ServerApp/ClientApp) and :mod:`.flower_local` (a local deployment).
"""
