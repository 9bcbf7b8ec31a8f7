"""Readers for the command line and scoring: CSV and Parquet files, whole or in chunks,
and a chunked writer of scores."""

import contextlib
import os

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
        String columns of a Parquet file come as pandas categoricals, straight
        from the file's dictionary encoding (an integer code per row, not a
        Python string), with their distinct values sorted as categories: the
        levels, reference level and codes a string column would have.

    Raises
    ------
    DataError
        Naming any requested column the file lacks.
    """
    import pandas as pd

    path = str(path)
    columns = None if columns is None else list(dict.fromkeys(columns))
    if is_parquet(path):
        pyarrow = _pyarrow("reading Parquet")
        pq = pyarrow.parquet
        if columns is not None:
            _check_has(path, column_names(path), columns)
        strings = _string_columns(pyarrow, pq.read_schema(path), columns)
        pool = pyarrow.default_memory_pool()
        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
        try:  # malloc'd buffers go back to the system when freed, the pool's may not
            table = pq.read_table(path, columns=columns, use_pandas_metadata=True,
                                  read_dictionary=strings)
            frame = table.to_pandas(split_blocks=True, self_destruct=True)
        finally:
            pyarrow.set_memory_pool(pool)
        for name in strings:  # categories in sorted order, as the strings' levels
            cat = frame[name].cat.remove_unused_categories()
            frame[name] = cat.cat.reorder_categories(cat.cat.categories.sort_values())
        return frame
    if columns is not None:
        _check_has(path, column_names(path), columns)
    return pd.read_csv(path, usecols=columns)


def _string_columns(pyarrow, schema, columns):
    """The columns (of ``columns``, None: all) that a Parquet ``schema`` stores as plain
    strings: not those pandas wrote from a categorical (they keep their categories)."""
    categorical = {c.get("name") for c in (schema.pandas_metadata or {}).get("columns", [])
                   if c.get("pandas_type") == "categorical"}
    return [name for name in (schema.names if columns is None else columns)
            if name not in categorical and (pyarrow.types.is_string(schema.field(name).type)
                                            or pyarrow.types.is_large_string(schema.field(name).type))]


def is_parquet(path):
    return str(path).lower().endswith((".parquet", ".pq"))


def column_names(path):
    """The column names of a CSV or Parquet file, read from its header or schema."""
    if is_parquet(path):
        return list(_pyarrow("reading Parquet").parquet.read_schema(path).names)
    import pandas as pd

    return list(pd.read_csv(path, nrows=0).columns)


def _pyarrow(what):
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise DataError(f"{what} needs pyarrow: pip install 'pyglmm[parquet]' ({exc})") from exc
    return pyarrow


def iter_table(path, columns, chunk_rows, categorical=()):
    """Yield ``columns`` of a CSV or Parquet file as DataFrames of at most ``chunk_rows`` rows.

    Each chunk is indexed by its rows' numbers in the file (0-based, header
    excluded), so that errors name rows of the whole file.  String columns of
    a Parquet file named in ``categorical`` are read as pandas categoricals
    (from the file's dictionary encoding, without decoding every row).

    Raises
    ------
    DataError
        Naming the file and the column(s) it lacks.
    """
    import pandas as pd

    columns = list(columns)
    if is_parquet(path):
        pa = _pyarrow("reading Parquet")
        schema = pa.parquet.ParquetFile(path).schema_arrow
        _check_has(path, schema.names, columns)
        strings = [c for c in categorical if pa.types.is_string(schema.field(c).type)
                   or pa.types.is_large_string(schema.field(c).type)]
        start = 0
        for batch in pa.parquet.ParquetFile(path, read_dictionary=strings).iter_batches(
                batch_size=chunk_rows, columns=columns):
            frame = batch.to_pandas(split_blocks=True)  # a block per column: no copy into one
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
        return
    _check_has(path, pd.read_csv(path, nrows=0).columns, columns)
    with pd.read_csv(path, usecols=columns, chunksize=chunk_rows) as reader:
        yield from reader  # chunks are indexed by row number in the file


def prefetched(chunks):
    """The items of iterator ``chunks``, each read in a background thread while the caller
    works on the one before (reading Parquet and CSV mostly runs outside the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        coming = pool.submit(next, chunks, None)
        while (chunk := coming.result()) is not None:
            coming = pool.submit(next, chunks, None)
            yield chunk


def _check_has(path, names, columns):
    missing = [c for c in columns if c not in set(names)]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(map(repr, missing))}; the file has "
                        f"{', '.join(map(repr, list(names)[:20]))}")


@contextlib.contextmanager
def column_writer(path, name):
    """Write one float64 column to a Parquet (``.parquet``, ``.pq``) or CSV (``.csv``) file
    chunk by chunk: yields ``write(values)``.

    The rows go to ``path + ".partial"``, renamed to ``path`` when the block
    ends without an error (and removed when it raises): a file at ``path`` is
    always complete.  CSV values are written in the shortest form that reads
    back exactly.
    """
    if not (is_parquet(path) or str(path).lower().endswith(".csv")):
        raise DataError(f"output {path}: give a .parquet, .pq or .csv file name")
    partial = f"{path}.partial"
    try:
        if is_parquet(path):
            pa = _pyarrow("writing Parquet")
            schema = pa.schema([(name, pa.float64())])
            # scores do not repeat and do not compress: no dictionary, no compression (twice as fast)
            with pa.parquet.ParquetWriter(partial, schema, use_dictionary=False,
                                          compression="none") as writer:
                yield lambda values: writer.write_table(pa.table({name: values}, schema=schema))
        else:
            with open(partial, "w") as fh:
                fh.write(f"{name}\n")
                yield lambda values: fh.write("".join(f"{v!r}\n" for v in values.tolist()))
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
