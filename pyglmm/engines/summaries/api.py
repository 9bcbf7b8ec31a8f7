r"""One-shot federation from summary statistics (Limpoco, Faes & Hens 2025).

Each site sends once, per cluster, its size, event count and moments up to order
K (:func:`site_summary`, a JSON message: :mod:`~pyglmm.engines.summaries.message`);
the analyst fits the random-intercept logistic model

.. math::
    \mathrm{logit}\,P(y_{hj} = 1 \mid b_h) = \beta_0 + x_{hj}^\top\beta + b_h,
    \qquad b_h \sim N(0, \sigma^2),

from the messages alone (:func:`fit_summaries`), either

* ``method="direct"``: maximising the order-K polynomial-approximate marginal
  likelihood built from the statistics themselves
  (:mod:`~pyglmm.engines.summaries.direct`), or
* ``method="pseudo"``: generating pseudo-data whose statistics match
  (:mod:`~pyglmm.engines.summaries.pseudo`) and maximising their likelihood by
  adaptive Gauss-Hermite quadrature with the AGQ engine.
"""

import math
import time
import warnings

import numpy as np
import pandas as pd

from ...exceptions import ConvergenceWarning, SingularFitWarning
from . import direct, message, pseudo
from .result import METHODS, SummariesResult
from .site import moment_index, summarise

SINGULAR_SD = 1e-4  # a random-intercept sd below this is reported as a singular (boundary) fit


def site_summary(data, formula, cluster, order=3, min_size=5, site="site"):
    """The message a site sends: per-cluster summary statistics of ``data``.

    Parameters
    ----------
    data : pandas.DataFrame
        The site's rows.
    formula : str
        ``"y ~ x1 + C(cat)"``: a 0/1 response and the fixed effects (a random term
        ``(1|cluster)`` may be written; no other).
    cluster : str
        The cluster column (the random intercept's grouping factor).
    order : int
        K, 1 to 4: moments up to this total order are released.
    min_size : int
        The disclosure guard's minimum cluster size.
    site : str
        The site's name, written into the message.

    Returns
    -------
    dict
        The message (see :mod:`pyglmm.engines.summaries.message` for the schema);
        :func:`write_summary` writes it.

    Raises
    ------
    DataError
        Naming the cluster, for one below ``min_size`` or whose release would
        reach its number of data values; naming the column for bad data.
    """
    stats = summarise(data, formula, cluster, order, min_size)
    return message.build(stats, site, cluster, int(order), min_size)


def write_summary(msg, path):
    """Write a message (exact float64 JSON; non-finite values refused)."""
    message.write(msg, path)


def read_summary(path):
    """Read and check a message; ``ValueError`` naming the file, field and cluster."""
    return message.read(path)


