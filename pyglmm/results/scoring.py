"""Scoring new rows with a fitted model: :func:`predict`."""

import numpy as np
import pandas as pd

from .. import backends as _backend
from ..data.design import level_codes
from ..data.validation import check_finite
from ..families import get_family


def predict(res, newdata=None, *, X=None, groups=None, offset=None, type="link",
            chunk_size=1_000_000):
    """Predict on new rows, streaming over chunks of ``chunk_size`` rows.

    .. math:: \\hat\\eta = o + x^\\top\\hat\\beta + \\sum_k \\hat b_{k, g_k},

    with :math:`\\hat b_{k,g} = 0` for a level not seen in the fit (or a
    missing label): the population-level prediction.

    Parameters
    ----------
    newdata : pandas.DataFrame
        For formula fits: the columns the formula uses (and the offset column).
    X, groups : array-like, dict
        For array fits: covariates as passed to the fit (without the
        intercept column if it was added) and factor labels by name.
    offset : array-like, optional
        Needed, and only allowed, when the model was fitted with an offset
        given as an array (a formula fit's offset column is read from
        ``newdata``).
    type : {"link", "response"}
        Linear predictor or mean :math:`h(\\hat\\eta)`.
    chunk_size : int
        Rows per chunk; memory beyond the output is O(chunk_size * p).
    """
    if type not in ("link", "response"):
        raise ValueError(f"type must be 'link' or 'response', got {type!r}")
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    array_offset = res.has_offset and res.offset_name is None
    if array_offset and offset is None:
        raise ValueError("the model was fitted with an offset: pass offset=")
    if offset is not None and not array_offset:
        raise ValueError("offset= is only for models fitted with an offset array")
    if res.coding is not None:
        if newdata is None:
            raise ValueError("this model was fitted from a formula: pass newdata=DataFrame")
        n = len(newdata)
        needed = [*res.coding.required_variables, *res.factor_names,
                  *([res.offset_name] if res.offset_name else [])]
        missing = [c for c in needed if c not in newdata.columns]
        if missing:
            raise ValueError(f"newdata lacks column(s) {', '.join(map(repr, missing))}")
        if offset is not None and len(offset) != n:
            raise ValueError(f"offset has {len(offset)} rows, newdata has {n}")
    else:
        if X is None or groups is None:
            raise ValueError("this model was fitted from arrays: pass X= and groups=")
        X = X.to_numpy() if isinstance(X, pd.DataFrame) else np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-dimensional, got shape {X.shape}")
        n = X.shape[0]
        unknown = set(res.factor_names) - set(groups)
        if unknown:
            raise ValueError(f"groups lacks factor(s) {', '.join(sorted(unknown))}")
        lengths = {f"groups[{f!r}]": len(groups[f]) for f in res.factor_names}
        if offset is not None:
            lengths["offset"] = len(offset)
        for name, m in lengths.items():
            if m != n:
                raise ValueError(f"{name} has {m} rows, X has {n}")
    kern, threads = _backend.kernels(), _backend.get_num_threads()
    family = get_family(res.family)
    beta = res.coef.to_numpy()
    levels = [res.b[f].index for f in res.factor_names]
    table = np.concatenate([res.b[f].to_numpy() for f in res.factor_names])
    offsets = np.concatenate([[0], np.cumsum([len(lv) for lv in levels])])
    eta = np.empty(n)
    for start in range(0, n, chunk_size):
        rows = slice(start, min(n, start + chunk_size))
        if res.coding is not None:
            part = newdata.iloc[rows]
            Xc = _fixed_part(res, part)
            labels = [part[f] for f in res.factor_names]
            off = (part[res.offset_name].to_numpy(np.float64) if res.offset_name else
                   None if offset is None else np.asarray(offset, dtype=np.float64)[rows])
        else:
            Xc = np.asarray(X[rows], dtype=np.float64)
            if res.intercept:
                Xc = np.column_stack([np.ones(Xc.shape[0]), Xc])
            labels = [np.asarray(groups[f])[rows] for f in res.factor_names]
            off = None if offset is None else np.asarray(offset, dtype=np.float64)[rows]
        if Xc.shape[1] != beta.size:
            raise ValueError(f"X has {Xc.shape[1]} columns, the model has {beta.size}")
        positions = range(rows.start, rows.stop)  # errors name rows of the whole input
        check_finite("X", Xc, positions, list(res.coef.index))
        if off is not None:
            check_finite("offset", off, positions)
        codes = level_codes(levels, labels, offsets, Xc.shape[0])
        kern.linear_predictor(np.ascontiguousarray(Xc), codes, beta, table,
                              np.empty(0) if off is None else np.ascontiguousarray(off),
                              eta[rows], threads)
        if type == "response":  # per chunk: no temporaries the size of the output
            eta[rows] = family.mean(eta[rows])
    return eta


def _fixed_part(res, frame):
    """The fixed-effects matrix of ``frame`` (a formula fit), coded as the fit's data;
    DataError naming the column and level for an unseen level."""
    return res.coding.matrix(frame)
