"""pyglmm's fixed-effects coding: the same columns, names and numbers as formulaic's
model matrix for every supported term, the same coding again from a saved
coding, and a clear error (naming column, level, row or term) for anything
it cannot code identically."""

import json
import re
import subprocess
import sys

import formulaic
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import pyglmm
from pyglmm import DataError
from pyglmm.data.coding import FixedCoding
from pyglmm.data.design import build_design
from pyglmm.families import get_family


@pytest.fixture
def frame():
    rng = np.random.default_rng(1)
    n = 60
    return pd.DataFrame({
        "x": rng.standard_normal(n),
        "k": rng.integers(-2, 3, n),                                    # int, numeric
        "s": rng.choice(["lo", "mid", "hi"], n),                        # str dtype
        "o": rng.choice(["u", "v", "w"], n).astype(object),             # object
        "c": pd.Categorical(rng.choice(["z", "y", "x"], n), categories=["z", "y", "x"]),
        "ci": pd.Categorical(rng.choice([30, 10, 20], n), categories=[30, 10, 20]),
        "b": rng.random(n) < 0.4,                                       # bool, numeric 0/1
        "f": rng.choice([0.5, 1.5, 2.25], n),
        "d": pd.Timestamp("2026-03-01") + pd.to_timedelta(rng.integers(0, 3, n), unit="D"),
        "ni": pd.array(rng.integers(0, 5, n), dtype="Int64"),           # nullable int, numeric
    }, index=np.arange(500, 500 + n))


