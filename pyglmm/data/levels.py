"""Matching the labels of new rows to a fitted factor's levels, whatever their dtypes.

A label matches a level when both are the same value once written in the
fitted levels' type, converted only where that is lossless and unambiguous:

* numbers match numbers by value (``3``, ``3.0`` and ``np.int32(3)`` are one
  label; ``3.5`` matches no integer level); a float beyond 2**53 is refused
  for integer levels of that size, which it cannot name exactly;
* strings given for numeric levels match the number's canonical spelling
  (``"3"`` for 3, ``"2.5"`` for 2.5, ``"3"`` or ``"3.0"`` for 3.0); a string
  that reads as a number another way (``"03"``, or ``"3.0"`` for the integer
  3) is refused, not taken for a new level;
* numbers given for string levels match the strings that spell a number
  canonically (``3`` matches ``"3"``); they are refused when two fitted
  strings spell one number (``"3"`` and ``"3.0"``) or when a fitted string
  reads as a number only through its own spelling (``"007"``: a CSV reader
  that dropped the zeros would leave those groups unmatched);
* datetimes match datetimes whatever their resolution; strings given for
  datetime levels (and datetimes for string levels) are read as ISO 8601;
* booleans match booleans (and the strings ``"True"`` and ``"False"``);
* categoricals match by their categories' values, in either role.

Any other pairing is refused with a :class:`~pyglmm.exceptions.DataError`
naming the factor and showing a fitted and a given label, and so are labels
matched through their spelling (strings for numbers or datetimes, or the
reverse) of which not one matches a level (:meth:`FactorLevels.check_spelled`,
after the last chunk): a type mismatch never turns into scoring every row at
the population level.
"""

import math

import numpy as np
import pandas as pd
from pandas.api import types as pdt

from ..exceptions import DataError
from .validation import show_value

EXACT = 2**53  # float64 holds every integer of at most this magnitude
_INFERRED = {"string": "str", "integer": "int", "floating": "float", "mixed-integer-float": "float",
             "boolean": "bool", "datetime64": "datetime", "datetime": "datetime", "empty": "empty"}


