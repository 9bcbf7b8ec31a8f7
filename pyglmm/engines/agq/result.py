"""The AGQ engine's result: :class:`~pyglmm.GLMMResult` with a maximised
log-likelihood, the quadrature order and the optimiser's iterations."""

from dataclasses import dataclass, field

import pandas as pd

from ...data.coding import json_field
from ...results.base import GLMMResult
from ...results.io import table_from_json


@dataclass(repr=False)  # GLMMResult's short repr
class AGQResult(GLMMResult):
    r"""A GLMM with one grouping factor fitted by maximum likelihood with adaptive
    Gauss–Hermite quadrature (see :func:`pyglmm.engines.agq.glmm_agq`).

    Unlike PQL, every inferential output is likelihood-based: :attr:`loglik`
    (with :attr:`aic`, :attr:`bic`) is the maximised ``nagq``-point AGQ
    log-likelihood on lme4's scale (full conditional densities with their
    constants); :meth:`cov_params` is the inverse observed information (minus
    the Hessian of that log-likelihood in :math:`(\beta, \theta)` at the
    optimum, exact derivatives; for gaussian its :math:`\beta` block given the
    variances, as lmer); :meth:`ranef` gives the conditional modes
    :math:`\Lambda\hat v` and conditional standard deviations from
    :math:`\Lambda H^{-1}\Lambda^\top` (lme4's ``condVar``).  :attr:`deviance`
    and :attr:`pearson_chi2` are those of the conditional model at the modes.

    Attributes
    ----------
    nagq : int
        Quadrature points per random effect (1: Laplace).
    history : pandas.DataFrame
        One row per Newton iteration: ``iteration``, ``loglik``,
        ``decrement`` (the Newton decrement before the step), ``step`` (the
        line search's step length).
    """

    nagq: int = 1
    history: pd.DataFrame = field(default_factory=pd.DataFrame)

    engine = "agq"

    @property
    def method(self):
        if self.family == "gaussian":
            return "maximum likelihood (exact integral: gaussian; residual variance profiled)"
        if self.nagq == 1:
            return "maximum likelihood (Laplace approximation)"
        return f"maximum likelihood (adaptive Gauss-Hermite quadrature, nAGQ = {self.nagq})"

    def iterations_text(self):
        return f"{self.iterations} Newton iterations"

    def extra_to_dict(self):
        return {"nagq": int(self.nagq),
                "history": {c: self.history[c].tolist() for c in self.history.columns}}

    @classmethod
    def extra_from_dict(cls, d):
        return dict(nagq=json_field(d, "nagq", int), history=table_from_json(d, "history"))
