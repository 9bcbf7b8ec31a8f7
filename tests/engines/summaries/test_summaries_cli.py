"""pyglmm site-summary and pyglmm fit-summaries: the same numbers as the API, errors
naming the site file."""

import json

import numpy as np
import pandas as pd
import pytest

from cases import DATA
from pyglmm.cli import main
from pyglmm.engines.summaries import fit_summaries, read_summary, site_summary

FORMULA = "y ~ x1 + x2 + C(x3)"


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sites")
    df = pd.read_csv(DATA / "summaries_paper.csv")
    paths = []
    for name, part in (("north", df[df.cluster < 15]), ("south", df[df.cluster >= 15])):
        data = tmp / f"{name}.parquet"
        part.to_parquet(data)
        out = tmp / f"{name}.json"
        assert main(["site-summary", str(data), "--formula", FORMULA, "--order", "3",
                     "--cluster", "cluster", "--out", str(out)]) == 0
        paths.append(out)
    return df, paths


def test_site_summary_writes_the_api_message(sites, capsys):
    df, paths = sites
    msg = read_summary(paths[0])
    assert msg["site"] == "north" and msg["order"] == 3
    api = site_summary(df[df.cluster < 15], FORMULA, "cluster", 3, site="north")
    np.testing.assert_array_equal(msg["moments"], [c["moments"] for c in api["clusters"]])


@pytest.mark.parametrize("method", ["direct", "pseudo"])
def test_fit_summaries_prints_and_writes_the_api_fit(sites, tmp_path, capsys, method):
    _, paths = sites
    out = tmp_path / "fit.json"
    assert main(["fit-summaries", *map(str, paths), "--method", method, "--nagq", "3",
                 "--seed", "4", "--json", str(out)]) == 0
    assert "Fixed effects:" in capsys.readouterr().out
    d = json.loads(out.read_text())
    api = fit_summaries(paths, method=method, nagq=3, seed=4)
    assert d["coef"] == pytest.approx(api.coef.to_dict(), rel=1e-12)
    assert d["fit_method"] == method and d["order"] == 3 and d["nagq"] == 3
    assert d["seed"] == (4 if method == "pseudo" else None)


def test_errors_name_the_site_file(sites, tmp_path, capsys):
    _, paths = sites
    bad = tmp_path / "bad.json"
    d = json.loads(paths[1].read_text())
    d["clusters"][2]["events"] = -3
    bad.write_text(json.dumps(d))
    assert main(["fit-summaries", str(paths[0]), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"site file {bad}: field 'clusters[2].events'" in err and "(cluster '17')" in err
    assert main(["site-summary", str(DATA / "summaries_paper.csv"), "--formula", FORMULA,
                 "--cluster", "cluster", "--min-size", "200", "--out", str(tmp_path / "x.json")]) == 1
    assert "fewer rows than the minimum cluster size 200" in capsys.readouterr().err
