r"""The site message: a documented, versioned JSON file (format ``pyglmm-summaries``).

Schema (version 1).  Top level, an object with:

=================  =====================  ==============================================
field              type / shape           meaning
=================  =====================  ==============================================
``format``         str                    ``"pyglmm-summaries"``
``schema_version`` int                    1 (a reader refuses a newer version)
``pyglmm``         str                    version of the pyglmm that wrote it
``site``           str                    the site's name
``formula``        str                    ``"y ~ x + C(cat)"``: response and fixed part
``response``       str                    the response column (0/1)
``cluster``        str                    the cluster column (random intercept)
``order``          int                    K, 1 to 4
``min_size``       int                    the disclosure guard's minimum cluster size
``coding``         object                 the fixed-effects coding (terms, levels with
                                          their dtype), as ``FixedCoding.to_dict``
``columns``        list of p str          covariates (coded; no intercept)
``binary``         list of p bool         the column holds only 0 and 1 at this site
``categorical``    list of lists of int   column indices of each categorical term's dummies
``moment_index``   list of lists of int   the :math:`\alpha` of each central moment, as
                                          sorted index tuples of length 2..K
``clusters``       list of objects        one per cluster, below
=================  =====================  ==============================================

Each cluster: ``id`` (str), ``n`` (int > 0, rows), ``events`` (int, 0..n, the sum of
the response), ``mean`` (p float64, :math:`\bar x`), ``y_cross`` (p float64,
:math:`\frac1n\sum_j y_j(x_j - \bar x)`) and ``moments`` (float64, one per entry of
``moment_index``, :math:`\frac1n\sum_j\prod_v (x_{jv}-\bar x_v)^{\alpha_v}`); see
:mod:`pyglmm.engines.summaries.site`.

Floats are JSON numbers written by Python's ``repr`` (the shortest text that reads
back to the same float64), so they round-trip exactly; NaN and infinities are
refused when writing and when reading.  Reading runs no code (plain ``json``, no
object hooks), checks every field's type and shape and that the moments are ones
real data can have (variances and even moments not below zero, a positive
semi-definite covariance, binary columns with whole counts, and so on), and raises
``ValueError`` naming the site file, the field and the cluster.
"""

import json
import math
import os

import numpy as np

from ...data.coding import FixedCoding
from .site import MAX_ORDER, moment_index

FORMAT = "pyglmm-summaries"
SCHEMA_VERSION = 1
_TOL = 1e-9  # relative slack for the moment inequalities (rounding in the site's sums)


def build(stats, site, cluster, order, min_size):
    """The message (a dict) for the output of :func:`pyglmm.engines.summaries.site.summarise`."""
    from ... import __version__

    clusters = [{"id": lab, "n": int(n), "events": int(e), "mean": m.tolist(),
                 "y_cross": s.tolist(), "moments": mm.tolist()}
                for lab, n, e, m, s, mm in zip(stats["labels"], stats["n"], stats["events"],
                                               stats["mean"], stats["y_cross"], stats["moments"])]
    p = len(stats["columns"])
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "pyglmm": __version__,
            "site": str(site), "formula": f"{stats['response']} ~ {stats['fixed']}",
            "response": stats["response"], "cluster": cluster, "order": order,
            "min_size": int(min_size), "coding": stats["coding"], "columns": list(stats["columns"]),
            "binary": list(stats["binary"]), "categorical": stats["categorical"],
            "moment_index": [list(a) for a in moment_index(p, order)], "clusters": clusters}


def dumps(message):
    """JSON text of a message (floats exact; non-finite values refused)."""
    try:
        return json.dumps(message, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"site message for {message.get('site')!r} holds a non-finite value "
                         f"({exc})") from None


