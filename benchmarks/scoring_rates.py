"""Scoring rates: the linear_predictor kernel alone, and ``pyglmm predict`` end to end
(Parquet in, Parquet out), with where the end-to-end time goes.

    python benchmarks/scoring_rates.py                        # 10^7 rows, C++ backend
    python benchmarks/scoring_rates.py --rows 1e6 --repeat 3 --backend numba --keep /tmp/scoring

The model: ``y ~ x1 + ... + x7 + (1|row) + (1|col)`` (p = 8, two random factors)
fitted with the formula interface to the paper's Sec. 5 design at ``--fit-rows``
rows.  The rows to score: x1..x7 standard normal, and row and col labels
drawn uniformly from 1.02 times the fitted levels' range, so that about 2 % of
the labels were not seen in the fit (scored at the population level), written
to one Parquet file with pyarrow's defaults in row groups of 10^6 rows.

* kernel: best of ``--repeat`` calls of ``linear_predictor`` on the rows in
  memory (X n x 8 C-contiguous float64, codes n x 2 int32, the output's pages
  touched before);
* end to end: best of ``--repeat`` runs of ``pyglmm predict MODEL DATA --out
  SCORES.parquet``, each in a fresh process, as the command times itself
  (reading, scoring and writing every chunk; not Python's start-up nor loading
  the model, which the process's wall-clock adds);
* phases: one run of the same loop in this process without reading ahead,
  timing reading (Parquet to DataFrame), the fixed-effects matrix
  (``_fixed_part``), scoring (label lookup and kernel) and writing.

Timings on a shared machine only ever gain noise: compare the best of several.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
UNSEEN = 0.02  # share of labels drawn beyond the fitted levels


def make_model(path, fit_rows, seed=0):
    """Fit the p = 8 model to the Sec. 5 design at ``fit_rows`` rows and save it to ``path``."""
    import pandas as pd

    import problems
    import pyglmm

    X, y, groups, _ = problems.seed_design(fit_rows, seed=seed)
    df = pd.DataFrame({**{f"x{j}": X[:, j] for j in range(1, 8)}, "y": y, **groups})
    res = pyglmm.glmm("y ~ " + " + ".join(f"x{j}" for j in range(1, 8)) + " + (1|row) + (1|col)", df)
    res.save(path)
    return res


def make_rows(res, n, seed=1):
    """Columns of ``n`` rows to score: x1..x7 and labels with about 2 % unseen."""
    rng = np.random.default_rng(seed)
    cols = {f"x{j}": rng.standard_normal(n) for j in range(1, 8)}
    for f in res.factor_names:
        top = int(res.b[f].index.max())
        cols[f] = rng.integers(0, int((top + 1) * (1 + UNSEEN)), n)
    return cols


def write_parquet(cols, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(cols), path, row_group_size=1_000_000)


def kernel_inputs(res, cols, backend):
    """(Scorer, X, codes) of the rows in memory, as linear_predictor takes them."""
    from pyglmm.results.scoring import Scorer

    scorer = Scorer(res, backend=backend)
    n = len(cols["x1"])
    X = np.empty((n, 8))
    X[:, 0] = 1.0
    for j in range(1, 8):
        X[:, j] = cols[f"x{j}"]
    codes = np.empty((n, len(scorer.factors)), dtype=np.int32)
    for k, levels in enumerate(scorer.factors):
        codes[:, k] = levels.ids(cols[levels.factor])
    return scorer, X, codes


def kernel_seconds(res, cols, backend, repeat):
    """Best-of-``repeat`` times of linear_predictor on the rows in memory, the output, threads."""
    scorer, X, codes = kernel_inputs(res, cols, backend)
    eta = np.zeros(X.shape[0])
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        scorer.kern.linear_predictor(X, codes, scorer.beta, scorer.table, np.empty(0), eta, scorer.threads)
        times.append(time.perf_counter() - start)
    return times, eta, scorer.threads


def command(model, data, out, backend):
    return [sys.executable, "-m", "pyglmm", "predict", str(model), str(data), "--out", str(out),
            "--backend", backend]


def end_to_end_seconds(model, data, out, backend, repeat):
    """(seconds the command reports, wall-clock seconds of the process), per run."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(command(model, data, out, backend), capture_output=True, text=True,
                              check=True)
        wall = time.perf_counter() - start
        runs.append((float(re.search(r"in ([0-9.]+) s", done.stdout).group(1)), wall))
    return runs


