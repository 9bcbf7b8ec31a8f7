"""Model files: a versioned JSON document that load reads back exactly, without
pickle and without running code; clear errors for newer or malformed files."""

import json
import re
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import DataError
from pyglmm.results import io

FORMULA = "y ~ x + s + C(k) + c + (1|gc) + (1|gi) + (1|gs) + (1|gd)"


def _data(n=2400, seed=7):
    rng = np.random.default_rng(seed)
    gi = rng.integers(100, 130, n)
    gs = rng.choice([f"shop-{i}" for i in range(25)], n)
    days = rng.integers(0, 20, n)
    gc = rng.integers(0, 15, n)
    df = pd.DataFrame({
        "x": rng.standard_normal(n),
        "s": rng.choice(["red", "green", "blue"], n),
        "k": rng.choice([4, 2, 9], n),
        "c": pd.Categorical(rng.choice(["small", "large", "medium"], n),
                            categories=["small", "medium", "large"]),
        "gc": pd.Categorical.from_codes(gc, categories=[f"L{i}" for i in range(15)][::-1]),
        "gi": gi,
        "gs": gs,
        "gd": pd.Timestamp("2025-12-30 06:00") + pd.to_timedelta(days, unit="D"),
    })
    effects = [rng.normal(0, s, q) for s, q in ((0.8, 15), (0.6, 30), (0.7, 25), (0.5, 20))]
    df["y"] = (0.3 + 0.5 * df.x + (df.s == "red") - 0.5 * (df.k == 9) + 0.8 * (df.c == "large")
               + effects[0][gc] + effects[1][gi - 100] + effects[2][np.char.partition(
                   gs.astype(str), "-")[:, 2].astype(int)] + effects[3][days]
               + rng.normal(0, 1.0, n))
    return df


@pytest.fixture(scope="module")
def fitted():
    df = _data()
    return df, pyglmm.glmm(FORMULA, df, family="gaussian")


def test_round_trip_is_exact_and_predicts_identically(fitted, tmp_path):
    df, res = fitted
    assert list(res.coef.index) == ["Intercept", "x", "s[T.green]", "s[T.red]", "C(k)[T.4]",
                                    "C(k)[T.9]", "c[T.medium]", "c[T.large]"]
    path = tmp_path / "model.json"
    res.save(path)
    back = pyglmm.load(path)
    pd.testing.assert_series_equal(back.coef, res.coef, check_exact=True)
    pd.testing.assert_frame_equal(back.cov, res.cov, check_exact=True)
    pd.testing.assert_series_equal(back.sigma, res.sigma, check_exact=True, check_names=False)
    assert back.dispersion == res.dispersion and back.deviance == res.deviance
    for f in res.factor_names:
        pd.testing.assert_series_equal(back.b[f], res.b[f], check_exact=True, check_index_type=False)
        pd.testing.assert_series_equal(back.b_var[f], res.b_var[f], check_exact=True,
                                       check_index_type=False)
    assert back.b["gi"].index.dtype.kind == "i" and back.b["gd"].index.dtype == res.b["gd"].index.dtype
    assert list(back.b["gc"].index) == [f"L{i}" for i in range(15)][::-1]  # the category order
    assert back.coding == res.coding and back.coding.names == list(res.coef.index)
    assert np.isinf(res.history.rel_change.iloc[0])  # JSON has no infinity: null, read as NaN
    pd.testing.assert_frame_equal(back.history, res.history.replace(np.inf, np.nan), check_exact=True)
    assert str(back) == str(res)
    new = _data(500, seed=8)  # new rows; categorical columns arrive as other dtypes
    new["gc"] = new.gc.astype(str)
    new["c"] = new.c.astype(object)
    np.testing.assert_array_equal(back.predict(new), res.predict(new))
    np.testing.assert_array_equal(back.predict(df, type="response"), res.predict(df, type="response"))


def test_predict_refuses_an_unseen_fixed_effect_level_after_load(fitted, tmp_path):
    df, res = fitted
    new = df.head(30).copy()
    new.loc[12, "s"] = "purple"
    message = r"column 's' has level 'purple' not seen in the fit \(first at row 12"
    with pytest.raises(DataError, match=message):
        res.predict(new)
    res.save(tmp_path / "m.json")
    back = pyglmm.load(tmp_path / "m.json")
    with pytest.raises(DataError, match=message):
        back.predict(new)
    new = df.head(30).assign(k=df.k.head(30).astype(str))
    with pytest.raises(DataError, match=r"column 'k' holds str values, but the model was fitted with int"):
        back.predict(new)


def test_load_never_unpickles(fitted, tmp_path, monkeypatch):
    _, res = fitted
    path = tmp_path / "model.json"
    res.save(path)
    text = path.read_text()
    d = json.loads(text)  # plain JSON
    assert d["format"] == "pyglmm-model" and d["format_version"] == io.FORMAT_VERSION
    assert "pickle" not in text.lower() and "gAS" not in text  # no (base64) pickle stream
    source = Path(io.__file__).read_text()
    assert "import pickle" not in source and "allow_pickle" not in source

    def refuse(*args, **kwargs):
        raise AssertionError("load unpickled something")
    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    back = pyglmm.load(path)
    assert back.coef.equals(res.coef)