def write(message, path):
    text = dumps(message)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read(path):
    """The checked message in the file ``path`` (see the module docstring)."""
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.loads(fh.read(), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deeply
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ValueError(f"site file {os.fspath(path)}: not a pyglmm summaries message "
                         f"(not JSON: {why})") from None
    except _NonFinite as exc:
        raise ValueError(f"site file {os.fspath(path)}: holds {exc.args[0]}, not a finite "
                         "number") from None
    return check(d, os.fspath(path))


class _NonFinite(Exception):
    pass


def _no_constant(name):
    raise _NonFinite(name)


def check(d, source):
    """``d`` checked against the schema; arrays become float64/int64 ndarrays.
    ``ValueError`` names ``source`` (the site file), the field and the cluster."""
    def fail(field, what, cluster=None):
        at = f" (cluster {cluster!r})" if cluster is not None else ""
        raise ValueError(f"site file {source}: field '{field}'{at} {what}")

    def get(obj, key, types, where="", cluster=None):
        field = f"{where}{key}"
        if not isinstance(obj, dict) or key not in obj:
            fail(field, "is missing", cluster)
        value = obj[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            fail(field, f"has the wrong type ({type(value).__name__})", cluster)
        return value

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        fail("format", f"is not {FORMAT!r}: not a pyglmm summaries message")
    version = get(d, "schema_version", (int,))
    if version != SCHEMA_VERSION:
        fail("schema_version", f"is {version}; this pyglmm reads version {SCHEMA_VERSION}"
             + (" (upgrade pyglmm)" if version > SCHEMA_VERSION else ""))
    out = {k: get(d, k, (str,)) for k in ("pyglmm", "site", "formula", "response", "cluster")}
    order = get(d, "order", (int,))
    if not 1 <= order <= MAX_ORDER:
        fail("order", f"is {order}, not 1 to {MAX_ORDER}")
    out["order"], out["min_size"] = order, get(d, "min_size", (int,))
    columns = get(d, "columns", (list,))
    if not all(isinstance(c, str) for c in columns):
        fail("columns", "must be a list of strings")
    p = len(columns)
    try:
        coding = FixedCoding.from_dict(get(d, "coding", (dict,)), "coding")
    except ValueError as exc:
        fail("coding", f"is malformed ({str(exc).removeprefix('model file: ')})")
    if coding.names != ["Intercept"] + columns:
        fail("coding", "does not give the names in 'columns' (after the intercept)")
    binary = get(d, "binary", (list,))
    if len(binary) != p or not all(isinstance(b, bool) for b in binary):
        fail("binary", f"must be a list of {p} booleans (one per column)")
    categorical = get(d, "categorical", (list,))
    if not all(isinstance(g, list) and g and all(isinstance(v, int) and not isinstance(v, bool)
                                                  and 0 <= v < p for v in g) for g in categorical):
        fail("categorical", f"must be a list of lists of column indices (0..{p - 1})")
    index = [tuple(a) for a in moment_index(p, order)]
    if [tuple(a) if isinstance(a, list) else a for a in get(d, "moment_index", (list,))] != index:
        fail("moment_index", f"is not the moments of order 2..{order} of {p} columns in "
             "pyglmm's order (see pyglmm.engines.summaries.site.moment_index)")
    clusters = get(d, "clusters", (list,))
    if not clusters:
        fail("clusters", "is empty")
    out.update(columns=columns, binary=binary, categorical=categorical, coding=coding)
    rows = [_cluster(c, i, p, index, binary, categorical, get, fail) for i, c in enumerate(clusters)]
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        fail("clusters", "lists the same cluster twice", dup)
    out["labels"] = ids
    for k, key in enumerate(("n", "events", "mean", "y_cross", "moments")):
        dtype = np.int64 if key in ("n", "events") else np.float64
        out[key] = np.array([r[k + 1] for r in rows], dtype=dtype)
        if key == "moments":
            out[key] = out[key].reshape(len(rows), len(index))
    return out


def _cluster(c, i, p, index, binary, categorical, get, fail):
    where = f"clusters[{i}]."
    cid = get(c, "id", (str,), where)
    n, events = get(c, "n", (int,), where, cid), get(c, "events", (int,), where, cid)
    if n < 1:
        fail(f"{where}n", f"is {n}: a cluster has at least one row", cid)
    if not 0 <= events <= n:
        fail(f"{where}events", f"is {events}: an event count lies between 0 and n = {n}", cid)

    def floats(key, length):
        v = get(c, key, (list,), where, cid)
        if len(v) != length or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                       for x in v):
            fail(f"{where}{key}", f"must be a list of {length} numbers", cid)
        a = np.array(v, dtype=np.float64)
        if not np.isfinite(a).all():
            fail(f"{where}{key}", "holds a non-finite value", cid)
        return a

    mean, y_cross, moments = floats("mean", p), floats("y_cross", p), floats("moments", len(index))
    m = dict(zip(index, moments))
    bad = lambda key, what: fail(f"{where}{key}", what, cid)  # noqa: E731
    for a, v in m.items():
        if all(a.count(u) % 2 == 0 for u in set(a)) and v < 0:
            bad(f"moments[{index.index(a)}]", f"(the even moment {list(a)}) is {v!r}: "
                + ("a variance" if len(a) == 2 else "an even moment") + " below zero, which no "
                "real data can have")
    if len(index):
        cov = np.array([[m[tuple(sorted((u, v)))] for v in range(p)] for u in range(p)])
        lowest = np.linalg.eigvalsh(cov)[0] if p else 0.0
        if lowest < -_TOL * max(1.0, np.abs(cov).max()):
            bad("moments", "gives a covariance matrix that is not positive semi-definite, which "
                "no real data can have")
        for v in range(p):
            four = m.get((v, v, v, v))
            if four is not None and four < cov[v, v] ** 2 * (1 - 1e-9) - _TOL:
                bad("moments", f"has a 4th moment of column {v} below its variance squared, "
                    "which no real data can have")
            ybar = events / n
            if abs(y_cross[v]) > math.sqrt(cov[v, v] * ybar * (1 - ybar)) * (1 + 1e-9) + _TOL:
                bad("y_cross", f"[{v}] exceeds the Cauchy-Schwarz bound of the column's and the "
                    "response's standard deviations")
    for v in range(p):
        if binary[v]:
            count = mean[v] * n
            if not (0 <= mean[v] <= 1 and abs(count - round(count)) <= 1e-6 * max(1, n)):
                bad(f"mean[{v}]", f"is {mean[v]!r}, not a whole count of ones over n = {n} "
                    "for a binary column")
            if (v, v) in m and abs(m[(v, v)] - mean[v] * (1 - mean[v])) > 1e-9:
                bad("moments", f"has a variance of binary column {v} other than mean (1 - mean)")
    for g in categorical:
        if mean[g].sum() > 1 + 1e-9:
            bad("mean", f"gives dummies of one categorical term (columns {g}) that sum to more "
                "than 1")
    return cid, n, events, mean, y_cross, moments
