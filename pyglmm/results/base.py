"""The fitted model: estimates, inference, prediction, display and (de)serialisation."""

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .summary import format_naive, format_summary


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
    separation : list of str
        Fixed-effect columns that (quasi-)separate the response, whose
        estimates diverge (the fit stopped early and warned with
        :class:`~pyglmm.SeparationWarning`); empty for a regular fit.
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
    separation: list = field(default_factory=list)
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
        from .scoring import predict

        return predict(self, newdata, X=X, groups=groups, offset=offset, type=type,
                       chunk_size=chunk_size)

    @property
    def factor_names(self):
        return list(self.b)

    # --- serialisation --------------------------------------------------------------
    def to_dict(self, full=False):
        """A JSON-ready dict (see :func:`pyglmm.results.io.to_dict`)."""
        from .io import to_dict

        return to_dict(self, full)

    def to_json(self, path=None, full=False):
        """JSON text of :meth:`to_dict`; written to ``path`` if given."""
        text = json.dumps(self.to_dict(full=full), indent=1, default=str)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    def save(self, path):
        """Save everything (including what :meth:`predict` needs); :func:`pyglmm.load` reads it."""
        from .io import save

        save(self, path)


def load(path):
    """Load a :class:`GLMMResult` saved with :meth:`GLMMResult.save`."""
    from .io import load as _load

    return _load(path)
