"""pyglmm predict MODEL DATA --out SCORES: chunked reading and writing, unseen levels, errors."""

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pyglmm
from pyglmm.cli import main
from cases import small_crossed

FORMULA = "y ~ x1 + C(cat) + (1|g0) + (1|g1)"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A model fitted and saved by 'pyglmm fit', its data as CSV and Parquet, and the result."""
    tmp = tmp_path_factory.mktemp("predict")
    X, y, groups = small_crossed(n=600)
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"x1": X[:, 0], "cat": rng.choice(["a", "b", "c"], len(y)), "y": y,
                       "g0": groups["g0"], "g1": np.char.add("u", groups["g1"].astype(str)),
                       "off": rng.normal(0, 0.2, len(y))})
    df.to_csv(tmp / "data.csv", index=False)
    df.to_parquet(tmp / "data.parquet", row_group_size=250)
    assert main(["fit", str(tmp / "data.csv"), "--formula", FORMULA, "--offset", "off",
                 "--save", str(tmp / "model.json")]) == 0
    return tmp, df, pyglmm.load(tmp / "model.json")


def run(capsys, *args):
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def read_scores(path):
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.mark.parametrize("source", ["data.csv", "data.parquet"])
@pytest.mark.parametrize("target", ["s.parquet", "s.csv"])
def test_scores_equal_the_api_whatever_the_formats_and_chunks(model, capsys, source, target):
    tmp, df, res = model
    want = res.predict(df)
    for chunk in (37, 1_000_000):
        code, out, _ = run(capsys, tmp / "model.json", tmp / source, "--out", tmp / target,
                           "--chunk-rows", chunk)
        assert code == 0
        got = read_scores(tmp / target)
        assert list(got.columns) == ["eta"]
        np.testing.assert_array_equal(got.eta.to_numpy(), want.to_numpy())  # CSV values read back exactly
        assert re.search(r"scored 600 rows in [0-9.]+ s \([0-9,]+ rows/s\) -> .*" + target, out), out
        assert "rows at the population level (level not seen in the fit, or missing): g0 0, g1 0" in out
    assert not list(tmp.glob("*.partial"))


def test_response_scale_and_unseen_levels_counted(model, capsys, tmp_path):
    tmp, df, res = model
    new = df.copy()
    new.loc[[5, 300, 301], "g1"] = "new-user"
    new.loc[[7], "g0"] = 99
    new.to_parquet(tmp_path / "new.parquet")
    code, out, _ = run(capsys, tmp / "model.json", tmp_path / "new.parquet", "--out", tmp_path / "mu.parquet",
                       "--type", "response", "--chunk-rows", 100)
    assert code == 0
    assert "rows at the population level (level not seen in the fit, or missing): g0 1, g1 3" in out
    want = res.predict(new, type="response")
    assert want.attrs["population_rows"] == {"g0": 1, "g1": 3}
    got = pd.read_parquet(tmp_path / "mu.parquet")
    assert list(got.columns) == ["mu"]
    np.testing.assert_array_equal(got.mu.to_numpy(), want.to_numpy())


def test_labels_stored_as_another_type_are_matched(model, capsys, tmp_path):
    tmp, df, res = model
    table = pa.table({**{c: df[c] for c in ("x1", "cat", "off")},
                      "g0": pa.array(df.g0.astype(str)),  # fitted as integers (from the CSV)
                      "g1": pa.array(df.g1).dictionary_encode()})
    pq.write_table(table, tmp_path / "typed.parquet")
    code, out, _ = run(capsys, tmp / "model.json", tmp_path / "typed.parquet", "--out", tmp_path / "s.parquet")
    assert code == 0 and "g0 0, g1 0" in out
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "s.parquet").eta.to_numpy(),
                                  res.predict(df).to_numpy())


def error_of(capsys, *args):
    code, _, err = run(capsys, *args)
    assert code == 1 and err.startswith("pyglmm: error:")
    return err


def test_unseen_level_with_new_levels_error_names_file_column_level_and_row(model, capsys, tmp_path):
    tmp, df, _ = model
    new = df.copy()
    new.loc[[412, 500], "g1"] = "stranger"
    for name in ("new.csv", "new.parquet"):
        path = tmp_path / name
        new.to_csv(path, index=False) if name.endswith(".csv") else new.to_parquet(path)
        err = error_of(capsys, tmp / "model.json", path, "--out", tmp_path / "s.parquet",
                       "--new-levels", "error", "--chunk-rows", 100)
        assert (f"{path}: grouping column 'g1' has level 'stranger', not seen in the fit, at row 412"
                in err), err
        assert not (tmp_path / "s.parquet").exists() and not list(tmp_path.glob("*.partial"))


def test_missing_column_nan_and_type_mismatch_are_named(model, capsys, tmp_path):
    tmp, df, _ = model
    df.drop(columns="off").to_csv(tmp_path / "nooff.csv", index=False)
    err = error_of(capsys, tmp / "model.json", tmp_path / "nooff.csv", "--out", tmp_path / "s.csv")
    assert f"{tmp_path / 'nooff.csv'}: no column(s) 'off'" in err
    df.drop(columns="g1").to_parquet(tmp_path / "nog1.parquet")
    err = error_of(capsys, tmp / "model.json", tmp_path / "nog1.parquet", "--out", tmp_path / "s.csv")
    assert f"{tmp_path / 'nog1.parquet'}: no column(s) 'g1'" in err
    bad = df.copy()
    bad.loc[333, "x1"] = np.nan
    bad.to_parquet(tmp_path / "nan.parquet")
    err = error_of(capsys, tmp / "model.json", tmp_path / "nan.parquet", "--out", tmp_path / "s.csv",
                   "--chunk-rows", 100)
    assert f"{tmp_path / 'nan.parquet'}: column 'x1' has 1 NaN or infinite value(s), first at row 333" in err
    numbered = df.assign(g1=df.g1.str[1:].astype(int))  # 'u3' fitted, 3 given: never the same
    numbered.to_csv(tmp_path / "num.csv", index=False)
    err = error_of(capsys, tmp / "model.json", tmp_path / "num.csv", "--out", tmp_path / "s.csv")
    assert f"{tmp_path / 'num.csv'}: grouping column 'g1'" in err and "never match" in err
    assert not list(tmp_path.glob("s.*"))


def test_bad_output_name_and_array_models_are_refused(model, capsys, tmp_path):
    tmp, df, _ = model
    err = error_of(capsys, tmp / "model.json", tmp / "data.csv", "--out", tmp_path / "s.txt")
    assert f"output {tmp_path / 's.txt'}: give a .parquet, .pq or .csv file name" in err
    X, y, groups = small_crossed()
    pyglmm.glmm_from_arrays(X, y, groups).save(tmp_path / "arrays.json")
    err = error_of(capsys, tmp_path / "arrays.json", tmp / "data.csv", "--out", tmp_path / "s.csv")
    assert f"{tmp_path / 'arrays.json'}: the model was fitted from arrays" in err


def test_empty_input_gives_an_empty_output(model, capsys, tmp_path):
    tmp, df, _ = model
    df.head(0).to_csv(tmp_path / "empty.csv", index=False)
    df.head(0).to_parquet(tmp_path / "empty.parquet")
    for source, target in (("empty.csv", "e.parquet"), ("empty.parquet", "e.csv")):
        code, out, _ = run(capsys, tmp / "model.json", tmp_path / source, "--out", tmp_path / target)
        assert code == 0 and "scored 0 rows" in out and "g0 0, g1 0" in out
        got = read_scores(tmp_path / target)
        assert list(got.columns) == ["eta"] and len(got) == 0


def test_output_that_would_overwrite_the_data_or_the_model_is_refused(model, capsys, tmp_path):
    tmp, df, _ = model
    data = tmp_path / "data.csv"
    df.to_csv(data, index=False)
    before = data.read_bytes()
    err = error_of(capsys, tmp / "model.json", data, "--out", data)
    assert f"--out {data} is the data file {data}: scoring would overwrite it" in err
    (tmp_path / "link.csv").symlink_to(data)
    other_spelling = tmp_path / ".." / tmp_path.name / "data.csv"
    err = error_of(capsys, tmp / "model.json", tmp_path / "link.csv", "--out", other_spelling)
    assert f"is the data file {tmp_path / 'link.csv'}: scoring would overwrite it" in err
    assert data.read_bytes() == before
    model_copy = tmp_path / "model.csv"  # a model saved under a .csv name is still a model
    model_copy.write_bytes((tmp / "model.json").read_bytes())
    err = error_of(capsys, model_copy, data, "--out", model_copy)
    assert f"--out {model_copy} is the model file {model_copy}: scoring would overwrite it" in err
    # with --scheduler, the output directory must not hold the input files (refused before connecting)
    err = error_of(capsys, tmp / "model.json", tmp_path, "--out", tmp_path,
                   "--scheduler", "tcp://127.0.0.1:9")
    assert f"--out {tmp_path} is the directory of the data file {data}" in err
    assert data.read_bytes() == before


@pytest.mark.parametrize("content,why", [
    (b"[" * 100_000 + b"]" * 100_000, "not a pyglmm model file (JSON nested too deeply)"),
    (b"\xff\xfegarbage", "not a pyglmm model file (not UTF-8 text:"),
])
def test_malformed_model_file_is_a_one_line_error_naming_it(model, capsys, tmp_path, content, why):
    tmp, _, _ = model
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    err = error_of(capsys, path, tmp / "data.csv", "--out", tmp_path / "s.csv")
    assert err.startswith(f"pyglmm: error: {path}: {why}") and err.count("\n") == 1, err


def test_tampered_model_file_is_refused_naming_the_field(model, capsys, tmp_path):
    tmp, _, _ = model
    d = json.loads((tmp / "model.json").read_text())
    d["coef"]["x1"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(d))
    err = error_of(capsys, tmp_path / "nan.json", tmp / "data.csv", "--out", tmp_path / "s.csv")
    assert f"{tmp_path / 'nan.json'}: model file: field 'coef' entry 'x1' is nan, not a finite number" in err
    assert not (tmp_path / "s.csv").exists()
