"""Site side: the per-cluster statistics against a direct computation, the binary and
categorical flags, and the disclosure guard (errors name the cluster)."""

from itertools import combinations_with_replacement
from math import comb

import numpy as np
import pandas as pd
import pytest

from paper import FORMULA, simulate
from pyglmm import DataError
from pyglmm.engines.summaries import site_summary
from pyglmm.engines.summaries.site import moment_index, released_count


@pytest.fixture(scope="module")
def data():
    return simulate(6, 40, seed=5)


def test_moment_index_is_every_monomial_of_order_2_to_K():
    for p in range(0, 5):
        for K in range(1, 5):
            index = moment_index(p, K)
            assert len(index) == comb(p + K, K) - 1 - p  # all monomials minus 1 and the p means
            assert len(set(index)) == len(index)
            assert all(2 <= len(a) <= K and list(a) == sorted(a) for a in index)


def test_statistics_match_a_direct_computation(data):
    msg = site_summary(data, FORMULA, "cluster", order=4, site="s")
    assert msg["columns"] == ["x1", "x2", "C(x3)[T.b]", "C(x3)[T.c]"]
    assert msg["binary"] == [False, False, True, True]
    assert msg["categorical"] == [[2, 3]]
    X = np.column_stack([data.x1, data.x2, data.x3 == "b", data.x3 == "c"]).astype(float)
    for c in msg["clusters"]:
        rows = (data.cluster.astype(str) == c["id"]).to_numpy()
        Xc, yc = X[rows], data.y.to_numpy()[rows]
        Z = Xc - Xc.mean(axis=0)
        assert c["n"] == rows.sum() and c["events"] == yc.sum()
        np.testing.assert_allclose(c["mean"], Xc.mean(axis=0), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(c["y_cross"], (yc[:, None] * Z).mean(axis=0), rtol=1e-12, atol=1e-15)
        want = [np.mean(np.prod([Z[:, v] for v in a], axis=0))
                for k in range(2, 5) for a in combinations_with_replacement(range(4), k)]
        np.testing.assert_allclose(c["moments"], want, rtol=1e-10, atol=1e-14)


def test_binary_numeric_column_is_flagged(data):
    df = data.assign(flag=(data.x1 > 0).astype(int))
    msg = site_summary(df, "y ~ x1 + flag", "cluster", order=2)
    assert msg["binary"] == [False, True] and msg["categorical"] == []


def test_small_cluster_is_refused_naming_it(data):
    df = pd.concat([data, data[data.cluster == 0].head(3).assign(cluster=99)])
    with pytest.raises(DataError, match=r"cluster '99' \(3 rows\).*min_size"):
        site_summary(df, FORMULA, "cluster", order=2)
    site_summary(df, FORMULA, "cluster", order=1, min_size=3)  # allowed when the site says so


def test_release_reaching_the_data_values_is_refused_naming_the_cluster(data):
    # 4 covariates at order 4: 2 + 8 + 65 = 75 numbers; a 15-row cluster holds 15 x 5 = 75 values
    assert released_count(4, 4) == 75
    df = pd.concat([data[data.cluster != 0], data[data.cluster == 0].head(15)])
    with pytest.raises(DataError, match=r"cluster '0' \(15 rows x 5 values = 75\).*reconstructed"):
        site_summary(df, FORMULA, "cluster", order=4)
    site_summary(df, FORMULA, "cluster", order=3)  # 2 + 8 + 30 = 40 < 75
    df16 = pd.concat([data[data.cluster != 0], data[data.cluster == 0].head(16)])
    site_summary(df16, FORMULA, "cluster", order=4)  # 75 < 80


@pytest.mark.parametrize("order", [0, 5, 2.0, True])
def test_bad_order_is_refused(data, order):
    with pytest.raises(ValueError, match="order"):
        site_summary(data, FORMULA, "cluster", order=order)


def test_non_binary_response_names_the_column_and_row(data):
    df = data.copy()
    df.loc[7, "y"] = 2
    with pytest.raises(DataError, match=r"response column 'y'.*row 7"):
        site_summary(df, FORMULA, "cluster", order=2)


@pytest.mark.parametrize("order, value", [(3, 1e110), (4, 1e90)])
def test_covariate_whose_moments_overflow_is_named(data, order, value):
    """A value whose order-K moments overflow is refused naming the column and row (it
    used to reach the message as NaN, refused later at the coordinator); one just
    inside the limit still gives finite moments."""
    df = data.copy()
    df.loc[7, "x1"] = value
    with pytest.raises(DataError, match=rf"column 'x1'.*row 7.*moments of order {order}"):
        site_summary(df, FORMULA, "cluster", order=order)
    df.loc[7, "x1"] = 1e70
    stats = site_summary(df, FORMULA, "cluster", order=order)
    assert all(np.isfinite(c["moments"]).all() for c in stats["clusters"])


def test_missing_columns_and_other_random_terms_are_named(data):
    with pytest.raises(DataError, match="grouping factor 'ward'"):
        site_summary(data, FORMULA, "ward", order=2)
    with pytest.raises(DataError, match="'x9'"):
        site_summary(data, "y ~ x1 + x9", "cluster", order=2)
    with pytest.raises(ValueError, match=r"\(1\|cluster\)"):
        site_summary(data, "y ~ x1 + (1|x3)", "cluster", order=2)
    with pytest.raises(DataError, match="cluster column 'cluster' is missing in row 3"):
        site_summary(data.assign(cluster=data.cluster.where(data.index != 3)), FORMULA, "cluster")
