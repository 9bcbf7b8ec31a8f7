"""The fitted model: estimates, inference, prediction, display and (de)serialisation."""

import base64
import json
import pickle
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .. import backends as _backend
from ..data.design import level_codes
from ..families import get_family
from ..data.formula import fixed_matrix
from .summary import format_naive, format_summary
from ..data.validation import check_finite

FORMAT_VERSION = 1


@dataclass
class GLMMResult:
    """A fitted crossed random-effects GLMM (see :func:`pyglmm.glmm`).

    Attributes
    ----------
    coef : pandas.Series
        Fixed effects :math:`\\hat\\beta`, named as the formula library names them.
    cov : pandas.DataFrame or None
        :math:`\\widehat{\\mathrm{cov}}(\\hat\\beta)` by eq. (24) (None if not computed).
    sigma : pandas.Series
        Random-effect standard deviations :math:`\\hat\\sigma_k`, one per factor.
    dispersion : float
        :math:`\\hat\\phi` (1 when fixed; the residual variance for gaussian).
    b : dict of pandas.Series
        Conditional modes of the random effects, indexed by level.
    b_var : dict of pandas.Series
        Their conditional variances under the diagonal approximation,
        :math:`1 / (\\sum_{i \\in g} w_i + 1/\\sigma_k^2)`.
    history : pandas.DataFrame
        One row per outer iteration.
    converged, singular : bool, list of str
        Convergence flag; factors whose variance is at (numerically) zero.
    naive, naive_summary : pandas.DataFrame, dict or None
        The naive-regression comparison (``compare_naive=True``).
    """

    formula: str
    family: str
    link: str
    dispersion_mode: str
    coef: pd.Series
    cov: object
    sigma: pd.Series
    dispersion: float
    b: dict
    b_var: dict
    n_obs: int
    n_levels: dict
    df_resid: float
    pearson_chi2: float
    deviance: float
    iterations: int
    inner_sweeps: int
    converged: bool
    singular: list
    history: pd.DataFrame
    seconds: float
    timings: dict
    backend: str
    threads: int
    warnings: list = field(default_factory=list)
    naive: object = None
    naive_summary: object = None
    # What predict() needs to code new data as the training data were coded.
    intercept: bool = False
    offset_name: object = None
    has_offset: bool = False
    model_spec: object = None

    # --- tables -----------------------------------------------------------------
    @property
    def se(self):
        """Standard errors of the fixed effects (None without a covariance)."""
        return None if self.cov is None else pd.Series(np.sqrt(np.diag(self.cov)), self.coef.index)

    def coef_table(self, alpha=0.05):
        """Fixed effects with standard errors, Wald z, two-sided p-values and
        :math:`1-\\alpha` confidence intervals, as a DataFrame."""
        tab = pd.DataFrame({"coef": self.coef})
        if self.cov is not None:
            q = stats.norm.ppf(1 - alpha / 2)
            tab["se"] = self.se
            tab["z"] = tab.coef / tab.se
            tab["p_value"] = 2 * stats.norm.sf(np.abs(tab.z))
            tab["ci_lower"] = tab.coef - q * tab.se
            tab["ci_upper"] = tab.coef + q * tab.se
        return tab

    def variance_components(self):
        """Variance, standard deviation and level count per factor (and residual)."""
        tab = pd.DataFrame({"levels": pd.Series(self.n_levels), "variance": self.sigma**2,
                            "sd": self.sigma})
        if self.family == "gaussian":
            tab.loc["Residual"] = [np.nan, self.dispersion, np.sqrt(self.dispersion)]
        return tab

    def random_effects(self, factor):
        """Conditional modes and (diagonal-approximation) variances of one factor's levels."""
        return pd.DataFrame({"mode": self.b[factor], "cond_var": self.b_var[factor]})

    def to_frame(self):
        """The coefficient table (alias of :meth:`coef_table`)."""
        return self.coef_table()

    def summary(self):
        """The printed summary (also ``str(result)``)."""
        text = format_summary(self)
        return text + ("\n\n" + format_naive(self) if self.naive is not None else "")

    def __str__(self):
        return self.summary()

    def __repr__(self):
        return (f"<GLMMResult {self.formula!r}: {self.family}, n_obs={self.n_obs}, "
                f"converged={self.converged}>")

    # --- prediction ---------------------------------------------------------------
    def predict(self, newdata=None, *, X=None, groups=None, offset=None, type="link",
                chunk_size=1_000_000):
        """Predict on new rows, streaming over chunks of ``chunk_size`` rows.

        .. math:: \\hat\\eta = o + x^\\top\\hat\\beta + \\sum_k \\hat b_{k, g_k},

        with :math:`\\hat b_{k,g} = 0` for a level not seen in the fit (or a
        missing label): the population-level prediction.

        Parameters
        ----------
        newdata : pandas.DataFrame
            For formula fits: the columns the formula uses (and the offset column).
        X, groups : array-like, dict
            For array fits: covariates as passed to the fit (without the
            intercept column if it was added) and factor labels by name.
        offset : array-like, optional
            Needed, and only allowed, when the model was fitted with an offset
            given as an array (a formula fit's offset column is read from
            ``newdata``).
        type : {"link", "response"}
            Linear predictor or mean :math:`h(\\hat\\eta)`.
        chunk_size : int
            Rows per chunk; memory beyond the output is O(chunk_size * p).
        """
        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', got {type!r}")
        if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        array_offset = self.has_offset and self.offset_name is None
        if array_offset and offset is None:
            raise ValueError("the model was fitted with an offset: pass offset=")
        if offset is not None and not array_offset:
            raise ValueError("offset= is only for models fitted with an offset array")
        if self.model_spec is not None:
            if newdata is None:
                raise ValueError("this model was fitted from a formula: pass newdata=DataFrame")
            n = len(newdata)
            needed = [*sorted(self.model_spec.required_variables), *self.factor_names,
                      *([self.offset_name] if self.offset_name else [])]
            missing = [c for c in needed if c not in newdata.columns]
            if missing:
                raise ValueError(f"newdata lacks column(s) {', '.join(map(repr, missing))}")
            if offset is not None and len(offset) != n:
                raise ValueError(f"offset has {len(offset)} rows, newdata has {n}")
        else:
            if X is None or groups is None:
                raise ValueError("this model was fitted from arrays: pass X= and groups=")
            X = X.to_numpy() if isinstance(X, pd.DataFrame) else np.asarray(X)
            if X.ndim != 2:
                raise ValueError(f"X must be 2-dimensional, got shape {X.shape}")
            n = X.shape[0]
            unknown = set(self.factor_names) - set(groups)
            if unknown:
                raise ValueError(f"groups lacks factor(s) {', '.join(sorted(unknown))}")
            lengths = {f"groups[{f!r}]": len(groups[f]) for f in self.factor_names}
            if offset is not None:
                lengths["offset"] = len(offset)
            for name, m in lengths.items():
                if m != n:
                    raise ValueError(f"{name} has {m} rows, X has {n}")
        kern, threads = _backend.kernels(), _backend.get_num_threads()
        family = get_family(self.family)
        beta = self.coef.to_numpy()
        levels = [self.b[f].index for f in self.factor_names]
        table = np.concatenate([self.b[f].to_numpy() for f in self.factor_names])
        offsets = np.concatenate([[0], np.cumsum([len(lv) for lv in levels])])
        eta = np.empty(n)
        for start in range(0, n, chunk_size):
            rows = slice(start, min(n, start + chunk_size))
            if self.model_spec is not None:
                part = newdata.iloc[rows]
                Xc, _, _ = fixed_matrix(str(self.model_spec.formula), part, self.model_spec)
                labels = [part[f] for f in self.factor_names]
                off = (part[self.offset_name].to_numpy(np.float64) if self.offset_name else
                       None if offset is None else np.asarray(offset, dtype=np.float64)[rows])
            else:
                Xc = np.asarray(X[rows], dtype=np.float64)
                if self.intercept:
                    Xc = np.column_stack([np.ones(Xc.shape[0]), Xc])
                labels = [np.asarray(groups[f])[rows] for f in self.factor_names]
                off = None if offset is None else np.asarray(offset, dtype=np.float64)[rows]
            if Xc.shape[1] != beta.size:
                raise ValueError(f"X has {Xc.shape[1]} columns, the model has {beta.size}")
            positions = range(rows.start, rows.stop)  # errors name rows of the whole input
            check_finite("X", Xc, positions, list(self.coef.index))
            if off is not None:
                check_finite("offset", off, positions)
            codes = level_codes(levels, labels, offsets, Xc.shape[0])
            kern.linear_predictor(np.ascontiguousarray(Xc), codes, beta, table,
                                  np.empty(0) if off is None else np.ascontiguousarray(off),
                                  eta[rows], threads)
            if type == "response":  # per chunk: no temporaries the size of the output
                eta[rows] = family.mean(eta[rows])
        return eta

    @property
    def factor_names(self):
        return list(self.b)

    # --- serialisation --------------------------------------------------------------
    def to_dict(self, full=False):
        """A JSON-ready dict.

        The brief form (``full=False``) has the keys ``coef``, ``se``, ``sigma``,
        ``dispersion``, ``n_obs``, ``n_levels``, ``iterations``, ``converged``,
        ``seconds`` and ``backend``; ``full=True`` adds everything :meth:`load`
        needs, including the random effects and the formula's coding.
        """
        se = self.se
        out = {
            "coef": {k: float(v) for k, v in self.coef.items()},
            "se": None if se is None else {k: float(v) for k, v in se.items()},
            "sigma": {k: float(v) for k, v in self.sigma.items()},
            "dispersion": float(self.dispersion),
            "n_obs": int(self.n_obs),
            "n_levels": {k: int(v) for k, v in self.n_levels.items()},
            "iterations": int(self.iterations),
            "converged": bool(self.converged),
            "seconds": float(self.seconds),
            "backend": self.backend,
        }
        if not full:
            return out
        out.update({
            "format_version": FORMAT_VERSION,
            "formula": self.formula, "family": self.family, "link": self.link,
            "dispersion_mode": self.dispersion_mode,
            "cov": None if self.cov is None else self.cov.to_numpy().tolist(),
            "df_resid": self.df_resid, "pearson_chi2": self.pearson_chi2,
            "deviance": self.deviance, "inner_sweeps": self.inner_sweeps,
            "singular": self.singular, "timings": self.timings, "threads": self.threads,
            "warnings": self.warnings,
            "history": json.loads(self.history.to_json(orient="records")),
            "random_effects": {f: {**_levels_to_json(f, self.b[f].index),
                                   "mode": self.b[f].tolist(),
                                   "cond_var": self.b_var[f].tolist()} for f in self.b},
            "naive": None if self.naive is None else json.loads(self.naive.to_json(orient="index")),
            "naive_summary": self.naive_summary,
            "intercept": self.intercept, "offset_name": self.offset_name,
            "has_offset": self.has_offset,
            "model_spec_pickle": None if self.model_spec is None else
                base64.b64encode(pickle.dumps(self.model_spec)).decode("ascii"),
        })
        return out

    def to_json(self, path=None, full=False):
        """JSON text of :meth:`to_dict`; written to ``path`` if given."""
        text = json.dumps(self.to_dict(full=full), indent=1, default=str)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    def save(self, path):
        """Save everything (including what :meth:`predict` needs) as JSON."""
        self.to_json(path, full=True)

    @classmethod
    def load(cls, path):
        """Load a result written by :meth:`save`.

        The formula's coding is stored as a pickled formulaic object: load
        only files you trust, as with any pickle.
        """
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
        return cls(
            formula=d["formula"], family=d["family"], link=d["link"],
            dispersion_mode=d["dispersion_mode"], coef=pd.Series(d["coef"], dtype=float),
            cov=None if d["cov"] is None else pd.DataFrame(d["cov"], names, names),
            sigma=pd.Series(d["sigma"], dtype=float), dispersion=d["dispersion"], b=b,
            b_var=b_var, n_obs=d["n_obs"], n_levels=d["n_levels"], df_resid=d["df_resid"],
            pearson_chi2=d["pearson_chi2"], deviance=d["deviance"], iterations=d["iterations"],
            inner_sweeps=d["inner_sweeps"], converged=d["converged"], singular=d["singular"],
            history=pd.DataFrame(d["history"]), seconds=d["seconds"], timings=d["timings"],
            backend=d["backend"], threads=d["threads"], warnings=d["warnings"], naive=naive,
            naive_summary=d["naive_summary"], intercept=d["intercept"],
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


def load(path):
    """Load a :class:`GLMMResult` saved with :meth:`GLMMResult.save`."""
    return GLMMResult.load(path)
