"""Serialisation of fitted models: :func:`to_dict` (JSON), :func:`save` and :func:`load`.

A saved model is one JSON document, ``{"format": "pyglmm-model",
"format_version": 4, "engine": ..., ...}``: the formula, the fixed-effects
coding (terms, levels with their dtype, reference), each factor's levels with
their dtype and conditional modes (and, with random slopes, its effects and
their covariance matrix), the estimates and their covariance, and what the
engine that fitted it adds (:meth:`extra_to_dict` of its result class).
Version 3 added the engine and random slopes; version 4 writes strict JSON
(non-finite numbers as ``null``); version 2 files (the crossed engine's) and
version 3 files (with ``NaN`` and ``Infinity`` as Python's ``json`` wrote them)
still load.  JSON alone, not
JSON beside binary arrays, because every float is written by Python's
``repr``, which reads back bit for bit, so nothing is lost; one text file is
simple to copy, inspect and diff; and reading it runs no code (no pickle, no
object hooks).

:func:`load` checks every field's type and shape, and that the numbers are
ones a fit can produce: finite estimates and modes; standard deviations,
dispersion and conditional variances finite and not below zero; a symmetric
covariance of the estimates, finite except in the rows and columns of the
columns in ``separation`` (a separated fit's diverging estimates have no finite
variance: those entries are NaN, written ``null``); random-effect covariances
symmetric positive semi-definite; a family and link that pyglmm fits; a
formula whose fixed part is the coding's and whose random part names the
factors and effects of ``random_effects``.  It raises
:class:`~pyglmm.DataError` naming the file, the field and the entry (the
coefficient, the level, the effect) that is wrong.  A number read from
``null`` is NaN (fields that may hold NaN: the separated columns' covariance,
``df_resid``, ``pearson_chi2``, ``deviance`` and the iteration history; an
infinity there, as the first relative change of the crossed engine's history,
reads back as NaN).
"""

import json
import math
import os
from importlib import import_module

import numpy as np
import pandas as pd

from ..data.coding import FixedCoding, json_field, levels_from_json, levels_to_json
from ..exceptions import DataError

FORMAT = "pyglmm-model"
FORMAT_VERSION = 4
OLDEST_VERSION = 2  # version 1 stored the coding as a pickle: never read
#: Result classes by engine name (module, class): load() rebuilds the class that was saved.
RESULT_CLASSES = {
    "crossed": ("pyglmm.engines.crossed.result", "CrossedResult"),
    "agq": ("pyglmm.engines.agq.result", "AGQResult"),
    "summaries": ("pyglmm.engines.summaries.result", "SummariesResult"),
    "ridge": ("pyglmm.engines.ridge.result", "RidgeResult"),
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


def dumps(obj, **options):
    """Strict JSON text of ``obj`` (``json.dumps`` with ``options``): a non-finite
    float (NaN, an infinity) is written as ``null``, which every JSON parser reads,
    where ``json.dumps`` would write ``NaN`` or ``Infinity``."""
    return json.dumps(_nulls(obj), allow_nan=False, **options)


def _nulls(obj):
    """``obj`` with its non-finite floats replaced by None (copies only what holds one)."""
    if isinstance(obj, float):  # numpy's float64 too
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _nulls(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        try:  # a finite sum: numbers, none NaN or infinite (one C pass over a long list)
            if math.isfinite(sum(obj)):
                return obj
        except TypeError:  # not only numbers
            pass
        return [_nulls(v) for v in obj]
    return obj


def save(res, path):
    """Write ``res`` as a model file (see the module's doc); :func:`load` reads it back."""
    text = dumps(to_dict(res, full=True), separators=(",", ":"))
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)  # never leave a half-written model under its name


def load(path):
    """Load a model written by :func:`save`.

    Reading runs no code.  Raises :class:`~pyglmm.DataError` naming the file
    and the field (and the entry) for a malformed or inconsistent file, and
    the version for a file written by a newer pyglmm.
    """
    d = read_json(path, "a pyglmm model file")
    try:
        return from_dict(d)
    except ValueError as exc:
        raise DataError(f"{os.fspath(path)}: {exc}") from None


def read_json(path, what, strict=False):
    """The JSON document in the file ``path``, or :class:`~pyglmm.DataError` naming the
    file and saying it is not ``what`` (not UTF-8, not JSON, nested too deeply; with
    ``strict``, a ``NaN`` or ``Infinity`` token, which :func:`dumps` never writes,
    named by its field)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        d = json.loads(raw.decode("utf-8"))
        bad = _nonfinite_field(d) if strict else None
        if bad is None:
            return d
        why = f"field {bad[0]!r} is {bad[1]!r}: strict JSON has no non-finite number (null stands for one)"
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text: {exc}"
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        why = f"not JSON: {exc}"
    except RecursionError:
        why = "JSON nested too deeply"
    raise DataError(f"{os.fspath(path)}: not {what} ({why})")


def _nonfinite_field(obj, where=""):
    """(dotted path, value) of the first non-finite float in ``obj`` (read by ``json``), or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where, obj)
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        found = _nonfinite_field(value, f"{where}[{key}]" if isinstance(key, int) else
                                 f"{where}.{key}" if where else key)
        if found is not None:
            return found
    return None


