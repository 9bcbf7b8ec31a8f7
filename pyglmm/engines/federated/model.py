"""What a site computes on its own rows: the model's arrays and the AGQ engine's
per-cluster log-likelihood, summed over the site's clusters.

Every failure here is a :class:`~pyglmm.engines.federated.schema.FederatedError`
naming the request field or data column at fault (the site turns it into a
refusal), or a :class:`~pyglmm.DataError` from the shared data layer.
"""

import numpy as np
import pandas as pd

from ...data.coding import CodedTerm, FixedCoding, levels_from_json
from ...data.formula import parse_formula, required_columns
from ...data.validation import factorize
from ...exceptions import DataError
from ...families import get_family
from . import schema


class SiteModel:
    """A site's rows read for one model: response, grouping factor, clusters.

    Parameters
    ----------
    data : pandas.DataFrame
    formula : str
        lme4-style, one grouping factor (``y ~ x + (1|g)``, ``(1 + t|g)``).
    family : str

    Attributes
    ----------
    parsed, family, group, labels (the distinct cluster labels), codes (each
    row's cluster), cluster_sizes, counts (``{"rows", "clusters", "events"}``).
    """

    def __init__(self, data, formula, family):
        try:
            self.parsed = parse_formula(formula)
        except ValueError as exc:
            schema.fail(None, "formula", str(exc))
        try:
            self.family = get_family(family)
        except ValueError as exc:
            schema.fail(None, "family", str(exc))
        if len(self.parsed.random) != 1:
            schema.fail(None, "formula", f"a federated fit has one grouping factor, the formula has "
                                         f"{len(self.parsed.random)}: {', '.join(self.parsed.groups)}")
        for column in required_columns(self.parsed):
            if column not in data.columns:
                schema.fail(None, column, f"column {column!r} that the formula uses is not in the "
                                          "site's data")
        self.data = data
        self.group = self.parsed.groups[0]
        self.codes, self.labels = factorize(self.group, data[self.group])
        self.cluster_sizes = np.bincount(self.codes, minlength=len(self.labels))
        y = self.response()
        self.counts = {"rows": int(len(data)), "clusters": int(len(self.labels)),
                       "events": _number(float(y.sum()))}

    def response(self):
        col = self.data[self.parsed.response]
        if not pd.api.types.is_numeric_dtype(col):
            schema.fail(None, self.parsed.response, f"response column {self.parsed.response!r} must "
                                                    f"be numeric, got dtype {col.dtype}")
        y = col.to_numpy(dtype=np.float64, na_value=np.nan)
        try:
            self.family.check_response(y, None, self.parsed.response, self.data.index)
        except DataError as exc:
            schema.fail(None, self.parsed.response, str(exc))
        return y

    def local_coding(self):
        """The coding of the fixed part fitted to this site's rows alone."""
        try:
            return FixedCoding.from_data(self.parsed.fixed, self.data)
        except DataError as exc:
            schema.fail(None, "data", str(exc))

    def arrays(self, coding, nagq):
        """The site's :class:`ClusterArrays` under the merged ``coding`` (a dict)."""
        try:
            coding = FixedCoding.from_dict(coding, where="coding")
        except ValueError as exc:
            schema.fail(None, "coding", str(exc))
        if coding.formula != self.parsed.fixed:
            schema.fail(None, "coding", f"is for the fixed part {coding.formula!r}, the site was "
                                        f"described {self.parsed.fixed!r}")
        order = np.argsort(self.codes, kind="stable")
        return ClusterArrays(self, coding, order, nagq)


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


class ClusterArrays:
    """A site's rows as the AGQ kernel's arrays (sorted by cluster) and the sums over
    its clusters of the log-likelihood and its derivatives.

    Attributes
    ----------
    nparams : int
        d = p + q(q+1)/2, the length of the optimiser's parameter vector (beta,
        then the log-Cholesky parameters of the random-effects covariance).
    """

    def __init__(self, spec, coding, order, nagq):
        frame = spec.data
        term = spec.parsed.random[0]
        self.family, self.nagq = spec.family, nagq
        self.X = coding.matrix(frame, order)
        Z = [np.ones(len(frame))] if term.intercept else []
        for slope in term.slopes:
            col = frame[slope]
            if not pd.api.types.is_numeric_dtype(col):
                schema.fail(None, slope, f"random slope column {slope!r} must be numeric, got "
                                         f"dtype {col.dtype}")
            Z.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
        self.Z = np.ascontiguousarray(np.column_stack(Z)[order])
        if not np.isfinite(self.Z).all():
            schema.fail(None, term.slopes[0] if term.slopes else spec.group,
                        "random slope column has NaN or infinite values")
        self.y = np.ascontiguousarray(spec.response()[order])
        self.starts = np.concatenate([[0], np.cumsum(spec.cluster_sizes)]).astype(np.int64)
        self.q = self.Z.shape[1]
        self.nparams = self.X.shape[1] + self.q * (self.q + 1) // 2
        self.modes = np.zeros((len(spec.cluster_sizes), self.q))  # warm starts between rounds

    def evaluate(self, params, deriv):
        """(loglik, grad, hess) summed over the site's clusters at ``params``."""
        from ..agq.kernels_numpy import BINOMIAL, cluster_eval  # noqa: F401  (seam: see below)

        return site_evaluate(self, params, deriv)


def site_evaluate(arrays, params, deriv):
    """TEMPORARY until the AGQ engine's own (kernel call + chain rule) lands:
    the kernel at theta = the log-Cholesky parameters mapped back, derivatives
    mapped to the log-Cholesky scale."""
    from numpy.polynomial.hermite_e import hermegauss

    from ..agq import kernels_numpy as kn

    X, q = arrays.X, arrays.q
    p, d = X.shape[1], arrays.nparams
    diag = np.array([a == b for a, b in kn.tri_index(q)])
    phi = params[p:]
    theta = np.where(diag, np.exp(phi), phi)
    nodes, w = hermegauss(arrays.nagq)
    w = w / w.sum()
    m = len(arrays.starts) - 1
    ll, g, h, cv = np.empty(m), np.zeros(d), np.zeros((d, d)), np.empty((m, q, q))
    n = len(arrays.y)
    kn.cluster_eval(arrays.family.code, 1.0, X, arrays.Z, arrays.y, np.ones(n), np.zeros(n),
                    arrays.starts, params[:p].copy(), theta, nodes, w, arrays.modes, deriv,
                    ll, g, h, cv, 1)
    J = np.ones(d)
    J[p:][diag] = theta[diag]
    grad = g * J if deriv >= 1 else None
    hess = None
    if deriv == 2:
        hess = h * np.outer(J, J)
        hess[np.arange(p, d)[diag], np.arange(p, d)[diag]] += g[p:][diag] * theta[diag]
    return float(ll.sum()), grad, hess
