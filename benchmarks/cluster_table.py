"""The crossed fit in process vs on a Dask LocalCluster: time per outer iteration and in
all, what each kind of pass costs and ships, and the workers' peak memory.

    python benchmarks/cluster_table.py [--rows 1e6] [--files 16] [--workers 2] [--shuffle]
                                       [--problem seed|stitchfix] [--format text|json]

The data are the paper's Sec. 5 design (``pyglmm.simulate_crossed``), or the Stitch-Fix
shape (``pyglmm.simulate_stitchfix``, its levels scaled with the rows as in
problems.py), written as ``--files`` Parquet files; the in-process fit reads them into one DataFrame, the
cluster fit (``--workers`` worker processes of one thread each) reads one file per
partition on the workers (as ``pyglmm fit DIR --scheduler``).  Both fits are timed
from the files; the table states how far apart their estimates are.
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

import pyglmm

FORMULAS = {"seed": "y ~ x1 + x2 + x3 + x4 + x5 + x6 + x7 + (1|row) + (1|col)",
            "stitchfix": "y ~ C(client_fit) + edgy + boho + chest + dress + C(material) + C(item_fit)"
                         " + (1|client) + (1|item)"}
ROWS_PER_S = 1.1358  # E(N)/S in the paper's design


def simulate(problem, rows):
    if problem == "seed":
        return pyglmm.simulate_crossed(rows / ROWS_PER_S, seed=0)
    scale = rows / 5_000_000
    return pyglmm.simulate_stitchfix(rows, max(2, int(744_482 * scale)),
                                     max(2, int(3_547 * scale ** 0.5)), seed=0, as_frame=True)


def write_files(problem, rows, files, folder):
    """The problem at about ``rows`` rows, as ``files`` Parquet files in ``folder``."""
    df = simulate(problem, rows)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), files)):
        paths.append(Path(folder) / f"part{i:04d}.parquet")
        df.iloc[part].to_parquet(paths[-1], index=False)
    return paths


def _peak_rss_mb():
    """This process's peak resident memory since it started: VmHWM (Linux).  Not
    getrusage's ru_maxrss, which a process inherits from its parent across fork and
    exec: a worker started after the in-process fit would report the driver's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(rows, files, workers, shuffle=False, problem="seed"):
    """Both fits on the same files; returns a dict of the measurements."""
    import pandas as pd
    from distributed import Client, LocalCluster

    from pyglmm.cli.cluster import read_files
    from pyglmm.data.formula import parse_formula, required_columns

    formula = FORMULAS[problem]
    columns = required_columns(parse_formula(formula))
    with tempfile.TemporaryDirectory() as folder:
        paths = write_files(problem, rows, files, folder)
        start = time.perf_counter()
        local = pyglmm.glmm(formula, pd.concat([pd.read_parquet(p, columns=columns) for p in paths],
                                               ignore_index=True))
        local_seconds = time.perf_counter() - start
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            client.run(_peak_rss_mb)  # workers up before the clock starts
            start = time.perf_counter()
            remote = pyglmm.glmm(formula, read_files([str(p) for p in paths], columns),
                                 shuffle="largest" if shuffle else None)
            remote_seconds = time.perf_counter() - start
            peak = sorted(client.run(_peak_rss_mb).values())
    traffic = remote.cluster["traffic"]
    return {
        "problem": problem, "rows": local.n_obs, "levels": local.n_levels, "files": files, "workers": workers,
        "shuffle": bool(shuffle),
        "in_process": {"seconds": local_seconds, "iterations": local.iterations,
                       "per_iteration": local.timings["schall"] / local.iterations},
        "cluster": {"seconds": remote_seconds, "iterations": remote.iterations,
                    "per_iteration": remote.timings["schall"] / remote.iterations,
                    "timings": remote.timings, "worker_peak_rss_mb": peak},
        "passes": {kind: {"passes": t["passes"], "seconds_per_pass": t["seconds"] / t["passes"],
                          "bytes_sent_per_pass": t["bytes_sent"] / t["passes"],
                          "bytes_gathered_per_pass": t["bytes_received"] / t["passes"]}
                   for kind, t in traffic.items()},
        "max_abs_difference": {k: float(np.max(np.abs(getattr(remote, k) - getattr(local, k))))
                               for k in ("coef", "se", "sigma")},
    }


def text(m):
    lines = [f"{m['problem']}: {m['rows']:,} rows, levels {m['levels']}, {m['files']} files, {m['workers']} worker "
             f"processes{' (shuffled by the largest factor)' if m['shuffle'] else ''}",
             f"{'':12}{'seconds':>10}{'outer iters':>13}{'s / iter':>10}"]
    for name in ("in_process", "cluster"):
        r = m[name]
        lines.append(f"{name:12}{r['seconds']:10.2f}{r['iterations']:13d}{r['per_iteration']:10.3f}")
    lines.append(f"{'pass':12}{'count':>7}{'ms/pass':>10}{'sent B/pass':>13}{'gathered B/pass':>17}")
    for kind, p in m["passes"].items():
        lines.append(f"{kind:12}{p['passes']:7d}{1e3 * p['seconds_per_pass']:10.1f}"
                     f"{p['bytes_sent_per_pass']:13,.0f}{p['bytes_gathered_per_pass']:17,.0f}")
    lines.append(f"worker peak RSS (MB): {', '.join(f'{x:.0f}' for x in m['cluster']['worker_peak_rss_mb'])}")
    lines.append("cluster fit minus in-process fit, max |difference|: " + ", ".join(
        f"{k} {v:.1e}" for k, v in m["max_abs_difference"].items()))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=1e6)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shuffle", action="store_true", help="shuffle rows by the largest factor")
    ap.add_argument("--problem", choices=list(FORMULAS), default="seed")
    ap.add_argument("--format", choices=["text", "json"], default="text")
    args = ap.parse_args(argv)
    m = run(int(args.rows), args.files, args.workers, args.shuffle, args.problem)
    print(json.dumps(m, indent=1) if args.format == "json" else text(m))


if __name__ == "__main__":
    main()
