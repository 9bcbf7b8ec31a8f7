"""Tampered and malformed model files: load refuses numbers a fit cannot produce and
fields that contradict each other, with a DataError naming the file, the field and
the entry; valid files of every engine and format version still load; the JSON
output is strict (non-finite numbers as null)."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import DataError, SeparationWarning
from pyglmm.results import io

NAN, INF = float("nan"), float("inf")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    g1, g2 = rng.integers(0, 20, n), rng.integers(0, 15, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    eta = -0.3 + 0.5 * x1 - 0.2 * x2 + rng.normal(0, 0.8, 20)[g1] + rng.normal(0, 0.5, 15)[g2]
    return pd.DataFrame({"y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float), "x1": x1,
                         "x2": x2, "g1": np.char.add("L", g1.astype(str)), "g2": g2,
                         "cat": rng.choice(list("abc"), n), "o": rng.normal(0, 0.1, n)})


@pytest.fixture(scope="module")
def fits():
    """One fit per engine and kind of model file."""
    df = _data()
    sep = df.assign(x3=(df.x1 > 1).astype(float))
    sep.loc[sep.x3 == 1, "y"] = 1.0
    slopes = pd.read_csv(FIXTURES / "agq_slopes_binomial.csv")
    sleep = pd.read_csv(FIXTURES / "sleepstudy.csv")
    X = df[["x1", "x2"]].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeparationWarning)
        separated = pyglmm.glmm("y ~ x1 + x3 + (1|g1) + (1|g2)", sep)
    out = {
        "crossed": (pyglmm.glmm("y ~ x1 + cat + (1|g1) + (1|g2)", df), df),
        "offset": (pyglmm.glmm("y ~ x1 + (1|g1)", df, offset="o", nagq=3), df),
        "separated": (separated, sep),
        "arrays": (pyglmm.glmm_from_arrays(X, df.y, {"g1": df.g1, "g2": df.g2}), None),
        "slopes": (pyglmm.glmm("y ~ x + t + (1 + t|g)", slopes), slopes),
        "ridge": (pyglmm.ridge_lmm("Reaction ~ Days + (Days | Subject)", sleep), sleep),
        "summaries": (pyglmm.fit_summaries([pyglmm.site_summary(
            df.rename(columns={"g1": "cluster"}), "y ~ x1 + cat", "cluster", 2)]), None),
    }
    assert out["separated"][0].separation == ["x3"]
    return out


def _saved(res):
    """The model file's dict, as a JSON parser reads it back (null for non-finite)."""
    return json.loads(io.dumps(io.to_dict(res, full=True)))


