"""A federated site: holds its own rows and answers the coordinator's requests.

A :class:`Site` never sends a row: it answers ``describe`` with its counts, the
keyed hashes of its cluster labels and the categorical levels present,
``setup`` with its number of parameters and per-column aggregates (sums of
squares, largest magnitudes), ``evaluate`` with the sums over its clusters of
the AGQ log-likelihood, its gradient and Hessian, and ``certify`` with two counts: whether a direction of
the fixed effects separates its rows' response, and on how many rows
(:mod:`pyglmm.engines.federated.schema`).  It refuses, in
a ``refusal`` answer naming the field or column, any request it cannot or will
not serve: another schema version, a malformed field, a formula column it does
not have, K outside [1, MAX_NAGQ], parameters that are NaN or infinite (but
``-inf`` for a log-Cholesky parameter on the boundary), and data with a cluster
of fewer than ``min_cluster_size`` rows of positive prior weight (a cluster with
none is dropped from the fit and sends nothing of its rows).
"""

import logging

import numpy as np

from ...exceptions import DataError
from ..separation import MEAN_BOUNDS
from . import model, schema
from .schema import FederatedError

log = logging.getLogger("pyglmm")

DEFAULT_MIN_CLUSTER_SIZE = 5


class Site:
    """One site of a federated fit, serving requests on its own data.

    Parameters
    ----------
    data : pandas.DataFrame
        The site's rows (they never leave this object).
    name : str
        How the site names itself in its answers (and errors name it).
    min_cluster_size : int, default 5
        The site refuses to take part if any cluster has fewer rows of positive
        prior weight (but none): the contribution of a tiny cluster is close to
        its rows' own likelihood.
    hash_key : bytes, optional
        A secret the sites share and the coordinator does not know, mixed into
        the hashes of the cluster labels (see :func:`schema.cluster_hash`).
    """

    def __init__(self, data, name, min_cluster_size=DEFAULT_MIN_CLUSTER_SIZE, hash_key=b""):
        if not isinstance(name, str) or not name:
            raise ValueError(f"site name must be a non-empty string, got {name!r}")
        if not isinstance(min_cluster_size, int) or isinstance(min_cluster_size, bool) \
                or min_cluster_size < 1:
            raise ValueError(f"min_cluster_size must be a positive integer, got {min_cluster_size!r}")
        self.data, self.name = data, name
        self.min_cluster_size, self.hash_key = min_cluster_size, bytes(hash_key)
        self._spec = self._objective = None

    def handle(self, request):
        """The answer (bytes) to one request (bytes); a refusal if it cannot be served."""
        try:
            msg = schema.decode(request, ("describe", "setup", "evaluate", "certify"))
            return schema.encode(getattr(self, "_" + msg["kind"])(msg))
        except FederatedError as exc:
            return self._refusal(exc.field, exc.reason)
        except DataError as exc:  # the data cannot serve the request
            return self._refusal("data", str(exc))

    def _refusal(self, field, reason):
        log.info("site %r refuses: %s: %s", self.name, field, reason)
        return schema.encode(schema.message("refusal", site=self.name, field=field, reason=reason))

    # --- requests ---------------------------------------------------------------------

    def _describe(self, msg):
        formula = schema.field(msg, "formula", str)
        family = schema.field(msg, "family", str)
        salt = schema.field(msg, "salt", str)
        if len(salt) != 64 or any(c not in "0123456789abcdef" for c in salt):
            schema.fail(None, "salt", "must be 64 lower-case hex digits")
        columns = {role: schema.field(msg, role, (str, type(None))) for role in model.ROLES}
        spec = model.SiteModel(self.data, formula, family, **columns)
        sizes = spec.cluster_sizes  # rows of positive weight; a cluster of none tells nothing
        small = (sizes > 0) & (sizes < self.min_cluster_size)
        if small.any():
            schema.fail(
                None, spec.group, f"{int(small.sum())} of the site's {sizes.size} clusters "
                f"(grouping factor {spec.group!r}) have fewer than {self.min_cluster_size} rows "
                f"of positive weight (smallest: {int(sizes[small].min())} rows); the site does "
                "not take part with clusters that small")
        self._spec, self._objective = spec, None
        hashes = sorted(schema.cluster_hash(label, bytes.fromhex(salt), self.hash_key)
                        for label in spec.labels)
        return schema.message("description", site=self.name, coding=spec.local_coding().to_dict(),
                              counts=spec.counts, cluster_hashes=hashes)

    def _setup(self, msg):
        if self._spec is None:
            schema.fail(None, "kind", "'setup' before 'describe'")
        coding = schema.field(msg, "coding", dict)
        nagq = schema.int_field(msg, "nagq", 1, schema.MAX_NAGQ)
        self._objective = self._spec.objective(coding, nagq)
        arrays = self._objective.arrays  # the rows of positive weight
        magnitude = lambda a: schema.pack_array(np.max(np.abs(a), axis=0, initial=0.0))  # noqa: E731
        return schema.message("ready", site=self.name, nparams=self._nparams(),
                              counts=self._spec.counts,
                              column_squares=schema.pack_array(np.einsum("ij,ij->j", arrays.X, arrays.X)),
                              x_max=magnitude(arrays.X), z_max=magnitude(arrays.Z))

    def _nparams(self):
        arrays = self._objective.arrays
        return arrays.p + arrays.q * (arrays.q + 1) // 2

    def _evaluate(self, msg):
        if self._objective is None:
            schema.fail(None, "kind", "'evaluate' before 'setup'")
        rnd = schema.int_field(msg, "round", 1, None)
        deriv = schema.int_field(msg, "deriv", 0, 2)
        params = schema.unpack_array(schema.field(msg, "params", dict), "params", (self._nparams(),),
                                     neginf=True)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are sent as such
            loglik, grad, hess = self._objective(params, deriv)
        out = {"round": rnd, "loglik": schema.pack_array(loglik),
               **{k: schema.pack_array(v) for k, v in self._spec.fit_sums(self._objective, params).items()}}
        if deriv >= 1:
            out["grad"] = schema.pack_array(grad)
        if deriv == 2:
            out["hess"] = schema.pack_array(hess)
        return schema.message("evaluation", site=self.name, counts=self._spec.counts, **out)


    def _certify(self, msg):
        if self._objective is None:
            schema.fail(None, "kind", "'certify' before 'setup'")
        rnd = schema.int_field(msg, "round", 1, None)
        arrays = self._objective.arrays
        delta = schema.unpack_array(schema.field(msg, "delta", dict), "delta", (arrays.p,))
        consistent, rows = arrays.separation_counts(MEAN_BOUNDS[self._spec.family.name], delta)
        return schema.message("certificate", site=self.name, counts=self._spec.counts, round=rnd,
                              consistent=bool(consistent), rows=int(rows))


def serve(site, receive, send):
    """Answer requests from ``receive()`` (bytes, or None at the end of input) with
    ``send(bytes)`` until a ``close`` request; the loop a site process runs."""
    while True:
        request = receive()
        if request is None or is_close(request):
            return
        send(site.handle(request))


def is_close(request):
    """Whether ``request`` (bytes) is a valid ``close`` request (which gets no answer)."""
    try:
        return schema.decode(request, schema.REQUESTS)["kind"] == "close"
    except FederatedError:
        return False
