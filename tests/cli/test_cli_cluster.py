"""pyglmm fit / predict --scheduler: a directory of files on a Dask cluster (an in-process
LocalCluster, reached by its address); a cluster that cannot run the work is a one-line
error."""

import json
import socket

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm.cli import main
from cases import small_crossed

distributed = pytest.importorskip("distributed")
FORMULA = "y ~ x1 + x2 + (1|g0) + (1|g1)"


@pytest.fixture(scope="module")
def address():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def files(tmp_path):
    X, y, groups = small_crossed(n=600)
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y, **groups})
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):  # two Parquet files and a CSV file, 200 rows each
        part = df.iloc[200 * i: 200 * (i + 1)].reset_index(drop=True)
        if i < 2:
            part.to_parquet(folder / f"part{i}.parquet")
        else:
            part.to_csv(folder / f"part{i}.csv", index=False)
    return df, folder


def test_fit_and_predict_a_directory_equal_the_in_process_fit(address, files, tmp_path, capsys):
    df, folder = files
    out, model = tmp_path / "fit.json", tmp_path / "m.json"
    assert main(["fit", str(folder), "--formula", FORMULA, "--scheduler", address,
                 "--json", str(out), "--save", str(model)]) == 0
    assert "on a Dask cluster of 2 worker(s), 2 thread(s), 3 partition(s)" in capsys.readouterr().out
    got, want = json.loads(out.read_text()), pyglmm.glmm(FORMULA, df)
    for key in ("coef", "se", "sigma"):  # measured: 3e-16 apart
        assert got[key] == pytest.approx(getattr(want, key).to_dict(), rel=0, abs=1e-10)
    scores = tmp_path / "scores"
    assert main(["predict", str(model), str(folder / "part*"), "--out", str(scores),
                 "--type", "response", "--scheduler", address]) == 0
    written = sorted(scores.glob("*.parquet"))
    assert len(written) == 3
    mu = pd.concat([pd.read_parquet(f) for f in written], ignore_index=True)
    np.testing.assert_allclose(mu["mu"], want.predict(df, type="response"), rtol=1e-13)


def test_errors_name_the_file(address, files, tmp_path, capsys):
    df, folder = files
    bad = pd.read_csv(folder / "part2.csv")
    bad.loc[17, "x2"] = np.nan
    bad.to_csv(folder / "part2.csv", index=False)
    assert main(["fit", str(folder), "--formula", FORMULA, "--scheduler", address]) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'part2.csv'}: column 'x2' has 1 NaN or infinite value(s), first at row 17" in err
    assert main(["fit", str(tmp_path / "none*.pq"), "--formula", FORMULA, "--scheduler", address]) == 1
    assert "none*.pq: no CSV or Parquet (.parquet, .pq, .csv) files" in capsys.readouterr().err
    assert main(["fit", str(folder / "part0.parquet"), "--formula", FORMULA, "--shuffle", "largest"]) == 1
    assert "--shuffle is for a fit on a Dask cluster (--scheduler)" in capsys.readouterr().err


@pytest.mark.parametrize("value,message", [
    ("local:0", "local:N needs a positive number of workers, got '0'"),
    ("local:abc", "local:N needs a positive number of workers, got 'abc'"),
    ("local:", "local:N needs a positive number of workers, got ''"),
    ("", "needs a scheduler address (e.g. tcp://host:8786) or 'local[:N]'"),
])
def test_a_bad_scheduler_option_is_a_usage_error(files, value, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["fit", str(files[1]), "--formula", FORMULA, "--scheduler", value])
    assert caught.value.code == 2
    assert f"argument --scheduler: {message}" in capsys.readouterr().err


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_error(capsys, *argv):
    assert main(list(argv)) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    return captured.err


def test_a_scheduler_that_cannot_be_reached_is_a_one_line_error(files, monkeypatch, capsys):
    from pyglmm.cli import cluster

    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    folder = str(files[1])
    port = closed_port()
    err = one_line_error(capsys, "fit", folder, "--formula", FORMULA, "--scheduler",
                         f"tcp://127.0.0.1:{port}")
    assert err.startswith(f"pyglmm: error: --scheduler tcp://127.0.0.1:{port}: cannot connect to a "
                          f"Dask scheduler (Timed out trying to connect to tcp://127.0.0.1:{port} "
                          "after 1 s")
    err = one_line_error(capsys, "fit", folder, "--formula", FORMULA, "--scheduler", "nohost")
    assert err == ("pyglmm: error: --scheduler nohost: cannot connect to a Dask scheduler (missing "
                   "port number in address 'nohost')\n")


def test_a_cluster_without_workers_is_a_one_line_error(files, monkeypatch, capsys):
    from pyglmm.engines.crossed.cluster import passes

    monkeypatch.setattr(passes, "STALL_SECONDS", 1)
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        err = one_line_error(capsys, "fit", str(files[1]), "--formula", FORMULA, "--scheduler",
                             empty.scheduler_address)
        assert err == (f"pyglmm: error: the fit stopped: no worker joined the Dask cluster "
                       f"(scheduler {empty.scheduler_address}) in 1 s: start its workers, or use a "
                       "cluster that has some\n")


def killed(*args):
    """What a task on a worker that kept dying ends with, as Dask reports it."""
    from types import SimpleNamespace

    from distributed.scheduler import KilledWorker

    raise KilledWorker("task-1", SimpleNamespace(address="tcp://10.0.0.9:4000", memory_limit=2**30), 3)


def cancelled(*args):
    """What every task ends with once the connection to the scheduler is lost."""
    from concurrent.futures import CancelledError

    raise CancelledError()


@pytest.mark.parametrize("failure,message", [
    (killed, "Dask gave up on its task 'task-1' after 4 worker(s) died running it (the last with a "
             "memory limit of 1.00 GiB); most often a worker over its memory limit"),
    (cancelled, "the Dask scheduler cancelled its tasks (most often the connection to the scheduler "
                "was lost: is it still running?)"),
])
def test_workers_lost_or_the_scheduler_lost_are_one_line_errors(address, files, tmp_path, monkeypatch,
                                                                 capsys, failure, message):
    """The workers are threads of this process: a task that fails as Dask's lost workers
    and lost scheduler make tasks fail (the real failures: tests/engines/crossed/
    test_distributed.py) ends the command with one line."""
    from pyglmm.engines.crossed.cluster import partition, scoring

    folder, model = str(files[1]), str(tmp_path / "m.json")
    assert main(["fit", folder, "--formula", FORMULA, "--scheduler", address, "--save", model]) == 0
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(partition, "summary", failure)
        err = one_line_error(capsys, "fit", folder, "--formula", FORMULA, "--scheduler", address)
        assert err.startswith(f"pyglmm: error: the fit stopped: {message}")
    monkeypatch.setattr(scoring, "_score", failure)
    err = one_line_error(capsys, "predict", model, folder, "--out", str(tmp_path / "scores"),
                         "--scheduler", address)
    assert err.startswith(f"pyglmm: error: scoring stopped: {message}")


def test_a_bug_on_a_worker_is_not_hidden(address, files, monkeypatch):
    from pyglmm.engines.crossed.cluster import partition

    def bug(part):
        raise RuntimeError("a bug")

    monkeypatch.setattr(partition, "summary", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["fit", str(files[1]), "--formula", FORMULA, "--scheduler", address])
