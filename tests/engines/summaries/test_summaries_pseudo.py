"""Pseudo-data: their statistics (recomputed by the site code) match the released ones,
discrete columns stay discrete with exact counts, the generator is seeded, the
least-squares Jacobian is the derivative of the residuals, and the pseudo-data fit
lands next to the actual-data fit."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import pyglmm
from cases import DATA
from paper import FORMULA, simulate
from pyglmm.engines.summaries import fit_summaries, site_summary
from pyglmm.engines.summaries.api import combine, pseudo_frame
from pyglmm.engines.summaries.pseudo import _jacobian, _residuals, exponents
from pyglmm.engines.summaries.site import moment_index, summarise


def _pseudo(df, formula, order, seed=0, cluster="cluster"):
    stats = combine([site_summary(df, formula, cluster, order)])
    frame, residual = pseudo_frame(stats, seed)
    return stats, frame, residual


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_pseudo_statistics_match_the_released_ones(order):
    df = simulate(8, 60, seed=3)
    stats, frame, residual = _pseudo(df, FORMULA, order)
    covariates = list(frame.columns[2:])
    again = summarise(frame, "y ~ " + " + ".join(covariates), "cluster", order)
    assert again["labels"] == stats["labels"]
    np.testing.assert_array_equal(again["n"], stats["n"])
    np.testing.assert_array_equal(again["events"], stats["events"])
    np.testing.assert_allclose(again["mean"], stats["mean"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(again["y_cross"], stats["y_cross"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(again["moments"], stats["moments"], rtol=1e-10, atol=1e-12)
    assert residual.max() < 1e-10  # measured <= 6e-14
    # the dummies of x3 stay 0/1, exclusive, with the released counts
    dummies = frame[["c2", "c3"]].to_numpy()
    assert set(np.unique(dummies)) <= {0.0, 1.0} and dummies.sum(axis=1).max() <= 1
    assert frame.y.isin([0, 1]).all()


def test_binary_columns_keep_their_pairwise_counts():
    rng = np.random.default_rng(4)
    n = 600
    df = pd.DataFrame({"g": np.repeat(np.arange(6), 100), "b1": rng.random(n) < 0.3,
                       "b2": rng.random(n) < 0.6, "x": rng.normal(size=n)})
    df["b2"] = df.b2 | (df.b1 & (rng.random(n) < 0.5))  # correlated binaries
    df["y"] = (rng.random(n) < 0.3 + 0.3 * df.b1).astype(int)
    df[["b1", "b2"]] = df[["b1", "b2"]].astype(int)
    stats, frame, residual = _pseudo(df, "y ~ b1 + b2 + x", 3, cluster="g")
    for lab, part in frame.groupby("cluster"):
        real = df[df.g.astype(str) == lab]
        assert ((part.c0 == 1) & (part.c1 == 1)).sum() == ((real.b1 == 1) & (real.b2 == 1)).sum()
        assert ((part.c0 == 1) & (part.y == 1)).sum() == ((real.b1 == 1) & (real.y == 1)).sum()
    assert residual.max() < 1e-10


def test_seeded_and_reproducible():
    df = simulate(4, 50, seed=8)
    a, b, c = (_pseudo(df, FORMULA, 3, seed=s)[1] for s in (5, 5, 6))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_least_squares_jacobian_is_the_derivative_of_the_residuals():
    rng = np.random.default_rng(2)
    n, p = 12, 3
    W, y = rng.normal(size=(n, p)), (rng.random(n) < 0.4).astype(float)
    cont = [0, 2]
    index = [(v,) for v in cont] + moment_index(p, 4)
    A = exponents(index, p)
    targets, y_targets = rng.normal(size=len(index)), rng.normal(size=len(cont))
    J = _jacobian(W, y, cont, A)
    eps = 1e-6
    for k, v in enumerate(cont):
        for j in range(n):
            up, down = W.copy(), W.copy()
            up[j, v] += eps
            down[j, v] -= eps
            fd = (_residuals(up, y, cont, A, targets, y_targets)
                  - _residuals(down, y, cont, A, targets, y_targets)) / (2 * eps)
            np.testing.assert_allclose(J[:, k * n + j], fd, atol=1e-8)


def test_residual_that_is_not_small_is_reported_naming_the_cluster():
    # order 3 with five continuous columns on 11-row clusters: 55 unknowns for 60 equations
    # (5 means, 5 response cross-moments, 50 moments; the guard allows 62 numbers < 66 values)
    rng = np.random.default_rng(6)
    df = pd.DataFrame(rng.normal(size=(44, 5)), columns=[f"x{i}" for i in range(5)])
    df["g"], df["y"] = np.repeat(["a", "b", "c", "d"], 11), rng.integers(0, 2, 44)
    msg = site_summary(df, "y ~ x0 + x1 + x2 + x3 + x4", "g", 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_summaries([msg], method="pseudo", nagq=1)
    bad = res.match_residual[res.match_residual > 1e-6]
    assert len(bad) >= 2
    text = " ".join(str(w.message) for w in caught if issubclass(w.category, pyglmm.ConvergenceWarning))
    assert f"do not match the summaries of {len(bad)} clusters" in text
    assert all(repr(label) in text for label in bad.index)
    assert "largest match residual" in str(res)


def test_pseudo_fit_is_next_to_the_actual_data_fit():
    df = pd.read_csv(DATA / "summaries_paper.csv")
    with open(DATA / "summaries_paper.fits.jsonl") as fh:
        ref = next(f for f in map(json.loads, fh)
                   if f["engine"] == "glmer_nAGQ7" and f["formula"] == FORMULA)
    res = fit_summaries([site_summary(df, FORMULA, "cluster", 4)], method="pseudo", nagq=7, seed=0)
    # measured: coefficients within 4e-4, sd within 3e-5, se within 2e-4 of glmer nAGQ = 7
    np.testing.assert_allclose(res.params, ref["beta"], atol=2e-3)
    np.testing.assert_allclose(res.bse, ref["se"], atol=1e-3)
    assert res.sigma.iloc[0] == pytest.approx(ref["sigma_cluster"], abs=2e-3)
    assert res.fit_method == "pseudo" and res.seed == 0 and res.match_residual.max() < 1e-10
    assert "pseudo-data matching order-4" in str(res)