def from_dict(d):
    """The result (of the class of the engine that fitted it) that :func:`to_dict`
    (``full=True``) described, checked (see the module's doc; ``ValueError`` naming
    the field)."""
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
    separation = _strings(d, "separation")
    if not set(separation) <= set(names):
        raise ValueError(f"model file: field 'separation' names {sorted(set(separation) - set(names))}, "
                         "which are not coefficients in 'coef'")
    coding = None
    if json_field(d, "coding", (dict, type(None))) is not None:
        coding = FixedCoding.from_dict(d["coding"], "coding")
        if coding.names != names:
            raise ValueError("model file: field 'coding.names' does not match the names in 'coef'")
    cov = json_field(d, "cov", (list, type(None)))
    if cov is not None:
        cov = _coef_cov(cov, names, separation)
    sigma = _numbers_by_name(d, "sigma", minimum=0.0)
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
    else:
        _check_sigma_of(sigma, re_cov)
    family, link = _family_and_link(d)
    dispersion_mode = json_field(d, "dispersion_mode", str)
    if dispersion_mode not in ("estimate", "fixed"):
        raise ValueError(f"model file: field 'dispersion_mode' is {dispersion_mode!r}, not 'estimate' "
                         "or 'fixed'")
    intercept = json_field(d, "intercept", bool)
    formula = json_field(d, "formula", str)
    effects = {f: ["(Intercept)"] if c is None else list(c.columns)
               for f, c in (re_cov or dict.fromkeys(random_effects)).items()}
    _check_formula(formula, coding, names, intercept, effects)
    offset_name = json_field(d, "offset_name", (str, type(None)))
    has_offset = json_field(d, "has_offset", bool)
    if offset_name is not None and not has_offset:
        raise ValueError(f"model file: field 'offset_name' is {offset_name!r}, but 'has_offset' is "
                         "false (a fit with an offset column has an offset)")
    loglik = json_field(d, "loglik", (int, float, type(None))) if "loglik" in d else None
    return cls(
        formula=formula, family=family, link=link, dispersion_mode=dispersion_mode,
        coef=pd.Series(list(coef.values()), index=names, dtype=np.float64, name="coef"), cov=cov,
        sigma=pd.Series(list(sigma.values()), index=list(sigma), dtype=np.float64, name="sd"),
        dispersion=_number(d, "dispersion", minimum=0.0), b=b, b_var=b_var, re_cov=re_cov,
        loglik=None if loglik is None else float(loglik),
        n_obs=_count(d, "n_obs", 1), n_levels=n_levels,
        df_resid=_number(d, "df_resid", null=True), pearson_chi2=_number(d, "pearson_chi2", null=True),
        deviance=_number(d, "deviance", null=True), iterations=_count(d, "iterations", 0),
        converged=json_field(d, "converged", bool),
        singular=_strings(d, "singular"), seconds=_number(d, "seconds"),
        timings=_numbers_by_name(d, "timings", finite=False), backend=json_field(d, "backend", str),
        threads=_count(d, "threads", 1), warnings=_strings(d, "warnings"),
        separation=separation, intercept=intercept, offset_name=offset_name,
        has_offset=has_offset, coding=coding, **cls.extra_from_dict(d))


