"""Readers for the command line and scoring: CSV and Parquet files."""

from ..exceptions import DataError


def read_table(path):
    """A CSV or Parquet (``.parquet``, ``.pq``) file as a DataFrame."""
    import pandas as pd

    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise DataError(f"reading Parquet needs pyarrow: pip install 'pyglmm[parquet]' ({exc})") from exc
    return pd.read_csv(path)
