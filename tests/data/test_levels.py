"""Matching new labels to a factor's fitted levels (pyglmm.data.levels), lookup by lookup."""

import re

import numpy as np
import pandas as pd
import pytest

from pyglmm.data.levels import FactorLevels
from pyglmm.exceptions import DataError

BASE = 100  # the factor's first global id


def want(levels, labels):
    """Global ids by pandas' exact matching (for labels of the levels' own dtype)."""
    local = pd.Index(levels).get_indexer(pd.Index(labels))
    return np.where(local >= 0, local + BASE, -1)


@pytest.mark.parametrize("scale", [1, 7, 10**9], ids=["dense", "dense-strided", "hashed"])
def test_integer_lookups_match_pandas(scale):
    rng = np.random.default_rng(0)
    levels = np.unique(rng.integers(-500, 500, 300)) * scale
    labels = np.concatenate([rng.choice(levels, 2000), rng.integers(-800, 800, 500) * scale,
                             [levels.min() - 1, levels.max() + 1, np.iinfo(np.int64).min,
                              np.iinfo(np.int64).max]])
    fl = FactorLevels("g", pd.Index(levels), BASE)
    got = fl.ids(labels)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want(levels, labels))
    assert (got >= 0).sum() >= 2000
    # the same labels as other integer types and as integral floats give the same ids
    np.testing.assert_array_equal(fl.ids(pd.Series(labels)), got)
    np.testing.assert_array_equal(fl.ids(labels.astype(object)), got)
    small = labels[np.abs(labels) < 2**31]
    np.testing.assert_array_equal(fl.ids(small.astype(np.int32)), want(levels, small))
    exact = labels[(labels >= -2**53) & (labels <= 2**53)]  # not np.abs: it wraps at int64's minimum
    np.testing.assert_array_equal(fl.ids(exact.astype(np.float64)), want(levels, exact))


def test_floats_beyond_2_53_are_refused_for_integer_levels():
    """2**60 + 1 read as a float is 2**60: it would silently take that level's effect."""
    fl = FactorLevels("user", pd.Index([2**60, 2**60 + 1, 7]), BASE)
    np.testing.assert_array_equal(fl.ids(np.array([2**60 + 1, 7])), [BASE + 1, BASE + 2])
    np.testing.assert_array_equal(fl.ids(np.array([7.0, 2.0**53])), [BASE + 2, -1])
    with pytest.raises(DataError, match=r"grouping column 'user': the label 1\.152921504606847e\+18 is a "
                                        r"float beyond 2\*\*53"):
        fl.ids(np.array([7.0, 2.0**60]))


def test_numbers_are_refused_for_string_levels_spelled_otherwise():
    """Zero-padded ids read back from a CSV as numbers would match "10".."19" and leave
    "000".."009" at the population level: refused instead."""
    fl = FactorLevels("store", pd.Index([f"{i:03d}" for i in range(10)] + [str(i) for i in range(10, 20)]), BASE)
    with pytest.raises(DataError, match=r"grouping column 'store': numbers cannot be matched .* such as '000'"):
        fl.ids(np.arange(20))
    np.testing.assert_array_equal(fl.ids(np.array(["007", "15", "new"], dtype=object)), [BASE + 7, BASE + 15, -1])


def test_strings_spelling_a_number_otherwise_are_refused_for_numeric_levels():
    fl = FactorLevels("g", pd.Index([1, 7, 30]), BASE)
    np.testing.assert_array_equal(fl.ids(np.array(["7", "30", "new", None], dtype=object)), [BASE + 1, BASE + 2, -1, -1])
    for label in ("007", "7.0", "+7"):
        with pytest.raises(DataError, match=rf"grouping column 'g': the label {re.escape(repr(label))} reads as "
                                            r"the number 7\.0 but is not how the fitted levels \(int64"):
            fl.ids(np.array(["1", label], dtype=object))


