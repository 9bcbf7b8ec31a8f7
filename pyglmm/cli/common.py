"""Helpers shared by the subcommands."""

import argparse
import json
import sys

from .. import backends as _backend


def print_progress(row):
    sig = ", ".join(f"sigma_{k}={v:.4g}" for k, v in row["sigma"].items())
    print(f"  iteration {row['iteration']:3d}: {row['inner_sweeps']} inner sweeps, "
          f"relative change {row['rel_change']:.3g}, {sig}, phi={row['phi']:.4g} "
          f"({row['seconds']:.3f} s)", file=sys.stderr, flush=True)


def write_json(res, path):
    with open(path, "w") as fh:
        json.dump(res.to_dict(), fh, indent=1)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_common(p):
    """Options every fitting subcommand has."""
    p.add_argument("--backend", choices=_backend.BACKENDS, help="kernel backend (default: fastest available)")
    p.add_argument("--threads", type=positive_int, help="kernel threads (default: all cores)")
    p.add_argument("--json", metavar="OUT", help="write the fit's key numbers as JSON")