def _family_and_link(d):
    from ..families import FAMILIES

    family, link = json_field(d, "family", str), json_field(d, "link", str)
    if family not in FAMILIES:
        raise ValueError(f"model file: field 'family' is {family!r}, not one of {', '.join(FAMILIES)}")
    if link != FAMILIES[family].link:
        raise ValueError(f"model file: field 'link' is {link!r}, but pyglmm fits the {family} family "
                         f"with the {FAMILIES[family].link} link only")
    return family, link


def _check_formula(formula, coding, names, intercept, effects):
    """``formula`` must be the one of the saved coding (or array fit) and random effects
    (``effects``: the effect names of each factor, in the file's order)."""
    from ..data.formula import arrays_formula, parse_fixed, parse_formula

    if coding is None:  # a fit from arrays: the formula glmm_from_arrays writes
        expected = arrays_formula(names[int(intercept):], intercept, list(effects))
        if formula != expected or (intercept and names[:1] != ["Intercept"]):
            raise ValueError(f"model file: field 'formula' is {formula!r}, but a fit from arrays with "
                             f"the coefficients in 'coef' and the factors in 'random_effects' has "
                             f"{expected!r}" + (" (and an intercept named 'Intercept' first)"
                                                if intercept else ""))
        return
    try:
        parsed = parse_formula(formula)
    except ValueError as exc:
        raise ValueError(f"model file: field 'formula': {exc}") from None
    if parse_fixed(parsed.fixed) != parse_fixed(coding.formula):
        raise ValueError(f"model file: field 'formula' ({formula!r}) has the fixed part "
                         f"{parsed.fixed!r}, but 'coding.formula' is {coding.formula!r}")
    if list(parsed.groups) != list(effects):
        raise ValueError(f"model file: field 'formula' ({formula!r}) has the grouping factors "
                         f"{list(parsed.groups)}, but 'random_effects' holds {list(effects)}")
    for term in parsed.random:
        if list(term.names) != effects[term.group]:
            raise ValueError(f"model file: field 'random_effects.{term.group}.terms' is "
                             f"{effects[term.group]}, but the formula ({formula!r}) gives the "
                             f"factor {term.group!r} the effects {list(term.names)}")


def _coef_cov(rows, names, separation):
    """The covariance of the estimates: finite except in the separated columns' rows and
    columns, symmetric, with variances not below zero."""
    p = len(names)
    cov = float_matrix(rows, "cov", p, p, null=True)
    bad = ~np.isfinite(cov)
    diverging = np.isin(names, separation)
    bad[diverging, :] = bad[:, diverging] = False
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"model file: field 'cov' entry ({names[i]!r}, {names[j]!r}) is "
                         f"{float(cov[i, j])!r}, "
                         "not a finite number (only the rows and columns of the columns in "
                         "'separation' may be NaN)")
    _check_symmetric(cov, "cov", names)
    _check_numbers(np.diag(cov), "cov", lambda i: f"({names[i]!r}, {names[i]!r})", minimum=0.0,
                   finite=False)
    return pd.DataFrame(cov, names, names)


