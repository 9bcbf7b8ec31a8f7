"""The crossed engine's result: :class:`~pyglmm.GLMMResult` plus what only Schall's
loop has (the per-iteration history, the inner backfitting sweeps) and the
naive-regression comparison of Section 6."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...data.coding import json_field
from ...results.base import GLMMResult
from ...results.io import float_matrix, table_from_json
from ...results.summary import table

NO_LIKELIHOOD = ("a PQL fit has no likelihood, hence no log-likelihood, AIC or BIC: PQL "
                 "maximises a linearised working model, not the marginal likelihood")


@dataclass(repr=False)  # GLMMResult's short repr
class CrossedResult(GLMMResult):
    """A crossed random-effects GLMM fitted by Schall's PQL (see :func:`pyglmm.glmm`).

    Besides everything :class:`~pyglmm.GLMMResult` has (see there for which
    outputs are approximate for PQL and why):

    Attributes
    ----------
    inner_sweeps : int
        Backfitting sweeps over all outer iterations.
    history : pandas.DataFrame
        One row per outer iteration: ``iteration``, ``inner_sweeps``,
        ``inner_rel``, ``seconds``, ``rel_change`` (of the linear predictor,
        the convergence criterion), ``phi``, ``accelerated`` (an Aitken step
        on the variances) and ``sigma_<factor>``.
    naive, naive_summary : pandas.DataFrame, dict or None
        The naive-regression comparison (``compare_naive=True``).
    cluster : dict or None
        For a fit of a dask DataFrame, the cluster it ran on: ``workers``,
        ``threads``, ``partitions``, ``shuffle``, ``scheduler`` (address) and
        ``traffic`` (per kind of pass: passes, seconds, bytes sent and gathered).
    """

    inner_sweeps: int = 0
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    naive: object = None
    naive_summary: object = None
    cluster: object = None

    method = "PQL (Schall; clubbed backfitting, diagonal trace)"
    likelihood_note = "PQL has no likelihood; deviance is that of the conditional model at the modes"

    def iterations_text(self):
        return f"{self.iterations} outer iterations ({self.inner_sweeps} inner sweeps)"

    def fit_description(self):
        text = super().fit_description()
        if self.cluster is None:
            return text
        c = self.cluster
        return (f"{text}; on a Dask cluster of {c['workers']} worker(s), {c['threads']} thread(s), "
                f"{c['partitions']} partition(s)")

    def summary(self):
        text = super().summary()
        return text + ("\n\n" + format_naive(self) if self.naive is not None else "")

    def extra_to_dict(self):
        """What a saved model holds beyond :class:`~pyglmm.GLMMResult`'s fields."""
        return {
            "inner_sweeps": int(self.inner_sweeps),
            "history": {c: self.history[c].tolist() for c in self.history.columns},
            "naive": None if self.naive is None else {
                "index": [str(i) for i in self.naive.index], "columns": list(self.naive.columns),
                "data": self.naive.to_numpy(np.float64).tolist()},
            "naive_summary": None if self.naive_summary is None else {
                k: v.item() if isinstance(v, np.generic) else v for k, v in self.naive_summary.items()},
            "cluster": self.cluster,  # plain numbers and strings (cluster/fit.py)
        }

    @classmethod
    def extra_from_dict(cls, d):
        """The fields :meth:`extra_to_dict` wrote, checked (ValueError naming the field)."""
        naive = json_field(d, "naive", (dict, type(None)))
        if naive is not None:
            columns, index = (json_field(naive, k, list, "naive") for k in ("columns", "index"))
            naive = pd.DataFrame(float_matrix(json_field(naive, "data", list, "naive"), "naive.data",
                                              len(index), len(columns)),
                                 index=pd.Index(index, name="term"), columns=columns)
        cluster = json_field(d, "cluster", (dict, type(None))) if "cluster" in d else None
        return dict(inner_sweeps=json_field(d, "inner_sweeps", int),
                    history=table_from_json(d, "history"), naive=naive,
                    naive_summary=json_field(d, "naive_summary", (dict, type(None))), cluster=cluster)

    def _loglik(self, name):
        raise AttributeError(f"{name} is not available: " + NO_LIKELIHOOD)

    def _rows(self, name):
        if self.rows is None and self.cluster is not None:
            raise AttributeError(f"{name} is not available: the rows of a Dask fit stay on the workers; "
                                 "score them lazily with predict(ddf, type='response')")
        return super()._rows(name)


def format_naive(res):
    """The naive-regression comparison of Section 6 as text."""
    tab, info = res.naive, res.naive_summary
    rows = [[name, f"{r.coef_naive:.5g}", f"{r.se_naive:.4g}", f"{r.se_naive_under_glmm:.4g}",
             f"{r.naivete:.3g}", f"{r.inefficiency:.3g}"] for name, r in tab.iterrows()]
    what = {"binomial": "logistic", "poisson": "Poisson"}.get(res.family, "least-squares")
    return "\n".join([
        f"Naive {what} regression (random effects ignored) vs the GLMM:",
        table(["", "Coef.", "SE naive", "SE under GLMM", "naivete", "inefficiency"], rows, 10),
        "  naivete = var_GLMM(beta_naive) / var_naive(beta_naive);"
        " inefficiency = var_GLMM(beta_naive) / var_GLMM(beta_GLMM)",
        f"  largest over linear combinations: naivete {info['max_naivete']:.4g}, "
        f"inefficiency {info['max_inefficiency']:.4g}",
    ])
