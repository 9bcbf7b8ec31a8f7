"""Evidence for the one-shot federation (issue 10): the direct and pseudo-data fits
against the actual-data AGQ fit, by moment order K, and the coverage of 95% Wald
intervals over replicates of the paper's design.

    python benchmarks/summaries_evidence.py table [REFERENCE_DIR [CASE ...]]  # sites_* cases if given
    python benchmarks/summaries_evidence.py coverage REPLICATES [--m 30] [--n 100]

Prints markdown tables.  The actual-data fit is pyglmm's AGQ engine (nagq = 7),
which matches glmer nAGQ = 7 (tests/engines/agq).
"""

import argparse
import pathlib
import sys
import warnings

import numpy as np
import pandas as pd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "engines" / "summaries"))

import pyglmm  # noqa: E402
from paper import BETA, FORMULA, SIGMA, simulate  # noqa: E402
from pyglmm.engines.summaries import fit_summaries, site_summary  # noqa: E402

NAGQ = 7


def _fit(df, formula, cluster, order, method, seed=0):
    try:
        msg = site_summary(df, formula, cluster, order)
    except pyglmm.DataError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fit_summaries([msg], method=method, nagq=NAGQ, seed=seed)
        except ValueError:
            return None


def _actual(df, formula, cluster):
    return pyglmm.glmm(f"{formula} + (1|{cluster})", df, nagq=NAGQ)


SITES = ("sites_m10_n500_S", "sites_m10_n500_L", "sites_m10_n30_S", "sites_m10_n30_L")


def table(reference=None, names=SITES, paper=True):
    cases = [(f"paper ({m}, {n})", simulate(m, n, seed=1), FORMULA, "cluster")
             for m, n in ((30, 100), (50, 60), (100, 30)) if paper]
    if reference:
        for name in names:
            df = pd.read_csv(pathlib.Path(reference) / f"{name}.csv")
            cases.append((name, df, "y ~ " + " + ".join(df.columns[2:]), "site"))
    print("| case | K | direct: max abs dbeta | direct: dsigma | pseudo: max abs dbeta | pseudo: dsigma "
          "| pseudo: match residual |")
    print("|---|---|---|---|---|---|---|")
    for name, df, formula, cluster in cases:
        ref = _actual(df, formula, cluster)
        for order in (1, 2, 3, 4):
            cells = []
            for method in ("direct", "pseudo"):
                res = _fit(df, formula, cluster, order, method)
                if res is None or not res.converged:
                    cells += ["refused" if res is None else "no maximum", ""]
                    continue
                cells += [f"{np.abs(res.params - ref.params).max():.4f}",
                          f"{res.sigma.iloc[0] - ref.sigma.iloc[0]:+.4f}"]
                if method == "pseudo":
                    cells.append(f"{res.match_residual.max():.1e}")
            cells += [""] * (5 - len(cells))
            print(f"| {name} | {order} | " + " | ".join(cells) + " |", flush=True)


def coverage(replicates, m=30, n=100, report_every=10):
    fits = {"actual": None, "direct K=4": ("direct", 4), "pseudo K=3": ("pseudo", 3)}
    hits = {k: np.zeros(len(BETA)) for k in fits}
    sigma = {k: [] for k in fits}
    done = dict.fromkeys(fits, 0)
    for r in range(replicates):
        df = simulate(m, n, seed=1000 + r)
        for key, how in fits.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = (_actual(df, FORMULA, "cluster") if how is None
                       else _fit(df, FORMULA, "cluster", how[1], how[0], seed=r))
            if res is None or not res.converged or res.cov is None:
                continue
            ci = res.conf_int()
            hits[key] += (ci[0].to_numpy() <= BETA) & (BETA <= ci[1].to_numpy())
            sigma[key].append(res.sigma.iloc[0])
            done[key] += 1
        if (r + 1) % report_every == 0 or r + 1 == replicates:
            _coverage_table(r + 1, m, n, fits, hits, sigma, done)


def _coverage_table(replicates, m, n, fits, hits, sigma, done):
    names = ["Intercept", "x1", "x2", "x3 b", "x3 c"]
    print(f"\nCoverage of 95% Wald intervals, {replicates} replicates of (m, n_h) = ({m}, {n}):\n")
    print("| fit | converged | " + " | ".join(names) + f" | mean sigma (true {SIGMA}) |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for key in fits:
        cov = hits[key] / max(done[key], 1)
        print(f"| {key} | {done[key]} | " + " | ".join(f"{c:.2f}" for c in cov)
              + (f" | {np.mean(sigma[key]):.3f} |" if sigma[key] else " | - |"), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="the fits by moment order K against the actual-data fit")
    t.add_argument("reference", nargs="?", help="folder of the sites_* CSV files (../shared/reference)")
    t.add_argument("cases", nargs="*", help=f"sites_* cases (default: {', '.join(SITES)}); naming "
                                             "cases leaves out the paper's design")
    c = sub.add_parser("coverage", help="coverage of 95%% Wald intervals over replicates")
    c.add_argument("replicates", type=int)
    c.add_argument("--m", type=int, default=30, help="clusters (default 30)")
    c.add_argument("--n", type=int, default=100, help="rows per cluster (default 100)")
    args = ap.parse_args(argv)
    if args.command == "table":
        table(args.reference, args.cases or SITES, paper=not args.cases)
    else:
        coverage(args.replicates, args.m, args.n)


if __name__ == "__main__":
    main()