def _check_symmetric(a, field, names):
    """``a`` equal to its transpose up to rounding (1e-8 of the variances' scale)."""
    with np.errstate(invalid="ignore"):
        scale = np.sqrt(np.abs(np.outer(np.diag(a), np.diag(a))))
        gap = np.abs(a - a.T) > 1e-8 * scale + np.finfo(float).tiny
    if gap.any():
        i, j = np.argwhere(gap)[0]
        raise ValueError(f"model file: field '{field}' is not symmetric: entry ({names[i]!r}, "
                         f"{names[j]!r}) is {float(a[i, j])!r}, but ({names[j]!r}, {names[i]!r}) "
                         f"is {float(a[j, i])!r}")


def _check_sigma_of(sigma, re_cov):
    """With random slopes, 'sigma' holds the square roots of the covariances' diagonals."""
    from .base import sigma_of

    expected = sigma_of(re_cov)
    if list(sigma) != list(expected.index):
        raise ValueError(f"model file: field 'sigma' names {list(sigma)}, but the effects in "
                         f"'random_effects' are {list(expected.index)}")
    for label, value in sigma.items():
        if not math.isclose(value, expected[label], rel_tol=1e-9, abs_tol=1e-300):
            raise ValueError(f"model file: field 'sigma' entry {label!r} is {value!r}, but the "
                             f"covariance in 'random_effects' gives the standard deviation "
                             f"{float(expected[label])!r}")


def _random_effects_from_json(f, saved, n_levels):
    """(modes, conditional variances, covariance or None) of factor ``f``, checked:
    finite modes, finite conditional variances not below zero, a covariance that is
    symmetric positive semi-definite."""
    where = f"random_effects.{f}"
    index = levels_from_json(json_field(saved, "levels", dict, where), f"{where}.levels")
    index.name = f
    if n_levels != len(index):
        raise ValueError(f"model file: field 'n_levels.{f}' is {n_levels!r}, but "
                         f"'{where}.levels' holds {len(index)} levels")
    mode, cond_var = (json_field(saved, key, list, where) for key in ("mode", "cond_var"))
    if "terms" not in saved:
        mode = _floats(mode, f"{where}.mode", len(index))
        cond_var = _floats(cond_var, f"{where}.cond_var", len(index))
        at = lambda i: f"for level {_label(index[i])!r}"  # noqa: E731
        _check_numbers(mode, f"{where}.mode", at)
        _check_numbers(cond_var, f"{where}.cond_var", at, minimum=0.0)
        return (pd.Series(mode, index=index, name=f), pd.Series(cond_var, index=index, name=f), None)
    terms = json_field(saved, "terms", list, where)
    if not terms or not all(isinstance(t, str) for t in terms) or len(set(terms)) != len(terms):
        raise ValueError(f"model file: field '{where}.terms' must be a list of distinct effect names")
    q = len(terms)
    cov = float_matrix(json_field(saved, "cov", list, where), f"{where}.cov", q, q)
    _check_covariance(cov, f"{where}.cov", terms)
    frames = []
    for key, minimum in (("mode", None), ("cond_var", 0.0)):
        values = float_matrix(mode if key == "mode" else cond_var, f"{where}.{key}", len(index), q)
        _check_numbers(values, f"{where}.{key}",
                       lambda i: f"for level {_label(index[i // q])!r}, effect {terms[i % q]!r}", minimum)
        frames.append(pd.DataFrame(values, index=index, columns=terms))
    return frames[0], frames[1], pd.DataFrame(cov, terms, terms)


def _label(level):
    return level.item() if isinstance(level, np.generic) else level


def _check_covariance(cov, field, names):
    """A finite, symmetric, positive semi-definite covariance matrix (rounding allowed)."""
    _check_numbers(cov, field, lambda i: f"({names[i // len(names)]!r}, {names[i % len(names)]!r})")
    _check_symmetric(cov, field, names)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    low = np.linalg.eigvalsh((cov + cov.T) / 2).min()
    if np.diag(cov).min() < 0 or low < -1e-10 * max(sd.max() ** 2, np.finfo(float).tiny):
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        off = np.abs(corr - np.eye(len(names)))
        i, j = np.unravel_index(np.nanargmax(np.where(np.isfinite(off), off, -1.0)), off.shape)
        raise ValueError(f"model file: field '{field}' is not a covariance matrix (not positive "
                         f"semi-definite: smallest eigenvalue {low:.6g}; variances "
                         f"{', '.join(f'{v:.6g}' for v in np.diag(cov))}, correlation of "
                         f"{names[i]!r} and {names[j]!r} {corr[i, j]:.6g})")


