"""Input checks that name the column, row or level at fault, and the diagnosis of
singular matrices (which columns are to blame)."""

import difflib

import numpy as np
import pandas as pd

from ..exceptions import DataError, SingularMatrixError

CHUNK = 1 << 20  # rows per chunk when scanning large arrays


def show_value(value):
    """repr of a value, with numpy scalars shown as plain Python ones."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _row_label(index, pos):
    return f"row {show_value(index[pos])}" if index is not None else f"row {int(pos)}"


def _column(name, role=None):
    """How a message names a column: ``weights column 'wt'`` or ``column 'x'``."""
    return f"{role} column {name!r}" if role else f"column {name!r}"


def check_column_roles(data, response, groups=(), fixed=(), slopes=(), **named):
    """Raise if a column the model reads is missing, naming it by its role.

    ``named`` maps roles (``weights``, ``trials``, ``offset``) to the column
    names the user gave (None or an array: not a column); ``fixed`` lists the
    variables of the fixed effects, ``groups`` the grouping factors and
    ``slopes`` the random terms (:class:`~pyglmm.data.formula.RandomTerm`) whose
    slopes are columns too.  Each missing column is named once, by its first role.
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    wanted = [(f"response column {response!r}", response)]
    wanted += [(f"{role} column {col!r}", col) for role, col in named.items() if isinstance(col, str)]
    wanted += [(f"grouping factor {g!r} (in (1|{g}))", g) for g in groups]
    wanted += [(f"fixed-effect variable {v!r}", v) for v in fixed]
    wanted += [(f"random slope {c!r} (in ({' + '.join(t.names).replace('(Intercept)', '1')}|{t.group}))", c)
               for t in slopes for c in t.slopes]
    have = [str(c) for c in data.columns]
    missing, seen = [], set()
    for label, col in wanted:
        if col not in data.columns and col not in seen:
            seen.add(col)
            close = difflib.get_close_matches(str(col), have, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            missing.append(f"{label} is not in the data{hint}")
    if missing:
        shown = ", ".join(map(repr, have[:20])) + (", ..." if len(have) > 20 else "")
        raise DataError("; ".join(missing) + f"; the data have columns {shown}")


def check_numeric(name, values, role=None):
    """Return ``values`` as 1-D float64, or raise naming the column if it is not numeric."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{_column(name, role)} must be 1-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.number)):
        raise DataError(f"{_column(name, role)} must be numeric, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def check_finite(name, arr, index=None, columns=None, role=None):
    """Raise if ``arr`` (1-D or 2-D, scanned in chunks) holds NaN or infinity."""
    for start in range(0, arr.shape[0], CHUNK):
        bad = ~np.isfinite(arr[start:start + CHUNK])
        if bad.any():
            if bad.ndim == 2:
                row, col = np.argwhere(bad)[0]
                where = f"column {columns[col]!r}" if columns is not None else f"{name} column {col}"
            else:
                row, where = np.flatnonzero(bad)[0], _column(name, role)
            total = sum(int((~np.isfinite(arr[s:s + CHUNK])).sum()) for s in range(0, arr.shape[0], CHUNK))
            raise DataError(f"{where} has {total} NaN or infinite value(s), first at "
                            f"{_row_label(index, start + row)}")


HUGE = float(np.sqrt(np.finfo(np.float64).max))  # ~1.34e154: larger values' squares overflow


def check_magnitude(name, arr, index=None, role=None, limit=HUGE, why="overflow when squared"):
    """Raise if a value of the 1-D ``arr`` is so large (beyond ``limit``: by default
    ``HUGE``, whose square overflows double precision, which sums of squares,
    variances and curvatures need) that the computation ``why`` names overflows.
    ``name`` with spaces names a product of columns (``weights times trials``)."""
    subject = name if role is None and " " in name else _column(name, role)
    for start in range(0, arr.shape[0], CHUNK):
        big = np.abs(arr[start:start + CHUNK]) > limit
        if big.any():
            row = start + np.flatnonzero(big)[0]
            raise DataError(f"{subject} has a value too large for double precision "
                            f"({arr[row]:.3g} at {_row_label(index, row)}): values beyond "
                            f"{limit:.3g} {why}; rescale it")


def check_values(name, arr, index=None, role=None):
    """:func:`check_finite` and :func:`check_magnitude`: a per-row column the model
    computes with (response, offset, trials, slopes)."""
    check_finite(name, arr, index, role=role)
    check_magnitude(name, arr, index, role=role)


def prior_weights(weights, trials, index=None):
    """The prior weight of each row, ``weights`` times binomial ``trials`` (either may
    be None; both None: None), as float64, refused where the product overflows when
    squared (:func:`check_magnitude`)."""
    if weights is None and trials is None:
        return None
    prior = (weights if weights is not None else 1.0) * (trials if trials is not None else 1.0)
    prior = np.ascontiguousarray(prior, dtype=np.float64)
    check_magnitude("weights times trials", prior, index)
    return prior


def named_column(data, role, name, index=None, whole=True):
    """The column ``name`` that the user gave as ``role`` (weights, trials, offset),
    as float64, checked with errors that name it by its role (``whole``: see
    :func:`check_weights`)."""
    col = data[name]
    if not pd.api.types.is_numeric_dtype(col):  # bool counts as numeric
        raise DataError(f"{_column(name, role)} must be numeric, got dtype {col.dtype}")
    values = col.to_numpy(dtype=np.float64, na_value=np.nan)  # missing values become NaN
    if role == "weights":
        check_weights(name, values, index, role=role, whole=whole)
    else:
        check_values(name, values, index, role=role)
    return values


def role_values(data, role, value):
    """Per-row values the user gave as ``role`` (weights, trials, offset): a column name,
    or an array or Series of one number per row of ``data`` (a Series must carry the
    data's index: values are never matched by position behind the user's back); None
    stays None.  Returns float64, checked with errors that name the role."""
    if value is None:
        return None
    if isinstance(value, str):
        return named_column(data, role, value, data.index)
    if isinstance(value, pd.Series) and not value.index.equals(data.index):
        raise DataError(f"{role}: the Series' index is not the data's (same labels in the same "
                        f"order); align it first ({role}.reindex(data.index)) or pass a column name")
    arr = check_numeric(role, np.asarray(value), role=role)
    if len(arr) != len(data):
        raise DataError(f"{role} has {len(arr)} rows, the data have {len(data)}")
    if role == "weights":
        check_weights(role, arr, data.index)
    else:
        check_values(role, arr, data.index, role=role)
    return arr


def check_weights(name, w, index=None, role=None, whole=True):
    """Prior weights must be finite, non-negative and not too large
    (:func:`check_magnitude`), and not all zero unless not ``whole`` (the rows are a
    part of the data, e.g. a partition of a distributed fit)."""
    check_values(name, w, index, role=role)
    if (w < 0).any():
        pos = np.flatnonzero(w < 0)[0]
        raise DataError(f"{_column(name, role)} has negative weights, first at {_row_label(index, pos)}")
    if whole and not (w > 0).any():
        raise DataError(f"{_column(name, role)}: every weight is zero")


def factorize(name, values):
    """Integer codes over the sorted observed levels; raise on missing values."""
    if isinstance(values, (list, tuple)):
        values = pd.Series(values)
    if np.ndim(values) != 1:
        raise DataError(f"grouping column {name!r} must be 1-dimensional, got shape {np.shape(values)}")
    if getattr(values, "dtype", None) == object:
        _check_label_types(name, values)
    codes, levels = pd.factorize(values, sort=True, use_na_sentinel=True)
    if (codes < 0).any():
        pos = int(np.flatnonzero(codes < 0)[0])
        index = values.index if isinstance(values, pd.Series) else None
        raise DataError(f"grouping column {name!r} has {int((codes < 0).sum())} missing value(s), "
                        f"first at {_row_label(index, pos)}")
    if len(levels) >= 2**31:
        raise DataError(f"grouping column {name!r} has too many levels ({len(levels)})")
    return codes.astype(np.int32), pd.Index(levels, name=name)


def _check_label_types(name, values):
    """Labels of one grouping column must be of one kind: ``5`` and ``"5"`` as two
    levels would silently split a group (and could not be saved)."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("string", "integer", "floating", "mixed-integer-float", "boolean", "empty",
                "datetime", "date", "bytes", "decimal"):
        return
    arr = np.asarray(values, dtype=object)
    for pos, label in enumerate(arr):
        try:
            hash(label)
        except TypeError:
            index = values.index if isinstance(values, pd.Series) else None
            raise DataError(f"grouping column {name!r} holds an unhashable label ({type(label).__name__}) "
                            f"at {_row_label(index, pos)}") from None
    examples = {}  # one label per kind: numbers (of any type) are one kind
    for label in arr:
        if not _missing(label):
            examples.setdefault("number" if isinstance(label, (int, float, np.number)) else
                                type(label).__name__, label)
    if len(examples) > 1:
        shown = list(examples.items())[:2]
        raise DataError(f"grouping column {name!r} mixes label types ({', '.join(examples)}), e.g. "
                        + " and ".join(show_value(v) for _, v in shown)
                        + ": one group spelled two ways would be two levels; convert the column to one type")


