"""Print a table of whole-fit times per backend and size, the scaling exponent and peak memory.

Each fit runs in its own process, after a small warm-up fit (so that numba's
compilation is not timed), ``--repeat`` times on the same data: the table shows
the fastest (the others are in the JSON output), since on a shared virtual
machine the noise only ever adds time.  Peak memory is that of the first fit:
``peak/input`` is the rise of the resident set's high-water mark during the fit
(data already in memory, freed heap memory returned first) over the bytes of
the input arrays (X, y, group labels).  Linux only (it reads /proc).
Optionally compares with glmer (``--peers``, needs R with lme4) on the same data.

    python benchmarks/table.py                       # 1e5, 1e6, 3e6 rows; every backend
    python benchmarks/table.py --sizes 1e5,1e6 --stitchfix --peers --format json
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHILD = """
import ctypes, json, sys, time
sys.path.insert(0, {here!r})
import problems, pyglmm
warm = problems.make("seed", 20000)  # JIT compilation and thread start-up are not timed
pyglmm.glmm_from_arrays(*warm[:3], intercept=False, feature_names=warm[3], backend={backend!r})
arrays = problems.make({name!r}, {n})
X, y, groups, names = arrays
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so that reuse counts
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the high-water mark: count only what the fit adds
rss = lambda key: int([l for l in open("/proc/self/status") if l.startswith(key)][0].split()[1]) * 1024
before = rss("VmRSS:")
fit = lambda: pyglmm.glmm_from_arrays(X, y, groups, intercept=False, feature_names=names, backend={backend!r})
res = fit()
peak = rss("VmHWM:") - before
times = [res.seconds] + [fit().seconds for _ in range({repeat} - 1)]
print(json.dumps(dict(seconds=min(times), times=times, iterations=res.iterations, inner=res.inner_sweeps,
                      converged=res.converged, n=res.n_obs, p=len(names),
                      levels=list(res.n_levels.values()), peak=peak, input=problems.input_bytes(arrays),
                      timings=res.timings, threads=res.threads)))
"""

GLMER = """
suppressMessages(library(lme4))
d <- read.csv("{csv}")
f <- as.formula(paste("y ~", paste(grep("^x", names(d), value = TRUE), collapse = " + "), "+ (1|row) + (1|col)"))
t <- system.time(fit <- glmer(f, d, binomial, nAGQ = 0))[["elapsed"]]
cat(t, "\\n")
"""


def run_fit(name, n, backend, threads, repeat=1):
    env = {**os.environ, "PYGLMM_NUM_THREADS": str(threads)} if threads else dict(os.environ)
    code = CHILD.format(here=str(HERE), name=name, n=n, backend=backend, repeat=repeat)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=HERE)  # not the repository root: import the installed pyglmm
    if out.returncode != 0:
        raise RuntimeError(f"{name} n={n} {backend}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_glmer(n):
    sys.path.insert(0, str(HERE))
    import problems
    X, y, groups, _ = problems.seed_design(n)
    import pandas as pd
    df = pd.DataFrame({"row": groups["row"], "col": groups["col"], "y": y,
                       **{f"x{j}": X[:, j] for j in range(1, X.shape[1])}})
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "d.csv"
        df.to_csv(csv, index=False)
        out = subprocess.run(["Rscript", "-e", GLMER.format(csv=csv)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.split()[-1])


def exponent(ns, ts):
    """Least-squares slope of log(time) on log(N)."""
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0]) if len(ns) > 1 else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e5,1e6,3e6", help="comma-separated row counts (seed design)")
    ap.add_argument("--backends", default=None, help="comma-separated (default: every available)")
    ap.add_argument("--stitchfix", action="store_true", help="also the Stitch-Fix shape (C++, numba)")
    ap.add_argument("--stitchfix-rows", type=float, default=5e6)
    ap.add_argument("--peers", action="store_true", help="also glmer nAGQ=0 (R, lme4) up to --peer-max rows")
    ap.add_argument("--peer-max", type=float, default=1e5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="fits per process; the fastest is shown")
    ap.add_argument("--format", choices=["text", "json"], default="text")
    args = ap.parse_args(argv)
    import pyglmm

    backends = args.backends.split(",") if args.backends else pyglmm.available_backends()
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    rows = []
    for n in sizes:
        for be in backends:
            rows.append(dict(problem="seed", backend=be, **run_fit("seed", n, be, args.threads, args.repeat)))
        if args.peers and n <= args.peer_max and shutil.which("Rscript"):
            rows.append(dict(problem="seed", backend="glmer nAGQ=0 (R)", n=rows[-1]["n"], seconds=run_glmer(n)))
    if args.stitchfix:
        for be in [b for b in backends if b != "numpy"]:
            rows.append(dict(problem="stitchfix", backend=be,
                             **run_fit("stitchfix", int(args.stitchfix_rows), be, args.threads, args.repeat)))
    seed = [r for r in rows if r["problem"] == "seed"]
    scaling = {be: exponent([r["n"] for r in seed if r["backend"] == be],
                            [r["seconds"] for r in seed if r["backend"] == be])
               for be in dict.fromkeys(r["backend"] for r in seed)}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    if "cpp" in backends:
        from pyglmm import _core

        machine += f", C++ Gram kernel {_core.gram_isa()}"
    if args.format == "json":
        print(json.dumps(dict(rows=rows, scaling=scaling, machine=machine), indent=1))
        return 0
    print(f"Whole-fit time (glmm_from_arrays, SEs included) on {machine}")
    print(f"{'problem':10} {'rows':>10} {'p':>3} {'backend':>18} {'seconds':>8} {'iters':>5} "
          f"{'vs cpp':>7} {'peak/input':>10}")
    for r in rows:
        cpp = next((c["seconds"] for c in rows if c["backend"] == "cpp" and c["problem"] == r["problem"]
                    and c["n"] == r["n"]), None)
        ratio = f"{r['seconds'] / cpp:7.1f}" if cpp else "      -"
        mem = f"{r['peak'] / r['input']:10.2f}" if "peak" in r else "         -"
        print(f"{r['problem']:10} {r['n']:>10,} {r.get('p', 8):>3} {r['backend']:>18} {r['seconds']:8.3f} "
              f"{r.get('iterations', '-'):>5} {ratio} {mem}")
    print("scaling exponent (time ~ N^k, seed design): "
          + ", ".join(f"{be} {k:.2f}" for be, k in scaling.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
