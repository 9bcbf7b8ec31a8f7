"""Command line: ``pyglmm SUBCOMMAND ...``, one module per subcommand."""

import argparse
import sys
import warnings

from .. import backends as _backend
from ..exceptions import ClusterError, DataError
from . import demo, fit, fit_federated, fit_ridge, fit_summaries, predict, site_summary

SUBCOMMANDS = (fit, predict, demo, fit_federated, site_summary, fit_summaries, fit_ridge)


def build_parser():
    parser = argparse.ArgumentParser(prog="pyglmm", description=(
        "Generalized linear mixed models at scale."))
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            return args.func(args)
    except (DataError, ValueError, TypeError, NotImplementedError, OSError, ClusterError,
            _backend.BackendUnavailableError) as exc:
        print(f"pyglmm: error: {exc}", file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"pyglmm: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
