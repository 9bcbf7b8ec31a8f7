"""Serialisation of fitted models: :func:`to_dict` (JSON), :func:`save` and :func:`load`."""

import base64
import json
import pickle

import numpy as np
import pandas as pd

FORMAT_VERSION = 1


def to_dict(res, full=False):
    """A JSON-ready dict.

    The brief form (``full=False``) has the keys ``coef``, ``se``, ``sigma``,
    ``dispersion``, ``n_obs``, ``n_levels``, ``iterations``, ``converged``,
    ``separation`` (the columns that separate the response, usually none),
    ``seconds`` and ``backend``; ``full=True`` adds everything :meth:`load`
    needs, including the random effects and the formula's coding.
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
    out.update({
        "format_version": FORMAT_VERSION,
        "formula": res.formula, "family": res.family, "link": res.link,
        "dispersion_mode": res.dispersion_mode,
        "cov": None if res.cov is None else res.cov.to_numpy().tolist(),
        "df_resid": res.df_resid, "pearson_chi2": res.pearson_chi2,
        "deviance": res.deviance, "inner_sweeps": res.inner_sweeps,
        "singular": res.singular, "timings": res.timings, "threads": res.threads,
        "warnings": res.warnings,
        "history": json.loads(res.history.to_json(orient="records")),
        "random_effects": {f: {**_levels_to_json(f, res.b[f].index),
                               "mode": res.b[f].tolist(),
                               "cond_var": res.b_var[f].tolist()} for f in res.b},
        "naive": None if res.naive is None else json.loads(res.naive.to_json(orient="index")),
        "naive_summary": res.naive_summary,
        "intercept": res.intercept, "offset_name": res.offset_name,
        "has_offset": res.has_offset,
        "model_spec_pickle": None if res.model_spec is None else
            base64.b64encode(pickle.dumps(res.model_spec)).decode("ascii"),
    })
    return out


def save(res, path):
    """Save everything (including what predict needs) as JSON."""
    with open(path, "w") as fh:
        fh.write(json.dumps(to_dict(res, full=True), indent=1, default=str))


def load(path):
    """Load a result written by :meth:`save`.

    The formula's coding is stored as a pickled formulaic object: load
    only files you trust, as with any pickle.
    """
    from .base import GLMMResult

    with open(path) as fh:
        d = json.load(fh)
    if d.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a pyglmm result file of format {FORMAT_VERSION}")
    names = list(d["coef"])
    b, b_var = {}, {}
    for f, re_ in d["random_effects"].items():
        idx = _levels_from_json(f, re_)
        b[f] = pd.Series(re_["mode"], index=idx, name=f)
        b_var[f] = pd.Series(re_["cond_var"], index=idx, name=f)
    naive = None if d["naive"] is None else pd.DataFrame.from_dict(d["naive"], orient="index")
    spec = d["model_spec_pickle"]
    return GLMMResult(
        formula=d["formula"], family=d["family"], link=d["link"],
        dispersion_mode=d["dispersion_mode"], coef=pd.Series(d["coef"], dtype=float),
        cov=None if d["cov"] is None else pd.DataFrame(d["cov"], names, names),
        sigma=pd.Series(d["sigma"], dtype=float), dispersion=d["dispersion"], b=b,
        b_var=b_var, n_obs=d["n_obs"], n_levels=d["n_levels"], df_resid=d["df_resid"],
        pearson_chi2=d["pearson_chi2"], deviance=d["deviance"], iterations=d["iterations"],
        inner_sweeps=d["inner_sweeps"], converged=d["converged"], singular=d["singular"],
        history=pd.DataFrame(d["history"]), seconds=d["seconds"], timings=d["timings"],
        backend=d["backend"], threads=d["threads"], warnings=d["warnings"], naive=naive,
        naive_summary=d["naive_summary"], separation=d.get("separation", []), intercept=d["intercept"],
        offset_name=d["offset_name"], has_offset=d["has_offset"],
        model_spec=None if spec is None else pickle.loads(base64.b64decode(spec)))


def _levels_to_json(factor, index):
    """A factor's level labels for JSON, with their dtype so that load restores them."""
    kind = index.dtype.kind
    if kind in "iufb":
        values = index.tolist()
    elif kind in "Mm":  # datetimes and durations as ISO strings
        values = index.astype(str).tolist()
    elif all(isinstance(v, str) for v in index):
        values = index.tolist()
    else:
        raise ValueError(f"the levels of factor {factor!r} (dtype {index.dtype}) cannot be saved "
                         "as JSON; convert them to strings or integers before fitting")
    return {"levels": values, "levels_dtype": str(index.dtype)}


def _levels_from_json(factor, saved):
    index = pd.Index(saved["levels"], name=factor)
    return index.astype(saved["levels_dtype"]) if np.dtype(saved["levels_dtype"]).kind in "Mm" \
        else index

