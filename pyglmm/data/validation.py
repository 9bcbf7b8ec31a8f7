"""Input checks that name the column, row or level at fault."""

import numpy as np
import pandas as pd

from ..exceptions import DataError

CHUNK = 1 << 20  # rows per chunk when scanning large arrays


def show_value(value):
    """repr of a value, with numpy scalars shown as plain Python ones."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _row_label(index, pos):
    return f"row {show_value(index[pos])}" if index is not None else f"row {int(pos)}"


def check_numeric(name, values):
    """Return ``values`` as 1-D float64, or raise naming the column if it is not numeric."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"column {name!r} must be 1-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.number)):
        raise DataError(f"column {name!r} must be numeric, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def check_finite(name, arr, index=None, columns=None):
    """Raise if ``arr`` (1-D or 2-D, scanned in chunks) holds NaN or infinity."""
    for start in range(0, arr.shape[0], CHUNK):
        bad = ~np.isfinite(arr[start:start + CHUNK])
        if bad.any():
            if bad.ndim == 2:
                row, col = np.argwhere(bad)[0]
                where = f"column {columns[col]!r}" if columns is not None else f"{name} column {col}"
            else:
                row, where = np.flatnonzero(bad)[0], f"column {name!r}"
            total = sum(int((~np.isfinite(arr[s:s + CHUNK])).sum()) for s in range(0, arr.shape[0], CHUNK))
            raise DataError(f"{where} has {total} NaN or infinite value(s), first at "
                            f"{_row_label(index, start + row)}")


def check_weights(name, w, index=None):
    """Prior weights must be finite and non-negative, and not all zero."""
    check_finite(name, w, index)
    if (w < 0).any():
        pos = np.flatnonzero(w < 0)[0]
        raise DataError(f"column {name!r} has negative weights, first at {_row_label(index, pos)}")
    if not (w > 0).any():
        raise DataError(f"column {name!r}: every weight is zero")


def factorize(name, values):
    """Integer codes over the sorted observed levels; raise on missing values."""
    if isinstance(values, (list, tuple)):
        values = pd.Series(values)
    if np.ndim(values) != 1:
        raise DataError(f"grouping column {name!r} must be 1-dimensional, got shape {np.shape(values)}")
    codes, levels = pd.factorize(values, sort=True, use_na_sentinel=True)
    if (codes < 0).any():
        pos = int(np.flatnonzero(codes < 0)[0])
        index = values.index if isinstance(values, pd.Series) else None
        raise DataError(f"grouping column {name!r} has {int((codes < 0).sum())} missing value(s), "
                        f"first at {_row_label(index, pos)}")
    if len(levels) >= 2**31:
        raise DataError(f"grouping column {name!r} has too many levels ({len(levels)})")
    return codes.astype(np.int32), pd.Index(levels, name=name)


def aliased_columns(XtX, names, tol=1e-9):
    """Describe columns of X that are (numerically) linear combinations of earlier ones.

    Works on the Gram matrix ``X'X`` scaled to unit diagonal: column j is
    aliased when its residual after projection on the kept columns is below
    ``tol`` (relative).  Returns a list of messages, empty when X has full rank.
    """
    d = np.sqrt(np.diag(XtX))
    problems, keep = [], []
    for j, name in enumerate(names):
        if d[j] == 0:
            problems.append(f"{name!r} is all zeros")
            continue
        C = XtX[np.ix_(keep + [j], keep + [j])] / np.outer(d[keep + [j]], d[keep + [j]])
        if keep:
            coef = np.linalg.solve(C[:-1, :-1], C[:-1, -1])
            resid = C[-1, -1] - C[:-1, -1] @ coef
        else:
            coef, resid = np.empty(0), C[-1, -1]
        if resid < tol:
            parts = [names[keep[i]] for i in np.flatnonzero(np.abs(coef) > 1e-6)]
            problems.append(f"{name!r} is a linear combination of " + ", ".join(map(repr, parts)))
        else:
            keep.append(j)
    return problems
