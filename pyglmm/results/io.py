"""Serialisation of fitted models: :func:`to_dict` (JSON), :func:`save` and :func:`load`.

A saved model is one JSON document, ``{"format": "pyglmm-model",
"format_version": 3, "engine": ..., ...}``: the formula, the fixed-effects
coding (terms, levels with their dtype, reference), each factor's levels with
their dtype and conditional modes (and, with random slopes, its effects and
their covariance matrix), the estimates and their covariance, and what the
engine that fitted it adds (:meth:`extra_to_dict` of its result class).
Version 3 added the engine and random slopes; version 2 files (the crossed
engine's) still load.  JSON alone, not
JSON beside binary arrays, because every float is written by Python's
``repr``, which reads back bit for bit, so nothing is lost; one text file is
simple to copy, inspect and diff; and reading it runs no code (no pickle, no
object hooks): :func:`load` checks every field's type and shape and names
the field that is wrong.  NaN and infinities are written as ``NaN`` and
``Infinity``, as Python's ``json`` module writes them.
"""

import json
import os
from importlib import import_module

import numpy as np
import pandas as pd

from ..data.coding import FixedCoding, json_field, levels_from_json, levels_to_json

FORMAT = "pyglmm-model"
FORMAT_VERSION = 3
OLDEST_VERSION = 2  # version 1 stored the coding as a pickle: never read
#: Result classes by engine name (module, class): load() rebuilds the class that was saved.
RESULT_CLASSES = {
    "crossed": ("pyglmm.engines.crossed.result", "CrossedResult"),
}


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
        "engine": res.engine,
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
    if res.loglik is not None:
        out.update(loglik=res.llf, aic=res.aic, bic=res.bic)
    if not full:
        return out
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, **out,
        "formula": res.formula, "family": res.family, "link": res.link,
        "dispersion_mode": res.dispersion_mode,
        "coding": None if res.coding is None else res.coding.to_dict(),
        "cov": None if res.cov is None else res.cov.to_numpy(dtype=np.float64).tolist(),
        "df_resid": float(res.df_resid), "pearson_chi2": float(res.pearson_chi2),
        "deviance": float(res.deviance),
        "singular": list(res.singular), "timings": {k: float(v) for k, v in res.timings.items()},
        "threads": int(res.threads), "warnings": list(res.warnings),
        "random_effects": {f: _random_effects_to_json(res, f) for f in res.b},
        "intercept": bool(res.intercept), "offset_name": res.offset_name,
        "has_offset": bool(res.has_offset),
        **res.extra_to_dict(),
    }


