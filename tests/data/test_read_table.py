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


def test_parquet_strings_come_as_sorted_categoricals_and_fit_as_strings(tmp_path):
    """A string column is read from its dictionary encoding (codes, no Python string
    per row) with sorted categories: the fit is that of the strings themselves."""
    import pyglmm

    df = pyglmm.simulate_stitchfix(4000, 500, 100, seed=5, as_frame=True)
    shade = np.array(["mid", "dark", "light", "pale"])[df.client.to_numpy() % 4]  # "mid" first
    df = df.assign(shade=shade, item_name=np.char.add("i", df.item.to_numpy().astype(str)))
    path = tmp_path / "s.parquet"
    df.to_parquet(path, row_group_size=1000)  # a dictionary per row group: unified on reading
    got = read_table(path, columns=["y", "chest", "shade", "item_name", "client"])
    assert str(got.shade.dtype) == "category" and list(got.shade.cat.categories) == [
        "dark", "light", "mid", "pale"]
    assert got.item_name.cat.categories.is_monotonic_increasing
    np.testing.assert_array_equal(got.shade.astype(str), shade)
    formula = "y ~ chest + shade + (1|client) + (1|item_name)"
    from_file, from_frame = (pyglmm.glmm(formula, data) for data in (got, df))
    assert list(from_file.params.index) == ["Intercept", "chest", "shade[T.light]", "shade[T.mid]",
                                            "shade[T.pale]"]
    pd.testing.assert_series_equal(from_file.params, from_frame.params, rtol=1e-12)
    pd.testing.assert_series_equal(from_file.ranef()["item_name"].iloc[:, 0],
                                   from_frame.ranef()["item_name"].iloc[:, 0], rtol=1e-12,
                                   check_index_type=False)