def _missing(label):
    return label is None or label is pd.NA or label is pd.NaT or (isinstance(label, float) and label != label)


PIVOT_TOL = 1e-9  # a column whose relative residual (1 - R^2) is below this is dependent


def dependent_columns(M, names, tol=PIVOT_TOL, scale=None):
    """Columns of a symmetric positive semi-definite matrix ``M`` (a Gram matrix such
    as X'WX) that are numerically zero or linear combinations of earlier columns.

    ``M`` is scaled by ``scale`` (default: the square roots of its own diagonal)
    on both sides; column j is dependent when its squared residual after
    projection on the independent earlier columns (its Cholesky pivot) is below
    ``tol``.  Returns ``[(name, [names it combines])]``, with an empty list for a
    column that is zero (relative to ``scale``); empty when ``M`` has full rank.
    One Cholesky factorisation when it has, O(p^4) only to explain a failure.
    """
    M = 0.5 * (M + M.T)
    d = np.sqrt(np.diag(M)) if scale is None else np.asarray(scale, dtype=np.float64)
    if np.all(d > 0):
        try:
            pivots = np.diag(np.linalg.cholesky(M / np.outer(d, d))) ** 2
            if pivots.min() >= tol:
                return []
        except np.linalg.LinAlgError:
            pass
    problems, keep = [], []
    for j, name in enumerate(names):
        if not d[j] > 0:
            problems.append((name, []))
            continue
        idx = keep + [j]
        C = M[np.ix_(idx, idx)] / np.outer(d[idx], d[idx])
        coef = np.linalg.solve(C[:-1, :-1], C[:-1, -1]) if keep else np.empty(0)
        if not C[-1, -1] - C[:-1, -1] @ coef >= tol:  # NaN counts as dependent
            problems.append((name, [names[keep[i]] for i in np.flatnonzero(np.abs(coef) > 1e-6)]))
        else:
            keep.append(j)
    return problems


