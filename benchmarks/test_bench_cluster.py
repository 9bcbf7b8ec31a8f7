"""The cluster benchmark script (cluster_table.py) run once at a tiny size, so that its
code is tested; its measurements are in benchmarks/README.md."""

import pytest

pytest.importorskip("distributed")


@pytest.mark.parametrize("problem", ["seed", "stitchfix"])
def test_cluster_table_runs_and_fits_alike(problem):
    import cluster_table

    m = cluster_table.run(rows=3000 if problem == "seed" else 20000, files=3, workers=1,
                          problem=problem)
    assert m["cluster"]["iterations"] == m["in_process"]["iterations"]
    assert max(m["max_abs_difference"].values()) < 1e-10
    assert {"stats", "cross_sums", "sandwich"} <= set(m["passes"])
    assert "bytes_gathered_per_pass" in m["passes"]["stats"]
    assert cluster_table.text(m).count("\n") >= 8
