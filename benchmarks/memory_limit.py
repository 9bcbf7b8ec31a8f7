"""A fit whose data do not fit in one worker's memory limit, on 1 worker and spread over
several with the same limit (issue 12's evidence).

    python benchmarks/memory_limit.py [--rows 4e6] [--files 16] [--limit 1GB] [--workers 1 2 4]
                                      [--timeout 600] [--format text|json]

The paper's Sec. 5 design (``pyglmm.simulate_crossed``, as cluster_table.py) is written as
``--files`` Parquet files and fitted in process (the reference), then on a LocalCluster of
``N`` worker processes of one thread each, every worker with ``memory_limit=--limit``, for
each ``N`` of ``--workers``.  Per cluster: the outcome (the fit's largest difference from
the in-process fit, or the error the user sees), seconds, and each worker's peak memory.
Dask's own memory management acts at its defaults (spill at 70% of the limit, pause at
80%, terminate at 95%).
"""

import argparse
import json
import tempfile
import time

import numpy as np

import pyglmm

from cluster_table import _peak_rss_mb, write_files

FORMULA = "y ~ x1 + x2 + x3 + x4 + x5 + x6 + x7 + (1|row) + (1|col)"


def run(rows, files, limit, workers, timeout):
    """The in-process fit and one cluster fit per worker count, on the same files."""
    import pandas as pd
    from distributed import Client, LocalCluster

    from pyglmm.cli.cluster import read_files
    from pyglmm.data.formula import parse_formula, required_columns

    columns = required_columns(parse_formula(FORMULA))
    out = {"rows": None, "files": files, "limit": limit, "clusters": []}
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(p) for p in write_files("seed", rows, files, folder)]
        local = pyglmm.glmm(FORMULA, pd.concat([pd.read_parquet(p, columns=columns) for p in paths],
                                               ignore_index=True))
        out["rows"] = local.n_obs
        for n in workers:
            row = {"workers": n}
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=limit,
                              dashboard_address=":0") as cluster, Client(cluster) as client:
                client.run(_peak_rss_mb)
                start = time.perf_counter()
                try:
                    remote = _with_timeout(timeout, pyglmm.glmm, FORMULA, read_files(paths, columns))
                    row["outcome"] = "fitted, max |difference| from in process: " + ", ".join(
                        f"{k} {np.max(np.abs(getattr(remote, k) - getattr(local, k))):.1e}"
                        for k in ("coef", "se", "sigma"))
                except Exception as exc:  # what the user sees is the measurement
                    row["outcome"] = f"{type(exc).__name__}: {exc}"
                row["seconds"] = time.perf_counter() - start
                row["worker_peak_rss_mb"] = sorted(client.run(_peak_rss_mb).values())
            out["clusters"].append(row)
    return out


def _with_timeout(timeout, fn, *args):
    """``fn(*args)`` in a thread (on the default client); TimeoutError after ``timeout``
    seconds (a hang), when closing the cluster ends the thread."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False)


def text(m):
    lines = [f"seed design: {m['rows']:,} rows in {m['files']} files; memory_limit {m['limit']} per worker",
             f"{'workers':>8}{'seconds':>9}  {'worker peak RSS (MB)':<24}outcome"]
    for r in m["clusters"]:
        lines.append(f"{r['workers']:8d}{r['seconds']:9.1f}  "
                     f"{', '.join(f'{x:.0f}' for x in r['worker_peak_rss_mb']):<24}{r['outcome']}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=4e6)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--limit", default="1GB")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--format", choices=["text", "json"], default="text")
    args = ap.parse_args(argv)
    m = run(int(args.rows), args.files, args.limit, args.workers, args.timeout)
    print(json.dumps(m, indent=1) if args.format == "json" else text(m))


if __name__ == "__main__":
    main()
