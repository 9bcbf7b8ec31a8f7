"""``pyglmm fit-federated --site DATA1 --site DATA2 ... --formula F --nagq K``: an exact
federated AGQ fit, each site a local process holding only its own file."""

from pathlib import Path

from .common import positive_int, progress_to_stderr, write_json


def add_parser(sub):
    p = sub.add_parser("fit-federated", help="fit across sites that keep their rows (one "
                                             "process per site file)")
    p.add_argument("--site", action="append", required=True, metavar="DATA",
                   help="a site's CSV or Parquet file (repeat per site); the site is named after "
                        "the file, or NAME=DATA names it")
    p.add_argument("--formula", required=True, help="e.g. 'y ~ x + C(ward) + (1|patient)'")
    p.add_argument("--family", default="binomial", choices=["binomial", "poisson"])
    p.add_argument("--weights", metavar="COL", help="column of prior weights (at every site)")
    p.add_argument("--trials", metavar="COL", help="column of binomial trials (response = successes)")
    p.add_argument("--offset", metavar="COL", help="column of offsets (e.g. log exposure)")
    p.add_argument("--nagq", type=positive_int, default=1,
                   help="quadrature points per random effect (1: Laplace; default 1)")
    p.add_argument("--min-cluster-size", type=positive_int, default=5,
                   help="every site refuses clusters with fewer rows (default 5)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for a site's answer in each round (default 120)")
    p.add_argument("--json", metavar="OUT", help="write the fit (with rounds, bytes_per_site, "
                                                  "seconds) as JSON")
    p.add_argument("--verbose", action="store_true", help="print each round on stderr")
    p.set_defaults(func=run)


def site_names(specs):
    """``{name: path}`` from ``--site`` values ``PATH`` or ``NAME=PATH``; ValueError on repeats."""
    sites = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem, spec
        if name in sites:
            raise ValueError(f"two --site options are named {name!r}; write NAME=DATA to name them")
        sites[name] = path
    return sites


def run(args):
    from ..engines.federated.api import fit_federated
    from ..engines.federated.transports import LocalProcess

    connections = []
    try:
        for name, path in site_names(args.site).items():
            connections.append(LocalProcess(path, name, args.min_cluster_size))
        with progress_to_stderr(args.verbose):
            res = fit_federated(connections, args.formula, family=args.family, nagq=args.nagq,
                                timeout=args.timeout, weights=args.weights, trials=args.trials,
                                offset=args.offset, transport="local processes")
    finally:
        for conn in connections:
            conn.close()
    print(res)
    if args.json:
        write_json(res, args.json)
    return 0