FORMULAS = [
    "x", "k", "s", "o", "c", "ci", "b", "C(k)", "C(s)", "C(c)", "C(b)", "C(f)", "C(d)", "ni",
    "x + s + c + b", "0 + s", "s - 1", "0 + c + s", "x - 1 + o + C(k)", "-1 + b + C(f) + s",
    "1 + 0 + s", "0 + 1 + s", "x + x + s", "C(s) + o", "C( k )",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_same_columns_names_and_numbers_as_formulaic(frame, formula):
    expected = formulaic.model_matrix(formula, frame)
    coding = FixedCoding.from_data(formula, frame)
    X = coding.matrix(frame)
    assert coding.names == list(expected.columns)
    assert X.dtype == np.float64 and X.flags.c_contiguous and X.shape == expected.shape
    np.testing.assert_array_equal(X, expected.to_numpy(dtype=np.float64))


def expand(X, xcat, p):
    """The dense matrix of (X, xcat) as Design.xcat describes it: X's columns, then a 1
    at each row's dummy columns."""
    full = np.zeros((X.shape[0], p))
    full[:, : X.shape[1]] = X
    for u in range(xcat.shape[1]):
        has = xcat[:, u] >= 0
        full[np.flatnonzero(has), xcat[has, u]] = 1.0
    return full


@pytest.mark.parametrize("formula", FORMULAS)
def test_split_holds_the_matrix_with_categoricals_as_codes(frame, formula):
    coding = FixedCoding.from_data(formula, frame)
    p = len(coding.names)
    X, xcat = coding.split(frame)
    assert X.flags.c_contiguous and X.dtype == np.float64
    assert xcat.flags.c_contiguous and xcat.dtype == np.int32
    categoricals = [t for t in coding.terms if t.categorical and t.columns]
    assert xcat.shape == (len(frame), len(categoricals))
    assert X.shape[1] == p - sum(len(t.columns) for t in categoricals)
    full = expand(X, xcat, p)  # columns in design order: dense first
    assert sorted(coding.design_names) == sorted(coding.names)
    assert [coding.design_names[j] for j in coding.coef_order] == coding.names
    np.testing.assert_array_equal(full[:, coding.coef_order], coding.matrix(frame))


@pytest.mark.parametrize("formula", FORMULAS)
def test_saved_coding_codes_new_rows_identically(frame, formula):
    coding = FixedCoding.from_data(formula, frame)
    back = FixedCoding.from_dict(json.loads(json.dumps(coding.to_dict())))
    assert back == coding and back.names == coding.names
    new = frame.sample(frac=1.0, random_state=3).iloc[:25]  # other rows, other order, fewer levels
    np.testing.assert_array_equal(back.matrix(new), coding.matrix(frame).take(
        frame.index.get_indexer(new.index), axis=0))


def test_levels_keep_their_type_through_json(frame):
    utc = frame.assign(t=frame.d.dt.tz_localize("UTC").dt.tz_convert("Europe/Paris"))
    coding = FixedCoding.from_data("C(k) + s + C(b) + C(f) + C(d) + ci + C(t)", utc)
    back = FixedCoding.from_dict(json.loads(json.dumps(coding.to_dict())))
    for t, u in zip(coding.terms, back.terms):
        pd.testing.assert_index_equal(u.levels, t.levels, exact=False)
        assert u.levels.dtype == t.levels.dtype or t.levels.dtype == object, t.name
    assert [t.levels[0] for t in back.terms] == [-2, "hi", False, 0.5, pd.Timestamp("2026-03-01"),
                                                 30, pd.Timestamp("2026-03-01", tz="UTC").tz_convert("Europe/Paris")]


@pytest.mark.parametrize("write", ["matrix", "split"])
def test_unseen_level_names_column_level_and_row(frame, write):
    coding = FixedCoding.from_data("x + C(s) + c", frame)
    new = frame.copy()
    new["s"] = new.s.astype(object)
    new.loc[507, "s"] = "extra"
    new.loc[509, "s"] = "extra"
    with pytest.raises(DataError, match=r"column 's' has level 'extra' not seen in the fit \(first at "
                                        r"row 507; 2 row\(s\)"):
        getattr(coding, write)(new)
    cat = frame.assign(c=pd.Categorical(frame.c.astype(str).where(frame.index != 530, "q")))
    with pytest.raises(DataError, match=r"column 'c' has level 'q' not seen in the fit \(first at row 530"):
        getattr(coding, write)(cat)


def test_no_rows_give_an_empty_matrix(frame):
    coding = FixedCoding.from_data("x + C(k) + o + c", frame)
    X = coding.matrix(frame.iloc[:0])
    assert X.shape == (0, len(coding.names)) and X.flags.c_contiguous


def test_missing_and_non_finite_values_name_column_and_row(frame):
    coding = FixedCoding.from_data("x + C(s) + ni", frame)
    bad = frame.copy()
    bad.loc[512, "x"] = np.inf
    with pytest.raises(DataError, match=r"column 'x' has 1 NaN or infinite value\(s\), first at row 512"):
        coding.matrix(bad)
    with pytest.raises(DataError, match=r"column 'x' has 1 NaN or infinite value\(s\), first at row 512"):
        coding.split(bad)
    bad = frame.copy()
    bad.loc[520, "ni"] = pd.NA
    with pytest.raises(DataError, match=r"column 'ni' has 1 NaN or infinite value\(s\), first at row 520"):
        coding.matrix(bad)
    bad = frame.assign(s=frame.s.where(frame.index != 503))
    with pytest.raises(DataError, match=r"column 's' has 1 missing value\(s\), first at row 503"):
        coding.matrix(bad)
    with pytest.raises(DataError, match=r"column 's' has 3 missing value\(s\), first at row 510"):
        coding.matrix(frame.iloc[10:13].assign(s=None))


def test_dtype_accidents_are_refused_or_exact(frame):
    ints = FixedCoding.from_data("C(k)", frame)
    with pytest.raises(DataError, match=r"column 'k' holds str values, but the model was fitted with "
                                        r"int levels \(-2, -1, 0, \.\.\.\)"):
        ints.matrix(frame.assign(k=frame.k.astype(str)))
    # integral floats are the same numbers: coded exactly as the ints were
    np.testing.assert_array_equal(ints.matrix(frame.assign(k=frame.k.astype(float))), ints.matrix(frame))
    with pytest.raises(DataError, match=r"column 'k' has level 0\.5 not seen in the fit"):
        ints.matrix(frame.assign(k=np.where(frame.index == 501, 0.5, frame.k)))
    strings = FixedCoding.from_data("s", frame)
    with pytest.raises(DataError, match=r"column 's' holds int values, but the model was fitted with str"):
        strings.matrix(frame.assign(s=np.arange(len(frame))))
    bools = FixedCoding.from_data("C(b)", frame)
    with pytest.raises(DataError, match=r"column 'b' holds int values, but the model was fitted with bool"):
        bools.matrix(frame.assign(b=frame.b.astype(int)))
    numeric = FixedCoding.from_data("x", frame)
    with pytest.raises(DataError, match=r"column 'x' must be numeric, as in the fit; got dtype str"):
        numeric.matrix(frame.assign(x=frame.x.astype(str)))
    with pytest.raises(DataError, match=r"unknown column 'x'"):
        numeric.matrix(frame.drop(columns="x"))


def test_columns_that_cannot_be_coded_are_refused_at_fit(frame):
    with pytest.raises(DataError, match=r"column 'd' has dtype datetime64.*write C\(d\)"):
        FixedCoding.from_data("x + d", frame)
    mixed = frame.assign(m=pd.Series([1, "a"] * 30, index=frame.index, dtype=object))
    with pytest.raises(DataError, match=r"column 'm' holds values of type 'mixed-integer'"):
        FixedCoding.from_data("m", mixed)
    unused = frame.assign(c=frame.c.cat.add_categories("never"))
    with pytest.raises(DataError, match=r"column 'c': category 'never' does not occur in the data"):
        FixedCoding.from_data("c", unused)
    with pytest.raises(DataError, match="the data have no rows"):
        FixedCoding.from_data("x", frame.iloc[:0])


@pytest.mark.parametrize("term", ["a:b", "a*b", "np.log(x)", "I(x**2)", "center(x)", "scale(x)",
                                  "poly(x, 2)", "bs(x, df=3)", "C(s, contr.sum)",
                                  "C(s, levels=['a', 'b'])", "{x + 1}", "x**2", "(x + k)", "2", "Q('x')"])
def test_unsupported_terms_are_refused_naming_the_term(frame, term):
    with pytest.raises(ValueError, match=re.escape(f"the fixed-effect term {term!r} is not supported")):
        pyglmm.glmm(f"y ~ x + {term} + (1|g)", frame.assign(y=1, g=1))


def test_removing_a_named_term_is_refused():
    with pytest.raises(ValueError, match=r"the fixed-effect term '- x' is not supported"):
        FixedCoding.from_data("x + k - x", pd.DataFrame({"x": [1.0], "k": [2]}))
    with pytest.raises(ValueError, match=r"'- 0' is ambiguous"):
        FixedCoding.from_data("x - 0", pd.DataFrame({"x": [1.0]}))


def test_malformed_saved_coding_names_the_field(frame):
    good = FixedCoding.from_data("x + C(k) + s", frame).to_dict()
    cases = [
        (lambda d: d.pop("terms"), r"field 'coding\.terms' is missing"),
        (lambda d: d.update(intercept="yes"), r"field 'coding\.intercept' has the wrong type \(str\)"),
        (lambda d: d["terms"][1]["levels"].update(kind="pickle"), r"field 'coding\.terms\[1\]\.levels\.kind'"),
        (lambda d: d["terms"][1]["levels"].update(values=[1, "2"]),
         r"field 'coding\.terms\[1\]\.levels\.values' must hold only int values"),
        (lambda d: d["terms"][2]["levels"].update(values=["a", "a"]),
         r"field 'coding\.terms\[2\]\.levels\.values' repeats a level"),
        (lambda d: d["terms"][1]["levels"].update(dtype="datetime64[ns]"),
         r"field 'coding\.terms\[1\]\.levels\.dtype' \('datetime64\[ns\]'\) is not a int dtype"),
        (lambda d: d["names"].append("extra"), r"field 'coding\.names' does not match"),
        (lambda d: d["terms"][0].update(levels=[1, 2]), r"field 'coding\.terms\[0\]\.levels' has the wrong type"),
        (lambda d: d["terms"][1].update(column="x"), r"'coding\.terms' do not match the formula"),
        (lambda d: d["terms"][1].update(levels=None), r"'coding\.terms' do not match the formula"),
        (lambda d: d.update(intercept=False), r"'coding\.intercept' and 'coding\.terms' do not match"),
        (lambda d: d.update(formula="x + np.log(k)"), r"field 'coding\.formula': the fixed-effect term 'np\.log\(k\)'"),
    ]
    for corrupt, message in cases:
        d = json.loads(json.dumps(good))
        corrupt(d)
        with pytest.raises(ValueError, match=message):
            FixedCoding.from_dict(d)


def test_design_with_codes_sorted_by_client_equals_the_dense_design_sorted(backend, monkeypatch):
    df = pyglmm.simulate_stitchfix(3000, 400, 60, seed=2, as_frame=True)
    coding = FixedCoding.from_data("C(client_fit) + edgy + boho + chest + dress + material", df)
    monkeypatch.setattr("pyglmm.data.design.SORT_ABOVE_BYTES", 0)  # force the reordering
    args = dict(response_name="y", kern=pyglmm.backends.kernels(backend), nthreads=2, index=df.index)
    groups = {"client": df.client, "item": df.item}
    X, xcat = coding.split(df)
    lazy = build_design(X, df.y.to_numpy(), groups, get_family("binomial"), **args, xcat=xcat,
                        feature_names=coding.design_names, coef_order=coding.coef_order)
    eager = build_design(coding.matrix(df), df.y.to_numpy(), groups, get_family("binomial"), **args,
                         feature_names=coding.names)
    assert lazy.order is not None and not np.array_equal(lazy.order, np.arange(len(df)))
    np.testing.assert_array_equal(lazy.order, eager.order)
    for field in ("y", "codes", "counts", "offsets"):
        np.testing.assert_array_equal(getattr(lazy, field), getattr(eager, field), err_msg=field)
    ix = lazy.coef_order
    np.testing.assert_array_equal(expand(lazy.X, lazy.xcat, lazy.p)[:, ix], eager.X)
    np.testing.assert_allclose(lazy.XtX[np.ix_(ix, ix)], eager.XtX, rtol=1e-13)
    np.testing.assert_array_equal(eager.X, coding.matrix(df)[lazy.order])
    assert lazy.X.flags.c_contiguous and lazy.X.shape[1] == 5 and lazy.xcat.shape[1] == 2


def test_stitchfix_frame_codes_as_formulaic_and_as_the_arrays():
    df = pyglmm.simulate_stitchfix(4000, 500, 80, seed=1, as_frame=True)
    assert {c: str(df[c].dtype) for c in ("client_fit", "material", "item_fit", "edgy", "client")} == {
        "client_fit": "category", "material": "category", "item_fit": "category", "edgy": "bool",
        "client": "int32"}
    fixed = "C(client_fit) + edgy + boho + chest + dress + C(material) + C(item_fit)"
    expected = formulaic.model_matrix(fixed, df)
    coding = FixedCoding.from_data(fixed, df)
    assert len(coding.names) == 34 and coding.names == list(expected.columns)
    np.testing.assert_array_equal(coding.matrix(df), expected.to_numpy(dtype=np.float64))
    X, y, groups, names = pyglmm.simulate_stitchfix(4000, 500, 80, seed=1)
    np.testing.assert_array_equal(X, expected.to_numpy(dtype=np.float64))
    assert names == [n.replace("C(", "").replace(")", "") for n in coding.names]
    np.testing.assert_array_equal(y, df.y) and np.testing.assert_array_equal(groups["client"], df.client)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_random_frames_and_formulas_match_formulaic(data):
    n = data.draw(st.integers(1, 30))
    pick = lambda values: data.draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))  # noqa: E731
    frame = pd.DataFrame({
        "a": pick(["p", "q", "r", "s"]),
        "i": np.array(pick([3, 1, 2, 7]), dtype=np.int64),
        "x": np.array(data.draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n))),
        "b": np.array(pick([True, False])),
    })
    frame["cat"] = pd.Categorical(frame.a, categories=list(dict.fromkeys(data.draw(st.permutations(
        sorted(set(frame.a)))))))
    terms = data.draw(st.lists(st.sampled_from(["a", "C(i)", "x", "b", "cat", "C(b)", "i"]),
                               min_size=1, max_size=4))
    formula = data.draw(st.sampled_from(["", "0 + ", "-1 + "])) + " + ".join(terms)
    expected = formulaic.model_matrix(formula, frame)
    coding = FixedCoding.from_data(formula, frame)
    assert coding.names == list(expected.columns)
    np.testing.assert_array_equal(coding.matrix(frame), expected.to_numpy(dtype=np.float64))


