"""End to end on Flower's deployment runtime: a real SuperLink and one SuperNode per
site on localhost (``flower-superlink``, ``flower-supernode``), the pyglmm Flower
App started with ``flwr run``; the fit equals the in-process one."""

import numpy as np
import pytest

pytest.importorskip("flwr")

from pyglmm.engines.federated.api import fit_federated  # noqa: E402
from pyglmm.engines.federated.flower_local import run_local  # noqa: E402
from pyglmm.engines.federated.transports import in_process  # noqa: E402

from test_fed_exact import hospital_files, hospitals  # noqa: E402,I001


def test_flower_deployment_gives_the_in_process_fit(tmp_path):
    df = hospitals()
    df["w"] = np.random.default_rng(1).integers(1, 4, len(df)).astype(float)  # the run config's columns
    paths = hospital_files(tmp_path, df)
    formula = "y ~ x + t + C(shift) + (1|ward)"
    with open(tmp_path / "flower.log", "w") as log:
        d = run_local(paths, formula, nagq=2, timeout=300, wait=900, log=log, weights="w")
    inproc = fit_federated(in_process({f"hospital{h}": g for h, g in df.groupby("hospital")}),
                           formula, nagq=2, weights="w")
    assert d["transport"] == "flower" and d["converged"]
    np.testing.assert_allclose(list(d["coef"].values()), inproc.coef, rtol=1e-12)
    np.testing.assert_allclose(list(d["se"].values()), inproc.se, rtol=1e-12)
    assert d["loglik"] == pytest.approx(inproc.loglik, rel=1e-14)
    assert d["rounds"] == inproc.rounds and set(d["bytes_per_site"]) == set(paths)
