"""``pyglmm fit-ridge DATA --formula F``: the regularised LMM (ridge + inverse-Wishart
priors, :func:`pyglmm.ridge_lmm`) on a CSV or Parquet file."""

import argparse

from ..data.readers import column_names, read_table
from .common import add_common, emit


def auto_or_number(text, words=("auto",)):
    if text in words:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {' or '.join(map(repr, words))} or a number, "
                                         f"got {text!r}") from None


def b_value(text):
    return auto_or_number(text, ("auto", "cv"))


def add_parser(sub):
    p = sub.add_parser("fit-ridge", help="fit a regularised linear mixed model (ridge fixed effects, "
                                         "inverse-Wishart random-effect covariances)")
    p.add_argument("data", help="CSV or Parquet (.parquet, .pq) file")
    p.add_argument("--formula", required=True, help="e.g. 'y ~ x1 + x2 + t + (1 + t|id)'")
    p.add_argument("--lambda", dest="lam", type=auto_or_number, default="auto",
                   help="ridge precision on the standardised penalised columns, or 'auto' "
                        "(empirical Bayes; default)")
    p.add_argument("--b", type=b_value, default="auto",
                   help="inverse-Wishart weight on the target in [0, 1), 'auto' (empirical Bayes; "
                        "default) or 'cv' (grouped cross-validation); 0 with no penalised column is "
                        "lmer's ML fit")
    p.add_argument("--cv-folds", type=int, default=5, metavar="K",
                   help="with --b cv: number of folds (whole groups held out; default 5)")
    p.add_argument("--cv-seed", type=int, default=0, help="with --b cv: seed of the fold assignment")
    p.add_argument("--target", type=float, metavar="A",
                   help="target A = a I for every random-effect covariance (default: a diagonal "
                        "matrix scaled to the response)")
    p.add_argument("--unpenalized", nargs="+", default=(), metavar="COL",
                   help="fixed-effect columns left unpenalised (besides the intercept and random slopes)")
    p.add_argument("--solver", choices=["auto", "primal", "dual"], default="auto")
    p.add_argument("--save", metavar="PATH", help="save the whole result (pyglmm.load reads it)")
    add_common(p)
    p.set_defaults(func=run)


def run(args):
    import pandas as pd

    from .. import backends as _backend
    from ..data.formula import parse_formula, required_columns
    from ..engines.ridge.api import ridge_lmm

    needed = required_columns(parse_formula(args.formula))
    present = column_names(args.data)
    if set(needed) <= set(present):
        data = read_table(args.data, columns=needed)
    else:  # ridge_lmm names the missing column
        data = pd.DataFrame(columns=present)
    if args.threads:
        _backend.set_num_threads(args.threads)
    res = ridge_lmm(args.formula, data, lam=args.lam, b=args.b, A=args.target,
                    unpenalized=args.unpenalized, solver=args.solver, backend=args.backend,
                    cv_folds=args.cv_folds, cv_seed=args.cv_seed)
    emit(res, args)
    return 0