def label_kind(values):
    """'int', 'float', 'str', 'bool', 'datetime', 'datetimetz' (time-zone aware), 'category',
    'empty' (all missing) or 'other'."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pdt.is_bool_dtype(dtype):
        return "bool"
    if pdt.is_integer_dtype(dtype):
        return "int"
    if pdt.is_float_dtype(dtype):
        return "float"
    if pdt.is_datetime64_any_dtype(dtype):
        return "datetimetz" if isinstance(dtype, pd.DatetimeTZDtype) else "datetime"
    if isinstance(dtype, pd.StringDtype) or getattr(dtype, "kind", None) in ("U", "S"):
        return "str"
    if dtype == object:
        return _INFERRED.get(pdt.infer_dtype(values, skipna=True), "other")
    return "other"


class FactorLevels:
    """One factor's fitted levels; :meth:`ids` maps new labels to global level ids.

    Level ``g`` of the factor has global id ``base + g`` (its row in the
    concatenated table of random effects); an unseen level or a missing label
    gets -1.  Lookups are built once per label type and reused for every chunk.
    ``spelled`` counts the present labels matched through their spelling and
    how many of them matched.
    """

    def __init__(self, factor, levels, base):
        if isinstance(levels, pd.CategoricalIndex):
            levels = pd.Index(levels.astype(levels.categories.dtype))
        self.factor, self.levels, self.base = factor, pd.Index(levels), int(base)
        self.kind = label_kind(self.levels)
        # integer levels a float cannot hold exactly (no np.abs: it wraps at int64's minimum)
        self.big_ints = self.kind == "int" and bool(np.any((self.levels > EXACT) | (self.levels < -EXACT)))
        self._lookups = {}
        self.spelled = {"labels": 0, "matched": 0, "example": None}

    def ids(self, values):
        """int32 global ids of one chunk of labels (array-like or Series), -1 where unseen."""
        values, kind, missing = _normalised(values)
        if kind == "category":
            return self._via_codes(values.cat.codes.to_numpy(), values.cat.categories, values)
        if kind == "str" and isinstance(values, pd.Series) and isinstance(values.dtype, pd.StringDtype):
            codes, uniques = pd.factorize(values)  # several times faster than hashing every row
            return self._via_codes(codes, pd.Index(uniques), values)
        if kind == "float" and self.big_ints:
            self._check_exact(values)
        lookup, spelled = self._lookup(kind, values)
        ids = lookup(values)
        if missing is not None:
            ids[missing] = -1
        if spelled:
            self._count_spelled(ids, values)
        return ids

    def _check_exact(self, values):
        """Float labels for integer levels beyond 2**53 must not be matched: there a float
        stands for several integers (2**60 + 1 reads as 2**60)."""
        beyond = np.abs(values) > EXACT
        if beyond.any():
            raise DataError(f"grouping column {self.factor!r}: the label {show_value(values[np.argmax(beyond)])} "
                            "is a float beyond 2**53, which cannot name one of the fitted integer levels "
                            "exactly; read the column as integers (e.g. a nullable Int64 column)")

    def _via_codes(self, codes, uniques, values):
        """Ids of labels given as codes into ``uniques`` (-1: missing)."""
        kind = label_kind(uniques)
        lookup, spelled = self._lookup(kind, uniques)
        ids = np.append(lookup(uniques.to_numpy() if kind in ("int", "float") else uniques), -1)
        ids = ids.astype(np.int32, copy=False)[codes]
        if spelled:
            self._count_spelled(ids, values)
        return ids

    def _lookup(self, kind, values):
        """(function labels -> ids, whether labels are matched through their spelling)
        for labels of ``kind``."""
        if kind not in self._lookups:
            spelled = kind != self.kind and "str" in (kind, self.kind)
            self._lookups[kind] = ((_nothing, False) if kind == "empty" else
                                   (self._build(kind, values), spelled))
        return self._lookups[kind]

    def _build(self, kind, values):
        fitted = self.kind
        positions = np.arange(len(self.levels), dtype=np.int64)
        if fitted in ("int", "float") and kind in ("int", "float"):
            return _numeric_lookup(self.levels.to_numpy(), positions, self.base, kind)
        if fitted == "str" and kind in ("int", "float"):
            keys, pos = self._numbers_in_strings(values)
            return _numeric_lookup(keys, pos, self.base, kind)
        if fitted in ("int", "float", "bool") and kind == "str":
            keys, pos = _spellings(self.levels)
            spelled = _keyed(pd.Index(keys, dtype=object), pos, self.base)
            return spelled if fitted == "bool" else lambda labels: self._numbers_spelled(spelled, labels)
        if fitted in ("datetime", "datetimetz") and kind == "str":
            native = _keyed(self.levels, positions, self.base)
            return lambda labels: native(self._dates(labels))
        if fitted == "str" and kind == "datetime":
            keys, pos = self._dates_in_strings(values)
            return _keyed(pd.DatetimeIndex(keys), pos, self.base)
        if fitted == kind or (fitted == "other" and kind != "bool"):
            return _keyed(self.levels, positions, self.base)
        raise self._mismatch(_about(values), "cannot be matched to")

    def _numbers_spelled(self, lookup, labels):
        """Ids of string labels for numeric levels.  A label that reads as a number but
        matched no level, and is either not that number's canonical spelling (``"007"``)
        or spells a fitted level's value another way (``"7.0"`` for 7), is refused rather
        than taken for an unseen level."""
        ids = lookup(labels)
        unmatched = (ids < 0) & ~np.asarray(pd.isna(labels))
        if unmatched.any():
            given = pd.Series(np.asarray(labels, dtype=object)[unmatched]).drop_duplicates()
            numbers = pd.to_numeric(given, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            values = np.where(np.isfinite(numbers), numbers, 0.5)  # 0.5: a stand-in that is never read
            fitted = self._lookup("float", values)[0](values) >= 0
            odd = np.isfinite(numbers) & (np.array([_canonical_number(v) is None for v in given]) | fitted)
            if odd.any():
                raise DataError(f"grouping column {self.factor!r}: the label {given[odd].iloc[0]!r} reads as "
                                f"the number {numbers[odd][0].item()!r} but is not how the fitted levels "
                                f"({self.levels.dtype}, e.g. {show_value(self.levels[0])}) write it; "
                                "convert the column to the fitted type")
        return ids

    def _numbers_in_strings(self, values):
        """Fitted string levels that spell a number canonically, as (numbers, positions).
        A level that reads as a number only through another spelling (``"007"``) makes
        numbers unmatchable: the data may have lost its spelling (a CSV reader drops
        leading zeros), so they are refused."""
        keys, pos, seen = [], [], {}
        for g, s in enumerate(self.levels):
            x = _canonical_number(s)
            if x is None:
                if _reads_as_number(s):
                    raise DataError(f"grouping column {self.factor!r}: numbers cannot be matched to its "
                                    f"fitted levels, which are strings such as {s!r} that read as numbers "
                                    "only through their own spelling (leading zeros, signs, exponents); "
                                    "read the column as strings (e.g. dtype=str)")
                continue
            if x in seen:
                raise DataError(f"grouping column {self.factor!r}: numbers cannot be matched to its "
                                f"fitted levels {seen[x]!r} and {s!r}, which both read as {x!r}; "
                                "give the labels as strings")
            seen[x] = s
            keys.append(x)
            pos.append(g)
        if not keys:
            raise self._mismatch(_about(values), "never match")
        return np.asarray(keys, dtype=np.float64), np.asarray(pos, dtype=np.int64)

    def _dates_in_strings(self, values):
        """Fitted string levels that read as ISO 8601 datetimes, as (datetimes, positions)."""
        dates = pd.to_datetime(pd.Series(self.levels, dtype=object), format="ISO8601", errors="coerce")
        ok = dates.notna().to_numpy()
        if not ok.any():
            raise self._mismatch(_about(values), "never match")
        twice = dates[ok].duplicated(keep=False).to_numpy()
        if twice.any():
            a, b = self.levels[ok][twice][:2]
            raise DataError(f"grouping column {self.factor!r}: datetimes cannot be matched to its "
                            f"fitted levels {a!r} and {b!r}, which both read as "
                            f"{dates[ok][twice].iloc[0]}; give the labels as strings")
        return dates[ok].to_numpy(), np.flatnonzero(ok)

    def _dates(self, labels):
        """String labels read as ISO 8601 datetimes (for datetime levels)."""
        try:
            return pd.DatetimeIndex(pd.to_datetime(pd.Series(labels, dtype=object), format="ISO8601"))
        except (ValueError, TypeError) as exc:
            raise DataError(f"grouping column {self.factor!r}: its fitted levels are datetimes "
                            f"(e.g. {show_value(self.levels[0])}) and a label of the data cannot be "
                            f"read as one: {str(exc).splitlines()[0]}") from None

    def _count_spelled(self, ids, values):
        present = ~np.asarray(pd.isna(values))
        labels = int(np.count_nonzero(present))
        count = self.spelled
        if labels and count["example"] is None:
            count["example"] = _about(values)
        count["labels"] += labels
        count["matched"] += int(np.count_nonzero(ids >= 0))

    def check_spelled(self):
        """Raise if labels were matched through their spelling and not one matched a level
        (call after the last chunk)."""
        count = self.spelled
        if count["labels"] and not count["matched"]:
            raise self._mismatch(count["example"], "do not match")

    def _mismatch(self, about, verb):
        """The error for labels of the wrong type, with a fitted and a given label; ``about``
        (from :func:`_about`) describes the given labels."""
        return DataError(f"grouping column {self.factor!r}: its labels in the data ({about}) "
                         f"{verb} the fitted levels ({self.levels.dtype}, e.g. "
                         f"{show_value(self.levels[0])}); convert the column to the fitted type")


def label_text(label):
    """A label's text as sites compare it across their own dtypes: a number by its
    value (``3``, ``3.0`` and ``np.int32(3)`` are ``"3"``; ``2.5`` is ``"2.5"``),
    anything else by ``str``."""
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        if isinstance(label, float) and math.isfinite(label) and label == int(label) and abs(label) < 2**63:
            return str(int(label))
        return repr(label) if isinstance(label, float) else str(label)
    return str(label)


def _about(values):
    """'dtype, e.g. label' of a chunk of labels (its first present label)."""
    present = ~np.asarray(pd.isna(values))
    dtype = values.dtype
    given = (f"{dtype.categories.dtype} categories" if isinstance(dtype, pd.CategoricalDtype)
             else str(dtype))
    return given + (f", e.g. {show_value(item(values, int(np.argmax(present))))}" if present.any() else "")


def item(values, i):
    """The ``i``-th label of a chunk (a Series, Index or array)."""
    return values.iloc[i] if isinstance(values, pd.Series) else values[i]


def _nothing(values):
    return np.full(len(values), -1, dtype=np.int32)


def _normalised(values):
    """(labels as a Series or ndarray with a concrete kind, that kind, the mask of missing
    labels that the labels no longer show, or None).  Numbers become numpy arrays of their
    own type (integers stay integers, whatever their size; missing ones are masked)."""
    if not isinstance(values, (pd.Series, np.ndarray)):
        values = pd.Series(values, copy=False) if isinstance(values, (pd.Index, pd.Categorical)) \
            else np.asarray(values)
    kind, missing = label_kind(values), None
    if kind in ("int", "float") and values.dtype == object:
        values = pd.to_numeric(pd.Series(values, copy=False), dtype_backend="numpy_nullable")
    if kind in ("int", "float") and isinstance(values, pd.Series):
        if isinstance(values.dtype, np.dtype):
            values = values.to_numpy()
        else:  # a nullable type
            missing = values.isna().to_numpy()
            values = values.to_numpy(dtype=values.dtype.numpy_dtype, na_value=0)
            missing = missing if missing.any() else None
    elif kind == "datetime" and values.dtype == object:
        values = pd.to_datetime(pd.Series(values, copy=False))
    return values, label_kind(values) if kind in ("int", "float", "datetime") else kind, missing


def _canonical_number(s):
    """The number that string ``s`` spells canonically (``"3"``, ``"2.5"``, ``"3.0"``), else None."""
    if not isinstance(s, str):
        return None
    try:
        x = float(s)
    except ValueError:
        return None
    if not math.isfinite(x):
        return None
    if s == repr(x) or (x == int(x) and s == str(int(x))):
        return x
    return None


def _reads_as_number(s):
    try:
        return isinstance(s, str) and math.isfinite(float(s))
    except ValueError:
        return False


def _spellings(levels):
    """String spellings of numeric or boolean levels, as (strings, positions): str(v) for
    integers and booleans, repr and (when integral) the integer's digits for floats."""
    keys, pos = [], []
    for g, v in enumerate(levels.tolist()):
        forms = {str(v)} if not isinstance(v, float) else {repr(v)} | (
            {str(int(v))} if math.isfinite(v) and v == int(v) else set())
        keys += forms
        pos += [g] * len(forms)
    return keys, np.asarray(pos, dtype=np.int64)


