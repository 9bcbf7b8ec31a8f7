"""pyglmm's own coding of the fixed effects: ``x + flag + C(cat)`` -> X.

A :class:`FixedCoding` is fitted once on the training data (which columns,
which levels, which reference) and then codes any frame exactly as it coded
the training data, or raises :class:`~pyglmm.DataError` naming the column,
level and row it cannot code the same way.  It is saved as plain JSON
(:meth:`FixedCoding.to_dict`), so loading a model never runs code.

Coding, as R and formulaic code main effects (column names are formulaic's):

- ``Intercept``: a column of ones, unless the formula has ``0 +`` or ``- 1``.
- Numeric columns (integers, floats, booleans) enter as they are, one column
  named after the column; booleans as 0/1, as formulaic treats them.
- ``C(x)`` and any non-numeric column (strings, objects, pandas categoricals):
  treatment contrasts against the first level, columns ``C(x)[T.b]`` or
  ``x[T.b]``.  Levels are the sorted distinct values, or a categorical's
  categories in their order.  Without an intercept the first categorical term
  gets a column for every level (``x[a]``), as in R.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import DataError
from .validation import show_value

BLOCK_BYTES = 1 << 20  # X is written in row blocks of about this size (cache-resident)
LEVEL_KINDS = ("str", "int", "float", "bool", "datetime", "timedelta")
_COMPATIBLE = {"int": {"int", "float"}, "float": {"int", "float"}}


@dataclass(frozen=True)
class CodedTerm:
    """One term of a fitted coding.

    Attributes
    ----------
    name : str
        The term as formulaic names it: ``x``, ``cat`` or ``C(cat)``.
    column : str
        The data column it reads.
    levels : pandas.Index or None
        Categorical levels in coding order, the first the reference (None:
        numeric).
    full : bool
        Every level gets a column (the first categorical term of a formula
        without intercept); otherwise the reference level has none.
    """

    name: str
    column: str
    levels: object = None
    full: bool = False

    @property
    def categorical(self):
        return self.levels is not None

    @property
    def columns(self):
        if not self.categorical:
            return [self.name]
        if self.full:
            return [f"{self.name}[{lv}]" for lv in self.levels]
        return [f"{self.name}[T.{lv}]" for lv in self.levels[1:]]


class FixedCoding:
    """The fixed-effects coding of a fitted model.

    Build it with :meth:`from_data`; code data with :meth:`matrix` (every column
    dense, in the formula's order) or :meth:`split` (the categoricals as codes,
    the layout of a fit's design).

    Attributes
    ----------
    formula : str
        The fixed part of the formula, e.g. ``"x + C(cat)"``.
    intercept : bool
    terms : tuple of CodedTerm
    names : list of str
        Column names of X, in the formula's order (that of the coefficients).
    required_variables : list of str
        The data columns :meth:`matrix` reads.
    """

    def __init__(self, formula, intercept, terms):
        self.formula, self.intercept, self.terms = formula, bool(intercept), tuple(terms)
        self.names = [name for name, _ in self._columns()]
        self.required_variables = list(dict.fromkeys(t.column for t in self.terms))

    def __repr__(self):
        return f"<FixedCoding {self.formula!r}: {len(self.names)} columns>"

    def __eq__(self, other):
        return isinstance(other, FixedCoding) and self.to_dict() == other.to_dict()

    @classmethod
    def from_data(cls, formula, data):
        """Fit the coding of the fixed part ``formula`` (e.g. ``"x + C(cat)"``) to ``data``.

        Raises
        ------
        ValueError
            For a term pyglmm does not code (see :func:`pyglmm.data.formula.parse_fixed`).
        DataError
            For a column that cannot be coded: a datetime used without ``C()``,
            values of mixed or unsupported types, a category that never occurs.
        """
        from .formula import parse_fixed

        intercept, parsed = parse_fixed(formula)
        if len(data) == 0:
            raise DataError("the data have no rows")
        terms, full_rank_left = [], not intercept
        for term in parsed:
            col = _column(data, term.column)
            if not term.forced_categorical and _is_numeric(col):
                terms.append(CodedTerm(term.name, term.column))
                continue
            if not term.forced_categorical and col.dtype.kind in "Mm":
                raise DataError(f"column {term.column!r} has dtype {col.dtype}: write "
                                f"C({term.column}) to code it as categorical, or convert it to numbers")
            if not term.forced_categorical:
                _refuse_numbers_as_text(term.column, col)
            terms.append(CodedTerm(term.name, term.column, _fit_levels(term.column, col),
                                   full=full_rank_left))
            full_rank_left = False
        return cls(formula, intercept, terms)

    @property
    def design_names(self):
        """Column names in the order a fit's design holds them (:meth:`split`): the
        intercept and the numeric terms, then the categorical terms' dummies."""
        return [name for dense in (True, False) for name, term in self._columns()
                if (term is None or not term.categorical) == dense]

    @property
    def coef_order(self):
        """The position in :attr:`design_names` of each of :attr:`names`: coefficients
        estimated in the design's order, ``beta[coef_order]``, are in the formula's."""
        where = {name: j for j, name in enumerate(self.design_names)}
        return np.array([where[name] for name in self.names], dtype=np.intp)

    def _columns(self):
        """(column name, term or None for the intercept) in the formula's order."""
        return [("Intercept", None)] * self.intercept + [
            (c, t) for t in self.terms for c in t.columns]

    def matrix(self, frame):
        """The rows of ``frame`` coded as the training data: C-contiguous float64 (n, p),
        its columns :attr:`names`.

        X is written once, in blocks of rows, categorical columns from their
        integer level codes, and validated as it is written.

        Parameters
        ----------
        frame : pandas.DataFrame
            Must hold :attr:`required_variables`.

        Raises
        ------
        DataError
            Naming the column (and row, or level): a missing column, NaN or
            infinity in a numeric column, a missing or unseen level of a
            categorical column, values of another type than in the fit (for
            example strings where the fit had integers).
        """
        return self._write(frame, split=False)[0]

    def split(self, frame):
        """The rows of ``frame`` coded as :meth:`matrix` codes them, with the
        categorical terms kept as codes: ``(X, xcat)``.

        ``X`` (n, d), C-contiguous float64, holds the first d of
        :attr:`design_names` (the intercept and the numeric terms); ``xcat``
        (n, m), C-contiguous int32, holds for each of the m categorical terms
        with dummy columns the row's column in :attr:`design_names` (its dummy
        is 1 there), or -1 for the reference level: the layout of
        ``Design.xcat``, so that a row costs 8 d + 4 m bytes instead of 8 p.
        The errors are those of :meth:`matrix`.
        """
        return self._write(frame, split=True)

    def _write(self, frame, split):
        """(X, xcat) in the layout :meth:`split` describes, or the whole X (every
        column, formula order) and None when not ``split``."""
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"data must be a pandas DataFrame, got {type(frame).__name__}")
        names = self.design_names if split else self.names
        sources = []  # (first column, term, per-row values or level codes)
        for term in self.terms:
            col = _column(frame, term.column)
            values = (_level_codes(term, col) if term.categorical
                      else _numeric_values(term.column, col))
            if term.columns:
                sources.append((names.index(term.columns[0]), term, values))
        n = len(frame)
        cats = [s for s in sources if split and s[1].categorical]
        xcat = np.empty((n, len(cats)), dtype=np.int32) if split else None
        for u, (j, term, codes) in enumerate(cats):
            drop = 0 if term.full else 1
            xcat[:, u] = np.where(codes >= drop, codes + (j - drop), -1)
        dense = [s for s in sources if not (split and s[1].categorical)]
        width = len(names) - sum(len(t.columns) for _, t, _ in cats)
        X = np.zeros((n, width))  # fresh pages come zeroed: dummies need only their ones
        step = max(256, BLOCK_BYTES // (8 * max(width, 1)))
        for start in range(0, n, step):
            stop = min(n, start + step)
            block = X[start:stop]
            if self.intercept:
                block[:, 0] = 1.0
            for j, term, values in dense:
                if term.categorical:
                    _write_dummies(block, j, values[start:stop], 0 if term.full else 1)
                    continue
                part = values[start:stop]
                if part.dtype.kind == "f" and not np.isfinite(part).all():
                    _raise_not_finite(term.column, values, frame.index)
                block[:, j] = part
        return X, xcat

    def to_dict(self):
        """The coding as a JSON-ready dict (levels with their dtype); see :meth:`from_dict`."""
        return {"formula": self.formula, "intercept": self.intercept, "names": list(self.names),
                "terms": [{"name": t.name, "column": t.column, "full": t.full,
                           "levels": None if t.levels is None else levels_to_json(
                               t.levels, f"fixed-effect column {t.column!r}")}
                          for t in self.terms]}

    @classmethod
    def from_dict(cls, d, where="coding"):
        """The coding saved by :meth:`to_dict`; ``ValueError`` naming the field if malformed."""
        json_field(d, "formula", str, where)
        intercept = json_field(d, "intercept", bool, where)
        terms = []
        for i, t in enumerate(json_field(d, "terms", list, where)):
            at = f"{where}.terms[{i}]"
            saved = json_field(t, "levels", (dict, type(None)), at)
            terms.append(CodedTerm(json_field(t, "name", str, at), json_field(t, "column", str, at),
                                   None if saved is None else levels_from_json(saved, f"{at}.levels"),
                                   json_field(t, "full", bool, at)))
        from .formula import parse_fixed

        try:
            parsed_intercept, parsed = parse_fixed(d["formula"])
        except ValueError as exc:
            raise ValueError(f"model file: field '{where}.formula': {exc}") from None
        if parsed_intercept != intercept or [(t.name, t.column) for t in parsed] != [
                (t.name, t.column) for t in terms] or any(
                t.forced_categorical and not u.categorical for t, u in zip(parsed, terms)):
            raise ValueError(f"model file: fields '{where}.intercept' and '{where}.terms' do not "
                             f"match the formula in '{where}.formula' ({d['formula']!r})")
        coding = cls(d["formula"], intercept, terms)
        if coding.names != json_field(d, "names", list, where):
            raise ValueError(f"model file: field '{where}.names' does not match the column names "
                             f"its terms give ({coding.names})")
        return coding


# --- fitting levels --------------------------------------------------------------


def _column(frame, name):
    if name not in frame.columns:
        raise DataError(f"unknown column {name!r}; the data have "
                        f"{', '.join(map(repr, list(frame.columns)[:20]))}")
    return frame[name]


def _is_numeric(col):
    return (pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col)) \
        and not pd.api.types.is_complex_dtype(col)


