"""pyglmm fit / predict --scheduler: a directory of files on a Dask cluster (an in-process
LocalCluster, reached by its address)."""

import json

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
    assert main(["fit", str(folder), "--formula", FORMULA, "--scheduler", "local:x"]) == 1
    assert "--scheduler local:N needs a positive number of workers, got 'x'" in capsys.readouterr().err
    assert main(["fit", str(folder / "part0.parquet"), "--formula", FORMULA, "--shuffle", "largest"]) == 1
    assert "--shuffle is for a fit on a Dask cluster (--scheduler)" in capsys.readouterr().err
