"""Serialisation of fitted models: :func:`to_dict` (JSON), :func:`save` and :func:`load`.

A saved model is one JSON document, ``{"format": "pyglmm-model",
"format_version": 2, ...}``: the formula, the fixed-effects coding (terms,
levels with their dtype, reference), each factor's levels with their dtype
and conditional modes, the estimates and their covariance.  JSON alone, not
JSON beside binary arrays, because every float is written by Python's
``repr``, which reads back bit for bit, so nothing is lost; one text file is
simple to copy, inspect and diff; and reading it runs no code (no pickle, no
object hooks): :func:`load` checks every field's type and shape and names
the field that is wrong.  NaN and infinities are written as ``NaN`` and
``Infinity``, as Python's ``json`` module writes them.
"""

import json
import os

import numpy as np
import pandas as pd

from ..data.coding import FixedCoding, json_field, levels_from_json, levels_to_json

FORMAT = "pyglmm-model"
FORMAT_VERSION = 2


def to_dict(res, full=False):
    """A JSON-ready dict.

    The brief form (``full=False``) has the keys ``coef``, ``se``, ``sigma``,
    ``dispersion``, ``n_obs``, ``n_levels``, ``iterations``, ``converged``,
    ``separation`` (the columns that separate the response, usually none),
    ``seconds`` and ``backend``; ``full=True`` adds everything :func:`load`
    needs, including the random effects and the fixed-effects coding.
    """
    se = res.se
    out = {
        "coef": {k: float(v) for k, v in res.coef.items()},
        "se": None if se is None else {k: float(v) for k, v in se.items()},
        "sigma": {k: float(v) for k, v in res.sigma.items()},
        "dispersion": float(res.dispersion),
        "n_obs": int(res.n_obs),
        "n_levels": {k: int(v) for k, v in res.n_levels.items()},
        "iterations": int(res.iterations),
        "converged": bool(res.converged),
        "separation": list(res.separation),
        "seconds": float(res.seconds),
        "backend": res.backend,
    }
    if not full:
        return out
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, **out,
        "formula": res.formula, "family": res.family, "link": res.link,
        "dispersion_mode": res.dispersion_mode,
        "coding": None if res.coding is None else res.coding.to_dict(),
        "cov": None if res.cov is None else res.cov.to_numpy(dtype=np.float64).tolist(),
        "df_resid": float(res.df_resid), "pearson_chi2": float(res.pearson_chi2),
        "deviance": float(res.deviance), "inner_sweeps": int(res.inner_sweeps),
        "singular": list(res.singular), "timings": {k: float(v) for k, v in res.timings.items()},
        "threads": int(res.threads), "warnings": list(res.warnings),
        "history": {c: res.history[c].tolist() for c in res.history.columns},
        "random_effects": {f: {"levels": levels_to_json(res.b[f].index, f"factor {f!r}"),
                               "mode": res.b[f].to_numpy(np.float64).tolist(),
                               "cond_var": res.b_var[f].to_numpy(np.float64).tolist()}
                           for f in res.b},
        "naive": None if res.naive is None else {
            "index": [str(i) for i in res.naive.index], "columns": list(res.naive.columns),
            "data": res.naive.to_numpy(np.float64).tolist()},
        "naive_summary": None if res.naive_summary is None else {
            k: v.item() if isinstance(v, np.generic) else v for k, v in res.naive_summary.items()},
        "intercept": bool(res.intercept), "offset_name": res.offset_name,
        "has_offset": bool(res.has_offset),
    }


def save(res, path):
    """Write ``res`` as a model file (see the module's doc); :func:`load` reads it back."""
    text = json.dumps(to_dict(res, full=True), separators=(",", ":"))
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)  # never leave a half-written model under its name


