"""b by grouped cross-validation (``ridge_lmm(..., b="cv")``): the CV score equals a
direct computation of the held-out Gaussian log-density, folds hold out whole groups,
results keep the CV curve, and bad input gets errors naming the argument."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

import pyglmm
from pyglmm.cli import main
from pyglmm.engines.ridge.api import ridge_lmm
from pyglmm.engines.ridge.cv import choose_b_cv, group_folds
from pyglmm.data.formula import parse_formula

FORMULA = "y ~ x1 + x2 + x3 + t + (1 + t | g)"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    m, r = 13, 5
    g = np.repeat([f"id{i:02d}" for i in range(m)], r)
    t = np.tile(np.arange(1.0, r + 1), m)
    x = rng.normal(size=(m * r, 3))
    u = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=m)
    y = 1 + x @ [0.8, -0.5, 0.2] + 0.3 * t + u[np.repeat(np.arange(m), r), 0] \
        + u[np.repeat(np.arange(m), r), 1] * t + rng.normal(size=m * r)
    return pd.DataFrame({"y": y, "g": g, "t": t, "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2]})


@pytest.fixture(scope="module")
def cv_fit(data):
    return pyglmm.ridge_lmm(FORMULA, data, b="cv", lam=2.0, cv_folds=4, cv_grid=[0.1, 0.3, 0.6], cv_seed=5)


def test_cv_score_is_the_heldout_gaussian_log_density(data, cv_fit):
    """Every fold's score, recomputed: the training fit on the other folds' groups with
    b_k = c/(G_k + c), c = b G/(1 - b), then sum_i log N(y_i; X_i beta, Z_i Sigma Z_i' + s2 I + X_i C X_i')
    with C the training fit's posterior covariance of beta."""
    folds, G = cv_fit.cv_folds, 13
    A = {"g": cv_fit.A["g"].to_numpy()}
    for _, row in cv_fit.b_cv.iterrows():
        for k in range(4):
            held = data.g.map(folds).to_numpy() == k
            G_k = int(np.sum(folds.to_numpy() != k))
            c = row.b * G / (1 - row.b)
            fit = pyglmm.ridge_lmm(FORMULA, data[~held], b=c / (G_k + c), lam=2.0, A=A)
            test = data[held]
            X = np.column_stack([np.ones(len(test)), test.x1, test.x2, test.x3, test.t])
            names = ["Intercept", "x1", "x2", "x3", "t"]
            mean, C = X @ fit.params[names].to_numpy(), fit.cov.loc[names, names].to_numpy()
            S = fit.re_cov["g"].to_numpy()
            direct = 0.0
            for _, grp in test.groupby("g"):
                Z = np.column_stack([np.ones(len(grp)), grp.t])
                rows = np.searchsorted(np.flatnonzero(held), data.index.get_indexer(grp.index))
                V = Z @ S @ Z.T + fit.dispersion * np.eye(len(grp)) + X[rows] @ C @ X[rows].T
                direct += multivariate_normal(mean[rows], V).logpdf(grp.y.to_numpy())
            assert row[f"fold{k}"] == pytest.approx(direct, rel=1e-10, abs=1e-9)
        assert row.cv_loglik == pytest.approx(sum(row[f"fold{k}"] for k in range(4)), rel=1e-12)
    assert cv_fit.b_weight == cv_fit.b_cv.b[cv_fit.b_cv.cv_loglik.idxmax()]
    final = pyglmm.ridge_lmm(FORMULA, data, b=cv_fit.b_weight, lam=2.0, A=A)
    np.testing.assert_allclose(final.params, cv_fit.params, rtol=1e-10)


