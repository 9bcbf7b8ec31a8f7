r"""The federated protocol's messages: a small, versioned, pickle-free schema.

Every message is one UTF-8 JSON object (the bytes on the wire are exactly
:func:`encode`'s output) with three common fields::

    {"schema": "pyglmm-federated", "version": 1, "kind": "<kind>", ...}

Versions: 2 adds the ``certify`` request, its ``certificate`` answer and an
optional field of ``ready``; 3 adds two more optional fields of ``ready``
(``x_max``, ``z_max``); every other message is as in version 1 and is
stamped 1 (:data:`KIND_VERSION`), so that a version-2 coordinator serves
version-1 sites (which ignore the extra fields; the coordinator then cannot
check for separation and says so) and a version-1 coordinator version-2 sites.
A message is accepted with any supported version at least its kind's.

Floating-point values travel exactly: every float64 scalar, vector or matrix is
an *array field* ``{"dtype": "float64", "shape": [...], "data": "<base64>"}``,
``data`` being the array's little-endian IEEE-754 bytes in C order, so a
message decodes to the bit-identical array.  A scalar has shape ``[]``.

Requests (coordinator -> site)

``describe``     ``formula`` (str), ``family`` (str), ``weights``, ``trials``,
                 ``offset`` (str: a column name, or null), ``salt`` (str, 64
                 hex digits, fresh per fit).
``setup``        ``coding`` (the merged :class:`~pyglmm.data.coding.FixedCoding`
                 as ``to_dict``), ``nagq`` (int, 1..MAX_NAGQ).
``evaluate``     ``round`` (int >= 1), ``params`` (float64 ``[d]``: beta, then the
                 log-Cholesky parameters, the log of a diagonal entry of the
                 covariance's Cholesky factor ``-inf`` on the boundary), ``deriv``
                 (int 0, 1 or 2).
``certify``      (version 2) ``round`` (int >= 1), ``delta`` (float64 ``[p]``: a
                 direction of the fixed effects): does it separate the response
                 at the site (:mod:`pyglmm.engines.separation`)?
``close``        no field: the site may exit.

Answers (site -> coordinator); every answer names its ``site`` (str)

``description``  ``coding`` (the site's own coding of the fixed part, whose only
                 data-dependent content is the categorical levels present at the
                 site), ``counts``, ``cluster_hashes`` (sorted list of 64-hex-digit
                 keyed hashes of the cluster labels, see :func:`cluster_hash`).
``ready``        ``nparams`` (int d), ``counts``; from version 2 also
                 ``column_squares`` (float64 ``[p]``: the sum over the site's rows
                 of each fixed-effect column squared), whose presence says that
                 the site answers ``certify``; from version 3 also ``x_max``
                 and ``z_max`` (float64 ``[p]``, ``[q]``: the largest magnitude
                 of each fixed-effect and random-effect column over the site's
                 rows of positive weight, 0 if it has none).  Their maximum over
                 the sites is the pooled fit's column scale: the optimiser works
                 in those units (:class:`~pyglmm.engines.agq.api.ColumnScales`),
                 as the pooled fit does; without them (an older site) it works
                 in the data's units and the result says so.  Like the sums of
                 squares these are per-column aggregates: a maximum releases the
                 magnitude of the site's most extreme value in each column (an
                 order statistic; not its sign, row or cluster), which for a
                 dummy column only says whether the level occurs, as the coding
                 already does.
``evaluation``   ``round`` (echoed), ``loglik`` (float64 ``[]``: the sum over the
                 site's clusters of the marginal log-likelihood, nats), ``grad``
                 (float64 ``[d]``, present if deriv >= 1), ``hess`` (float64
                 ``[d, d]``, present if deriv == 2), ``deviance`` and
                 ``pearson`` (float64 ``[]``: the conditional model's deviance and
                 Pearson statistic at the modes, summed over the site's rows),
                 ``counts``.  These values may be NaN or infinite at a point
                 where the site cannot evaluate its likelihood (an extreme trial
                 point of the line search, e.g. a huge variance): the coordinator
                 then takes the log-likelihood there as :math:`-\infty` (the
                 optimiser steps back) and refuses the answer, naming the site and
                 field, if it needs a non-finite value (a gradient or Hessian to
                 step from, the fit's final sums).
``certificate``  (version 2) ``round`` (echoed), ``consistent`` (bool: every row
                 with :math:`t = x^\top\delta \ne 0` has its response at the
                 bound of the mean on its side), ``rows`` (int: how many rows
                 have :math:`t \ne 0`), ``counts``:
                 aggregate counts only, no row.
``refusal``      ``field`` (str: the request field or data column at fault),
                 ``reason`` (str): the site declines the request.

``counts`` is ``{"rows": int, "clusters": int, "events": int-or-float}``:
the site's rows and clusters in the fit and the sum of its response (events,
i.e. successes, for binomial; total count for poisson).
"""

