"""ridge_lmm's interface: where lmer refuses, penalised fixed effects, results,
save/load, predict, and bad input (errors name what is wrong)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import DataError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FORMULA = "y ~ t + t2 + t3 + (1 + t + t2 + t3 | ind)"


@pytest.fixture(scope="module")
def single25():
    return pd.read_csv(FIXTURES / "lmm_m10_r10_single25.csv")


@pytest.fixture(scope="module")
def wide():
    """p = 60 penalised columns, N = 48 rows, random intercept and slope."""
    rng = np.random.default_rng(7)
    m, r, p = 12, 4, 60
    ind = np.repeat(np.arange(m), r)
    t = np.tile(np.linspace(0, 1, r), m)
    X = rng.normal(size=(m * r, p))
    beta = rng.normal(size=p) * 0.3
    y = 1 + X @ beta + rng.normal(size=m)[ind] + rng.normal(size=m)[ind] * t + rng.normal(size=m * r) * 0.5
    return pd.DataFrame({"y": y, "t": t, "ind": ind, **{f"x{j}": X[:, j] for j in range(p)}})


def test_works_where_lmer_refuses(single25):
    res = pyglmm.ridge_lmm(FORMULA, single25, b=0.3)
    assert res.solver == "dual"  # 4 + 35 x 4 = 144 effects > 125 rows
    S = res.re_cov["ind"].to_numpy()
    assert np.all(np.isfinite(S)) and np.linalg.eigvalsh(S).min() > 0 and res.converged
    # sensible: the simulated fixed effects lie within 3 posterior sd of the estimates
    truth = [3.270291769590032, 1.8933122561482947, -0.338782413142543, -1.11984267263534]
    assert np.all(np.abs(res.params.to_numpy() - truth) < 3 * res.bse.to_numpy())
    assert 0.5 < res.residual_sd < 1.5  # simulated with residual sd 1


def test_b_auto_searches_the_proper_range(single25):
    res = pyglmm.ridge_lmm(FORMULA, single25, A=np.eye(4))
    assert res.b_auto and len(res.b_search) >= 8
    lo = (2 * 4 + 1) / (35 + 2 * 4 + 1)
    assert res.b_search.b.min() == pytest.approx(lo) and res.b_search.b.max() == pytest.approx(0.99)
    assert res.b_weight == res.b_search.b[res.b_search.log_evidence.idxmax()]


def test_penalised_columns_are_shrunk_and_lambda_chosen(wide):
    formula = "y ~ t + " + " + ".join(f"x{j}" for j in range(60)) + " + (1 + t | ind)"
    res = pyglmm.ridge_lmm(formula, wide, b=0.1)
    assert res.solver == "dual" and res.penalized == [f"x{j}" for j in range(60)]
    assert res.lam_auto and 0 < res.lam < np.inf
    strong = pyglmm.ridge_lmm(formula, wide, b=0.1, lam=1e4 * res.lam)
    assert np.abs(strong.params.iloc[2:]).max() < 0.05 * np.abs(res.params.iloc[2:]).max()
    assert 1 < res.edf < len(wide)
    primal = pyglmm.ridge_lmm(formula, wide, b=0.1, solver="primal")
    np.testing.assert_allclose(primal.params, res.params, atol=1e-6)
    assert primal.lam == pytest.approx(res.lam, rel=1e-5)


def test_save_load_json_and_predict(tmp_path):
    df = pd.read_csv(FIXTURES / "sleepstudy.csv")
    res = pyglmm.ridge_lmm("Reaction ~ Days + (Days | Subject)", df, b=0.1, A=[[500, 0], [0, 30]])
    d = res.to_dict(full=True)
    brief = res.to_dict()
    np.testing.assert_array_equal(brief["Sigma"], res.re_cov["Subject"].to_numpy())
    assert brief["b"] == 0.1 and brief["residual_sd"] == pytest.approx(np.sqrt(res.dispersion))
    assert d["loglik"] == pytest.approx(res.llf)
    res.save(tmp_path / "m.json")
    back = pyglmm.load(tmp_path / "m.json")
    assert type(back).__name__ == "RidgeResult" and back.b_weight == 0.1
    pd.testing.assert_frame_equal(back.re_cov["Subject"], res.re_cov["Subject"])
    np.testing.assert_allclose(back.predict(df), res.fittedvalues.to_numpy(), atol=1e-8)
    assert "b 0.1 (given)" in str(res)


@pytest.mark.parametrize("change, error, names", [
    (lambda d: d.drop(columns="t3"), DataError, r"'t3' of the random-effect term \(1 \+ t \+ t2 \+ t3 \| ind\)"),
    (lambda d: d.assign(ind=0), DataError, "'ind'"),
    (lambda d: d.assign(y=d.y.where(d.index != 5)), DataError, "'y'"),
    (lambda d: d.assign(t2=d.t2.where(d.index != 7, np.inf)), DataError, "'t2'"),
])
def test_bad_data(single25, change, error, names):
    with pytest.raises(error, match=names):
        pyglmm.ridge_lmm(FORMULA, change(single25), b=0.2)


@pytest.mark.parametrize("options, names", [
    (dict(b=1.0), "b must"), (dict(b=-0.1), "b must"), (dict(lam=-1.0), "lam must"),
    (dict(A=-1.0), "A of 'ind' must be positive semi-definite"),
    (dict(A=[[1, 2, 0, 0], [2, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "A of 'ind' must be positive semi"),
    (dict(A=np.eye(3)), "A of 'ind' must be 4 x 4"),
    (dict(A={"other": np.eye(4)}), "'other'"),
    (dict(unpenalized=["nope"]), "'nope'"),
    (dict(solver="fast"), "solver must"),
    (dict(tol=-1.0), r"tol must be a positive finite number, got -1\.0"), (dict(tol=float("nan")), "tol must"),
    (dict(max_iter=0), "max_iter must be a positive integer, got 0"), (dict(max_iter=2.5), "max_iter must"),
])
def test_bad_options(single25, options, names):
    with pytest.raises(ValueError, match=names):
        pyglmm.ridge_lmm(FORMULA, single25, **{"b": 0.2, **options})


def test_two_random_terms_primal_equals_dual():
    rng = np.random.default_rng(11)
    n = 150
    g, h, t = rng.integers(0, 12, n), rng.integers(0, 5, n), rng.uniform(0, 1, n)
    x = rng.normal(size=(n, 3))
    y = x @ [0.5, -0.2, 0.1] + rng.normal(size=12)[g] * (1 + t) + rng.normal(size=5)[h] + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "t": t, "g": g, "h": h, "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2]})
    formula = "y ~ x0 + x1 + x2 + t + (1 + t | g) + (1 | h)"
    fits = [pyglmm.ridge_lmm(formula, df, b=0.2, solver=s) for s in ("primal", "dual")]
    assert fits[0].solver == "primal" and set(fits[0].re_cov) == {"g", "h"}
    np.testing.assert_allclose(fits[0].params, fits[1].params, atol=1e-6)
    for f in ("g", "h"):
        np.testing.assert_allclose(fits[0].re_cov[f], fits[1].re_cov[f], rtol=1e-5)
    assert np.shape(fits[0].to_dict()["Sigma"][1]) == (1, 1)  # a list of matrices, formula order