def singular_matrix_error(what, M, names, zero="is zero", within="", scale=None):
    """A :class:`SingularMatrixError` saying that ``what`` (the matrix ``M`` over the
    columns ``names``) is singular and which columns are to blame.

    ``zero`` describes a column with nothing left (``'x' is zero ...``) and
    ``within`` qualifies a linear combination (``... within the levels of 'g'``).
    """
    if not np.all(np.isfinite(M)):
        return SingularMatrixError(f"{what} holds NaN or infinite values")
    problems = dependent_columns(M, names, scale=scale)
    parts = [f"{name!r} {zero}" if not combo else
             f"{name!r} is a linear combination of {', '.join(map(repr, combo))}{within}"
             for name, combo in problems]
    return SingularMatrixError(f"{what} is singular: " + "; ".join(parts) if parts else
                               f"{what} is not numerically positive definite")


def check_positive_definite(M, names, what, **explain):
    """Raise :class:`SingularMatrixError` naming the columns (see
    :func:`singular_matrix_error`) unless the symmetric matrix ``M`` is positive
    definite with every relative pivot at least ``PIVOT_TOL``."""
    if not np.all(np.isfinite(M)) or dependent_columns(M, names):
        raise singular_matrix_error(what, M, names, **explain)


def checked_inverse(M, names, what, **explain):
    """``inv(M)`` for a symmetric positive definite ``M``, checked first."""
    check_positive_definite(M, names, what, **explain)
    return np.linalg.inv(M)


def checked_solve(M, rhs, names, what, **explain):
    """``solve(M, rhs)`` for a symmetric positive definite ``M``, checked first."""
    check_positive_definite(M, names, what, **explain)
    return np.linalg.solve(M, rhs)


def aliased_columns(XtX, names, tol=PIVOT_TOL):
    """Describe columns of X that are (numerically) zero, too large, or linear
    combinations of earlier ones, from the Gram matrix ``X'X``.

    Returns a list of messages, empty when X has full rank.
    """
    big = [name for name, v in zip(names, np.diag(XtX)) if not np.isfinite(v)]
    if big:
        return [f"{name!r} is too large (its sum of squares overflows): rescale it" for name in big]
    return [f"{name!r} is all zeros (or so small that its squares underflow)" if not combo else
            f"{name!r} is a linear combination of {', '.join(map(repr, combo))}"
            for name, combo in dependent_columns(XtX, names, tol)]