def _random_effects_to_json(res, f):
    out = {"levels": levels_to_json(res.b[f].index, f"factor {f!r}"),
           "mode": res.b[f].to_numpy(np.float64).tolist(),
           "cond_var": res.b_var[f].to_numpy(np.float64).tolist()}
    if res.re_cov is not None:
        cov = res.re_cov[f]
        out.update(terms=list(cov.index), cov=cov.to_numpy(np.float64).tolist())
    return out


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
    """The result (of the class of the engine that fitted it) that :func:`to_dict`
    (``full=True``) described."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"not a pyglmm model file (no \"format\": \"{FORMAT}\")")
    version = json_field(d, "format_version", int)
    if version > FORMAT_VERSION:
        raise ValueError(f"model file format version {version} is newer than this pyglmm reads "
                         f"(up to {FORMAT_VERSION}); upgrade pyglmm to load it")
    if version < OLDEST_VERSION:
        raise ValueError(f"model file format version {version} is no longer read (it stored the "
                         f"coding as a pickle); refit and save with this pyglmm")
    engine = d.get("engine", "crossed") if version == 2 else json_field(d, "engine", str)
    if engine not in RESULT_CLASSES:
        raise ValueError(f"model file: field 'engine' is {engine!r}, which this pyglmm does not "
                         f"know (known: {', '.join(RESULT_CLASSES)})")
    module, name = RESULT_CLASSES[engine]
    cls = getattr(import_module(module), name)
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
        cov = pd.DataFrame(float_matrix(cov, "cov", p, p), names, names)
    sigma = _numbers_by_name(d, "sigma")
    n_levels = json_field(d, "n_levels", dict)
    random_effects = json_field(d, "random_effects", dict)
    if list(random_effects) != list(n_levels):
        raise ValueError("model file: fields 'n_levels' and 'random_effects' must name the same factors")
    b, b_var, re_cov = {}, {}, {}
    for f, saved in random_effects.items():
        b[f], b_var[f], re_cov[f] = _random_effects_from_json(f, saved, n_levels[f])
    if all(c is None for c in re_cov.values()):
        re_cov = None
        if list(sigma) != list(random_effects):
            raise ValueError("model file: fields 'sigma' and 'random_effects' must name the same factors")
    elif any(c is None for c in re_cov.values()):
        raise ValueError("model file: every factor in 'random_effects' needs 'terms' and 'cov', or none")
    loglik = json_field(d, "loglik", (int, float, type(None))) if "loglik" in d else None
    return cls(
        formula=json_field(d, "formula", str), family=json_field(d, "family", str),
        link=json_field(d, "link", str), dispersion_mode=json_field(d, "dispersion_mode", str),
        coef=pd.Series(list(coef.values()), index=names, dtype=np.float64, name="coef"), cov=cov,
        sigma=pd.Series(list(sigma.values()), index=list(sigma), dtype=np.float64, name="sd"),
        dispersion=_number(d, "dispersion"), b=b, b_var=b_var, re_cov=re_cov,
        loglik=None if loglik is None else float(loglik),
        n_obs=json_field(d, "n_obs", int), n_levels=n_levels,
        df_resid=_number(d, "df_resid"), pearson_chi2=_number(d, "pearson_chi2"),
        deviance=_number(d, "deviance"), iterations=json_field(d, "iterations", int),
        converged=json_field(d, "converged", bool),
        singular=_strings(d, "singular"), seconds=_number(d, "seconds"),
        timings=json_field(d, "timings", dict), backend=json_field(d, "backend", str),
        threads=json_field(d, "threads", int), warnings=_strings(d, "warnings"),
        separation=_strings(d, "separation"),
        intercept=json_field(d, "intercept", bool),
        offset_name=json_field(d, "offset_name", (str, type(None))),
        has_offset=json_field(d, "has_offset", bool), coding=coding,
        **cls.extra_from_dict(d))


def _random_effects_from_json(f, saved, n_levels):
    """(modes, conditional variances, covariance or None) of factor ``f``."""
    where = f"random_effects.{f}"
    index = levels_from_json(json_field(saved, "levels", dict, where), f"{where}.levels")
    index.name = f
    if n_levels != len(index):
        raise ValueError(f"model file: field 'n_levels.{f}' is {n_levels!r}, but "
                         f"'{where}.levels' holds {len(index)} levels")
    mode, cond_var = (json_field(saved, key, list, where) for key in ("mode", "cond_var"))
    if "terms" not in saved:
        return (pd.Series(_floats(mode, f"{where}.mode", len(index)), index=index, name=f),
                pd.Series(_floats(cond_var, f"{where}.cond_var", len(index)), index=index, name=f),
                None)
    terms = json_field(saved, "terms", list, where)
    if not terms or not all(isinstance(t, str) for t in terms):
        raise ValueError(f"model file: field '{where}.terms' must be a list of effect names")
    q = len(terms)
    cov = pd.DataFrame(float_matrix(json_field(saved, "cov", list, where), f"{where}.cov", q, q),
                       terms, terms)
    frame = lambda rows, key: pd.DataFrame(  # noqa: E731
        float_matrix(rows, f"{where}.{key}", len(index), q), index=index, columns=terms)
    return frame(mode, "mode"), frame(cond_var, "cond_var"), cov


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


def float_matrix(rows, field, n_rows, n_cols):
    """A checked n_rows x n_cols float64 matrix from nested lists (ValueError naming ``field``)."""
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