def _refuse_numbers_as_text(name, col):
    """A column used without ``C()`` that holds numbers as objects, or text of which
    most distinct values read as numbers (a CSV column with one stray token), is
    refused: coding it as categorical would be a silent change of model."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return
    uniques = pd.Series(pd.unique(col)).dropna()
    if col.dtype == object and pd.api.types.infer_dtype(uniques) in ("integer", "floating", "mixed-integer-float"):
        raise DataError(f"column {name!r} holds numbers with dtype object: convert it "
                        f"(pd.to_numeric) or write C({name}) to code it as categorical")
    if not len(uniques) or not all(isinstance(v, str) for v in uniques.iloc[:1000]):
        return
    numbers = pd.to_numeric(uniques, errors="coerce")
    if numbers.notna().all():
        raise DataError(f"column {name!r} holds numbers as text (e.g. {uniques.iloc[0]!r}): convert it "
                        f"(pd.to_numeric) or write C({name}) to code it as categorical")
    if numbers.notna().mean() > 0.5:
        odd = uniques[numbers.isna()].iloc[0]
        row = col.index[int(np.argmax((col == odd).to_numpy()))]
        raise DataError(f"column {name!r} reads as numbers except for values such as {odd!r} (first at row "
                        f"{show_value(row)}): fix or drop those rows, or write C({name}) to code it as categorical")


def _fit_levels(name, col):
    """The levels of a categorical column: its categories, or its sorted distinct values."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        levels = col.cat.categories
        codes = col.cat.codes.to_numpy()
        used = np.bincount(codes[codes >= 0], minlength=len(levels))
        if not used.all():
            raise DataError(f"column {name!r}: category {show_value(levels[np.argmin(used)])} does "
                            "not occur in the data; drop unused categories "
                            "(Series.cat.remove_unused_categories()) before fitting")
    else:
        _kind(name, col)  # refuses mixed types before sorting
        levels = pd.Index(pd.unique(col))
        levels = levels[~levels.isna()].sort_values()
    if len(levels) == 0:
        raise DataError(f"column {name!r} has no non-missing value")
    return _plain_levels(name, levels)


