"""``pyglmm fit DATA --formula F``: fit the crossed engine to a CSV or Parquet file."""

from ..data.readers import column_names, read_table
from ..families import FAMILIES
from . import cluster
from .cluster import add_scheduler_option
from .common import add_common, progress_to_stderr, write_json


def add_parser(sub):
    fit = sub.add_parser("fit", help="fit a model to a CSV or Parquet file")
    fit.add_argument("data", help="CSV or Parquet (.parquet, .pq) file; with --scheduler a "
                                  "directory or glob of such files")
    fit.add_argument("--formula", required=True, help="e.g. 'y ~ x1 + C(cat) + (1|user) + (1|item)'")
    fit.add_argument("--family", default="binomial", choices=list(FAMILIES),
                     help="binomial (logit), poisson (log) or gaussian (identity)")
    fit.add_argument("--dispersion", choices=["estimate", "fixed"],
                     help="phi estimated (eq. 15) or fixed at 1 (default: fixed for binomial and "
                          "poisson, estimated for gaussian)")
    fit.add_argument("--weights", metavar="COL", help="column of prior weights")
    fit.add_argument("--trials", metavar="COL", help="column of binomial trials (response = successes)")
    fit.add_argument("--offset", metavar="COL", help="column of offsets (e.g. log exposure)")
    fit.add_argument("--naive", action="store_true", help="compare with naive regression (Sec. 6)")
    fit.add_argument("--save", metavar="PATH", help="save the whole result (pyglmm.load reads it)")
    add_scheduler_option(fit)
    fit.add_argument("--shuffle", choices=["largest"],
                     help="with --scheduler: first move each level of the factor with the most "
                          "levels to one partition (fewer bytes per pass)")
    add_common(fit)
    fit.set_defaults(func=run)


def run(args):
    from ..data.formula import parse_formula, required_columns
    from ..engines.crossed.api import glmm

    # only the columns the model uses; if the file lacks one, glmm names it by its role
    # from the file's (empty) columns
    needed = required_columns(parse_formula(args.formula), [args.weights, args.trials, args.offset])
    if args.scheduler:
        with progress_to_stderr(args.verbose):
            res = cluster.fit(args, needed)
        return _report(res, args)
    if args.shuffle:
        raise ValueError("--shuffle is for a fit on a Dask cluster (--scheduler)")
    present = column_names(args.data)
    if set(needed) <= set(present):
        data = read_table(args.data, columns=needed)
    else:
        import pandas as pd

        data = pd.DataFrame(columns=present)
    with progress_to_stderr(args.verbose):
        res = glmm(args.formula, data, family=args.family, dispersion=args.dispersion,
                   weights=args.weights, trials=args.trials, offset=args.offset,
                   compare_naive=args.naive, backend=args.backend, threads=args.threads)
    return _report(res, args)


def _report(res, args):
    print(res)
    if args.json:
        write_json(res, args.json)
    if args.save:
        res.save(args.save)
    return 0
