"""What a site computes on its own rows: the model's arrays and the AGQ engine's
per-cluster log-likelihood, summed over the site's clusters.

Every failure here is a :class:`~pyglmm.engines.federated.schema.FederatedError`
naming the request field or data column at fault (the site turns it into a
refusal), or a :class:`~pyglmm.DataError` from the shared data layer.
"""

import numpy as np
import pandas as pd

from ... import backends as _backend
from ...data.coding import CodedTerm, FixedCoding, levels_from_json
from ...data.formula import parse_formula, required_columns
from ...data.validation import factorize, role_values
from ...exceptions import DataError
from ...families import get_family
from ..agq.kernels_numpy import lambda_matrix
from ..agq.model import ClusterObjective, build_arrays, random_term
from . import schema

FAMILIES = ("binomial", "poisson")  # gaussian's profiled residual variance does not split by site
ROLES = ("weights", "trials", "offset")  # optional columns, as glmm_agq's arguments


class SiteModel:
    """A site's rows read for one model: response, grouping factor, clusters.

    Parameters
    ----------
    data : pandas.DataFrame
    formula : str
        lme4-style, one grouping factor (``y ~ x + (1|g)``, ``(1 + t|g)``).
    family : str
    weights, trials, offset : str or None
        Column names, as :func:`pyglmm.engines.agq.glmm_agq` takes them.

    Attributes
    ----------
    parsed, family, group, labels (the distinct cluster labels), codes (each
    row's cluster), cluster_sizes (rows of positive weight), counts (``{"rows", "clusters", "events"}``).
    """

    def __init__(self, data, formula, family, weights=None, trials=None, offset=None):
        try:
            self.parsed = parse_formula(formula)
        except ValueError as exc:
            schema.fail(None, "formula", str(exc))
        if family not in FAMILIES:
            schema.fail(None, "family", f"unknown family {family!r} for a federated fit; choose one "
                                        f"of {', '.join(FAMILIES)}")
        self.family = get_family(family)
        try:
            random_term(self.parsed)
        except DataError as exc:
            schema.fail(None, "formula", str(exc))
        self.columns = {"weights": weights, "trials": trials, "offset": offset}
        for column in required_columns(self.parsed, [weights, trials, offset]):
            if column not in data.columns:
                schema.fail(None, column, f"column {column!r} that the model uses is not in the "
                                          "site's data")
        self.data, self.formula = data, formula
        self.group = self.parsed.groups[0]
        self.codes, self.labels = factorize(self.group, data[self.group])
        self.cluster_sizes = np.bincount(self.codes[self._weighted_rows()],
                                         minlength=len(self.labels))
        y = self.response()
        self.counts = {"rows": int(len(data)), "clusters": int(len(self.labels)),
                       "events": _number(float(y.sum()))}

    def _weighted_rows(self):
        """The rows of positive prior weight (all without a weights column), the weights
        checked as the objective's (:func:`~pyglmm.data.validation.role_values`)."""
        try:
            weights = role_values(self.data, "weights", self.columns["weights"])
        except DataError as exc:
            schema.fail(None, "data", str(exc))
        return np.ones(len(self.data), dtype=bool) if weights is None else weights > 0

    def response(self):
        col = self.data[self.parsed.response]
        if not pd.api.types.is_numeric_dtype(col):
            schema.fail(None, self.parsed.response, f"response column {self.parsed.response!r} must "
                                                    f"be numeric, got dtype {col.dtype}")
        y = col.to_numpy(dtype=np.float64, na_value=np.nan)
        trials = self.columns["trials"]
        try:
            self.family.check_response(y, None if trials is None else self.data[trials].to_numpy(
                dtype=np.float64, na_value=np.nan), self.parsed.response, self.data.index)
        except DataError as exc:
            schema.fail(None, self.parsed.response, str(exc))
        return y

    def local_coding(self):
        """The coding of the fixed part fitted to this site's rows alone."""
        try:
            return FixedCoding.from_data(self.parsed.fixed, self.data)
        except DataError as exc:
            schema.fail(None, "data", str(exc))

    def objective(self, coding, nagq):
        """The AGQ engine's objective on this site's clusters, the fixed part coded by
        the merged ``coding`` (a dict): ``objective(params, deriv) -> (loglik, grad,
        hess)`` summed over the site's clusters, in the optimiser's parameters.  As in
        the pooled fit, the rows of prior weight 0 are dropped (they contribute
        nothing; a cluster left without rows contributes a factor 1)."""
        try:
            coding = FixedCoding.from_dict(coding, where="coding")
        except ValueError as exc:
            schema.fail(None, "coding", str(exc))
        if coding.formula != self.parsed.fixed:
            schema.fail(None, "coding", f"is for the fixed part {coding.formula!r}, the site was "
                                        f"described {self.parsed.fixed!r}")
        arrays = build_arrays(self.formula, self.data, self.family, coding=coding,
                              check_aliased=False, **self.columns).weighted()
        kern = _backend.kernels(_backend.backend(None, engine="agq"), engine="agq")
        return ClusterObjective(kern, arrays, nagq)


    def fit_sums(self, objective, params):
        """The conditional model's deviance and Pearson statistic at the modes that
        ``objective`` last found (at ``params``), summed over the site's rows; the
        means of the clamped linear predictor (:meth:`Family.irls_mean`), so that both
        stay finite at a trial point where a cluster is (quasi-)separated (|eta| > 30
        for binomial); elsewhere they equal the pooled fit's."""
        arrays, p = objective.arrays, objective.arrays.p
        lam = lambda_matrix(objective.param.theta(params[p:]), arrays.q)
        b = np.repeat(objective.modes @ lam.T, np.diff(arrays.starts), axis=0)
        mu = self.family.irls_mean(arrays.offset + arrays.X @ params[:p]
                                   + np.einsum("nq,nq->n", arrays.Z, b))
        return {"deviance": float(self.family.deviance(arrays.y, mu, arrays.weights)),
                "pearson": float(np.sum(arrays.weights * (arrays.y - mu) ** 2
                                        / self.family.variance(mu)))}


