"""The command line: pyglmm fit / pyglmm demo, their JSON, and their errors."""

import json
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm.cli import main
from cases import DATA, case_formula, load_case

CASE = DATA / "crossed_trend_s1e4.csv"


def test_fit_csv_prints_summary_and_writes_json(tmp_path, capsys):
    out = tmp_path / "fit.json"
    df, _ = load_case("crossed_trend_s1e4")
    assert main(["fit", str(CASE), "--formula", case_formula(df), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Variance components:" in text and "Fixed effects:" in text
    d = json.loads(out.read_text())
    assert set(d) == {"coef", "se", "sigma", "dispersion", "n_obs", "n_levels", "iterations",
                      "converged", "separation", "seconds", "backend", "engine"}
    assert d["separation"] == []
    api = pyglmm.glmm(case_formula(df), df)
    assert d["coef"] == pytest.approx(api.coef.to_dict(), rel=1e-12)
    assert d["se"] == pytest.approx(api.se.to_dict(), rel=1e-12)
    assert d["sigma"] == pytest.approx(api.sigma.to_dict(), rel=1e-12)
    assert d["backend"] == pyglmm.backend() and d["converged"] and d["seconds"] > 0
    assert list(d["coef"])[0] == "Intercept"


def test_fit_parquet_gaussian_with_options(tmp_path, capsys):
    df, _ = load_case("crossed_gauss_s3e3")
    path = tmp_path / "g.parquet"
    df.to_parquet(path)
    out = tmp_path / "g.json"
    code = main(["fit", str(path), "--formula", case_formula(df), "--family", "gaussian",
                 "--backend", "numpy", "--json", str(out), "--save", str(tmp_path / "all.json"),
                 "--verbose"])
    assert code == 0
    err = capsys.readouterr().err
    assert "iteration   1:" in err
    d = json.loads(out.read_text())
    assert d["backend"] == "numpy" and d["dispersion"] > 0.5
    assert pyglmm.load(tmp_path / "all.json").family == "gaussian"


@pytest.mark.parametrize("args,message", [
    (["--formula", "y ~ x1 + zz + (1|row)"], "fixed-effect variable 'zz' is not in the data"),
    (["--formula", "x1 ~ x2 + (1|row)"], "response 'x1' must be 0/1"),
    (["--formula", "y ~ x1 + (1|row)", "--dispersion", "estimate", "--family", "binomial",
      "--trials", "nope"], "trials column 'nope' is not in the data"),
    (["--formula", "y ~ x1 + (1|row)", "--weights", "wt"], "weights column 'wt' is not in the data"),
    (["--formula", "y ~ x1 + (1|row)", "--offset", "x9"], "offset column 'x9' is not in the data"),
    (["--formula", "y ~ x1 + (1|rows)"], "grouping factor 'rows' (in (1|rows)) is not in the data "
                                         "(did you mean 'row'?)"),
])
def test_fit_errors_exit_nonzero_with_a_message(args, message, capsys):
    assert main(["fit", str(CASE)] + args) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyglmm: error:") and message in err


def test_missing_file(capsys):
    assert main(["fit", "no/such/file.csv", "--formula", "y ~ x + (1|g)"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyglmm: error:") and "no/such/file.csv" in err


def test_fit_poisson_with_offset_and_weights(tmp_path, capsys):
    df, _ = load_case("crossed_poisson_s1e4")
    out = tmp_path / "p.json"
    formula = "y ~ x1 + x2 + (1|row) + (1|col)"
    code = main(["fit", str(DATA / "crossed_poisson_s1e4.csv"), "--formula", formula,
                 "--family", "poisson", "--offset", "logexp", "--weights", "w", "--json", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "Family: poisson (log); dispersion fixed at 1" in captured.out
    assert "iteration" not in captured.err  # quiet without --verbose
    api = pyglmm.glmm(formula, df, family="poisson", offset="logexp", weights="w")
    d = json.loads(out.read_text())
    assert d["coef"] == pytest.approx(api.coef.to_dict(), rel=1e-12)
    assert d["sigma"] == pytest.approx(api.sigma.to_dict(), rel=1e-12)


@pytest.mark.parametrize("verbose", [True, False])
def test_demo_small(tmp_path, capsys, verbose):
    out = tmp_path / "demo.json"
    assert main(["demo", "--rows", "20000", "--json", str(out)] + ["--verbose"] * verbose) == 0
    captured = capsys.readouterr()
    text = captured.out
    for piece in ["Fixed effects:", "Naive logistic regression", "Truth:", "Timing: fit"]:
        assert piece in text
    assert ("  iteration   1: relative change" in captured.err) == verbose
    d = json.loads(out.read_text())
    assert 15000 < d["n_obs"] < 25000 and d["converged"]


def test_installed_entry_point():
    exe = shutil.which("pyglmm")
    cmd = [exe] if exe else [sys.executable, "-m", "pyglmm"]
    outside = tempfile.gettempdir()  # not the source tree: run what is installed
    run = subprocess.run(cmd + ["demo", "--rows", "5000"], capture_output=True, text=True,
                         cwd=outside)
    assert run.returncode == 0, run.stderr
    assert "Generalized linear mixed model" in run.stdout
    bad = subprocess.run(cmd + ["fit", str(CASE), "--formula", "y ~ (1|nope)"], capture_output=True,
                         text=True, cwd=outside)
    assert bad.returncode == 1 and "grouping factor 'nope' (in (1|nope)) is not in the data" in bad.stderr


@pytest.mark.parametrize("args,kind", [(["demo", "--rows", "0"], "positive"), (["demo", "--threads", "-1"], "positive"),
                                       (["demo", "--seed", "-1"], "non-negative")])
def test_bad_numbers_are_usage_errors(args, kind, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert f"argument {args[1]}: must be a {kind} integer, got {args[2]}" in capsys.readouterr().err


def test_json_of_a_separated_fit_is_strict_json_with_null_standard_errors(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"x1": rng.normal(size=n), "g1": rng.integers(0, 20, n), "g2": rng.integers(0, 15, n)})
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-0.5 * df.x1))).astype(float)
    df["x3"] = (df.x1 > 1).astype(float)
    df.loc[df.x3 == 1, "y"] = 1.0  # x3 separates the response: its estimate diverges, its SE is NaN
    df.to_csv(tmp_path / "sep.csv", index=False)
    out = tmp_path / "sep.json"
    assert main(["fit", str(tmp_path / "sep.csv"), "--formula", "y ~ x1 + x3 + (1|g1) + (1|g2)",
                 "--json", str(out), "--save", str(tmp_path / "model.json")]) == 0
    assert "separation by 'x3'" in capsys.readouterr().err

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")
    d = json.loads(out.read_text(), parse_constant=refuse)
    assert d["separation"] == ["x3"] and d["se"]["x3"] is None and d["se"]["x1"] > 0
    saved = json.loads((tmp_path / "model.json").read_text(), parse_constant=refuse)
    assert saved["cov"][2] == [None, None, None]
    assert np.isnan(pyglmm.load(tmp_path / "model.json").bse["x3"])
