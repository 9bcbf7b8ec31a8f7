"""``pyglmm predict MODEL DATA --out SCORES``: score a CSV or Parquet file with a saved model."""

import os
import time

import numpy as np

from .. import backends as _backend
from ..exceptions import DataError
from . import cluster
from .cluster import add_scheduler_option
from .common import positive_int


def add_parser(sub):
    p = sub.add_parser("predict", help="score a CSV or Parquet file with a saved model, in chunks")
    p.add_argument("model", help="a model saved by 'pyglmm fit --save' or GLMMResult.save")
    p.add_argument("data", help="CSV or Parquet (.parquet, .pq) file with the model's columns; "
                                "with --scheduler a directory or glob of such files")
    p.add_argument("--out", required=True, metavar="SCORES",
                   help="output file, Parquet (.parquet, .pq) or CSV (.csv), one column 'eta' "
                        "(--type link) or 'mu' (--type response), rows in the order of DATA; "
                        "with --scheduler a directory of Parquet files, one per input file")
    p.add_argument("--type", choices=["link", "response"], default="link",
                   help="linear predictor (default) or mean")
    p.add_argument("--new-levels", choices=["population", "error"], default="population",
                   help="a level of a grouping factor not seen in the fit, or a missing label, "
                        "scores at the population level b = 0 (default, counted in the report) "
                        "or is an error")
    p.add_argument("--chunk-rows", type=positive_int, default=1_000_000, metavar="N",
                   help="rows read and scored at a time (default 1,000,000)")
    p.add_argument("--backend", choices=_backend.BACKENDS,
                   help="kernel backend (default: fastest available)")
    p.add_argument("--threads", type=positive_int, help="kernel threads (default: all cores)")
    add_scheduler_option(p)
    p.set_defaults(func=run)


def run(args):
    from ..data.readers import column_writer, iter_table, prefetched
    from ..results.base import load
    from ..results.scoring import Scorer

    _check_out(args)
    res = load(args.model)
    scorer = Scorer(res, type=args.type, new_levels=args.new_levels, backend=args.backend,
                    threads=args.threads)
    if scorer.columns is None:
        raise DataError(f"{args.model}: the model was fitted from arrays; score it in Python "
                        "with result.predict(X=..., groups=...)")
    if res.has_offset and not res.offset_name:
        raise DataError(f"{args.model}: the model was fitted with an offset array, not a column; "
                        "score it in Python with result.predict(..., offset=...)")
    if args.scheduler:
        return cluster.predict(args, res, scorer)
    start, n, buffer = time.perf_counter(), 0, np.empty(0)
    with column_writer(args.out, "eta" if args.type == "link" else "mu") as write:
        for frame in prefetched(iter_table(args.data, scorer.columns, args.chunk_rows,
                                           categorical=res.factor_names)):
            if not len(frame):  # a CSV with a header only: columns of unknown type
                continue
            if len(frame) > buffer.size:  # one buffer for every chunk: its pages are touched once
                buffer = np.empty(len(frame))
            scores = buffer[:len(frame)]
            try:
                scorer.score_frame(frame, scores)
            except DataError as exc:
                raise _in(args.data, exc) from None
            write(scores)
            n += len(frame)
        try:
            scorer.finish()
        except DataError as exc:
            raise _in(args.data, exc) from None
    seconds = time.perf_counter() - start
    print(f"scored {n:,} rows in {seconds:.3f} s ({n / max(seconds, 1e-9):,.0f} rows/s) -> {args.out}")
    print("rows at the population level (level not seen in the fit, or missing): "
          + ", ".join(f"{f} {k:,}" for f, k in scorer.population_rows.items()))
    return 0


def _check_out(args):
    """Refuse an output that would overwrite the model or the data (with ``--scheduler``:
    an output directory that holds input files)."""
    if _same(args.out, args.model):
        raise DataError(f"--out {args.out} is the model file {args.model}: scoring would "
                        "overwrite it; write the scores to another file")
    for path in cluster.files_of(args.data) if args.scheduler else [args.data]:
        if _same(args.out, path):
            raise DataError(f"--out {args.out} is the data file {path}: scoring would overwrite "
                            "it; write the scores to another file")
        if args.scheduler and _same(args.out, os.path.dirname(path) or "."):
            raise DataError(f"--out {args.out} is the directory of the data file {path}: the "
                            "scores would be written among the data; write them to another directory")


def _same(a, b):
    """Whether paths ``a`` and ``b`` name the same file (links and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def _in(path, exc):
    """The error ``exc`` of the rows of file ``path``, naming it."""
    return DataError(f"{path}: {exc}")
