"""pytest-benchmark suite of the one-shot federation (issue 10) on a CHOP-shaped data
set (57 clinics, 6,330 rows; binary gender and drive-thru, a 3-level class, two
standardised continuous covariates), order K = 3, nagq = 7:

* ``test_site_summary``: the site's statistics (and the disclosure guard);
* ``test_pseudo_data``: the pseudo-data of every cluster (least squares);
* ``test_pseudo_fit``: pseudo-data plus the AGQ fit (``fit_summaries(method="pseudo")``);
* ``test_direct_fit``: the direct fit (``fit_summaries(method="direct")``).

The issue's goal: summaries + pseudo-data + fit in < 2 s; the direct fit faster still.
``pytest benchmarks/test_bench_summaries.py --benchmark-enable`` times them; in the normal
test run each runs once on 20 clinics, as a smoke test.
"""

import pathlib
import sys
import warnings

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "engines" / "summaries"))

from paper import CHOP_FORMULA, simulate_chop  # noqa: E402
from pyglmm.engines.summaries import fit_summaries, site_summary  # noqa: E402
from pyglmm.engines.summaries.api import combine, pseudo_frame  # noqa: E402


@pytest.fixture(scope="module")
def chop(request):
    smoke = (request.config.getoption("benchmark_disable")
             and not request.config.getoption("benchmark_enable"))
    df = simulate_chop(0, m=20, n=2220) if smoke else simulate_chop(0)
    return df, site_summary(df, CHOP_FORMULA, "clinic", 3)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cluster whose discrete triple counts miss by a row
        return fn(*args, **kw)


def test_site_summary(benchmark, chop):
    df, _ = chop
    msg = benchmark(site_summary, df, CHOP_FORMULA, "clinic", 3)
    benchmark.extra_info.update(rows=len(df), clusters=len(msg["clusters"]))


def test_pseudo_data(benchmark, chop):
    stats = combine([chop[1]])
    frame, residual = benchmark.pedantic(pseudo_frame, (stats, 0), rounds=3)
    benchmark.extra_info.update(rows=len(frame), largest_residual=float(residual.max()))


def test_pseudo_fit(benchmark, chop):
    res = benchmark.pedantic(_quiet, (fit_summaries, [chop[1]]),
                             {"method": "pseudo", "nagq": 7}, rounds=3)
    assert res.converged


def test_direct_fit(benchmark, chop):
    res = benchmark.pedantic(fit_summaries, ([chop[1]],), {"method": "direct", "nagq": 7}, rounds=3)
    assert res.converged
