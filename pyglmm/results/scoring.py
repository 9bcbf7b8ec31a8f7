"""Scoring new rows with a fitted model: :func:`predict` and the :class:`Scorer` behind it
(also behind ``pyglmm predict``)."""

import numpy as np
import pandas as pd

from .. import backends as _backend
from ..data.design import check_level_ids
from ..data.levels import FactorLevels, item
from ..data.validation import check_finite, check_numeric, show_value
from ..exceptions import DataError
from ..families import get_family

NEW_LEVELS = ("population", "error")
TYPES = ("link", "response")


def _fixed_columns(res):
    """The data columns the fixed part of a formula fit reads (None for an array fit)."""
    return None if res.coding is None else list(res.coding.required_variables)


def _fixed_part(res, frame):
    """The fixed-effects matrix (C-contiguous float64) of a formula fit for the rows of ``frame``,
    coded as the training data were; the one place that builds it.  It checks the values
    (DataError naming the column and row, or the column and an unseen level)."""
    return res.coding.matrix(frame)


class Scorer:
    """Scores chunks of rows with a fitted model; set up once, then :meth:`score` per chunk.

    Parameters
    ----------
    res : GLMMResult
    type : {"link", "response"}
    new_levels : {"population", "error"}
        What a row whose label of a grouping factor was not seen in the fit
        (or is missing) gets: that factor's population value b = 0, or a
        :class:`~pyglmm.exceptions.DataError` naming the factor, the level
        and the row.
    backend, threads : optional
        Kernel backend and threads (default: the active backend, all threads).

    Attributes
    ----------
    population_rows : dict
        Rows scored so far at the population level, per factor.
    columns : list of str or None
        The data columns a formula fit's rows need (None for an array fit).
    """

    def __init__(self, res, *, type="link", new_levels="population", backend=None, threads=None):
        if type not in TYPES:
            raise ValueError(f"type must be 'link' or 'response', got {type!r}")
        if new_levels not in NEW_LEVELS:
            raise ValueError(f"new_levels must be 'population' or 'error', got {new_levels!r}")
        self.res, self.type, self.new_levels = res, type, new_levels
        self.kern = _backend.kernels(backend)
        self.threads = 1 if _backend.backend(backend) == "numpy" else (
            threads or _backend.get_num_threads())
        self.family = get_family(res.family)
        self.beta = np.ascontiguousarray(res.coef.to_numpy(np.float64))
        self.table = np.concatenate([_intercepts(res.b[f]) for f in res.factor_names])
        check_level_ids({f: len(res.b[f]) for f in res.factor_names})  # int32 ids, as a fit's
        bases = np.cumsum([0] + [len(res.b[f]) for f in res.factor_names])
        self.factors = [FactorLevels(f, res.b[f].index, base) for f, base in zip(res.factor_names, bases)]
        # random slopes: (factor position, data column, the slope's modes by level)
        self.slopes = [(k, e, res.b[f][e].to_numpy(np.float64))
                       for k, f in enumerate(res.factor_names)
                       if isinstance(res.b[f], pd.DataFrame)
                       for e in res.b[f].columns if e != "(Intercept)"]
        self.population_rows = dict.fromkeys(res.factor_names, 0)
        fixed = _fixed_columns(res)
        self.columns = None if fixed is None else list(dict.fromkeys(
            [*fixed, *(e for _, e, _ in self.slopes), *res.factor_names,
             *([res.offset_name] if res.offset_name else [])]))

    def score(self, X, labels, offset, out, rows, checked=False, slope_values=None):
        """Score one chunk into ``out``.

        ``X`` (m, p) is the fixed-effects matrix (``checked``: its values were
        validated when it was built), ``labels`` one array-like of m labels per
        factor, ``offset`` m values or None, ``rows`` the chunk's row labels
        in the whole input (an Index or a range), which errors name, and
        ``slope_values`` the m values of each random slope's column, by column
        name (for models with random slopes).
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.beta.size:
            raise DataError(f"X has shape {X.shape}, the model has {self.beta.size} fixed effects")
        if not checked:
            check_finite("X", X, rows, list(self.res.coef.index))
        if offset is not None:
            offset = np.ascontiguousarray(offset, dtype=np.float64)
            check_finite(self.res.offset_name or "offset", offset, rows)
        codes = np.empty((X.shape[0], len(self.factors)), dtype=np.int32)
        for k, (levels, values) in enumerate(zip(self.factors, labels)):
            ids = levels.ids(values)
            unseen = X.shape[0] - int(np.count_nonzero(ids >= 0))
            if unseen and self.new_levels == "error":
                raise self._unseen(levels.factor, values, int(np.argmax(ids < 0)), rows)
            self.population_rows[levels.factor] += unseen
            codes[:, k] = ids
        self.kern.linear_predictor(X, codes, self.beta, self.table,
                                   np.empty(0) if offset is None else offset, out, self.threads)
        for k, column, modes in self.slopes:
            z = np.asarray(slope_values[column], dtype=np.float64)
            check_finite(column, z, rows)
            local = codes[:, k] - self.factors[k].base
            seen = codes[:, k] >= 0
            out[seen] += z[seen] * modes[local[seen]]
        if self.type == "response":
            out[:] = self.family.mean(out)

    def finish(self):
        """Raise if a factor's labels, read through their spelling (strings for numeric
        levels, say), matched no level at all: a type mismatch, not new levels."""
        for levels in self.factors:
            levels.check_spelled()

    def score_frame(self, frame, out, offset=None):
        """Score the rows of a DataFrame (formula fits) into ``out``; errors name ``frame.index``.
        ``offset`` is for a model fitted with an offset array; else it is the offset column."""
        res = self.res
        if res.offset_name:
            offset = frame[res.offset_name]
            if not pd.api.types.is_numeric_dtype(offset):
                raise DataError(f"offset column {res.offset_name!r} must be numeric, "
                                f"got dtype {offset.dtype}")
        self.score(_fixed_part(res, frame), [frame[f] for f in res.factor_names],
                   offset, out, frame.index, checked=True,
                   slope_values={e: frame[e] for _, e, _ in self.slopes})

    @staticmethod
    def _unseen(factor, values, pos, rows):
        label = item(values, pos)
        what = "a missing label" if pd.isna(label) else f"level {show_value(label)}, not seen in the fit,"
        return DataError(f"grouping column {factor!r} has {what} at row {show_value(rows[pos])}; "
                         "new_levels='population' (--new-levels population) scores such rows "
                         "at the population level (b = 0)")


def _intercepts(modes):
    """A factor's random intercepts by level (zeros for a term without one)."""
    if isinstance(modes, pd.Series):
        return modes.to_numpy(np.float64)
    if "(Intercept)" in modes.columns:
        return modes["(Intercept)"].to_numpy(np.float64)
    return np.zeros(len(modes))


