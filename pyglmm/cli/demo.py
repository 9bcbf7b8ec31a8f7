"""``pyglmm demo``: simulate the paper's design at about a million rows and fit it."""

import sys
import time

from .. import backends as _backend
from .common import add_common, non_negative_int, positive_int, progress_to_stderr, write_json

DEMO_FORMULA = "y ~ x1 + x2 + x3 + x4 + x5 + x6 + x7 + (1|row) + (1|col)"
ROWS_PER_S = 1.1358  # E(N)/S = (1 + Upsilon)/2 in the paper's design


def add_parser(sub):
    demo = sub.add_parser("demo", help="simulate the paper's design at ~1M rows and fit it")
    demo.add_argument("--rows", type=positive_int, default=1_135_800,
                      help="approximate rows (default ~1.1M)")
    demo.add_argument("--beta", choices=["trend", "zero"], default="trend")
    demo.add_argument("--seed", type=non_negative_int, default=0)
    add_common(demo)
    demo.set_defaults(func=run)


def run(args):
    from ..engines.crossed.api import glmm
    from ..simulate import simulate_crossed

    S = args.rows / ROWS_PER_S
    print(f"Simulating the design of Ghosh, Hastie & Owen (2022, Sec. 5) at S = {S:,.0f} "
          f"(about {args.rows:,} rows), trending beta, sigma_A = 0.8, sigma_B = 0.4 ...",
          file=sys.stderr, flush=True)
    t = time.perf_counter()
    data = simulate_crossed(S, beta=args.beta, seed=args.seed)
    sim = time.perf_counter() - t
    print(f"  {len(data):,} rows, {data.row.nunique():,} x {data.col.nunique():,} levels "
          f"({sim:.2f} s). Fitting on backend {_backend.backend(args.backend)} ...",
          file=sys.stderr, flush=True)
    with progress_to_stderr(args.verbose):
        res = glmm(DEMO_FORMULA, data, backend=args.backend, threads=args.threads,
                   compare_naive=True)
    print(res)
    truth = "beta_0 = -2, beta_l = " + ("-2 + 0.5 l" if args.beta == "trend" else "0")
    print(f"\nTruth: {truth}; sigma_row = 0.8, sigma_col = 0.4.")
    t = res.timings
    print(f"Timing: fit {res.seconds:.3f} s in all (design {t['design']:.3f}, Schall loop "
          f"{t['schall']:.3f} for {res.iterations} iterations, covariance {t['covariance']:.3f}, "
          f"naive comparison {t['naive']:.3f}) on {len(data):,} rows; simulation {sim:.2f} s.")
    if args.json:
        write_json(res, args.json)
    return 0
