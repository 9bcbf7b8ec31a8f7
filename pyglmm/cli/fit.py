"""``pyglmm fit DATA --formula F [--nagq K]``: fit a model to a CSV or Parquet file
(the engine as :func:`pyglmm.glmm` chooses it, or ``--engine``)."""

from ..data.readers import column_names, read_table
from ..families import FAMILIES
from ..engines.dispatch import ENGINE_CHOICES
from .common import add_common, positive_int, progress_to_stderr, show_and_write


def add_parser(sub):
    fit = sub.add_parser("fit", help="fit a model to a CSV or Parquet file")
    fit.add_argument("data", help="CSV or Parquet (.parquet, .pq) file")
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
    fit.add_argument("--nagq", type=positive_int, metavar="K",
                     help="adaptive Gauss-Hermite points per random effect (1: Laplace); implies "
                          "the agq engine (maximum likelihood, one grouping factor)")
    fit.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                     help="auto (default): agq when --nagq is given or the formula has random "
                          "slopes, else crossed")
    fit.add_argument("--save", metavar="PATH", help="save the whole result (pyglmm.load reads it)")
    add_common(fit)
    fit.set_defaults(func=run)


def run(args):
    from ..data.formula import parse_formula, required_columns
    from ..engines.dispatch import choose_engine, glmm

    # only the columns the model uses; if the file lacks one, glmm names it by its role
    # from the file's (empty) columns
    needed = required_columns(parse_formula(args.formula), [args.weights, args.trials, args.offset])
    present = column_names(args.data)
    if set(needed) <= set(present):
        data = read_table(args.data, columns=needed)
    else:
        import pandas as pd

        data = pd.DataFrame(columns=present)
    engine = choose_engine(args.formula, args.engine, args.nagq)
    if engine == "agq":
        for flag, value in (("--dispersion", args.dispersion), ("--naive", args.naive)):
            if value:
                raise ValueError(f"{flag} is an option of the crossed engine, not of agq")
        options = {"nagq": args.nagq}
    else:
        options = {"dispersion": args.dispersion, "compare_naive": args.naive}
    with progress_to_stderr(args.verbose):
        res = glmm(args.formula, data, family=args.family, engine=engine, weights=args.weights,
                   trials=args.trials, offset=args.offset, backend=args.backend,
                   threads=args.threads, **options)
    return show_and_write(res, args)