def _check_numbers(values, field, entry, minimum=None, finite=True):
    """Refuse the first non-finite value of ``values`` (or, with ``finite=False``, the
    first below ``minimum``; NaN passes) naming ``field`` and ``entry(flat index)`` (a
    single number: ``entry=None``)."""
    a = np.asarray(values, dtype=np.float64).ravel()
    bad = ~np.isfinite(a) if finite else np.zeros(a.shape, bool)
    if minimum is not None:
        bad |= a < minimum
    if bad.any():
        i = int(np.argmax(bad))
        need = "a finite number" if finite else "a number"
        at = "" if entry is None else f" entry {entry(i)}"
        raise ValueError(f"model file: field '{field}'{at} is {float(a[i])!r}, not "
                         f"{need}{'' if minimum is None else f' >= {minimum:g}'}")


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(d, key, minimum=None, null=False):
    """The number in field ``key`` (finite, at least ``minimum``; ``null=True``: any
    float, null reading as NaN)."""
    value = d.get(key) if isinstance(d, dict) else None
    if null and value is None and isinstance(d, dict) and key in d:
        return float("nan")
    if not _is_number(value):
        raise ValueError(f"model file: field '{key}' must be a number, got {value!r:.40}")
    if not null:
        _check_numbers([value], key, None, minimum)
    return float(value)


def _count(d, key, minimum):
    value = json_field(d, key, int)
    if value < minimum:
        raise ValueError(f"model file: field '{key}' is {value}, not an integer >= {minimum}")
    return value


def _floats(values, field, length, null=False):
    """``values`` as float64 (``null=True``: null reads as NaN)."""
    types = set(map(type, values))
    if len(values) != length or not types <= ({int, float, type(None)} if null else {int, float}):
        raise ValueError(f"model file: field '{field}' must be a list of {length} numbers")
    if type(None) in types:
        values = [math.nan if v is None else v for v in values]
    return np.array(values, dtype=np.float64)


def float_matrix(rows, field, n_rows, n_cols, null=False):
    """A checked n_rows x n_cols float64 matrix from nested lists (ValueError naming
    ``field``; ``null=True``: null reads as NaN)."""
    if not isinstance(rows, list) or len(rows) != n_rows or not all(isinstance(r, list) for r in rows):
        raise ValueError(f"model file: field '{field}' must be a {n_rows} x {n_cols} matrix")
    return np.array([_floats(r, field, n_cols, null) for r in rows]).reshape(n_rows, n_cols)


def table_from_json(d, key):
    """The table (a DataFrame) in field ``key``: columns of equal length; null reads as NaN."""
    columns = json_field(d, key, dict)
    try:
        return pd.DataFrame({c: [math.nan if v is None else v for v in values] if None in values
                             else values for c, values in columns.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model file: field '{key}' is not a table ({exc})") from None


def _numbers_by_name(d, key, minimum=None, finite=True):
    """Field ``key``: names mapped to numbers (finite, not below ``minimum``)."""
    value = json_field(d, key, dict)
    if not all(map(_is_number, value.values())):
        raise ValueError(f"model file: field '{key}' must map names to numbers")
    if finite or minimum is not None:
        names = list(value)
        _check_numbers(list(value.values()), key, lambda i: repr(names[i]), minimum, finite)
    return value


def _strings(d, key):
    value = json_field(d, key, list)
    if not all(isinstance(v, str) for v in value):
        raise ValueError(f"model file: field '{key}' must be a list of strings")
    return value
