"""Readers for the command line and scoring: CSV and Parquet files."""

from ..exceptions import DataError


def read_table(path, columns=None):
    """A CSV or Parquet (``.parquet``, ``.pq``) file as a DataFrame.

    Parameters
    ----------
    path : str or path-like
    columns : list of str, optional
        Read only these columns (default: all).  Parquet files are read
        column by column with pyarrow, and each column's Arrow buffers are
        released as soon as pandas holds it, so that memory peaks near the
        size of the columns read (numeric columns without missing values are
        not copied), and in memory that goes back to the system when freed.

    Raises
    ------
    DataError
        Naming any requested column the file lacks.
    """
    import pandas as pd

    path = str(path)
    columns = None if columns is None else list(dict.fromkeys(columns))
    if path.lower().endswith((".parquet", ".pq")):
        try:
            import pyarrow
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError(f"reading Parquet needs pyarrow: pip install 'pyglmm[parquet]' ({exc})") from exc
        if columns is not None:
            _check_columns(path, pq.read_schema(path).names, columns)
        pool = pyarrow.default_memory_pool()
        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
        try:  # malloc'd buffers go back to the system when freed, the pool's may not
            table = pq.read_table(path, columns=columns, use_pandas_metadata=True)
            return table.to_pandas(split_blocks=True, self_destruct=True)
        finally:
            pyarrow.set_memory_pool(pool)
    if columns is not None:
        _check_columns(path, pd.read_csv(path, nrows=0).columns, columns)
    return pd.read_csv(path, usecols=columns)


def _check_columns(path, available, columns):
    missing = [c for c in columns if c not in set(available)]
    if missing:
        raise DataError(f"unknown column(s) {', '.join(map(repr, missing))}; {path} has "
                        f"{', '.join(map(repr, list(available)[:20]))}")