def _load_text(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    return pyglmm.load(path)


def _predicts_as(back, res, data):
    if data is not None:
        np.testing.assert_array_equal(back.predict(data), res.predict(data))


@pytest.mark.parametrize("name", ["crossed", "offset", "separated", "arrays", "slopes", "ridge",
                                  "summaries"])
def test_valid_files_of_every_engine_and_version_load(fits, tmp_path, name):
    res, data = fits[name]
    res.save(tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the file"))
    back = pyglmm.load(tmp_path / "m.json")
    assert type(back) is type(res) and back.separation == res.separation
    pd.testing.assert_series_equal(back.coef, res.coef, check_exact=True)
    if res.cov is not None:  # NaN only in the separated rows and columns, read back from null
        pd.testing.assert_frame_equal(back.cov, res.cov, check_exact=True)
    _predicts_as(back, res, data)
    # version 3 wrote non-finite numbers as Python's NaN and Infinity tokens
    v3 = {**io.to_dict(res, full=True), "format_version": 3}
    back = _load_text(tmp_path, json.dumps(v3))
    if res.cov is not None:
        pd.testing.assert_frame_equal(back.cov, res.cov, check_exact=True)
    _predicts_as(back, res, data)
    if res.engine == "crossed":  # version 2: the crossed engine's, without the engine's name
        v3.pop("engine")
        _predicts_as(_load_text(tmp_path, json.dumps({**v3, "format_version": 2})), res, data)


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(d):
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
    return edit


def _both(*edits):
    def edit(d):
        for e in edits:
            e(d)
    return edit


# (fit, edit, the message after "bad.json: model file: ")
TAMPERED = [
    ("crossed", _set("coef", "x1", NAN), r"field 'coef' entry 'x1' is nan, not a finite number"),
    ("crossed", _set("coef", "cat[T.b]", -INF), r"field 'coef' entry 'cat\[T\.b\]' is -inf, not a finite"),
    ("crossed", _set("coef", "x1", None), r"field 'coef' must map names to numbers"),
    ("crossed", _set("random_effects", "g1", "mode", 3, NAN),
     r"field 'random_effects\.g1\.mode' entry for level 'L11' is nan, not a finite number"),
    ("crossed", _set("random_effects", "g2", "cond_var", 0, -5.0),
     r"field 'random_effects\.g2\.cond_var' entry for level 0 is -5\.0, not a finite number >= 0"),
    ("crossed", _set("random_effects", "g2", "cond_var", 1, INF),
     r"field 'random_effects\.g2\.cond_var' entry for level 1 is inf"),
    ("crossed", _set("sigma", "g1", -1.0), r"field 'sigma' entry 'g1' is -1\.0, not a finite number >= 0"),
    ("crossed", _set("sigma", "g2", NAN), r"field 'sigma' entry 'g2' is nan"),
    ("crossed", _set("dispersion", -1.0), r"field 'dispersion' is -1\.0, not a finite number >= 0"),
    ("crossed", _set("dispersion", INF), r"field 'dispersion' is inf, not a finite number"),
    ("crossed", _set("cov", 0, 1, NAN), r"field 'cov' entry \('Intercept', 'x1'\) is nan, not a "
                                          r"finite number \(only the rows and columns of the columns in "
                                          r"'separation' may be NaN\)"),
    ("crossed", _set("cov", 2, 2, None), r"field 'cov' entry \('cat\[T\.b\]', 'cat\[T\.b\]'\) is nan"),
    ("crossed", _set("cov", 0, 1, 99.0), r"field 'cov' is not symmetric: entry \('Intercept', 'x1'\) "
                                           r"is 99\.0, but \('x1', 'Intercept'\) is "),
    ("crossed", _set("cov", 1, 1, -0.5), r"field 'cov' entry \('x1', 'x1'\) is -0\.5, not a number >= 0"),
    ("separated", _set("cov", 0, 1, NAN), r"field 'cov' entry \('Intercept', 'x1'\) is nan"),
    ("separated", _set("separation", ["x9"]),
     r"field 'separation' names \['x9'\], which are not coefficients"),
    ("separated", _set("separation", []), r"field 'cov' entry \('Intercept', 'x3'\) is nan"),
    ("crossed", _set("family", "poisson"), r"field 'link' is 'logit', but pyglmm fits the poisson family "
                                           r"with the log link only"),
    ("crossed", _set("link", "probit"), r"field 'link' is 'probit', but pyglmm fits the binomial family "
                                        r"with the logit link only"),
    ("crossed", _set("family", "gamma"),
     r"field 'family' is 'gamma', not one of binomial, poisson, gaussian"),
    ("crossed", _set("dispersion_mode", "guess"), r"field 'dispersion_mode' is 'guess'"),
    ("crossed", _set("formula", "y ~ x2 + cat + (1|g1) + (1|g2)"),
     r"field 'formula' \('y ~ x2 \+ cat \+ \(1\|g1\) \+ \(1\|g2\)'\) has the fixed part 'x2 \+ cat', but "
     r"'coding\.formula' is 'x1 \+ cat'"),
    ("crossed", _set("formula", "y ~ x1 + cat + (1|g1)"),
     r"field 'formula' \(.*\) has the grouping factors \['g1'\], but 'random_effects' holds \['g1', 'g2'\]"),
    ("crossed", _set("formula", "y ~ x1 + cat + (1|g2) + (1|g1)"),
     r"field 'formula' .* has the grouping factors \['g2', 'g1'\]"),
    ("crossed", _set("formula", "y ~ x1 + cat + (1 + x2|g1) + (1|g2)"),
     r"field 'random_effects\.g1\.terms' is \['\(Intercept\)'\], but the formula .* gives the factor 'g1' "
     r"the effects \['\(Intercept\)', 'x2'\]"),
    ("crossed", _set("formula", "not a formula"), r"field 'formula': formula must look like"),
    ("crossed", _set("coding", None), r"field 'formula' is 'y ~ x1 \+ cat \+ \(1\|g1\) \+ \(1\|g2\)', but a "
                                      r"fit from arrays with the coefficients in 'coef'"),
    ("arrays", _set("formula", "y ~ 1 + x2 + x1 + (1|g1) + (1|g2)"),
     r"field 'formula' is 'y ~ 1 \+ x2 \+ x1"),
    ("crossed", _set("offset_name", "x2"), r"field 'offset_name' is 'x2', but 'has_offset' is false"),
    ("offset", _set("has_offset", False), r"field 'offset_name' is 'o', but 'has_offset' is false"),
    ("crossed", _set("n_obs", 0), r"field 'n_obs' is 0, not an integer >= 1"),
    ("crossed", _set("iterations", -1), r"field 'iterations' is -1, not an integer >= 0"),
    ("crossed", _set("timings", {"design": "fast"}), r"field 'timings' must map names to numbers"),
    # random slopes: the q x q covariance, the effects, the formula's random part
    ("slopes", _both(_set("random_effects", "g", "cov", 0, 1, 5.0),
                     _set("random_effects", "g", "cov", 1, 0, 5.0)),  # correlation 5
     r"field 'random_effects\.g\.cov' is not a covariance matrix \(not positive semi-definite: smallest "
     r"eigenvalue -[0-9.]+; variances .*, correlation of '\(Intercept\)' and 't' [0-9.]+\)"),
    ("slopes", _set("random_effects", "g", "cov", 0, 1, 0.1),
     r"field 'random_effects\.g\.cov' is not symmetric: entry \('\(Intercept\)', 't'\) is 0\.1"),
    ("slopes", _set("random_effects", "g", "cov", 1, 1, NAN),
     r"field 'random_effects\.g\.cov' entry \('t', 't'\) is nan, not a finite number"),
    ("slopes", _set("random_effects", "g", "mode", 2, 1, INF),
     r"field 'random_effects\.g\.mode' entry for level 3, effect 't' is inf, not a finite number"),
    ("slopes", _set("random_effects", "g", "cond_var", 0, 0, -1e-3),
     r"field 'random_effects\.g\.cond_var' entry for level 1, effect '\(Intercept\)' is -0\.001"),
    ("slopes", _set("sigma", "g:t", 0.5),
     r"field 'sigma' entry 'g:t' is 0\.5, but the covariance in 'random_effects' gives the standard "
     r"deviation 0\.80"),
    ("slopes", _set("random_effects", "g", "terms", ["(Intercept)", "x"]),
     r"field 'sigma' names \['g', 'g:t'\], but the effects in 'random_effects' are \['g', 'g:x'\]"),
    ("slopes", lambda d: (_set("random_effects", "g", "terms", ["(Intercept)", "x"])(d),
                          d.update(sigma={"g": d["sigma"]["g"], "g:x": d["sigma"]["g:t"]})),
     r"field 'random_effects\.g\.terms' is \['\(Intercept\)', 'x'\], but the formula "
     r"\('y ~ x \+ t \+ \(1 \+ t\|g\)'\) gives the factor 'g' the effects \['\(Intercept\)', 't'\]"),
    ("slopes", _set("formula", "y ~ x + t + (1 + x|g)"),
     r"field 'random_effects\.g\.terms' is \['\(Intercept\)', 't'\], but the formula "
     r"\('y ~ x \+ t \+ \(1 \+ x\|g\)'\) gives the factor 'g' the effects \['\(Intercept\)', 'x'\]"),
    ("ridge", _set("formula", "Reaction ~ Days + (1 | Subject)"),
     r"field 'random_effects\.Subject\.terms' is \['\(Intercept\)', 'Days'\], but the formula"),
    ("summaries", _set("link", "probit"), r"field 'link' is 'probit'"),
]


@pytest.mark.parametrize("name,edit,message", TAMPERED)
def test_tampered_files_are_refused_naming_the_field_and_set(fits, tmp_path, name, edit, message):
    res, _ = fits[name]
    d = _saved(res)
    edit(d)
    with pytest.raises(DataError, match=r"bad\.json: model file: " + message):
        _load_text(tmp_path, json.dumps(d))  # NaN and infinities as Python's tokens, None as null


@pytest.mark.parametrize("content,why", [
    ("[" * 100_000 + "]" * 100_000, r"not a pyglmm model file \(JSON nested too deeply\)"),
    (b"\xff\xfe{\"format\": 1}", r"not a pyglmm model file \(not UTF-8 text: 'utf-8' codec can't decode"),
    ('{"format_version": ' + "9" * 5000 + "}", r"not a pyglmm model file \(not JSON: "),
    ("{not json", r"not a pyglmm model file \(not JSON: "),
])
def test_malformed_files_give_a_data_error_naming_the_file(tmp_path, content, why):
    path = tmp_path / "broken.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=rf"^{path}: {why}"):
        pyglmm.load(path)


def _strict(text):
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_with_null_for_non_finite_numbers(fits, tmp_path):
    res, data = fits["separated"]
    assert math.isnan(res.bse["x3"])
    brief = _strict(res.to_json())
    assert brief["se"]["x3"] is None and brief["se"]["x1"] == res.bse["x1"]
    full = _strict(res.to_json(tmp_path / "full.json", full=True))
    assert full["cov"][0][2] is None and full["cov"][0][1] == res.cov.iloc[0, 1]
    assert _strict((tmp_path / "full.json").read_text()) == full
    back = pyglmm.load(tmp_path / "full.json")  # to_json(full=True) is a model file: null reads as NaN
    pd.testing.assert_frame_equal(back.cov, res.cov, check_exact=True)
    _predicts_as(back, res, data)
    res, _ = fits["summaries"]  # its deviance and Pearson statistic are NaN
    d = _strict(res.to_json(full=True))
    assert d["deviance"] is None and d["pearson_chi2"] is None
    assert math.isnan(io.from_dict(d).deviance)


def test_dumps_writes_null_only_for_non_finite_floats():
    value = {"a": [1.5, NAN, -INF, INF, 0, True, None, "NaN"], "b": (np.float64(NAN), np.float64(2.0))}
    assert _strict(io.dumps(value)) == {"a": [1.5, None, None, None, 0, True, None, "NaN"], "b": [None, 2.0]}
    assert io.dumps({"a": [1.5]}) == json.dumps({"a": [1.5]})
    assert _strict(io.dumps([[1e308, 1e308], [2**70, NAN]])) == [[1e308, 1e308], [2**70, None]]  # sum overflows
