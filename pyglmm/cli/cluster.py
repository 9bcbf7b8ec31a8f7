"""``--scheduler``: ``pyglmm fit`` and ``pyglmm predict`` on a Dask cluster.

DATA is then a directory (its ``*.parquet``, ``*.pq`` and ``*.csv`` files) or a
glob; each file is one partition, read on a worker (the workers need pyglmm and
access to the files), and errors name the file.  ``--scheduler ADDRESS``
connects to a running scheduler (``tcp://host:8786``); ``local`` or ``local:N``
starts a LocalCluster of N worker processes (default: one per core) for the
command's duration.
"""

import argparse
import contextlib
import glob
import os
import time

from ..exceptions import ClusterError, DataError

SUFFIXES = (".parquet", ".pq", ".csv")
CONNECT_SECONDS = 30  # how long to try to reach a --scheduler ADDRESS


def scheduler_option(text):
    """``--scheduler``'s value, checked: ``local``, ``local:N`` with N >= 1, or an address
    (which :func:`connect` checks by connecting)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("needs a scheduler address (e.g. tcp://host:8786) or "
                                         "'local[:N]'")
    if text.startswith("local:"):
        count = text.partition(":")[2]
        if not (count.isdigit() and int(count) >= 1):
            raise argparse.ArgumentTypeError(f"local:N needs a positive number of workers, got "
                                             f"{count!r}")
    return text


def add_scheduler_option(p):
    p.add_argument("--scheduler", type=scheduler_option, metavar="ADDRESS|local[:N]",
                   help="run on a Dask cluster: a scheduler address, or 'local[:N]' for a local "
                        "cluster of N worker processes; DATA is then a directory or a glob of "
                        "CSV/Parquet files, one partition each (needs pyglmm[dask])")


@contextlib.contextmanager
def connect(scheduler):
    """A ``distributed.Client`` for ``scheduler`` (see the module's docstring, checked by
    :func:`scheduler_option`), current while open; a :class:`ClusterError` if the
    scheduler cannot be reached."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise DataError(f"--scheduler needs dask.distributed: pip install 'pyglmm[dask]' ({exc})") \
            from None
    with contextlib.ExitStack() as stack:
        if scheduler == "local" or scheduler.startswith("local:"):
            count = scheduler.partition(":")[2]
            cluster = stack.enter_context(LocalCluster(
                n_workers=int(count) if count else None, threads_per_worker=1,
                dashboard_address=":0"))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=f"{CONNECT_SECONDS}s"))
            except (OSError, ValueError) as exc:  # no answer in time; an address Dask cannot parse
                raise ClusterError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler "
                                   f"({exc})") from None
        with client.as_current():
            yield client


def files_of(data):
    """The CSV/Parquet files of directory or glob ``data``, sorted (DataError if none)."""
    pattern = os.path.join(data, "*") if os.path.isdir(data) else data
    files = sorted(f for f in glob.glob(pattern) if f.lower().endswith(SUFFIXES) and os.path.isfile(f))
    if not files:
        raise DataError(f"{data}: no CSV or Parquet (.parquet, .pq, .csv) files")
    return files


def read_files(files, columns):
    """A dask DataFrame of ``columns`` of ``files``, one partition per file (its column
    types from the first file's schema, or its first rows for a CSV file)."""
    import dask.dataframe as dd
    import pandas as pd

    from ..data.readers import _check_has, _pyarrow, column_names, is_parquet, read_table

    first = files[0]
    _check_has(first, column_names(first), columns)
    if is_parquet(first):
        schema = _pyarrow("reading Parquet").parquet.read_schema(first)
        meta = schema.empty_table().select(columns).to_pandas()
    else:
        meta = pd.read_csv(first, usecols=columns, nrows=1000).iloc[:0]
    return dd.from_map(read_table, files, columns=columns, meta=meta, divisions=None,
                       enforce_metadata=False)


def fit(args, needed):
    """``pyglmm fit --scheduler``: the fit of the files of ``args.data``."""
    from ..engines.crossed.api import parse_model
    from ..engines.crossed.cluster.fit import glmm_dask

    files = files_of(args.data)
    with connect(args.scheduler):
        return glmm_dask(parse_model(args.formula), args.formula, read_files(files, needed),
                         args.family, weights=args.weights, trials=args.trials, offset=args.offset,
                         dispersion=args.dispersion, tol=1e-8, inner_tol=1e-8, var_tol=1e-3,
                         max_iter=100, max_inner_iter=1000, se=True, compare_naive=args.naive,
                         backend=args.backend, callback=None, shuffle=args.shuffle,
                         partition_names=files)


def predict(args, res, scorer):
    """``pyglmm predict --scheduler``: writes one Parquet file per input file into ``args.out``."""
    from ..engines.crossed.cluster.passes import cluster_failures, gather, wait_for_workers
    from ..engines.crossed.cluster.scoring import predict_dask

    files = files_of(args.data)
    start = time.perf_counter()
    with connect(args.scheduler) as client, cluster_failures("scoring"):
        wait_for_workers(client, "scoring")
        scores = predict_dask(res, read_files(files, scorer.columns), type=args.type,
                              new_levels=args.new_levels, partition_names=files)
        write = scores.to_frame().to_parquet(args.out, write_index=False, compute=False)
        gather(client, [client.compute(write)], what="scoring")
    seconds = time.perf_counter() - start
    print(f"scored {len(files)} file(s) in {seconds:.3f} s -> {args.out}/ (one Parquet file per "
          "input file, in their sorted order)")
    return 0
