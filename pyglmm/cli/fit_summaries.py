"""``pyglmm fit-summaries STATS1.json ... [--method pseudo|direct] [--nagq K] [--seed S]
[--json OUT]``: the analyst's fit from the sites' summary statistics."""

from .common import emit, positive_int


def add_parser(sub):
    p = sub.add_parser("fit-summaries", help="fit a random-intercept logistic GLMM from the "
                       "sites' summary statistics (pyglmm site-summary)")
    p.add_argument("summaries", nargs="+", metavar="STATS.json", help="one message per site")
    p.add_argument("--method", choices=["direct", "pseudo"], default="direct",
                   help="maximise the polynomial-approximate likelihood (default) or fit "
                        "pseudo-data matching the statistics")
    p.add_argument("--nagq", type=positive_int, default=7, metavar="K",
                   help="adaptive Gauss-Hermite nodes per cluster (1: Laplace; default 7)")
    p.add_argument("--seed", type=int, default=0, help="pseudo-data seed (default 0)")
    p.add_argument("--json", metavar="OUT", help="write the fit's key numbers as JSON")
    p.add_argument("--save", metavar="PATH", help="save the whole result (pyglmm.load reads it)")
    p.set_defaults(func=run)


def run(args):
    from ..engines.summaries import fit_summaries

    res = fit_summaries(args.summaries, method=args.method, nagq=args.nagq, seed=args.seed)
    emit(res, args)
    return 0
