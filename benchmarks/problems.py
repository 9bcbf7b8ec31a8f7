"""Benchmark problems: the paper's Sec. 5 design at a given size, and a Stitch-Fix-shaped one."""

from dataclasses import replace

import numpy as np

import pyglmm
from pyglmm.data.design import build_design
from pyglmm.families import get_family

ROWS_PER_S = 1.1358  # E(N)/S in the paper's design


def seed_design(n_rows, seed=0):
    """Arrays (X with intercept, y, groups, names) for ~n_rows rows of the Sec. 5 design."""
    df = pyglmm.simulate_crossed(n_rows / ROWS_PER_S, seed=seed)
    X = np.empty((len(df), 8))
    X[:, 0] = 1.0
    for j in range(1, 8):
        X[:, j] = df[f"x{j}"].to_numpy()
    names = ["Intercept"] + [f"x{j}" for j in range(1, 8)]
    return X, df.y.to_numpy(np.float64), {"row": df.row.to_numpy(), "col": df.col.to_numpy()}, names


def stitchfix(n_rows=5_000_000, seed=0):
    """Stitch Fix dimensions (N = 5e6, 744,482 x 3,547 levels, p = 34), scaled with n_rows."""
    scale = n_rows / 5_000_000
    return pyglmm.simulate_stitchfix(n_rows, max(2, int(744_482 * scale)), max(2, int(3_547 * scale ** 0.5)),
                                     seed=seed)


# The dummy columns of simulate_stitchfix's X, one list per categorical: client fit
# profile, material, item fit profile.
STITCHFIX_CATEGORICALS = [list(range(1, 6)), list(range(10, 29)), list(range(29, 34))]


def with_categoricals(d, blocks):
    """Design ``d`` with the one-hot dummy columns in ``blocks`` (a list of X's columns
    per categorical) kept as codes (``Design.xcat``), the other columns first."""
    dummies = [j for block in blocks for j in block]
    order = [j for j in range(d.p) if j not in set(dummies)] + dummies
    dense = len(order) - len(dummies)
    xcat = np.full((d.n, len(blocks)), -1, dtype=np.int32)
    start = dense
    for j, block in enumerate(blocks):
        part = d.X[:, block]
        xcat[:, j] = np.where(part.any(axis=1), start + part.argmax(axis=1), -1)
        start += len(block)
    return replace(d, X=np.ascontiguousarray(d.X[:, order[:dense]]), xcat=xcat,
                   XtX=d.XtX[np.ix_(order, order)],
                   feature_names=[d.feature_names[j] for j in order])


def make(name, n_rows):
    """(X, y, groups, names) of a named problem."""
    return stitchfix(n_rows) if name == "stitchfix" else seed_design(n_rows)


def design(arrays, backend):
    """The Design a fit on ``backend`` works on (rows reordered as a fit reorders them)."""
    X, y, groups, names = arrays
    return build_design(X, y, groups, get_family("binomial"), feature_names=names, response_name="y",
                        kern=pyglmm.backends.kernels(backend), nthreads=pyglmm.get_num_threads())


def input_bytes(arrays):
    X, y, groups, _ = arrays
    return X.nbytes + y.nbytes + sum(np.asarray(g).nbytes for g in groups.values())
