"""Sites as local processes (each holding only its file) and the ``fit-federated``
command: the same fit as in-process, and a site that fails, times out or drops out
ends the fit with an error naming it."""

import json

import numpy as np
import pytest

from pyglmm.cli import main
from pyglmm.engines.federated.api import fit_federated
from pyglmm.engines.federated.coordinator import Coordinator
from pyglmm.engines.federated.schema import FederatedError
from pyglmm.engines.federated.transports import LocalProcess, in_process

from test_fed_exact import hospital_files, hospitals  # noqa: I001 (tests/engines/federated is on the path)

FORMULA = "y ~ x + t + C(shift) + (1|ward)"


@pytest.fixture(scope="module")
def site_files(tmp_path_factory):
    df = hospitals()
    return df, hospital_files(tmp_path_factory.mktemp("sites"), df)


def test_local_processes_give_the_in_process_fit(site_files):
    df, paths = site_files
    fed = fit_federated([LocalProcess(p, n) for n, p in paths.items()], FORMULA, nagq=3,
                        transport="local processes")
    inproc = fit_federated(in_process({f"hospital{h}": g for h, g in df.groupby("hospital")}),
                           FORMULA, nagq=3)
    # the same arithmetic on the same rows in another process: equal to rounding
    np.testing.assert_allclose(fed.coef, inproc.coef, rtol=1e-12)
    np.testing.assert_allclose(fed.se, inproc.se, rtol=1e-12)
    assert fed.loglik == pytest.approx(inproc.loglik, rel=1e-14)
    assert fed.rounds == inproc.rounds and fed.bytes_per_site == inproc.bytes_per_site


def test_cli_fit_federated_writes_the_json(site_files, tmp_path, capsys):
    df, paths = site_files
    out = tmp_path / "fit.json"
    args = ["fit-federated", "--formula", FORMULA, "--nagq", "2", "--json", str(out)]
    for name, path in paths.items():
        args += ["--site", f"{name}={path}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "federated maximum likelihood" in printed and "over 3 sites" in printed
    d = json.loads(out.read_text())
    inproc = fit_federated(in_process({f"hospital{h}": g for h, g in df.groupby("hospital")}),
                           FORMULA, nagq=2)
    assert d["coef"] == pytest.approx(dict(inproc.coef), rel=1e-12)
    assert d["rounds"] == inproc.rounds and d["transport"] == "local processes"
    assert set(d["bytes_per_site"]) == set(paths) and d["seconds"] > 0
    assert d["loglik"] == pytest.approx(inproc.loglik, rel=1e-14)


def test_cli_names_a_site_that_refuses(site_files, tmp_path, capsys):
    _, paths = site_files
    args = ["fit-federated", "--formula", "y ~ x + age + (1|ward)"]
    for name, path in paths.items():
        args += ["--site", f"{name}={path}"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "site 'hospital0' refused: field 'age'" in err


def test_cli_refuses_two_sites_of_one_name(tmp_path, capsys):
    assert main(["fit-federated", "--formula", FORMULA, "--site", "a/x.csv", "--site", "b/x.csv"]) == 1
    assert "two --site options are named 'x'" in capsys.readouterr().err


def test_a_site_without_its_file_refuses_naming_it(site_files, tmp_path):
    _, paths = site_files
    conns = [LocalProcess(paths["hospital0"], "hospital0"),
             LocalProcess(tmp_path / "missing.csv", "ghost")]
    with pytest.raises(FederatedError, match="site 'ghost' refused: field 'data'") as err:
        fit_federated(conns, FORMULA)
    assert err.value.site == "ghost" and "missing.csv" in str(err.value)


def test_a_site_that_does_not_answer_in_time_is_named(site_files):
    _, paths = site_files
    coord = Coordinator([LocalProcess(p, n) for n, p in paths.items()], timeout=1e-3)
    try:
        with pytest.raises(FederatedError, match="site 'hospital0' did not answer within 0.001 s"):
            coord.describe(FORMULA, "binomial")  # a fresh process needs far longer to start
    finally:
        coord.close()


def test_a_site_that_drops_out_is_named(site_files):
    _, paths = site_files
    conns = [LocalProcess(p, n) for n, p in paths.items()]
    coord = Coordinator(conns, timeout=120)
    try:
        coding = coord.describe(FORMULA, "binomial")
        conns[1]._proc.kill()  # the site's process dies between rounds
        with pytest.raises(FederatedError, match="site 'hospital1' (dropped out|is not reachable)") as err:
            coord.setup(coding, 1)
        assert err.value.site == "hospital1" and "its process ended" in str(err.value)
    finally:
        coord.close()