def test_integer_extremes_and_unsigned():
    top, bottom = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    fl = FactorLevels("g", pd.Index([-1, 0, 5, 9]), BASE)  # uint64 2^64-1 is -1 as int64
    labels = np.array([5, 2**64 - 1, 2**63, 9, 0], dtype=np.uint64)
    np.testing.assert_array_equal(fl.ids(labels), [BASE + 2, -1, -1, BASE + 3, BASE + 1])
    far = FactorLevels("g", pd.Index([bottom, top]), BASE)  # no dense table over 2^64 values
    np.testing.assert_array_equal(far.ids(np.array([top, 0, bottom])), [BASE + 1, -1, BASE])
    # dense tables at both ends of int64: label - lo wraps around for far labels
    high = FactorLevels("g", pd.Index([top - 9, top - 3, top]), BASE)
    np.testing.assert_array_equal(high.ids(np.array([bottom, bottom + 9, top, top - 3, -1, 0])),
                                  [-1, -1, BASE + 2, BASE + 1, -1, -1])
    low = FactorLevels("g", pd.Index([bottom, bottom + 4]), BASE)
    np.testing.assert_array_equal(low.ids(np.array([top, top - 4, bottom + 4, bottom, 0])),
                                  [-1, -1, BASE + 1, BASE, -1])


def test_missing_integers_are_masked_not_rounded():
    big = 2**53
    fl = FactorLevels("g", pd.Index([big, big + 1, 7, 0]), BASE)  # 0: what a missing one reads as
    want = [BASE + 1, -1, BASE, BASE + 2]
    np.testing.assert_array_equal(fl.ids(pd.Series([big + 1, None, big, 7], dtype="Int64")), want)
    np.testing.assert_array_equal(fl.ids(np.array([big + 1, None, big, 7], dtype=object)), want)
    np.testing.assert_array_equal(fl.ids(pd.Series([big + 1, None, big, 7], dtype="int64[pyarrow]")), want)
    np.testing.assert_array_equal(fl.ids(pd.Series([7.0, None, 0.0], dtype="Float64")), [BASE + 2, -1, BASE + 3])


def test_floats_match_integer_levels_by_value_only():
    fl = FactorLevels("g", pd.Index([1, 2, 3]), BASE)
    got = fl.ids(np.array([3.0, 2.5, np.nan, np.inf, -np.inf, 1.0, 1e300, 2.0**63]))
    np.testing.assert_array_equal(got, [BASE + 2, -1, -1, -1, -1, BASE, -1, -1])


def test_integers_beyond_2_53_do_not_round_onto_float_levels():
    fl = FactorLevels("g", pd.Index([0.5, 2.0**53]), BASE)
    np.testing.assert_array_equal(fl.ids(np.array([2**53, 2**53 + 1, 0])), [BASE + 1, -1, -1])


def test_strings_spelling_numbers():
    ints = FactorLevels("g", pd.Index([3, 10, 42]), BASE)
    np.testing.assert_array_equal(ints.ids(["42", "3", "7", "x", None]), [BASE + 2, BASE, -1, -1, -1])
    for other in ("03", "3.0", " 3", "1e1", "07"):  # another spelling of a fitted level, or of a number
        with pytest.raises(DataError, match=rf"grouping column 'g': the label {re.escape(repr(other))} reads as"):
            ints.ids(["42", other])
    floats = FactorLevels("g", pd.Index([2.5, 3.0]), BASE)
    np.testing.assert_array_equal(floats.ids(["3", "3.0", "2.5", "4"]), [BASE + 1, BASE + 1, BASE, -1])
    with pytest.raises(DataError, match=r"the label '2\.50' reads as the number 2\.5"):
        floats.ids(["2.50"])
    strings = FactorLevels("g", pd.Index(["2.5", "3", "a"]), BASE)
    np.testing.assert_array_equal(strings.ids(np.array([3, 7, 2])), [BASE + 1, -1, -1])
    np.testing.assert_array_equal(strings.ids(np.array([2.5, 3.0, np.nan])), [BASE, BASE + 1, -1])


def test_categoricals_match_by_their_categories():
    fl = FactorLevels("g", pd.Index([1, 2, 3]), BASE)
    cat = pd.Series(pd.Categorical(["3", None, "9", "1"], categories=["9", "3", "1", "5"]))
    np.testing.assert_array_equal(fl.ids(cat), [BASE + 2, -1, -1, BASE])
    fitted_cat = FactorLevels("g", pd.CategoricalIndex(["a", "b"]), BASE)
    np.testing.assert_array_equal(fitted_cat.ids(["b", "c", "a"]), [BASE + 1, -1, BASE])
    np.testing.assert_array_equal(fitted_cat.ids(pd.Series(["b", "a"], dtype="category")), [BASE + 1, BASE])


