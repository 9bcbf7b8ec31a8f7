"""The crossed engine's Poisson start: large counts converge, and the fit is
equivariant to shifting the offset."""

import numpy as np
import pytest

import pyglmm
from cases import load_case

FORMULA = "y ~ x1 + x2 + (1|row) + (1|col)"


@pytest.mark.parametrize("level", [4.0, 12.0])
def test_large_counts_converge_and_shift_only_the_intercept(level):
    """Counts in the hundreds and the hundreds of thousands: from beta = b = 0 the first
    working response is of that size and the loop broke down (a singular X'W(I-S)X);
    from the log of the mean rate it converges.  The same counts with the offset
    shifted by the level give the same fit with the intercept moved by it."""
    df, _ = load_case("crossed_poisson_s1e4")
    rng = np.random.default_rng(7)
    eta = df.logexp + level + 0.4 * df.x1 - 0.3 * df.x2 + rng.normal(0, 0.6, 174)[df.row] \
        + rng.normal(0, 0.3, 174)[df["col"]]
    df = df.assign(y=rng.poisson(np.exp(eta)), shifted=df.logexp + level)
    assert df.y.mean() > 100
    res = pyglmm.glmm(FORMULA, df, family="poisson", offset="logexp")
    assert res.converged and res.iterations < 15
    np.testing.assert_allclose(res.coef[["x1", "x2"]], [0.4, -0.3], atol=0.01)
    np.testing.assert_allclose(res.sigma, [0.6, 0.3], rtol=0.2)
    moved = pyglmm.glmm(FORMULA, df, family="poisson", offset="shifted")
    np.testing.assert_allclose(moved.coef["Intercept"], res.coef["Intercept"] - level, atol=1e-6)
    np.testing.assert_allclose(moved.coef[["x1", "x2"]], res.coef[["x1", "x2"]], rtol=1e-6)
    np.testing.assert_allclose(moved.sigma, res.sigma, rtol=1e-5)


def test_sparse_counts_without_intercept_column():
    """The start shifts the first factor's effects, so it needs no intercept column."""
    df, _ = load_case("crossed_poisson_s1e4")
    rng = np.random.default_rng(8)
    df = df.assign(y=rng.poisson(np.exp(df.logexp + 5 + rng.normal(0, 0.5, 174)[df.row]
                                        + rng.normal(0, 0.3, 174)[df["col"]])))
    res = pyglmm.glmm("y ~ 0 + x1 + (1|row) + (1|col)", df, family="poisson", offset="logexp")
    assert res.converged and list(res.coef.index) == ["x1"]
    assert res.b["row"].mean() > 4  # the level went into the effects of 'row'