def _keyed(keys, positions, base):
    """Hash lookup: labels -> ids through ``keys.get_indexer``."""
    ids = np.append(positions + base, -1).astype(np.int32)

    def lookup(values):
        return ids[keys.get_indexer(values)]
    return lookup


def _numeric_lookup(keys, positions, base, given):
    """Lookup of numeric labels (ndarray of kind ``given``) among numeric ``keys``."""
    keys = np.asarray(keys)
    if keys.dtype == np.uint64 and keys.size and keys.max() >= 2**63:  # beyond int64: pandas compares
        return _keyed(pd.Index(keys), positions, base)
    integral = keys.dtype.kind in "iub" or bool(
        np.all(np.isfinite(keys)) and np.all(keys == np.trunc(keys)) and np.all(np.abs(keys) < 2.0**63))
    if integral:
        ints = _int_lookup(keys.astype(np.int64), positions, base)
        if given == "int":
            return ints

        def from_floats(values):  # integral floats only; NaN and 3.5 match nothing
            ok = (values == np.trunc(values)) & (np.abs(values) < 2.0**63)
            ids = ints(np.where(ok, values, keys[0]).astype(np.int64))
            ids[~ok] = -1
            return ids
        return from_floats
    floats = _keyed(pd.Index(keys.astype(np.float64)), positions, base)
    if given == "float":
        return floats

    def from_ints(values):  # beyond 2**53 an integer has no exact float
        ids = floats(values.astype(np.float64))
        ids[np.abs(values) > EXACT] = -1
        return ids
    return from_ints


def _int_lookup(keys, positions, base):
    """Integer labels -> ids: a dense table over the keys' range when it is at most
    a few times the number of keys, else a hash lookup."""
    if not len(keys):
        return _nothing
    lo, hi = int(keys.min()), int(keys.max())
    span = hi - lo + 1
    if span > 4 * len(keys) + 65536:
        return _keyed(pd.Index(keys), positions, base)
    table = np.full(span + 1, -1, dtype=np.int32)  # table[span]: every label out of range
    table[keys - lo] = positions + base

    def lookup(values):
        # label - lo as uint64 is in [0, span) only for labels in [lo, hi]: one below lo is
        # huge, and one that wraps around int64 lands at span or beyond, either way
        offset = np.subtract(values, lo, dtype=np.int64).view(np.uint64)
        np.minimum(offset, span, out=offset)
        ids = table[offset.view(np.int64)]
        if values.dtype == np.uint64:  # beyond int64, cast to negatives above
            ids[values > np.uint64(2**63 - 1)] = -1
        return ids
    return lookup
