"""Command line: ``pyglmm fit DATA --formula F`` and ``pyglmm demo``."""

import argparse
import json
import sys
import time
import warnings

from . import _backend
from ._api import glmm
from ._exceptions import DataError
from ._simulate import simulate_crossed

DEMO_FORMULA = "y ~ x1 + x2 + x3 + x4 + x5 + x6 + x7 + (1|row) + (1|col)"
ROWS_PER_S = 1.1358  # E(N)/S = (1 + Upsilon)/2 in the paper's design


def _read(path):
    import pandas as pd

    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise DataError(f"reading Parquet needs pyarrow: pip install 'pyglmm[parquet]' ({exc})") from exc
    return pd.read_csv(path)


def _progress(row):
    sig = ", ".join(f"sigma_{k}={v:.4g}" for k, v in row["sigma"].items())
    print(f"  iteration {row['iteration']:3d}: {row['inner_sweeps']} inner sweeps, "
          f"relative change {row['rel_change']:.3g}, {sig}, phi={row['phi']:.4g} "
          f"({row['seconds']:.3f} s)", file=sys.stderr, flush=True)


def _write_json(res, path):
    with open(path, "w") as fh:
        json.dump(res.to_dict(), fh, indent=1)


def cmd_fit(args):
    data = _read(args.data)
    res = glmm(args.formula, data, family=args.family, dispersion=args.dispersion,
               weights=args.weights, trials=args.trials, offset=args.offset,
               compare_naive=args.naive, backend=args.backend, threads=args.threads,
               progress=_progress if args.verbose else None)
    print(res)
    if args.json:
        _write_json(res, args.json)
    if args.save:
        res.save(args.save)
    return 0


def cmd_demo(args):
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
    res = glmm(DEMO_FORMULA, data, backend=args.backend, threads=args.threads,
               compare_naive=True, progress=None if args.quiet else _progress)
    print(res)
    truth = "beta_0 = -2, beta_l = " + ("-2 + 0.5 l" if args.beta == "trend" else "0")
    print(f"\nTruth: {truth}; sigma_row = 0.8, sigma_col = 0.4.")
    t = res.timings
    print(f"Timing: fit {res.seconds:.3f} s in all (design {t['design']:.3f}, Schall loop "
          f"{t['schall']:.3f} for {res.iterations} iterations, covariance {t['covariance']:.3f}, "
          f"naive comparison {t['naive']:.3f}) on {len(data):,} rows; simulation {sim:.2f} s.")
    if args.json:
        _write_json(res, args.json)
    return 0


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="pyglmm", description=(
        "Crossed random-effects GLMMs at scale (Schall's PQL with clubbed backfitting)."))
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--backend", choices=_backend.BACKENDS, help="kernel backend (default: fastest available)")
        p.add_argument("--threads", type=_positive_int, help="kernel threads (default: all cores)")
        p.add_argument("--json", metavar="OUT", help="write the fit's key numbers as JSON")

    fit = sub.add_parser("fit", help="fit a model to a CSV or Parquet file")
    fit.add_argument("data", help="CSV or Parquet (.parquet, .pq) file")
    fit.add_argument("--formula", required=True, help="e.g. 'y ~ x1 + C(cat) + (1|user) + (1|item)'")
    fit.add_argument("--family", default="binomial", choices=["binomial", "gaussian"])
    fit.add_argument("--dispersion", choices=["estimate", "fixed"],
                     help="phi estimated (eq. 15) or fixed at 1 (default: fixed for binomial, "
                          "estimated for gaussian)")
    fit.add_argument("--weights", metavar="COL", help="column of prior weights")
    fit.add_argument("--trials", metavar="COL", help="column of binomial trials (response = successes)")
    fit.add_argument("--offset", metavar="COL", help="column of offsets")
    fit.add_argument("--naive", action="store_true", help="compare with naive regression (Sec. 6)")
    fit.add_argument("--save", metavar="PATH", help="save the whole result (pyglmm.load reads it)")
    fit.add_argument("--verbose", action="store_true", help="print every outer iteration")
    common(fit)
    fit.set_defaults(func=cmd_fit)

    demo = sub.add_parser("demo", help="simulate the paper's design at ~1M rows and fit it")
    demo.add_argument("--rows", type=_positive_int, default=1_135_800,
                      help="approximate rows (default ~1.1M)")
    demo.add_argument("--beta", choices=["trend", "zero"], default="trend")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="do not print every outer iteration")
    common(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            return args.func(args)
    except (DataError, ValueError, TypeError, NotImplementedError, OSError,
            _backend.BackendUnavailableError) as exc:
        print(f"pyglmm: error: {exc}", file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"pyglmm: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