def load(path):
    """Load a model written by :func:`save`.

    Reading runs no code.  Raises ``ValueError`` naming the file and the
    field for a malformed file, and the version for a file written by a newer
    pyglmm.
    """
    with open(path, encoding="utf-8") as fh:
        try:
            d = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a pyglmm model file (not JSON: {exc})") from None
    try:
        return from_dict(d)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def from_dict(d):
    """The result (a ``CrossedResult``) that :func:`to_dict` (``full=True``) described."""
    from ..engines.crossed.result import CrossedResult

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"not a pyglmm model file (no \"format\": \"{FORMAT}\")")
    version = json_field(d, "format_version", int)
    if version > FORMAT_VERSION:
        raise ValueError(f"model file format version {version} is newer than this pyglmm reads "
                         f"(up to {FORMAT_VERSION}); upgrade pyglmm to load it")
    if version < FORMAT_VERSION:
        raise ValueError(f"model file format version {version} is no longer read (it stored the "
                         f"coding as a pickle); refit and save with this pyglmm")
    coef = _numbers_by_name(d, "coef")
    names = list(coef)
    p = len(names)
    coding = None
    if json_field(d, "coding", (dict, type(None))) is not None:
        coding = FixedCoding.from_dict(d["coding"], "coding")
        if coding.names != names:
            raise ValueError("model file: field 'coding.names' does not match the names in 'coef'")
    cov = json_field(d, "cov", (list, type(None)))
    if cov is not None:
        cov = pd.DataFrame(_float_matrix(cov, "cov", p, p), names, names)
    sigma = _numbers_by_name(d, "sigma")
    n_levels = json_field(d, "n_levels", dict)
    random_effects = json_field(d, "random_effects", dict)
    if not (list(sigma) == list(random_effects) == list(n_levels)):
        raise ValueError("model file: fields 'sigma', 'n_levels' and 'random_effects' must name "
                         "the same factors")
    b, b_var = {}, {}
    for f, saved in random_effects.items():
        where = f"random_effects.{f}"
        index = levels_from_json(json_field(saved, "levels", dict, where), f"{where}.levels")
        index.name = f
        if n_levels[f] != len(index):
            raise ValueError(f"model file: field 'n_levels.{f}' is {n_levels[f]!r}, but "
                             f"'{where}.levels' holds {len(index)} levels")
        b[f] = pd.Series(_floats(json_field(saved, "mode", list, where), f"{where}.mode", len(index)),
                         index=index, name=f)
        b_var[f] = pd.Series(_floats(json_field(saved, "cond_var", list, where),
                                     f"{where}.cond_var", len(index)), index=index, name=f)
    history = json_field(d, "history", dict)
    naive = json_field(d, "naive", (dict, type(None)))
    if naive is not None:
        columns, index = json_field(naive, "columns", list, "naive"), json_field(naive, "index", list, "naive")
        naive = pd.DataFrame(_float_matrix(json_field(naive, "data", list, "naive"), "naive.data",
                                           len(index), len(columns)),
                             index=pd.Index(index, name="term"), columns=columns)
    try:
        history = pd.DataFrame(history)
    except ValueError as exc:
        raise ValueError(f"model file: field 'history' is not a table ({exc})") from None
    return CrossedResult(
        formula=json_field(d, "formula", str), family=json_field(d, "family", str),
        link=json_field(d, "link", str), dispersion_mode=json_field(d, "dispersion_mode", str),
        coef=pd.Series(list(coef.values()), index=names, dtype=np.float64, name="coef"), cov=cov,
        sigma=pd.Series(list(sigma.values()), index=list(sigma), dtype=np.float64, name="sd"),
        dispersion=_number(d, "dispersion"), b=b, b_var=b_var,
        n_obs=json_field(d, "n_obs", int), n_levels=n_levels,
        df_resid=_number(d, "df_resid"), pearson_chi2=_number(d, "pearson_chi2"),
        deviance=_number(d, "deviance"), iterations=json_field(d, "iterations", int),
        inner_sweeps=json_field(d, "inner_sweeps", int), converged=json_field(d, "converged", bool),
        singular=_strings(d, "singular"), history=history, seconds=_number(d, "seconds"),
        timings=json_field(d, "timings", dict), backend=json_field(d, "backend", str),
        threads=json_field(d, "threads", int), warnings=_strings(d, "warnings"), naive=naive,
        naive_summary=json_field(d, "naive_summary", (dict, type(None))),
        separation=_strings(d, "separation"),
        intercept=json_field(d, "intercept", bool),
        offset_name=json_field(d, "offset_name", (str, type(None))),
        has_offset=json_field(d, "has_offset", bool), coding=coding)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(d, key):
    value = d.get(key) if isinstance(d, dict) else None
    if not _is_number(value):
        raise ValueError(f"model file: field '{key}' must be a number, got {value!r:.40}")
    return float(value)


def _floats(values, field, length):
    if len(values) != length or not set(map(type, values)) <= {int, float}:  # not bool
        raise ValueError(f"model file: field '{field}' must be a list of {length} numbers")
    return np.array(values, dtype=np.float64)


def _float_matrix(rows, field, n_rows, n_cols):
    if not isinstance(rows, list) or len(rows) != n_rows or not all(isinstance(r, list) for r in rows):
        raise ValueError(f"model file: field '{field}' must be a {n_rows} x {n_cols} matrix")
    return np.array([_floats(r, field, n_cols) for r in rows]).reshape(n_rows, n_cols)


def _numbers_by_name(d, key):
    value = json_field(d, key, dict)
    if not all(map(_is_number, value.values())):
        raise ValueError(f"model file: field '{key}' must map names to numbers")
    return value


def _strings(d, key):
    value = json_field(d, key, list)
    if not all(isinstance(v, str) for v in value):
        raise ValueError(f"model file: field '{key}' must be a list of strings")
    return value

