"""Helpers shared by the subcommands."""

import argparse
import contextlib
import logging
import sys

from .. import backends as _backend


@contextlib.contextmanager
def progress_to_stderr(verbose):
    """While active, and if ``verbose``, print the "pyglmm" logger's INFO messages
    (one per outer iteration of a fit) on stderr."""
    if not verbose:
        yield
        return
    log = logging.getLogger("pyglmm")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def write_json(res, path):
    """Write the fit's key numbers (``res.to_dict()``) as strict JSON (NaN as ``null``)."""
    from ..results.io import dumps

    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dumps(res.to_dict(), indent=1))


def emit(res, args):
    """Print a fit's summary, then write ``--json`` and ``--save`` if asked for."""
    print(res)
    if args.json:
        write_json(res, args.json)
    if args.save:
        res.save(args.save)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def add_common(p):
    """Options every fitting subcommand has."""
    p.add_argument("--backend", choices=_backend.BACKENDS, help="kernel backend (default: fastest available)")
    p.add_argument("--threads", type=positive_int, help="kernel threads (default: all cores)")
    p.add_argument("--json", metavar="OUT", help="write the fit's key numbers as JSON")
    p.add_argument("--verbose", action="store_true",
                   help="print every outer iteration (relative change, sigmas, seconds) on stderr")
