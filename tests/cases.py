"""Shared test helpers: the reference cases and small random problems."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "fixtures"


def load_case(name):
    """A reference case: its data and {engine: fit} from tests/fixtures (see tests/fixtures/README.md)."""
    df = pd.read_csv(DATA / f"{name}.csv")
    with open(DATA / f"{name}.fits.jsonl") as fh:
        fits = {json.loads(line)["engine"]: json.loads(line) for line in fh if line.strip()}
    return df, fits


def case_formula(df):
    xs = [c for c in df.columns if c.startswith("x")]
    return "y ~ " + " + ".join(xs) + " + (1|row) + (1|col)"


def small_crossed(n=400, R=20, C=16, seed=3, sigma=(0.9, 0.7), K=2):
    """A small random crossed binary problem as arrays."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    levels = [R, C, 7][:K]
    groups = {f"g{k}": rng.integers(0, q, n) for k, q in enumerate(levels)}
    eta = -0.5 + X @ [0.8, -0.4] + sum(rng.normal(0, s, q)[groups[f"g{k}"]]
                                       for k, (s, q) in enumerate(zip(list(sigma) + [0.3], levels)))
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return X, y, groups
