"""pytest-benchmark suites for the federated engine: one round per transport, the bytes a
site sends per round, and whole fits in-process.

``pytest benchmarks/test_bench_federated.py --benchmark-enable`` times them on the
reference data ``sites_m10_n500_L`` (10 sites of 500 rows, one cluster each, p = 11,
K = 5) and, for Flower, a whole fit on a local SuperLink with 3 SuperNodes.  In the
normal test run every case runs once (Flower's is left to the end-to-end test).
"""

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyglmm.engines.federated.api import fit_federated
from pyglmm.engines.federated.coordinator import Coordinator
from pyglmm.engines.federated.transports import LocalProcess, in_process
from test_bench_crossed import smoke

FIXTURES = Path(__file__).parents[1] / "tests" / "fixtures"
FORMULA = "y ~ b1 + b2 + b3 + b4 + c1 + c2 + c3 + c4 + c5 + c6 + (1|site)"
NAGQ = 5


@pytest.fixture(scope="module")
def sites():
    df = pd.read_csv(FIXTURES / "sites_m10_n500_L.csv")
    return {f"site{s}": g for s, g in df.groupby("site")}


@pytest.fixture(scope="module")
def site_files(sites, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sites")
    for name, g in sites.items():
        g.to_csv(folder / f"{name}.csv", index=False)
    return {name: folder / f"{name}.csv" for name in sites}


def _round(benchmark, connections):
    coord = Coordinator(connections, timeout=120)
    try:
        coding = coord.describe(FORMULA, "binomial")
        d = coord.setup(coding, NAGQ)
        before = dict(coord.bytes_sent)
        x = np.zeros(d)
        loglik, grad, hess = benchmark.pedantic(coord.evaluate, args=(x, 2), rounds=5, iterations=1)
        rounds = coord.rounds - 2
        sent = {s: (coord.bytes_sent[s] - before[s]) / rounds for s in coord.names}
        benchmark.extra_info.update(bytes_sent_per_site_per_round=max(sent.values()), nparams=d)
        # d + d^2 float64 and 3 scalars in base64 (4/3) plus the JSON framing
        assert 8 * (d * d + d + 3) * 4 / 3 < max(sent.values()) < 8 * (d * d + d + 3) * 4 / 3 + 600
        assert np.isfinite(loglik) and grad.shape == (d,) and hess.shape == (d, d)
    finally:
        coord.close()


def test_round_in_process(benchmark, sites):
    _round(benchmark, in_process(sites))


def test_round_local_processes(benchmark, site_files):
    _round(benchmark, [LocalProcess(path, name) for name, path in site_files.items()])


def test_fit_in_process(benchmark, sites):
    res = benchmark.pedantic(fit_federated, args=(in_process(sites), FORMULA),
                             kwargs={"nagq": NAGQ}, rounds=3, iterations=1)
    benchmark.extra_info.update(rounds=res.rounds, iterations=res.iterations)
    assert res.converged


def test_fit_flower(benchmark, request, site_files):
    pytest.importorskip("flwr")
    if smoke(request.config):
        pytest.skip("a Flower deployment takes minutes: tests/engines/federated/test_fed_flower.py "
                    "runs one in the normal test run")
    from pyglmm.engines.federated.flower_local import run_local

    three = dict(list(site_files.items())[:3])
    start = time.perf_counter()
    d = benchmark.pedantic(run_local, args=(three, FORMULA), kwargs={"nagq": NAGQ, "wait": 1800},
                           rounds=1, iterations=1)
    benchmark.extra_info.update(rounds=d["rounds"], fit_seconds=d["seconds"],
                                seconds_per_round=d["seconds"] / d["rounds"],
                                start_up_seconds=time.perf_counter() - start - d["seconds"])
