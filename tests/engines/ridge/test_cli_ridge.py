"""``pyglmm fit-ridge``: the JSON fields of the issue, and errors naming what is wrong."""

import json
from pathlib import Path

import numpy as np
import pytest

from pyglmm.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
GOLDEN = json.loads((FIXTURES / "ridge_lmer.json").read_text())["sleepstudy"]


def test_fit_ridge_json_matches_lmer(tmp_path, capsys):
    out = tmp_path / "fit.json"
    rc = main(["fit-ridge", str(FIXTURES / "sleepstudy.csv"), "--formula", GOLDEN["formula"],
               "--b", "0", "--lambda", "auto", "--json", str(out)])
    assert rc == 0 and "Ridge LMM" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["lambda"] is None and d["b"] == 0.0  # no penalised column: lambda has no role
    np.testing.assert_allclose(d["Sigma"], GOLDEN["Sigma"], rtol=1e-4)
    assert d["residual_sd"] == pytest.approx(GOLDEN["sigma"], rel=1e-4)
    assert d["loglik"] == pytest.approx(GOLDEN["loglik"], abs=1e-4)
    assert list(d["coef"].values()) == pytest.approx(GOLDEN["beta"], rel=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--formula", "Reaction ~ Days + (Days | Subj)"], "'Subj'"),
    (["--formula", GOLDEN["formula"], "--b", "1.5"], "b must"),
    (["--formula", GOLDEN["formula"], "--lambda", "-2"], "lam must"),
])
def test_fit_ridge_errors(args, message, capsys):
    assert main(["fit-ridge", str(FIXTURES / "sleepstudy.csv"), *args]) == 1
    assert message in capsys.readouterr().err


def test_fit_ridge_refuses_a_non_number(capsys):
    with pytest.raises(SystemExit):
        main(["fit-ridge", str(FIXTURES / "sleepstudy.csv"), "--formula", GOLDEN["formula"], "--b", "big"])
    assert "--b: must be 'auto' or 'cv' or a number" in capsys.readouterr().err