def test_formula_fit_predict_save_and_load_never_import_formulaic(tmp_path):
    code = (
        "import sys, numpy as np, pandas as pd, pyglmm\n"
        "rng = np.random.default_rng(0); n = 400\n"
        "df = pd.DataFrame({'x': rng.standard_normal(n), 'cat': rng.choice(['a', 'b'], n),"
        " 'g': rng.integers(0, 12, n), 'y': rng.integers(0, 2, n)})\n"
        "res = pyglmm.glmm('y ~ x + C(cat) + (1|g)', df)\n"
        f"res.save({str(tmp_path / 'm.json')!r}); back = pyglmm.load({str(tmp_path / 'm.json')!r})\n"
        "back.predict(df)\n"
        "print('formulaic' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64]),
       st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=12, unique=True),
       st.lists(st.integers(0, 12), min_size=1, max_size=300), st.integers(-200, 200))
def test_integer_columns_coded_by_table_as_by_hashing(dtype, levels, picks, shift):
    """Integer level codes from a table over the range (or by hashing when the range is
    wide): each row's level position, -1 for a value that is no level."""
    from pyglmm.data.coding import _integer_codes

    info = np.iinfo(dtype)
    levels = sorted({min(max(v + shift, info.min), info.max) for v in levels})
    values = np.array([levels[p] if p < len(levels) else min(max(shift + p, info.min), info.max)
                       for p in picks], dtype=dtype)
    index = pd.Index(np.array(levels, dtype=np.int64))
    codes = _integer_codes(index.to_numpy(), values)
    expected = index.get_indexer(values.astype(np.int64))
    if codes is None:  # a wide range: hashing instead
        assert int(values.max()) - int(values.min()) >= max(1024, values.size)
    else:
        np.testing.assert_array_equal(codes, expected)


