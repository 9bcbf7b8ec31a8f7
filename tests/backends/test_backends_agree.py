"""A whole fit gives the same numbers on every backend (to 1e-8)."""

import numpy as np
import pytest

import pyglmm
from cases import case_formula, load_case

TOL = dict(rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case,family,dispersion", [
    ("crossed_trend_s1e4", "binomial", "fixed"),
    ("crossed_zero_s1e4", "binomial", "estimate"),
    ("crossed_gauss_s3e3", "gaussian", "estimate"),
])
def test_whole_fit_agrees_with_numpy(compiled_backend, case, family, dispersion):
    df, _ = load_case(case)
    ref, got = (pyglmm.glmm(case_formula(df), df, family=family, dispersion=dispersion,
                            compare_naive=True, backend=be) for be in ("numpy", compiled_backend))
    assert ref.backend == "numpy" and got.backend == compiled_backend
    assert got.iterations == ref.iterations and got.inner_sweeps == ref.inner_sweeps
    for attr in ("coef", "se", "sigma"):
        np.testing.assert_allclose(getattr(got, attr), getattr(ref, attr), **TOL)
    np.testing.assert_allclose(got.dispersion, ref.dispersion, **TOL)
    np.testing.assert_allclose(got.deviance, ref.deviance, **TOL)
    for f in ref.factor_names:
        np.testing.assert_allclose(got.b[f], ref.b[f], **TOL)
    np.testing.assert_allclose(got.naive.to_numpy(), ref.naive.to_numpy(), **TOL)
    for key in ("max_naivete", "max_inefficiency"):
        np.testing.assert_allclose(got.naive_summary[key], ref.naive_summary[key], **TOL)