def _plain_levels(name, levels):
    """``levels`` as a plain Index of a numpy dtype where the kind has one (int64
    for nullable integers, ...), so that they compare and save alike."""
    if isinstance(levels.dtype, pd.CategoricalDtype):
        levels = levels.astype(levels.dtype.categories.dtype)
    kind = _kind(name, levels)
    if kind in ("int", "float", "bool") and not (isinstance(levels.dtype, np.dtype)
                                                and levels.dtype.kind in "iufb"):
        levels = levels.astype({"int": np.int64, "float": np.float64, "bool": bool}[kind])
    return pd.Index(levels, name=None)


def _kind(name, values):
    """The kind of a column's or index's values (one of LEVEL_KINDS), or DataError."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _kind(name, dtype.categories)
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_string_dtype(dtype) and dtype != object:
        return "str"
    kind = {"i": "int", "u": "int", "f": "float", "M": "datetime", "m": "timedelta"}.get(
        getattr(dtype, "kind", ""))
    if kind is not None and not pd.api.types.is_complex_dtype(dtype):
        return kind
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred == "empty":
        raise DataError(f"column {name!r} has no non-missing value")
    kind = {"string": "str", "integer": "int", "floating": "float", "mixed-integer-float": "float",
            "boolean": "bool", "datetime64": "datetime", "datetime": "datetime",
            "timedelta64": "timedelta", "timedelta": "timedelta"}.get(inferred)
    if kind is None:
        raise DataError(f"column {name!r} holds values of type {inferred!r} (dtype {dtype}); "
                        "categorical columns must hold strings, integers, floats, booleans or "
                        "datetimes, all of one type")
    return kind


# --- coding new data ----------------------------------------------------------------


def _level_codes(term, col):
    """Each row's position in ``term.levels``; DataError for a missing or unseen level."""
    if len(col) == 0:
        return np.empty(0, dtype=np.intp)
    if col.dtype == object and col.isna().all():  # no type to check: report the missing values
        _raise_bad_level(term, col, np.ones(len(col), dtype=bool))
    fitted = _kind(term.column, term.levels)
    kind = _kind(term.column, col)
    if kind != fitted and kind not in _COMPATIBLE.get(fitted, ()):
        raise DataError(f"column {term.column!r} holds {kind} values, but the model was fitted "
                        f"with {fitted} levels ({', '.join(map(show_value, term.levels[:3]))}, ...); "
                        "convert the column to the fitted type")
    if isinstance(col.dtype, pd.CategoricalDtype):
        table = np.append(term.levels.get_indexer(col.cat.categories), -1)
        codes = table[col.cat.codes.to_numpy()]
    else:
        codes = None
        if fitted == "int" and isinstance(col.dtype, np.dtype) and col.dtype.kind in "iu":
            codes = _integer_codes(term.levels.to_numpy(), col.to_numpy())
        if codes is None:
            codes = term.levels.get_indexer(col)
    bad = codes < 0
    if bad.any():
        _raise_bad_level(term, col, bad)
    return codes