def test_integer_codes_of_a_narrow_dtype_over_a_wide_range():
    """int16 values from -20,000 to 20,000: their offsets from the minimum pass
    int16's range (computed in int64, not wrapped)."""
    from pyglmm.data.coding import _integer_codes

    values = np.random.default_rng(0).integers(-20_000, 20_001, 50_000).astype(np.int16)
    levels = np.unique(values).astype(np.int64)[::3]
    codes = _integer_codes(levels, values)
    np.testing.assert_array_equal(codes, pd.Index(levels).get_indexer(values.astype(np.int64)))


@pytest.mark.parametrize("values,message", [
    (["1", "2", "?", "3"] * 5, r"column 'dose' reads as numbers except for values such as '\?' \(first at row 2\)"),
    (["1", "2", "3"] * 5, r"column 'dose' holds numbers as text \(e.g. '1'\)"),
    (pd.Series([1.5, 2.0, 3.25] * 5, dtype=object), r"column 'dose' holds numbers with dtype object"),
])
def test_numbers_read_as_text_are_refused_without_C(values, message):
    """A CSV column with one stray token would otherwise become a categorical silently."""
    frame = pd.DataFrame({"dose": values})
    with pytest.raises(DataError, match=message):
        FixedCoding.from_data("dose", frame)
    assert FixedCoding.from_data("C(dose)", frame).names[1].startswith("C(dose)[T.")  # asked for: categorical
    words = pd.DataFrame({"dose": ["low", "high", "1"] * 5})  # text with a number among words: categorical
    assert len(FixedCoding.from_data("dose", words).names) == 3
