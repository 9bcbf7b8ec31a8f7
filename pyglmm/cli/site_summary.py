"""``pyglmm site-summary DATA --formula F --order K --cluster COLUMN --out STATS.json``:
a site's one-shot summary statistics (see :mod:`pyglmm.engines.summaries`)."""

import os

from .common import positive_int


def add_parser(sub):
    p = sub.add_parser("site-summary", help="per-cluster summary statistics of a site's data, "
                       "for a one-shot federated fit (pyglmm fit-summaries)")
    p.add_argument("data", help="CSV or Parquet (.parquet, .pq) file")
    p.add_argument("--formula", required=True, help="e.g. 'y ~ x1 + C(cat)' (0/1 response; no random term)")
    p.add_argument("--cluster", required=True, metavar="COLUMN", help="the cluster column (random intercept)")
    p.add_argument("--order", type=int, default=3, choices=[1, 2, 3, 4],
                   help="highest total order of the moments released (default 3)")
    p.add_argument("--min-size", type=positive_int, default=5, metavar="N",
                   help="refuse clusters with fewer rows (default 5)")
    p.add_argument("--site", help="the site's name in the message (default: DATA's file name)")
    p.add_argument("--out", required=True, metavar="STATS.json", help="the message to send")
    p.set_defaults(func=run)


def run(args):
    from ..data.readers import read_table
    from ..engines.summaries import site_summary, write_summary

    data = read_table(args.data)
    site = args.site or os.path.splitext(os.path.basename(args.data))[0]
    msg = site_summary(data, args.formula, args.cluster, order=args.order,
                       min_size=args.min_size, site=site)
    write_summary(msg, args.out)
    print(f"{args.out}: site {site!r}, {len(msg['clusters'])} clusters, "
          f"{sum(c['n'] for c in msg['clusters']):,} rows, order {args.order}, "
          f"{len(msg['columns'])} covariates")
    return 0
