"""``pyglmm fit DATA --formula F``: fit the crossed engine to a CSV or Parquet file."""

from ..data.readers import read_table
from .common import add_common, print_progress, write_json


def add_parser(sub):
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
    add_common(fit)
    fit.set_defaults(func=run)


def run(args):
    from ..data.formula import parse_formula, required_columns
    from ..engines.crossed.api import glmm

    needed = required_columns(parse_formula(args.formula), [args.weights, args.trials, args.offset])
    res = glmm(args.formula, read_table(args.data, columns=needed), family=args.family, dispersion=args.dispersion,
               weights=args.weights, trials=args.trials, offset=args.offset,
               compare_naive=args.naive, backend=args.backend, threads=args.threads,
               progress=print_progress if args.verbose else None)
    print(res)
    if args.json:
        write_json(res, args.json)
    if args.save:
        res.save(args.save)
    return 0
