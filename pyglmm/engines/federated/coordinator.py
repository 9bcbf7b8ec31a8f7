"""The coordinator: sends requests to the sites, validates and sums their answers.

The coordinator holds no rows.  Each *round* sends one request to every site
and waits for every answer; a site that refuses, fails, times out or sends an
answer that does not validate ends the fit with a
:class:`~pyglmm.engines.federated.schema.FederatedError` naming the site and the
field (never a fit on the remaining sites).
"""

import secrets

import numpy as np

from ...data.coding import FixedCoding
from . import schema
from .model import merge_codings
from .schema import FederatedError

FIT_SUMS = ("deviance", "pearson")  # conditional fit at the modes, summed over rows
SYMMETRY_TOL = 1e-10  # |H - H'| <= tol * max|H|: the kernel's Hessian is symmetric to rounding


def q_of(t):
    """The size q of the random effects from their t = q(q+1)/2 covariance parameters."""
    q = int(round((np.sqrt(8 * t + 1) - 1) / 2))
    if q < 1 or q * (q + 1) // 2 != t:
        raise ValueError(f"the sites' parameter count implies {t} covariance parameters, which "
                         "is no q(q+1)/2")
    return q


class Coordinator:
    """Rounds of requests over a list of site connections.

    Parameters
    ----------
    connections : list
        One connection per site, each with ``name`` (str), ``send(bytes)``,
        ``receive(timeout) -> bytes`` (raising :class:`FederatedError` naming
        the site on failure or time-out) and ``close()``.
    timeout : float
        Seconds to wait for each answer.

    Attributes
    ----------
    rounds : int
        Rounds so far (describe, setup and every evaluation).
    bytes_sent, bytes_received : dict
        Per site, the bytes the site sent (its answers) and received.
    """

    def __init__(self, connections, timeout=60.0):
        names = [c.name for c in connections]
        if not connections:
            raise ValueError("a federated fit needs at least one site")
        if len(set(names)) != len(names):
            raise ValueError(f"site names must be distinct, got {names}")
        self.connections, self.timeout = list(connections), float(timeout)
        self.rounds = 0
        self.bytes_sent = dict.fromkeys(names, 0)
        self.bytes_received = dict.fromkeys(names, 0)
        self.counts = {}
        self.nparams = None
        # version 2 (None if a site does not send it): the sums over the sites of each
        # fixed-effect column squared; with it the sites answer 'certify'
        self.column_squares = None
        self.version1_sites = []  # the sites that did not send it
        # version 3 (None if a site does not send them): the largest magnitude of each
        # column of X and of Z over the rows of positive weight at every site
        self.column_maxima = None
        self.unscaled_sites = []  # the sites that did not send them
        self.sums = {}  # the last evaluation's sums of the conditional deviance and Pearson statistic
        self.nonfinite = []  # the last evaluation's (site, field) pairs with NaN or infinite values
        self._round = 0

    @property
    def names(self):
        return [c.name for c in self.connections]

    def broadcast(self, request, kind):
        """Send ``request`` (a message dict) to every site; the validated answers of
        ``kind``, in site order."""
        data = schema.encode(request)
        for conn in self.connections:
            conn.send(data)
            self.bytes_received[conn.name] += len(data)
        self.rounds += 1
        answers = []
        for conn in self.connections:
            raw = conn.receive(self.timeout)
            self.bytes_sent[conn.name] += len(raw)
            answers.append(self._check(raw, conn.name, kind))
        return answers

    def _check(self, raw, site, kind):
        msg = schema.decode(raw, schema.ANSWERS, site)
        if schema.field(msg, "site", str, site) != site:
            schema.fail(site, "site", f"the answer says it comes from site {msg['site']!r}")
        if msg["kind"] == "refusal":
            field = schema.field(msg, "field", str, site)
            reason = schema.field(msg, "reason", str, site)
            raise FederatedError(f"site {site!r} refused: field {field!r}: {reason}",
                                 site=site, field=field, reason=reason)
        if msg["kind"] != kind:
            schema.fail(site, "kind", f"{msg['kind']!r} but {kind!r} expected")
        counts = schema.counts_field(msg, site)
        if site in self.counts and counts != self.counts[site]:
            schema.fail(site, "counts", f"{counts} differ from the counts {self.counts[site]} "
                                        "the site sent before")
        self.counts.setdefault(site, counts)
        return msg

    # --- the protocol's steps ---------------------------------------------------------

    def describe(self, formula, family, weights=None, trials=None, offset=None):
        """Round 1: every site's description; the merged fixed-effects coding (dict).
        ``weights``, ``trials``, ``offset``: column names (or None) every site uses.

        Refuses (naming the sites) a cluster label that occurs at two sites,
        compared through keyed hashes of the labels with a fresh salt."""
        salt = secrets.token_bytes(32).hex()
        answers = self.broadcast(schema.message("describe", formula=formula, family=family,
                                                weights=weights, trials=trials, offset=offset,
                                                salt=salt), "description")
        owner, codings = {}, []
        for msg in answers:
            site = msg["site"]
            hashes = schema.field(msg, "cluster_hashes", list, site)
            if len(hashes) != self.counts[site]["clusters"] or len(set(hashes)) != len(hashes) or \
                    not all(isinstance(h, str) and len(h) == 64 for h in hashes):
                schema.fail(site, "cluster_hashes", f"must be {self.counts[site]['clusters']} "
                            "distinct 64-hex-digit strings (one per cluster)")
            for h in hashes:
                if h in owner:
                    shared = len(set(hashes) & {k for k, v in owner.items() if v == owner[h]})
                    raise FederatedError(
                        f"sites {owner[h]!r} and {site!r} both hold cluster(s) of the grouping factor "
                        f"({shared} label(s) in common): a cluster must not span sites, since its "
                        "likelihood does not split; give the clusters site-specific labels if they "
                        "are different clusters", site=site, field="cluster_hashes")
                owner[h] = site
            coding = schema.field(msg, "coding", dict, site)
            try:
                FixedCoding.from_dict(coding, "coding")
            except ValueError as exc:
                schema.fail(site, "coding", str(exc))
            codings.append(coding)
        return merge_codings(codings, self.names)

    def setup(self, coding, nagq):
        """Round 2: send the merged coding and K; every site's number of parameters.
        Sums ``column_squares`` and takes the maximum of ``x_max`` and ``z_max`` over
        the sites (:attr:`column_maxima`) if every site sends them."""
        answers = self.broadcast(schema.message("setup", coding=coding, nagq=nagq), "ready")
        p = len(coding["names"])
        squares, maxima = np.zeros(p), None
        for msg in answers:
            site = msg["site"]
            d = schema.int_field(msg, "nparams", 1, None, site)
            if self.nparams is not None and d != self.nparams:
                schema.fail(site, "nparams", f"{d} but site {self.names[0]!r} has {self.nparams}")
            self.nparams = d
            if "column_squares" in msg:
                squares += schema.unpack_array(schema.field(msg, "column_squares", dict, site),
                                               "column_squares", (p,), site)
            else:  # a version-1 site: no certificates
                self.version1_sites.append(site)
            if "x_max" in msg or "z_max" in msg:
                try:
                    q = q_of(d - p)
                except ValueError as exc:
                    schema.fail(site, "nparams", str(exc))
                here = [self._maximum(msg, name, n) for name, n in (("x_max", p), ("z_max", q))]
                maxima = here if maxima is None else [np.maximum(a, b) for a, b in zip(maxima, here)]
            else:  # an older site: the fit runs in the data's units
                self.unscaled_sites.append(site)
        if not self.version1_sites:
            self.column_squares = squares
        if not self.unscaled_sites:
            self.column_maxima = maxima
        return self.nparams

    def _maximum(self, msg, name, n):
        """A ``ready`` answer's column maxima ``name``: ``n`` finite non-negative numbers."""
        site = msg["site"]
        arr = schema.unpack_array(schema.field(msg, name, dict, site), name, (n,), site)
        if (arr < 0).any():
            schema.fail(site, name, f"must be non-negative (column maxima), got {arr.tolist()}")
        return arr

    def evaluate(self, params, deriv):
        """One round: the sums over all sites of the log-likelihood and, for ``deriv``
        >= 1 and 2, of its gradient and Hessian (None otherwise), at ``params``.

        A site may send NaN or infinite values where it cannot evaluate its
        likelihood (:mod:`~pyglmm.engines.federated.schema`): the log-likelihood
        is then ``-inf`` and ``nonfinite`` lists the (site, field) pairs, for the
        caller to refuse if it needs them (:meth:`require_finite`)."""
        d = self.nparams
        params = np.asarray(params, dtype=np.float64)
        if params.shape != (d,) or np.isnan(params).any() or (params == np.inf).any():
            raise ValueError(f"params must be {d} numbers (finite or -inf), got {params}")
        self._round += 1
        answers = self.broadcast(schema.message("evaluate", round=self._round, deriv=int(deriv),
                                                params=schema.pack_array(params)), "evaluation")
        loglik = 0.0
        grad = np.zeros(d) if deriv >= 1 else None
        hess = np.zeros((d, d)) if deriv == 2 else None
        sums = dict.fromkeys(FIT_SUMS, 0.0)
        self.nonfinite = []
        for msg in answers:
            site = msg["site"]
            if schema.field(msg, "round", int, site) != self._round:
                schema.fail(site, "round", f"{msg['round']} but round {self._round} was asked")
            values = {name: self._value(msg, name, shape) for name, shape in
                      [("loglik", ()), ("grad", (d,)), ("hess", (d, d))][:deriv + 1]
                      + [(key, ()) for key in FIT_SUMS]}
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite: noted in nonfinite
                loglik += float(values["loglik"])
                if deriv >= 1:
                    grad += values["grad"]
                if deriv == 2:
                    h = values["hess"]
                    asym = np.abs(h - h.T).max()
                    if asym > SYMMETRY_TOL * max(np.abs(h).max(), 1.0):
                        schema.fail(site, "hess", f"is not symmetric (largest |H - H'| = {asym:.3g})")
                    hess += h
                for key in FIT_SUMS:
                    sums[key] += float(values[key])
        self.sums = sums
        if not np.isfinite(loglik):
            loglik = -np.inf
        return loglik, grad, hess

    def _value(self, msg, name, shape):
        """An array field of an evaluation, its (site, name) noted if not finite."""
        site = msg["site"]
        arr = schema.unpack_array(schema.field(msg, name, dict, site), name, shape, site,
                                  finite=False)
        if not np.isfinite(arr).all():
            self.nonfinite.append((site, name))
        return arr

    def require_finite(self, nonfinite, params):
        """Refuse, naming the first site and field, the values in ``nonfinite`` (pairs
        as :attr:`nonfinite`) of an evaluation at ``params`` that the fit needs."""
        if nonfinite:
            site, name = nonfinite[0]
            schema.fail(site, name, "has NaN or infinite values at a point where the fit needs it "
                        f"(the site cannot evaluate its likelihood at parameters {params.tolist()})")

    def certify(self, delta):
        """One round: whether the fixed-effects direction ``delta`` separates the response
        at every site, and on how many rows in all (:func:`pyglmm.engines.separation.row_counts`
        summed over the sites)."""
        self._round += 1
        answers = self.broadcast(schema.message("certify", round=self._round,
                                                delta=schema.pack_array(delta)), "certificate")
        consistent, rows = True, 0
        for msg in answers:
            site = msg["site"]
            if schema.field(msg, "round", int, site) != self._round:
                schema.fail(site, "round", f"{msg['round']} but round {self._round} was asked")
            consistent &= schema.field(msg, "consistent", bool, site)
            rows += schema.int_field(msg, "rows", 0, self.counts[site]["rows"], site)
        return consistent, rows

    def close(self):
        """Tell every site the fit is over (no answer expected) and release the connections."""
        data = schema.encode(schema.message("close"))
        for conn in self.connections:
            try:
                conn.send(data)
            except FederatedError:
                pass  # a site that is already gone needs no goodbye
            conn.close()