def predict(res, newdata=None, *, X=None, groups=None, offset=None, type="link",
            new_levels="population", chunk_size=1_000_000):
    """Predict on new rows, streaming over chunks of ``chunk_size`` rows.

    .. math:: \\hat\\eta = o + x^\\top\\hat\\beta + \\sum_k z_k^\\top \\hat b_{k, g_k},

    (:math:`z_k` is 1 for a random intercept, with the random slopes' columns
    after it),
    where a grouping factor's label that was not seen in the fit, or is
    missing, gets :math:`\\hat b_{k,g} = 0`: the population-level value
    (``new_levels="population"``), or raises (``new_levels="error"``).

    Labels are matched to the fitted levels by value, not by dtype: a model
    fitted with integer labels scores ``3``, ``3.0`` and ``"3"`` alike, and
    a categorical by its categories (see :mod:`pyglmm.data.levels`).  Labels
    whose type cannot be matched to the fitted levels raise
    :class:`~pyglmm.exceptions.DataError` instead of being scored as unseen.

    Parameters
    ----------
    newdata : pandas.DataFrame or dask.dataframe.DataFrame
        For formula fits: the columns the formula uses (and the offset column).
        A dask DataFrame gives a lazy dask Series, scored partition by partition
        on the cluster (see :mod:`pyglmm.engines.crossed.cluster.scoring`).
    X, groups : array-like, dict
        For array fits: covariates as passed to the fit (without the
        intercept column if it was added) and factor labels by name.
    offset : array-like, optional
        Needed, and only allowed, when the model was fitted with an offset
        given as an array (a formula fit's offset column is read from
        ``newdata``).
    type : {"link", "response"}
        Linear predictor or mean :math:`h(\\hat\\eta)`.
    new_levels : {"population", "error"}
        Unseen levels (and missing labels) score at the population level
        (default) or raise :class:`~pyglmm.exceptions.DataError` naming the
        factor, the level and the first such row.
    chunk_size : int
        Rows per chunk; memory beyond the output is O(chunk_size * p).

    Returns
    -------
    pandas.Series
        One value per row, indexed as ``newdata`` (or ``X`` when it is a
        DataFrame; else 0..n-1), named ``"eta"`` or ``"mu"``.
        ``.attrs["population_rows"]`` is a dict ``{factor: rows}`` of the rows
        scored at the population level for that factor.

    Raises
    ------
    DataError
        A missing column, a NaN in a covariate or the offset, labels of a
        type that cannot match the fitted levels, or (with
        ``new_levels="error"``) an unseen level or missing label.
    """
    if newdata.__class__.__module__.startswith("dask."):  # a lazy dask Series, scored on the cluster
        from ..engines.crossed.cluster.scoring import predict_dask

        return predict_dask(res, newdata, type=type, new_levels=new_levels)
    scorer = Scorer(res, type=type, new_levels=new_levels)
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    array_offset = res.has_offset and res.offset_name is None
    if array_offset and offset is None:
        raise ValueError("the model was fitted with an offset: pass offset=")
    if offset is not None and not array_offset:
        raise ValueError("offset= is only for models fitted with an offset array")
    if scorer.columns is not None:
        if not isinstance(newdata, pd.DataFrame):
            raise ValueError("this model was fitted from a formula: pass newdata=DataFrame")
        missing = [c for c in scorer.columns if c not in newdata.columns]
        if missing:
            raise DataError(f"newdata lacks column(s) {', '.join(map(repr, missing))}")
        n, index = len(newdata), newdata.index
    else:
        X, index, groups = _array_inputs(res, X, groups)
        n = X.shape[0]
    if offset is not None:
        offset = _offset_values(offset, n, index, "newdata" if X is None else "X")
    eta = np.empty(n)
    for start in range(0, n, chunk_size):
        rows = slice(start, min(n, start + chunk_size))
        off = None if offset is None else offset[rows]
        if X is None:
            scorer.score_frame(newdata.iloc[rows], eta[rows], off)
        else:
            Xc = X[rows]
            if res.intercept:
                Xc = np.column_stack([np.ones(Xc.shape[0]), Xc])
            scorer.score(Xc, [g.iloc[rows] for g in groups], off, eta[rows], index[rows])
    scorer.finish()
    out = pd.Series(eta, index=index, name="eta" if type == "link" else "mu", copy=False)
    out.attrs["population_rows"] = dict(scorer.population_rows)
    return out