def _integer_codes(levels, values):
    """Each of the integer ``values``' position in the integer ``levels`` (-1: not a
    level) from a table over the values' range, one look-up per row (several times
    faster than hashing); None when that range is not compact."""
    if values.size == 0:
        return None
    lo, hi = int(values.min()), int(values.max())
    if hi - lo >= max(1024, values.size) or lo <= -2**62 or hi >= 2**62:
        return None
    table = np.full(hi - lo + 1, -1, dtype=np.intp)
    inside = (levels >= lo) & (levels <= hi)
    table[levels[inside] - lo] = np.flatnonzero(inside)
    return table[np.subtract(values, lo, dtype=np.int64) if lo else values]


def _numeric_values(name, col):
    """A numeric column's values as a numpy array (a view when pandas holds one)."""
    if not _is_numeric(col):
        raise DataError(f"column {name!r} must be numeric, as in the fit; got dtype {col.dtype}")
    if isinstance(col.dtype, np.dtype):
        return col.to_numpy()
    return col.to_numpy(dtype=np.float64, na_value=np.nan)


def _write_dummies(block, first, codes, drop):
    """Ones at column ``first + code - drop`` of each row (the reference level, code 0
    with ``drop=1``, has no column); the block holds zeros there already."""
    rows = np.flatnonzero(codes >= drop) if drop else np.arange(codes.size)
    block[rows, first + codes[rows] - drop] = 1.0


