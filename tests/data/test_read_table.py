"""read_table: only the columns asked for, an error naming a missing one."""

import numpy as np
import pandas as pd
import pytest

from pyglmm import DataError
from pyglmm.data.readers import read_table


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"y": rng.integers(0, 2, 50), "x": rng.standard_normal(50),
                         "cat": pd.Categorical(rng.choice(["b", "a"], 50), categories=["b", "a"]),
                         "unused": [[1, 2]] * 50})  # a column no reader should have to decode


def test_parquet_reads_only_the_columns_asked_for(frame, tmp_path):
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    got = read_table(str(path), columns=["x", "cat", "y", "x"])
    assert list(got.columns) == ["x", "cat", "y"]
    pd.testing.assert_frame_equal(got, frame[["x", "cat", "y"]])  # categories and their order kept
    assert list(read_table(path).columns) == list(frame.columns)
    with pytest.raises(DataError, match=r"t.parquet: no column\(s\) 'z', 'w'; the file has 'y', 'x'"):
        read_table(path, columns=["x", "z", "w"])


def test_csv_reads_only_the_columns_asked_for(frame, tmp_path):
    path = tmp_path / "t.csv"
    frame.drop(columns="unused").to_csv(path, index=False)
    got = read_table(str(path), columns=["x", "y"])
    assert sorted(got.columns) == ["x", "y"]
    np.testing.assert_allclose(got.x, frame.x, rtol=1e-15)
    with pytest.raises(DataError, match=r"t.csv: no column\(s\) 'z'"):
        read_table(str(path), columns=["x", "z"])