def fit_summaries(summaries, method="direct", nagq=7, seed=0):
    r"""Fit the random-intercept logistic GLMM from the sites' summary statistics.

    Parameters
    ----------
    summaries : list of str, path or dict
        Message files (or messages as dicts, from :func:`site_summary`), one per
        site; every site must summarise the same model at the same order, and no
        cluster may appear at two sites.
    method : {"direct", "pseudo"}
        ``"direct"``: maximise the order-K polynomial-approximate likelihood (K
        at least 2); ``"pseudo"``: fit pseudo-data matching the statistics.
    nagq : int
        Adaptive Gauss-Hermite nodes per cluster (1: Laplace).
    seed : int
        Seed of the pseudo-data generator (``method="pseudo"``).

    Returns
    -------
    SummariesResult
        Estimates, standard errors from the observed information, the random
        intercepts' modes, the method, order and match residuals.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or not 1 <= nagq <= 50:
        raise ValueError(f"nagq must be an integer from 1 to 50, got {nagq!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    start = time.perf_counter()
    stats = combine(summaries)
    if method == "direct":
        fit = _direct(stats, int(nagq))
    else:
        fit = _pseudo(stats, int(nagq), int(seed))
    return _result(stats, fit, method, int(nagq), None if method == "direct" else int(seed),
                   time.perf_counter() - start)


def combine(summaries):
    """The checked messages stacked: one dict of arrays over all sites' clusters,
    plus ``sources`` (site file or name) and ``sites``."""
    if isinstance(summaries, (str, dict)) or not hasattr(summaries, "__iter__"):
        summaries = [summaries]
    checked = []
    for i, s in enumerate(summaries):
        if isinstance(s, dict):
            source = f"message {i} (site {s.get('site')!r})"
            checked.append((source, message.check(s, source)))
        else:
            checked.append((str(s), message.read(s)))
    if not checked:
        raise ValueError("summaries is empty: give at least one site's message")
    first_source, first = checked[0]
    owner, sites = {}, {}
    for source, m in checked:
        if m["site"] in sites:
            raise ValueError(f"site file {source}: site name {m['site']!r} is also the name in "
                             f"{sites[m['site']]}; each site's message must be given once (and sites "
                             "must have distinct names)")
        sites[m["site"]] = source
        for key in ("formula", "response", "cluster", "order", "columns", "categorical", "coding"):
            if m[key] != first[key]:
                raise ValueError(f"site file {source}: field '{key}' differs from {first_source}'s; "
                                 "every site must summarise the same model at the same order "
                                 "(and code categorical columns with the same levels)")
        for label in m["labels"]:
            if label in owner:
                raise ValueError(f"site file {source}: cluster {label!r} also appears in "
                                 f"{owner[label]}; a cluster must lie in one site (rename one)")
            owner[label] = source
    out = {key: first[key] for key in ("formula", "response", "cluster", "order", "columns",
                                       "categorical", "coding")}
    out["binary"] = [all(m["binary"][v] for _, m in checked) for v in range(len(first["columns"]))]
    out["labels"] = [lab for _, m in checked for lab in m["labels"]]
    for key in ("n", "events", "mean", "y_cross", "moments"):
        out[key] = np.concatenate([m[key] for _, m in checked])
    out["sites"] = [m["site"] for _, m in checked]
    out["index"] = moment_index(len(first["columns"]), first["order"])
    return out


def _start(stats):
    ybar = stats["events"].sum() / stats["n"].sum()
    ybar = min(max(ybar, 1e-3), 1 - 1e-3)
    return np.r_[math.log(ybar / (1 - ybar)), np.zeros(len(stats["columns"])), 0.0]


def _direct(stats, nagq):
    problem = direct.Problem(stats["n"], stats["events"], stats["mean"], stats["y_cross"],
                             stats["moments"], stats["index"], stats["order"])
    fit = direct.fit(problem, nagq, stats["order"], _start(stats))
    p = len(stats["columns"])
    theta, cov = fit["theta"], fit["cov"]
    return {"coef": theta[:p + 1], "cov": None if cov is None else cov[:p + 1, :p + 1],
            "sigma": math.exp(theta[p + 1]), "modes": fit["modes"], "cond_var": fit["cond_sd"] ** 2,
            "loglik": fit["loglik"], "iterations": fit["iterations"],
            "converged": fit["converged"], "optimizer": fit["message"], "match_residual": None}


def pseudo_frame(stats, seed):
    """The stacked pseudo-data as a DataFrame (columns ``y``, the cluster column, and
    the covariates as coded, named ``c0``, ``c1``, ...) and the match residuals."""
    groups = pseudo.discrete_groups(stats["columns"], stats["binary"], stats["categorical"])
    y, X, codes, residual = pseudo.generate(stats, stats["index"], groups, seed)
    frame = pd.DataFrame(X, columns=[f"c{v}" for v in range(X.shape[1])])
    frame.insert(0, "y", y)
    frame.insert(1, "cluster", np.asarray(stats["labels"], dtype=object)[codes])
    return frame, pd.Series(residual, index=pd.Index(stats["labels"], name=stats["cluster"]),
                            name="match_residual")


def _pseudo(stats, nagq, seed):
    import pyglmm

    frame, residual = pseudo_frame(stats, seed)
    formula = "y ~ " + " + ".join(["1"] + list(frame.columns[2:])) + " + (1|cluster)"
    res = pyglmm.glmm(formula, frame, family="binomial", nagq=nagq, engine="agq")
    b = res.b["cluster"].reindex(stats["labels"])
    return {"coef": res.coef.to_numpy(), "cov": None if res.cov is None else res.cov.to_numpy(),
            "sigma": float(res.sigma.iloc[0]), "modes": b.to_numpy(),
            "cond_var": res.b_var["cluster"].reindex(stats["labels"]).to_numpy(),
            "loglik": res.loglik, "iterations": res.iterations, "converged": res.converged,
            "optimizer": "; ".join(res.warnings) or "converged", "match_residual": residual,
            "backend": res.backend, "threads": res.threads}


def _result(stats, fit, method, nagq, seed, seconds):
    names = ["Intercept"] + list(stats["columns"])
    cluster = stats["cluster"]
    levels = pd.Index(stats["labels"], name=cluster)
    notes = []
    if not fit["converged"]:
        notes.append(f"the {method} fit did not converge: {fit['optimizer']}")
        warnings.warn(notes[-1], ConvergenceWarning, stacklevel=3)
    singular = [cluster] if fit["sigma"] < SINGULAR_SD else []
    if singular:
        notes.append(f"singular fit: the random-intercept sd of {cluster!r} is {fit['sigma']:.3g}")
        warnings.warn(notes[-1], SingularFitWarning, stacklevel=3)
    residual = fit["match_residual"]
    if residual is not None and (residual > pseudo.MATCH_TOL).any():
        bad = residual[residual > pseudo.MATCH_TOL].sort_values(ascending=False)
        shown = ", ".join(f"{k!r} ({v:.3g})" for k, v in bad.head(10).items())
        notes.append(f"the pseudo-data do not match the summaries of {len(bad)} cluster"
                     f"{'s' if len(bad) > 1 else ''} to {pseudo.MATCH_TOL:g} (largest standardised "
                     f"residuals: {shown})")
        warnings.warn(notes[-1], ConvergenceWarning, stacklevel=3)
    n_obs = int(stats["n"].sum())
    return SummariesResult(
        formula=f"{stats['formula']} + (1|{cluster})", family="binomial", link="logit",
        dispersion_mode="fixed",
        coef=pd.Series(fit["coef"], index=names, dtype=np.float64, name="coef"),
        cov=None if fit["cov"] is None else pd.DataFrame(fit["cov"], names, names),
        sigma=pd.Series([fit["sigma"]], index=[cluster], dtype=np.float64, name="sd"),
        dispersion=1.0, b={cluster: pd.Series(fit["modes"], index=levels, name=cluster)},
        b_var={cluster: pd.Series(fit["cond_var"], index=levels, name=cluster)},
        n_obs=n_obs, n_levels={cluster: len(levels)}, df_resid=float(n_obs - len(names) - 1),
        pearson_chi2=float("nan"), deviance=float("nan"), iterations=int(fit["iterations"]),
        converged=bool(fit["converged"]), singular=singular, seconds=seconds, timings={},
        backend=fit.get("backend", "numpy"), threads=fit.get("threads", 1), warnings=notes,
        intercept=True,
        coding=stats["coding"],
        loglik=float(fit["loglik"]), fit_method=method, order=int(stats["order"]), nagq=nagq,
        seed=seed, sites=list(stats["sites"]), match_residual=residual, optimizer=fit["optimizer"])