def phase_seconds(model, data, out, backend):
    """Seconds per phase of the predict loop (no reading ahead), in this process."""
    import pyglmm
    from pyglmm.data.readers import column_writer, iter_table
    from pyglmm.results.scoring import Scorer, _fixed_part

    res = pyglmm.load(model)
    scorer = Scorer(res, backend=backend)
    spent = dict.fromkeys(["read", "fixed part", "levels and kernel", "write"], 0.0)
    with column_writer(out, "eta") as write:
        chunks = iter_table(data, scorer.columns, 1_000_000, categorical=res.factor_names)
        while True:
            t0 = time.perf_counter()
            frame = next(chunks, None)
            t1 = time.perf_counter()
            spent["read"] += t1 - t0
            if frame is None:
                return spent
            X = _fixed_part(res, frame)
            t2 = time.perf_counter()
            scores = np.empty(len(frame))
            scorer.score(X, [frame[f] for f in res.factor_names], None, scores, frame.index)
            t3 = time.perf_counter()
            write(scores)
            spent["fixed part"] += t2 - t1
            spent["levels and kernel"] += t3 - t2
            spent["write"] += time.perf_counter() - t3


def measure(rows, fit_rows, backend, repeat, workdir):
    """Every figure of the benchmark as a dict (files in ``workdir``)."""
    import pandas as pd

    import pyglmm

    workdir = Path(workdir)
    model, data, out = workdir / "model.json", workdir / "rows.parquet", workdir / "scores.parquet"
    res = make_model(model, fit_rows)
    cols = make_rows(res, rows)
    write_parquet(cols, data)
    times, eta, threads = kernel_seconds(res, cols, backend, repeat)
    runs = end_to_end_seconds(model, data, out, backend, repeat)
    check = slice(0, min(rows, 10_000))  # the scores are the model's
    want = res.predict(pd.DataFrame({k: v[check] for k, v in cols.items()})).to_numpy()
    np.testing.assert_allclose(eta[check], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pd.read_parquet(out).eta.to_numpy()[check], want, rtol=1e-12, atol=1e-12)
    return {"rows": rows, "p": len(res.coef), "levels": {f: len(res.b[f]) for f in res.factor_names},
            "unseen": {f: float(np.mean(cols[f] > res.b[f].index.max())) for f in res.factor_names},
            "backend": backend, "threads": threads, "cpus": os.cpu_count(),
            "kernel_seconds": times, "end_to_end_seconds": [r[0] for r in runs],
            "process_seconds": [r[1] for r in runs],
            "phases": phase_seconds(model, data, workdir / "phases.parquet", backend),
            "command": " ".join(["pyglmm", *command(model, data, out, backend)[3:]]),
            "pyglmm": pyglmm.__file__}


def report(m):
    n = m["rows"]
    kernel, e2e, wall = min(m["kernel_seconds"]), min(m["end_to_end_seconds"]), min(m["process_seconds"])
    levels = ", ".join(f"{f} {q:,} levels ({100 * m['unseen'][f]:.1f} % of rows unseen)"
                       for f, q in m["levels"].items())
    phases = ", ".join(f"{k} {v:.3f} s" for k, v in m["phases"].items())
    return "\n".join([
        f"{n:,} rows, p = {m['p']}, {levels}; backend {m['backend']}, {m['threads']} threads, "
        f"{m['cpus']} CPUs",
        f"kernel (linear_predictor): best {kernel:.3f} s = {n / kernel / 1e6:.1f} M rows/s "
        f"(of {len(m['kernel_seconds'])}; target >= 50)",
        f"end to end ({m['command']}): best {e2e:.3f} s = {n / e2e / 1e6:.2f} M rows/s "
        f"(of {len(m['end_to_end_seconds'])}; target >= 5); the whole process {wall:.2f} s",
        f"phases (one run, no reading ahead): {phases}",
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--fit-rows", type=float, default=1e5)
    ap.add_argument("--backend", default="cpp")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", metavar="DIR", help="write the files here (default: a temporary directory)")
    ap.add_argument("--format", choices=["text", "json"], default="text")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or tmp
        os.makedirs(workdir, exist_ok=True)
        m = measure(int(args.rows), int(args.fit_rows), args.backend, args.repeat, workdir)
    print(json.dumps(m, indent=1) if args.format == "json" else report(m))


if __name__ == "__main__":
    main()
