"""pytest-benchmark suites for scoring: the linear_predictor kernel and ``pyglmm predict`` end to end.

``pytest benchmarks/test_bench_scoring.py --benchmark-enable`` times them at 10^7 rows
(p = 8, two random factors, Parquet in and out; see ``scoring_rates.py``, which
prints both rates with the command).  In the normal test run every case runs
once at 20,000 rows, as a smoke test.
"""

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm.cli import main
from test_bench_crossed import smoke

import scoring_rates

FULL = {"rows": 10_000_000, "fit_rows": 100_000}
SMOKE = {"rows": 20_000, "fit_rows": 5_000}


@pytest.fixture(scope="module")
def problem(request, tmp_path_factory):
    size = SMOKE if smoke(request.config) else FULL
    tmp = tmp_path_factory.mktemp("scoring")
    res = scoring_rates.make_model(tmp / "model.json", size["fit_rows"])
    cols = scoring_rates.make_rows(res, size["rows"])
    scoring_rates.write_parquet(cols, tmp / "rows.parquet")
    check = slice(0, 5000)
    want = res.predict(pd.DataFrame({k: v[check] for k, v in cols.items()})).to_numpy()
    return tmp, res, cols, check, want


def test_kernel(benchmark, backend, problem):
    _, res, cols, check, want = problem
    scorer, X, codes = scoring_rates.kernel_inputs(res, cols, backend)
    eta = np.zeros(X.shape[0])
    benchmark.pedantic(scorer.kern.linear_predictor, rounds=5,
                       args=(X, codes, scorer.beta, scorer.table, np.empty(0), eta, scorer.threads))
    np.testing.assert_allclose(eta[check], want, rtol=1e-12, atol=1e-12)


def test_predict_end_to_end(benchmark, backend, problem):
    tmp, _, cols, check, want = problem
    args = ["predict", str(tmp / "model.json"), str(tmp / "rows.parquet"), "--out", str(tmp / "s.parquet"),
            "--backend", backend]
    assert benchmark.pedantic(main, args=(args,), rounds=3) == 0
    got = pd.read_parquet(tmp / "s.parquet").eta.to_numpy()
    assert got.size == cols["x1"].size
    np.testing.assert_allclose(got[check], want, rtol=1e-12, atol=1e-12)
    assert pyglmm.backends.backend(backend) == backend


def test_rates_script(tmp_path):
    """The script that prints both rates runs (tiny) and its scores are the model's."""
    m = scoring_rates.measure(3000, 3000, "numpy", 1, tmp_path)
    text = scoring_rates.report(m)
    assert "kernel (linear_predictor): best" in text and "M rows/s" in text
    assert "end to end (pyglmm predict " in text and "--backend numpy" in text
    assert set(m["phases"]) == {"read", "fixed part", "levels and kernel", "write"}