def _offset_values(offset, n, index, what):
    """``offset=`` as float64 (n,): a Series must carry the rows' index."""
    if isinstance(offset, pd.Series) and index is not None and not offset.index.equals(index):
        raise DataError(f"offset: the Series' index is not {what}'s (same labels in the same order); "
                        "align it first (offset.reindex(...)) or pass its values")
    values = np.asarray(offset)
    if values.shape != (n,):
        raise DataError(f"offset must hold one number per row of {what} ({n}), got shape {values.shape}")
    return check_numeric("offset", values, role="offset")


def _array_inputs(res, X, groups):
    """X (2-D, float64), its row labels and the factors' labels (Series) of an array fit."""
    if X is None or groups is None:
        raise ValueError("this model was fitted from arrays: pass X= and groups=")
    index = X.index if isinstance(X, pd.DataFrame) else None
    X = X.to_numpy(np.float64) if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-dimensional, got shape {X.shape}")
    covariates = list(res.coef.index[int(res.intercept):])
    if X.shape[1] != len(covariates):
        raise DataError(f"X has {X.shape[1]} columns, the model has {len(covariates)} covariates "
                        f"({', '.join(covariates)}{'; the intercept is added' if res.intercept else ''})")
    n = X.shape[0]
    unknown = set(res.factor_names) - set(groups)
    if unknown:
        raise ValueError(f"groups lacks factor(s) {', '.join(sorted(unknown))}")
    columns = []
    for f in res.factor_names:
        values = groups[f]
        values = (values.reset_index(drop=True) if isinstance(values, pd.Series)
                  else pd.Series(values, copy=False))
        if len(values) != n:
            raise ValueError(f"groups[{f!r}] has {len(values)} rows, X has {n}")
        columns.append(values)
    return X, pd.RangeIndex(n) if index is None else index, columns
