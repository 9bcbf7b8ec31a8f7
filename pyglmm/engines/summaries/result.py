"""The result of a fit from summary statistics: :class:`~pyglmm.GLMMResult` plus the
method (direct or pseudo-data), the moment order, the quadrature nodes, the seed and
the pseudo-data's match residuals."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...data.coding import json_field
from ...results.base import GLMMResult

METHODS = ("direct", "pseudo")


@dataclass(repr=False)
class SummariesResult(GLMMResult):
    """A random-intercept logistic GLMM fitted from the sites' summary statistics
    (see :func:`pyglmm.engines.summaries.fit_summaries`).

    There are no rows behind the fit: :attr:`fittedvalues` and the residuals are not
    available, and the deviance and Pearson statistic are NaN.  :attr:`llf` is the
    maximised approximate log-likelihood: for ``fit_method="direct"`` the
    order-K polynomial approximation, for ``"pseudo"`` the likelihood of the
    pseudo-data (neither is the actual data's).

    Attributes
    ----------
    fit_method : str
        ``"direct"`` or ``"pseudo"``.
    order, nagq : int
        Moment order K of the summaries; Gauss-Hermite nodes per cluster.
    seed : int or None
        The pseudo-data generator's seed (None for the direct fit).
    sites : list of str
        The sites whose summaries were fitted, in order.
    match_residual : pandas.Series or None
        Per cluster, the largest standardised difference between the released
        statistics and the pseudo-data's (None for the direct fit).
    optimizer : str
        The optimiser's closing message.
    """

    fit_method: str = "direct"
    order: int = 0
    nagq: int = 1
    seed: object = None
    sites: list = field(default_factory=list)
    match_residual: object = None
    optimizer: str = ""

    engine = "summaries"
    likelihood_note = ("logLik is the approximate likelihood maximised (from the summaries), not "
                       "the actual data's")

    @property
    def method(self):
        nodes = "Laplace" if self.nagq == 1 else f"adaptive Gauss-Hermite, {self.nagq} nodes"
        if self.fit_method == "direct":
            return (f"maximum of the order-{self.order} polynomial-approximate likelihood from "
                    f"summary statistics ({nodes})")
        return (f"maximum likelihood ({nodes}) on pseudo-data matching order-{self.order} summary "
                f"statistics (seed {self.seed})")

    def fit_description(self):
        text = super().fit_description()
        if self.match_residual is not None and len(self.match_residual):
            text += f"; largest match residual {float(self.match_residual.max()):.3g}"
        return text + f"; sites: {', '.join(self.sites)}"

    def to_dict(self, full=False):
        """:meth:`GLMMResult.to_dict`; the brief form adds ``fit_method``, ``order``,
        ``nagq``, ``seed`` and ``match_residual`` (the largest, or None)."""
        out = super().to_dict(full)
        if not full:
            out.update(fit_method=self.fit_method, order=int(self.order), nagq=int(self.nagq),
                       seed=self.seed, match_residual=None if self.match_residual is None
                       else float(self.match_residual.max()))
        return out

    def extra_to_dict(self):
        """What a saved model holds beyond :class:`~pyglmm.GLMMResult`'s fields."""
        return {"fit_method": self.fit_method, "order": int(self.order), "nagq": int(self.nagq),
                "seed": self.seed, "sites": list(self.sites), "optimizer": self.optimizer,
                "match_residual": None if self.match_residual is None else {
                    str(k): float(v) for k, v in self.match_residual.items()}}

    @classmethod
    def extra_from_dict(cls, d):
        """The fields :meth:`extra_to_dict` wrote, checked (ValueError naming the field)."""
        fit_method = json_field(d, "fit_method", str)
        if fit_method not in METHODS:
            raise ValueError(f"model file: field 'fit_method' is {fit_method!r}, not one of {METHODS}")
        residual = json_field(d, "match_residual", (dict, type(None)))
        if residual is not None:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in residual.values()):
                raise ValueError("model file: field 'match_residual' must map clusters to numbers")
            residual = pd.Series(residual, dtype=np.float64, name="match_residual")
        sites = json_field(d, "sites", list)
        if not all(isinstance(s, str) for s in sites):
            raise ValueError("model file: field 'sites' must be a list of strings")
        return dict(fit_method=fit_method, order=json_field(d, "order", int),
                    nagq=json_field(d, "nagq", int), seed=json_field(d, "seed", (int, type(None))),
                    sites=sites, optimizer=json_field(d, "optimizer", str),
                    match_residual=residual)