def test_folds_hold_out_whole_groups(data):
    """The training fits never see a held-out group; each group is held out exactly once."""
    seen = []

    def recording_fit(formula, train, **options):
        seen.append(set(train.g))
        return ridge_lmm(formula, train, **options)

    parsed = parse_formula(FORMULA)
    _, table, folds = choose_b_cv(recording_fit, parsed, data, 4, np.array([0.2]), 1, {"g": np.eye(2)}, lam=1.0)
    assert len(seen) == 4 and list(table.columns) == ["b", "cv_loglik", "fold0", "fold1", "fold2", "fold3"]
    held = [set(folds.index[folds == k]) for k in range(4)]
    assert all(s.isdisjoint(h) and s | h == set(data.g) for s, h in zip(seen, held))
    assert sorted(len(h) for h in held) == [3, 3, 3, 4]  # 13 groups: sizes differ by at most one


@pytest.mark.parametrize("n, k", [(13, 4), (40, 5), (7, 7), (100, 3)])
def test_group_folds_balanced_and_seeded(n, k):
    f = group_folds(n, k, seed=0)
    counts = np.bincount(f, minlength=k)
    assert f.shape == (n,) and counts.max() - counts.min() <= 1 and counts.min() >= n // k
    assert np.array_equal(f, group_folds(n, k, seed=0))
    assert n < 8 or not np.array_equal(f, group_folds(n, k, seed=1))


def test_cv_curve_in_summary_json_and_saved_model(cv_fit, tmp_path):
    assert "(4-fold cross-validation)" in str(cv_fit) and "cross-validation (held-out" in str(cv_fit)
    brief = cv_fit.to_dict()
    assert brief["b_cv"]["b"] == [0.1, 0.3, 0.6]
    np.testing.assert_array_equal(brief["b_cv"]["cv_loglik"], cv_fit.b_cv.cv_loglik)
    cv_fit.save(tmp_path / "m.json")
    back = pyglmm.load(tmp_path / "m.json")
    pd.testing.assert_frame_equal(back.b_cv, cv_fit.b_cv)
    pd.testing.assert_series_equal(back.cv_folds, cv_fit.cv_folds, check_index_type=False)


@pytest.mark.parametrize("options, error, names", [
    (dict(cv_folds=14), ValueError, "cv_folds = 14 exceeds the 13 levels of 'g'"),
    (dict(cv_folds=1), ValueError, "cv_folds must be an integer >= 2"),
    (dict(cv_folds=2.5), ValueError, "cv_folds must"),
    (dict(cv_grid=[0.1, 1.0]), ValueError, "cv_grid must"),
    (dict(cv_grid=[]), ValueError, "cv_grid must"),
])
def test_bad_cv_options(data, options, error, names):
    with pytest.raises(error, match=names):
        pyglmm.ridge_lmm(FORMULA, data, b="cv", lam=1.0, **options)


def test_training_folds_need_two_groups(data):
    small = data[data.g.isin(["id00", "id01"])]
    with pytest.raises(ValueError, match="cv_folds = 2 leaves a training fold with fewer than 2 of the 2 levels of 'g'"):
        pyglmm.ridge_lmm(FORMULA, small, b="cv", lam=1.0, cv_folds=2)


def test_cv_needs_one_random_term(data):
    df = data.assign(h=np.arange(len(data)) % 4)
    with pytest.raises(ValueError, match=r"b='cv' .* 2 random terms \(g, h\)"):
        pyglmm.ridge_lmm("y ~ x1 + (1 | g) + (1 | h)", df, b="cv")


def test_cli_b_cv(data, tmp_path, capsys):
    path = tmp_path / "d.csv"
    data.to_csv(path, index=False)
    out = tmp_path / "fit.json"
    assert main(["fit-ridge", str(path), "--formula", FORMULA, "--b", "cv", "--cv-folds", "4", "--lambda", "2",
                 "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["b"] in d["b_cv"]["b"] and len(d["b_cv"]["cv_loglik"]) == 11  # the default grid
    assert main(["fit-ridge", str(path), "--formula", FORMULA, "--b", "cv", "--cv-folds", "20"]) == 1
    assert "cv_folds = 20 exceeds the 13 levels of 'g'" in capsys.readouterr().err
