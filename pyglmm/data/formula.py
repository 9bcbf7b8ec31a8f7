"""lme4-style formulas: ``y ~ x1 + C(cat) + (1|user) + (1|item)``.

The random-intercept terms ``(1|g)`` are taken out here; the fixed part goes
to formulaic (treatment coding, first sorted level as reference, intercept
named ``Intercept``, as R does).
"""

import re
from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from ..exceptions import DataError
from .validation import show_value, check_finite

_RANDOM = re.compile(r"\(\s*([^()|]*?)\s*\|\s*([^()|]*?)\s*\)")


@dataclass(frozen=True)
class ParsedFormula:
    text: str
    response: str
    fixed: str
    groups: tuple


def parse_formula(formula):
    """Split an lme4-style formula into response, fixed part and grouping factors."""
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise ValueError(f"formula must look like 'y ~ x + (1|g)', got {formula!r}")
    lhs, rhs = (part.strip() for part in formula.split("~"))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", lhs):
        raise ValueError(f"the response must be a column name, got {lhs!r}")
    groups = []
    for effect, group in _RANDOM.findall(rhs):
        if effect != "1":
            raise NotImplementedError(f"random slopes ({effect}|{group}) are not supported yet; "
                                      f"only random intercepts (1|{group})")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", group):
            raise ValueError(f"grouping factor must be a column name, got {group!r}")
        if group in groups:
            raise ValueError(f"grouping factor {group!r} appears twice")
        groups.append(group)
    if not groups:
        raise ValueError(f"formula {formula!r} has no random-effect term such as (1|group)")
    fixed = re.sub(r"(\s*\+\s*)+", " + ", _RANDOM.sub("", rhs)).strip(" +") or "1"
    return ParsedFormula(formula, lhs, fixed, tuple(groups))


def required_columns(parsed, extra=()):
    """Columns the formula (and named extra columns) read."""
    fixed_vars = sorted(formulaic.Formula(parsed.fixed).required_variables)
    return [parsed.response, *fixed_vars, *parsed.groups, *[c for c in extra if c]]


def check_columns(data, columns):
    """Raise naming any column missing from ``data``."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    missing = [c for c in dict.fromkeys(columns) if c not in data.columns]
    if missing:
        raise DataError(f"unknown column(s) {', '.join(map(repr, missing))}; the data have "
                        f"{', '.join(map(repr, list(data.columns)[:20]))}")


def fixed_matrix(fixed, data, spec=None):
    """The fixed-effects matrix (C-contiguous float64) of the formula's fixed part
    ``fixed``, its column names and spec.

    With ``spec`` (from a fit), new data are coded exactly as the training data.
    """
    for var in sorted(formulaic.Formula(fixed).required_variables):
        col = data[var]
        if col.isna().any():
            pos = int(np.flatnonzero(col.isna().to_numpy())[0])
            raise DataError(f"column {var!r} has {int(col.isna().sum())} missing value(s), "
                            f"first at row {show_value(data.index[pos])}")
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            check_finite(var, col.to_numpy(dtype=np.float64), data.index)
    try:
        mm = (spec.get_model_matrix(data) if spec is not None
              else formulaic.model_matrix(fixed, data, na_action="raise"))
    except Exception as exc:  # formulaic raises many types; name the formula part
        raise DataError(f"cannot build the fixed effects {fixed!r}: {exc}") from exc
    X = np.ascontiguousarray(mm.to_numpy(dtype=np.float64))
    return X, list(mm.columns), mm.model_spec