def test_array_fits_round_trip_without_coding(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 2))
    groups = {"g": rng.integers(0, 20, 500), "h": rng.choice(["a", "b", "c", "d", "e"], 500)}
    h = {"a": 0.6, "b": -0.5, "c": 0.1, "d": 0.9, "e": -0.8}
    y = (X @ [0.5, -0.2] + rng.normal(0, 0.7, 20)[groups["g"]] + np.vectorize(h.get)(groups["h"])
         + rng.normal(0, 0.5, 500))
    res = pyglmm.glmm_from_arrays(X, y, groups, family="gaussian", offset=np.full(500, 0.25))
    res.save(tmp_path / "a.json")
    back = pyglmm.load(tmp_path / "a.json")
    assert back.coding is None and back.has_offset
    np.testing.assert_array_equal(back.predict(X=X, groups=groups, offset=np.zeros(500)),
                                  res.predict(X=X, groups=groups, offset=np.zeros(500)))


def test_newer_version_and_old_pickle_format_are_refused(fitted, tmp_path):
    _, res = fitted
    d = io.to_dict(res, full=True)
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**d, "format_version": io.FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match=rf"m.json: model file format version {io.FORMAT_VERSION + 1} "
                                         rf"is newer than this pyglmm reads \(up to {io.FORMAT_VERSION}\)"):
        pyglmm.load(path)
    path.write_text(json.dumps({**d, "format_version": 1}))
    with pytest.raises(ValueError, match=r"format version 1 is no longer read \(it stored the coding as a pickle\)"):
        pyglmm.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"m.json: not a pyglmm model file \(not JSON"):
        pyglmm.load(path)
    path.write_text(json.dumps({"coef": {}}))
    with pytest.raises(ValueError, match=r'not a pyglmm model file \(no "format": "pyglmm-model"\)'):
        pyglmm.load(path)


@pytest.mark.parametrize("corrupt,message", [
    (lambda d: d.pop("coef"), r"field 'coef' is missing"),
    (lambda d: d["coef"].update(x="0.5"), r"field 'coef' must map names to numbers"),
    (lambda d: d["cov"].pop(), r"field 'cov' must be a 8 x 8 matrix"),
    (lambda d: d["cov"][2].append(1.0), r"field 'cov' must be a list of 8 numbers"),
    (lambda d: d.update(dispersion=None), r"field 'dispersion' must be a number"),
    (lambda d: d.update(converged="yes"), r"field 'converged' has the wrong type \(str\)"),
    (lambda d: d.update(n_obs=2.5), r"field 'n_obs' has the wrong type \(float\)"),
    (lambda d: d["random_effects"]["gs"]["mode"].pop(), r"field 'random_effects\.gs\.mode' must be a list of 25"),
    (lambda d: d["random_effects"]["gd"]["levels"].update(kind="object"),
     r"field 'random_effects\.gd\.levels\.kind' is 'object'"),
    (lambda d: d["random_effects"]["gi"]["levels"]["values"].__setitem__(0, "x"),
     r"field 'random_effects\.gi\.levels\.values' must hold only int values"),
    (lambda d: d["n_levels"].update(gi=3), r"field 'n_levels\.gi' is 3, but 'random_effects\.gi\.levels' holds 30"),
    (lambda d: d["sigma"].pop("gs"), r"fields 'sigma' and 'random_effects' must name the same factors"),
    (lambda d: d["n_levels"].pop("gs"), r"fields 'n_levels' and 'random_effects' must name the same factors"),
    (lambda d: d.update(engine="nope"), r"field 'engine' is 'nope', which this pyglmm does not know"),
    (lambda d: d["coding"]["terms"][0].pop("column"), r"field 'coding\.terms\[0\]\.column' is missing"),
    (lambda d: d["coding"]["names"].reverse(), r"field 'coding\.names' does not match"),
    (lambda d: d.update(warnings=[1]), r"field 'warnings' must be a list of strings"),
])
def test_malformed_files_name_the_field(fitted, tmp_path, corrupt, message):
    _, res = fitted
    d = json.loads(json.dumps(io.to_dict(res, full=True)))
    corrupt(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="bad.json: model file: " + message):
        pyglmm.load(path)


@pytest.mark.parametrize("text, field, value", [
    ('{"a": {"b": [1, 2.5, NaN]}}', "a.b[2]", "nan"), ('[{"x": -Infinity}]', "[0].x", "-inf"),
    ('{"se": {"x": Infinity}}', "se.x", "inf")])
def test_strict_read_names_the_non_finite_field(tmp_path, text, field, value):
    path = tmp_path / "d.json"
    path.write_text(text)
    assert json.dumps(io.read_json(path, "x")) == text  # (model files of version 3 hold them)
    with pytest.raises(DataError, match=rf"d.json: not a fit \(field '{re.escape(field)}' is "
                                        rf"{value}: strict JSON has no non-finite number"):
        io.read_json(path, "a fit", strict=True)
    path.write_text(io.dumps(json.loads(text)))  # what dumps writes: null
    assert io.read_json(path, "a fit", strict=True) is not None
