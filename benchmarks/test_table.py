"""The benchmark table script runs and reports what it promises (tiny sizes)."""

import json

import table


def test_table_json(capsys):
    assert table.main(["--sizes", "3000,12000", "--stitchfix", "--stitchfix-rows", "20000",
                       "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["problem"] for r in out["rows"]} == {"seed", "stitchfix"}
    assert all(r["converged"] and r["peak"] >= 0 and r["input"] > 0 for r in out["rows"])
    assert set(out["scaling"]) == {r["backend"] for r in out["rows"] if r["problem"] == "seed"}


def test_table_text(capsys):
    assert table.main(["--sizes", "3000", "--backends", "numpy"]) == 0
    text = capsys.readouterr().out
    assert "Whole-fit time" in text and "numpy" in text and "scaling exponent" in text