def _number(value):
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def merge_codings(codings, sites):
    """The coding of the pooled data from the sites' own codings (dicts), as a dict.

    Numeric terms must be numeric at every site; a categorical term's levels are
    the sorted union of the sites' levels (the pooled data's sorted distinct
    values).  :class:`FederatedError` names the site and field that disagree.
    """
    first = codings[0]
    terms = []
    for i, term in enumerate(first["terms"]):
        levels = None
        for coding, site in zip(codings, sites):
            other = coding["terms"][i] if i < len(coding["terms"]) else None
            field = f"coding.terms[{i}]"
            if other is None or other["name"] != term["name"] or len(coding["terms"]) != len(first["terms"]):
                schema.fail(site, "coding.terms", f"do not match site {sites[0]!r}'s terms")
            if (other["levels"] is None) != (term["levels"] is None):
                schema.fail(site, field, f"{term['name']!r} is "
                            f"{'numeric' if other['levels'] is None else 'categorical'} here and "
                            f"{'numeric' if term['levels'] is None else 'categorical'} at site {sites[0]!r}")
            if other["levels"] is None:
                continue
            if other["levels"]["kind"] != term["levels"]["kind"]:
                schema.fail(site, f"{field}.levels.kind", f"levels of {term['name']!r} are "
                            f"{other['levels']['kind']} here, {term['levels']['kind']} at {sites[0]!r}")
            here = levels_from_json(other["levels"], f"{field}.levels")
            levels = here if levels is None else levels.union(here, sort=False)
        terms.append(CodedTerm(term["name"], term["column"],
                               None if levels is None else levels.sort_values(), term["full"]))
    return FixedCoding(first["formula"], first["intercept"], terms).to_dict()