def _raise_not_finite(name, values, index):
    bad = ~np.isfinite(values)
    pos = int(np.flatnonzero(bad)[0])
    raise DataError(f"column {name!r} has {int(bad.sum())} NaN or infinite value(s), first at "
                    f"row {show_value(index[pos])}")


def _raise_bad_level(term, col, bad):
    missing = col.isna().to_numpy()
    if missing.any():
        pos = int(np.flatnonzero(missing)[0])
        raise DataError(f"column {term.column!r} has {int(missing.sum())} missing value(s), first at "
                        f"row {show_value(col.index[pos])}")
    pos = int(np.flatnonzero(bad)[0])
    unseen = pd.unique(col[bad])
    known = ", ".join(map(show_value, term.levels[:10])) + (", ..." if len(term.levels) > 10 else "")
    raise DataError(f"column {term.column!r} has level {show_value(col.iloc[pos])} not seen in the fit "
                    f"(first at row {show_value(col.index[pos])}; {int(bad.sum())} row(s) with "
                    f"{len(unseen)} unseen level(s)); the fitted levels are {known}")


# --- JSON -----------------------------------------------------------------------------


def levels_to_json(levels, what):
    """Level labels as JSON with their kind and dtype, so that :func:`levels_from_json`
    restores them exactly (datetimes as integer ticks of their unit)."""
    try:
        levels = _plain_levels(what, levels)
        kind = _kind(what, levels)
    except DataError as exc:
        raise ValueError(f"the levels of {what} (dtype {levels.dtype}) cannot be saved as JSON; "
                         "convert them to strings or integers before fitting") from exc
    if kind in ("datetime", "timedelta"):
        values = levels.asi8.tolist()
    elif kind == "float":
        values = [float(v) for v in levels]
    else:
        values = levels.tolist()
    return {"kind": kind, "dtype": str(levels.dtype), "values": values}


_JSON_TYPES = {"str": {str}, "int": {int}, "float": {int, float}, "bool": {bool},
               "datetime": {int}, "timedelta": {int}}


def levels_from_json(saved, where):
    """The pandas Index that :func:`levels_to_json` saved; ValueError naming ``where``."""
    kind = json_field(saved, "kind", str, where)
    if kind not in LEVEL_KINDS:
        raise ValueError(f"model file: field '{where}.kind' is {kind!r}, not one of {LEVEL_KINDS}")
    values = json_field(saved, "values", list, where)
    dtype = json_field(saved, "dtype", str, where)
    if not set(map(type, values)) <= _JSON_TYPES[kind]:  # exact types: a bool is no int here
        raise ValueError(f"model file: field '{where}.values' must hold only {kind} values")
    try:
        if kind in ("datetime", "timedelta"):
            target = pd.api.types.pandas_dtype(dtype)
            unit = getattr(target, "unit", None) or np.datetime_data(target)[0]
            ticks = np.asarray(values, dtype=np.int64).view(f"{'M' if kind == 'datetime' else 'm'}8[{unit}]")
            index = pd.Index(ticks)
            tz = getattr(target, "tz", None)
            index = index.tz_localize("UTC").tz_convert(tz) if tz is not None else index
        elif kind == "str":
            index = pd.Index(values, dtype=object if dtype == "object" else None)
        else:
            index = pd.Index(np.asarray(values, dtype=dtype))
    except (TypeError, ValueError, OverflowError, NotImplementedError) as exc:
        raise ValueError(f"model file: field '{where}' cannot be read as {kind} levels of "
                         f"dtype {dtype!r}: {exc}") from exc
    if kind != "str" and _kind(where, index) != kind:
        raise ValueError(f"model file: field '{where}.dtype' ({dtype!r}) is not a {kind} dtype")
    if not index.is_unique:
        raise ValueError(f"model file: field '{where}.values' repeats a level")
    return index


def json_field(d, key, types, where=None):
    """``d[key]``, checked to be of ``types`` (bool is not an int here); ValueError
    naming the field (``where.key``) otherwise."""
    name = f"{where}.{key}" if where else key
    if not isinstance(d, dict):
        raise ValueError(f"model file: field '{where or '(top level)'}' must be an object, "
                         f"got {type(d).__name__}")
    if key not in d:
        raise ValueError(f"model file: field '{name}' is missing")
    value = d[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise ValueError(f"model file: field '{name}' has the wrong type ({type(value).__name__})")
    return value