def test_booleans_and_datetimes():
    fl = FactorLevels("g", pd.Index([False, True]), BASE)
    np.testing.assert_array_equal(fl.ids(pd.Series([True, None, False])), [BASE + 1, -1, BASE])
    np.testing.assert_array_equal(fl.ids(["True", "false"]), [BASE + 1, -1])
    days = pd.DatetimeIndex(["2026-01-01", "2026-01-02"])
    fl = FactorLevels("g", days, BASE)
    np.testing.assert_array_equal(fl.ids(days[::-1].astype("datetime64[s]")), [BASE + 1, BASE])
    np.testing.assert_array_equal(fl.ids(["2026-01-02", "2026-01-01T00:00:00", "2026-01-03", None]),
                                  [BASE + 1, BASE, -1, -1])
    strings = FactorLevels("g", pd.Index(["2026-01-01", "b"]), BASE)
    np.testing.assert_array_equal(strings.ids(days), [BASE, -1])


@pytest.mark.parametrize("levels,labels,pieces", [
    ([1, 2], [True, False], ["cannot be matched", "bool", "e.g. True", "int64", "e.g. 1"]),
    ([1, 2], ["a", "b"], ["do not match", "e.g. 'a'", "e.g. 1"]),
    (["a", "b"], [1, 2], ["never match", "int64, e.g. 1", "e.g. 'a'"]),
    (["3", "3.0"], [3], ["'3' and '3.0'", "both read as 3.0"]),
    ([False, True], [0, 1], ["cannot be matched", "e.g. 0", "e.g. False"]),
    (pd.DatetimeIndex(["2026-01-01"]), [20260101], ["cannot be matched", "e.g. 20260101"]),
    (pd.DatetimeIndex(["2026-01-01"]), pd.DatetimeIndex(["2026-01-01"], tz="UTC"),
     ["cannot be matched", "UTC"]),
    (pd.DatetimeIndex(["2026-01-01"]), ["yesterday"], ["cannot be read as one", "yesterday"]),
    (["2026-01-01", "2026-01-01T00:00"], pd.DatetimeIndex(["2026-01-01"]), ["both read as"]),
    ([1, 2], pd.Series(["a", None], dtype="category"), ["do not match", "e.g. 'a'"]),
])
def test_labels_of_an_unmatchable_type_are_refused(levels, labels, pieces):
    fl = FactorLevels("user", pd.Index(levels), BASE)
    with pytest.raises(DataError, match="grouping column 'user'") as err:
        fl.ids(labels)
        fl.check_spelled()  # labels spelled otherwise: refused once no chunk matched
    for piece in pieces:
        assert piece in str(err.value), (piece, str(err.value))


def test_spelled_labels_are_refused_only_when_no_chunk_matched():
    fl = FactorLevels("g", pd.Index([1, 2, 3]), BASE)
    np.testing.assert_array_equal(fl.ids(["x", "9"]), [-1, -1])  # a chunk of new (or misspelt) labels
    np.testing.assert_array_equal(fl.ids(pd.Series(["2", None], dtype="category")), [BASE + 1, -1])
    fl.check_spelled()  # one label matched over the chunks: the others are new levels
    assert fl.spelled["labels"] == 3 and fl.spelled["matched"] == 1
    fresh = FactorLevels("g", pd.Index([1, 2, 3]), BASE)
    fresh.ids(["x", "9"])
    fresh.ids([None])
    with pytest.raises(DataError, match=r"grouping column 'g': its labels in the data \(<U1, e.g. 'x'\) "
                                        r"do not match the fitted levels \(int64, e.g. 1\)"):
        fresh.check_spelled()
    numbers = FactorLevels("g", pd.Index([1, 2, 3]), BASE)  # numbers match by value: no spelling
    np.testing.assert_array_equal(numbers.ids(np.array([99.0])), [-1])
    numbers.check_spelled()


def test_all_missing_or_no_rows_is_not_a_type_error():
    fl = FactorLevels("g", pd.Index([1, 2]), BASE)
    np.testing.assert_array_equal(fl.ids([None, None]), [-1, -1])
    np.testing.assert_array_equal(fl.ids(pd.Series([np.nan, np.nan])), [-1, -1])
    assert fl.ids(np.array([], dtype=object)).size == 0
    assert fl.ids(pd.Series([], dtype="str")).size == 0


def test_label_text_compares_numbers_by_value():
    from pyglmm.data.levels import label_text

    assert [label_text(v) for v in (3, 3.0, np.int32(3), np.float32(3.0), 2.5, "3", "3.0", True, 2.0**60)] == \
        ["3", "3", "3", "3", "2.5", "3", "3.0", "True", str(2**60)]
