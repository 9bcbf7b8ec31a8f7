r"""Site side of the one-shot federation: per-cluster summary statistics.

For a random-intercept logistic model
:math:`\mathrm{logit}\,P(y_{hj}=1 \mid b_h) = \beta_0 + x_{hj}^\top\beta + b_h`,
cluster :math:`h`'s log-likelihood given :math:`b_h` is

.. math::
    \sum_j y_j\eta_j - \sum_j \log(1 + e^{\eta_j})
    = Y(\beta_0 + b + \bar x^\top\beta) + n\,s^\top\beta - \sum_j f(\eta_j),
    \qquad f(\eta) = \log(1 + e^{\eta}),

with :math:`Y = \sum_j y_j` (the events) and
:math:`s = \frac1n\sum_j y_j (x_j - \bar x)` (the response cross-moments).
Expanding :math:`f(\eta_j)` in a Taylor polynomial of degree :math:`K` about the
cluster centre :math:`\eta_0 = \beta_0 + \bar x^\top\beta + b` gives
:math:`\sum_j f(\eta_j) \approx \sum_{k=0}^K \frac{f^{(k)}(\eta_0)}{k!} M_k(\beta)` with
:math:`M_k(\beta) = \sum_j ((x_j - \bar x)^\top\beta)^k
= n \sum_{|\alpha| = k} \binom{k}{\alpha} \beta^\alpha m_\alpha`,
where :math:`m_\alpha = \frac1n\sum_j \prod_v (x_{jv} - \bar x_v)^{\alpha_v}` are the
central moments.  So a cluster releases (the *polynomial-approximate sufficient
statistics* of Limpoco, Faes & Hens 2025): its size :math:`n`, events :math:`Y`,
means :math:`\bar x`, response cross-moments :math:`s`, and the central moments
:math:`m_\alpha` of total order :math:`2 \le |\alpha| \le K` (``moment_index``
lists the :math:`\alpha` as sorted tuples of covariate indices).  The response
enters only through :math:`Y` and :math:`s`, which the logistic likelihood needs
at every order; cross-moments of :math:`y` of higher order are not released (the
likelihood does not use them, and each one discloses more).

Covariates are the columns of the fixed-effects coding (categorical variables as
treatment dummies, "dummies first"), without the intercept.  A column whose values
are all 0 or 1 is flagged ``binary``; the dummies of one categorical term are
listed together in ``categorical`` (they are mutually exclusive).

The disclosure guard refuses (``DataError`` naming the cluster, never a silent
drop) a cluster with fewer than ``min_size`` rows, or one whose released numbers
(``2 + 2p + len(moment_index)``) reach its data values
(:math:`n (p + 1)`: :math:`p` covariates and the response per row), from which its
rows could be solved for.
"""

from itertools import combinations_with_replacement

import numpy as np
import pandas as pd

from ...data.levels import label_text
from ...exceptions import DataError

MAX_ORDER = 4


def moment_index(p, order):
    """The central moments released for ``p`` covariates at ``order`` K: every sorted
    tuple of covariate indices of length 2..K (``(0, 0)`` is the variance of the
    first covariate, ``(0, 1, 1)`` the moment :math:`m_{x_0 x_1^2}`)."""
    return [c for k in range(2, order + 1) for c in combinations_with_replacement(range(p), k)]


def released_count(p, order):
    """Numbers a cluster releases: n, events, p means, p response cross-moments and
    the central moments."""
    return 2 + 2 * p + len(moment_index(p, order))


def check_order(order):
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer from 1 to {MAX_ORDER}, got {order!r}")
    return int(order)


def model_terms(formula, cluster):
    """(response, fixed part) of ``formula`` ("y ~ x + C(cat)"; a term ``(1|cluster)``
    may be written and is the only random term allowed)."""
    from ...data.formula import parse_formula

    if not isinstance(cluster, str) or not cluster:
        raise ValueError(f"cluster must be a column name, got {cluster!r}")
    text = formula if isinstance(formula, str) and "|" in formula else f"{formula} + (1|{cluster})"
    parsed = parse_formula(text)
    if [(t.group, t.intercept, t.slopes) for t in parsed.random] != [(cluster, True, ())]:
        raise ValueError(f"formula {formula!r}: the only random effect summaries support is a "
                         f"random intercept for the cluster column, (1|{cluster})")
    return parsed.response, parsed.fixed


