"""Per-iteration progress: the callback= argument and the "pyglmm" logger."""

import logging

import numpy as np
import pytest

import pyglmm
from cases import small_crossed


def test_callback_gets_every_outer_iteration():
    X, y, groups = small_crossed()
    rows = []
    res = pyglmm.glmm_from_arrays(X, y, groups, callback=rows.append)
    assert [r["iteration"] for r in rows] == list(range(1, res.iterations + 1))
    assert set(rows[0]) == {"iteration", "inner_sweeps", "inner_rel", "seconds", "rel_change", "phi",
                            "accelerated", "sigma"}
    assert rows[-1]["sigma"] == pytest.approx(res.sigma.to_dict(), rel=1e-15)
    np.testing.assert_allclose([r["rel_change"] for r in rows], res.history.rel_change, rtol=1e-15)
    assert rows[-1]["rel_change"] <= 1e-8 and all(r["seconds"] >= 0 for r in rows)
    with pytest.raises(TypeError, match="progress"):  # the old name is gone
        pyglmm.glmm_from_arrays(X, y, groups, progress=rows.append)


def test_iterations_are_logged_at_info(caplog):
    X, y, groups = small_crossed()
    with caplog.at_level(logging.INFO, logger="pyglmm"):
        res = pyglmm.glmm_from_arrays(X, y, groups)
    lines = [r.getMessage() for r in caplog.records if r.name == "pyglmm"]
    assert len(lines) == res.iterations + 1 and all(r.levelno == logging.INFO for r in caplog.records)
    last = res.history.iloc[-1]
    assert lines[-2].startswith(f"iteration {res.iterations:3d}: relative change {last.rel_change:.3g}, "
                                f"sigma_g0={res.sigma['g0']:.4g}, sigma_g1={res.sigma['g1']:.4g}, phi=1;")
    assert lines[-1].startswith(f"converged after {res.iterations} iterations in ")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyglmm"):
        pyglmm.glmm_from_arrays(X, y, groups)
    assert not caplog.records