import base64
import hashlib
import hmac
import json

import numpy as np

from ...data.levels import label_text
from ...exceptions import DataError

SCHEMA = "pyglmm-federated"
VERSION = 3  # the newest version this module speaks (every version up to it is read)
MAX_NAGQ = 25
REQUESTS = ("describe", "setup", "evaluate", "certify", "close")
ANSWERS = ("description", "ready", "evaluation", "certificate", "refusal")
KIND_VERSION = {"certify": 2, "certificate": 2}  # the version that added a kind (others: 1)


class FederatedError(DataError):
    """A federated fit cannot go on: a site refused, failed, timed out or sent a
    message that does not validate.  The message names the site and the field;
    ``site``, ``field`` and ``reason`` hold them (None where not applicable)."""

    def __init__(self, message, site=None, field=None, reason=None):
        super().__init__(message)
        self.site, self.field, self.reason = site, field, reason


def _where(site):
    return f"site {site!r}" if site is not None else "coordinator request"


def fail(site, field, problem):
    """Raise :class:`FederatedError` for ``field`` of a message from ``site``."""
    raise FederatedError(f"{_where(site)}: field {field!r}: {problem}", site=site, field=field,
                         reason=problem)


# --- arrays ---------------------------------------------------------------------------


def pack_array(values):
    """A float64 array (or scalar) as an exact array field."""
    arr = np.array(values, dtype="<f8", order="C")  # (ascontiguousarray makes a scalar 1-D)
    return {"dtype": "float64", "shape": list(arr.shape),
            "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def unpack_array(field, name, shape, site=None, neginf=False, finite=True):
    """The array of an array field, checked to have ``shape`` (a tuple) and finite
    values (or ``-inf``, if ``neginf``: a log-Cholesky parameter on the boundary;
    any value if not ``finite``); :class:`FederatedError` naming ``site`` and
    ``name`` otherwise."""
    if not isinstance(field, dict) or set(field) != {"dtype", "shape", "data"}:
        fail(site, name, "must be an array field with keys 'dtype', 'shape', 'data'")
    if field["dtype"] != "float64":
        fail(site, name, f"dtype must be 'float64', got {field['dtype']!r}")
    got = field["shape"]
    if not isinstance(got, list) or tuple(got) != tuple(shape):
        fail(site, name, f"shape {got} but {list(shape)} expected")
    try:
        raw = base64.b64decode(field["data"], validate=True)
    except (TypeError, ValueError):
        fail(site, name, "'data' is not base64")
    if len(raw) != 8 * int(np.prod(shape, dtype=np.int64)):
        fail(site, name, f"'data' holds {len(raw)} bytes, shape {list(shape)} needs "
                         f"{8 * int(np.prod(shape, dtype=np.int64))}")
    arr = np.frombuffer(raw, dtype="<f8").reshape(shape).astype(np.float64)
    if finite and not (np.isfinite(arr) | (neginf & (arr == -np.inf))).all():
        fail(site, name, "has NaN or infinite values")
    return arr


# --- messages -------------------------------------------------------------------------


def message(kind, **fields):
    """A message dict of ``kind`` with the common fields, stamped with the version that
    added its kind (:data:`KIND_VERSION`)."""
    return {"schema": SCHEMA, "version": KIND_VERSION.get(kind, 1), "kind": kind, **fields}


def encode(msg):
    """The wire bytes of a message dict (compact UTF-8 JSON; NaN is refused)."""
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode(data, kinds, site=None):
    """The message dict in ``data`` (bytes), checked for schema, version and a kind
    among ``kinds``; :class:`FederatedError` naming ``site`` and the field otherwise.

    Only the common fields are checked here; :func:`field` checks the others."""
    if not isinstance(data, (bytes, bytearray)):
        fail(site, "(message)", f"must be bytes, got {type(data).__name__}")
    try:
        msg = json.loads(bytes(data).decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        fail(site, "(message)", f"is not a JSON object: {exc}")
    if not isinstance(msg, dict):
        fail(site, "(message)", f"must be a JSON object, got {type(msg).__name__}")
    if msg.get("schema") != SCHEMA:
        fail(site, "schema", f"must be {SCHEMA!r}, got {msg.get('schema')!r}")
    version = msg.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        fail(site, "version", f"version {version!r} is not supported (this is version {VERSION})")
    if msg.get("kind") not in kinds:
        fail(site, "kind", f"{msg.get('kind')!r} is not one of {', '.join(kinds)}")
    if version < KIND_VERSION.get(msg["kind"], 1):
        fail(site, "version", f"{msg['kind']!r} needs version {KIND_VERSION[msg['kind']]}, the "
                              f"message says {version}")
    return msg


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def field(msg, name, types, site=None):
    """``msg[name]``, checked to be present and of ``types`` (bool is not an int)."""
    if name not in msg:
        fail(site, name, "is missing")
    value = msg[name]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        fail(site, name, f"has type {type(value).__name__}, expected "
                         f"{' or '.join(t.__name__ for t in allowed)}")
    return value


def int_field(msg, name, low, high, site=None):
    """An integer field within [low, high] (high None: no upper bound)."""
    value = field(msg, name, int, site)
    if value < low or (high is not None and value > high):
        fail(site, name, f"{value} is outside [{low}, {'inf' if high is None else high}]")
    return value


def counts_field(msg, site):
    """The ``counts`` object as a dict of non-negative numbers."""
    counts = field(msg, "counts", dict, site)
    if set(counts) != {"rows", "clusters", "events"}:
        fail(site, "counts", f"must have keys rows, clusters, events; got {sorted(counts)}")
    for key in ("rows", "clusters"):
        if not isinstance(counts[key], int) or isinstance(counts[key], bool) or counts[key] < 1:
            fail(site, f"counts.{key}", f"must be a positive integer, got {counts[key]!r}")
    events = counts["events"]
    if isinstance(events, bool) or not isinstance(events, (int, float)) or not np.isfinite(events) \
            or events < 0:
        fail(site, "counts.events", f"must be a finite non-negative number, got {events!r}")
    return counts


# --- cluster labels -------------------------------------------------------------------


def cluster_hash(label, salt, key=b""):
    """The keyed hash a site releases for one cluster label:
    HMAC-SHA256 with key ``salt`` (the fit's fresh random bytes) concatenated with
    ``key`` (a secret the sites share and the coordinator does not know, or
    empty), over the label's text in UTF-8 (:func:`~pyglmm.data.levels.label_text`: numbers by
    value, so 3 and 3.0 at two sites are one cluster); 64 hex digits."""
    return hmac.new(salt + key, label_text(label).encode("utf-8"), hashlib.sha256).hexdigest()