def cluster_statistics(X, y, codes, order):
    """Per-cluster statistics of covariates ``X`` (n, p), a 0/1 response ``y`` and
    cluster ``codes`` (0..H-1, every code present).

    Returns
    -------
    dict of ndarray
        ``n`` (H,), ``events`` (H,), ``mean`` (H, p), ``y_cross`` (H, p) and
        ``moments`` (H, len(moment_index(p, order))), in the module's notation.
    """
    order_rows = np.argsort(codes, kind="stable")
    X, y, codes = X[order_rows], y[order_rows], codes[order_rows]
    n = np.bincount(codes).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    sums = lambda a: np.add.reduceat(a, starts, axis=0)  # noqa: E731
    mean = sums(X) / n[:, None]
    Z = X - mean[codes]
    products = {(v,): Z[:, v] for v in range(X.shape[1])}
    moments = []
    for alpha in moment_index(X.shape[1], order):
        products[alpha] = products[alpha[:-1]] * Z[:, alpha[-1]]
        moments.append(products[alpha])
    moments = (sums(np.column_stack(moments)) / n[:, None] if moments
               else np.zeros((len(n), 0)))
    return {"n": n, "events": sums(y).astype(np.int64), "mean": mean,
            "y_cross": sums(y[:, None] * Z) / n[:, None], "moments": moments}


def guard(labels, n, p, order, min_size):
    """Refuse clusters below ``min_size`` rows or whose release reaches n (p + 1) values."""
    count = released_count(p, order)
    small = [(lab, k) for lab, k in zip(labels, n) if k < min_size]
    if small:
        shown = ", ".join(f"{lab!r} ({k} rows)" for lab, k in small[:10])
        raise DataError(f"cluster{'s' if len(small) > 1 else ''} {shown} "
                        f"{'have' if len(small) > 1 else 'has'} fewer rows than the minimum "
                        f"cluster size {min_size} (min_size); merge or remove "
                        f"{'them' if len(small) > 1 else 'it'} before summarising (nothing is "
                        f"dropped silently)")
    exposed = [(lab, k) for lab, k in zip(labels, n) if count >= k * (p + 1)]
    if exposed:
        shown = ", ".join(f"{lab!r} ({k} rows x {p + 1} values = {k * (p + 1)})"
                          for lab, k in exposed[:10])
        raise DataError(f"cluster{'s' if len(exposed) > 1 else ''} {shown}: order {order} would "
                        f"release {count} numbers per cluster, at least as many as the cluster's "
                        f"data values, so its rows could be reconstructed; lower the order or "
                        f"merge small clusters")


def summarise(data, formula, cluster, order=3, min_size=5):
    """The per-cluster statistics of ``data`` (see the module docstring).

    Returns
    -------
    dict
        ``response``, ``fixed`` (the fixed part of the formula), ``columns``
        (covariate names), ``binary`` (bool per column), ``categorical`` (lists of
        column indices, one per categorical term), ``labels`` (cluster labels as
        str), ``coding`` (the fixed-effects coding as a dict,
        :meth:`~pyglmm.data.coding.FixedCoding.to_dict`) and the arrays of
        :func:`cluster_statistics`.
    """
    from ...data.coding import FixedCoding
    from ...data.validation import check_column_roles, check_magnitude

    order = check_order(order)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be a positive integer, got {min_size!r}")
    response, fixed = model_terms(formula, cluster)
    check_column_roles(data, response, groups=[cluster])
    coding = FixedCoding.from_data(fixed, data)
    if not coding.intercept:
        raise ValueError(f"formula {formula!r} has no intercept: summaries need the intercept "
                         "(the random intercept varies around it)")
    X = coding.matrix(data)[:, 1:]
    columns = coding.names[1:]
    limit = float((np.finfo(np.float64).max / max(len(data), 1)) ** (1 / order))
    for j, name in enumerate(columns):  # the moments sum products of up to `order` values
        check_magnitude(name, X[:, j], data.index, limit=limit,
                        why=f"overflow in the sums of the moments of order {order}")
    y = _binary_response(data[response], response)
    labels, codes = _clusters(data[cluster], cluster)
    stats = cluster_statistics(X, y, codes, order)
    guard(labels, stats["n"], X.shape[1], order, min_size)
    categorical, j = [], 0
    for term in coding.terms:
        width = len(term.columns)
        if term.categorical:
            categorical.append(list(range(j, j + width)))
        j += width
    binary = [bool(np.isin(X[:, v], (0.0, 1.0)).all()) for v in range(X.shape[1])]
    return {"response": response, "fixed": fixed, "columns": columns, "binary": binary,
            "categorical": categorical, "labels": labels, "coding": coding.to_dict(), **stats}


def _binary_response(col, name):
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        row = col.index[np.flatnonzero(bad)[0]]
        raise DataError(f"response column {name!r} must hold 0 or 1 (a binary outcome); row "
                        f"{row!r} has {col.loc[row]!r}")
    return values


def _clusters(col, name):
    if col.isna().any():
        row = col.index[np.flatnonzero(col.isna().to_numpy())[0]]
        raise DataError(f"cluster column {name!r} is missing in row {row!r}")
    codes, uniques = pd.factorize(col, sort=True)
    labels = [label_text(u) for u in uniques]  # 3 and 3.0 at two sites are one cluster
    if len(set(labels)) != len(labels):
        raise DataError(f"cluster column {name!r}: two clusters have the same label as text")
    return labels, codes.astype(np.int64)
