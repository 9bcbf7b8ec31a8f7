r"""The fitted model every engine returns: estimates, inference, per-row outputs,
display and (de)serialisation, with the names statsmodels and lme4 users know.

Engine-specific results subclass :class:`GLMMResult` (the crossed engine's:
:class:`pyglmm.engines.crossed.result.CrossedResult`) and add their own fields
(iteration history, comparisons) and the lines of the summary that describe
their method.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .summary import format_summary


@dataclass
class RowData:
    """What the per-row outputs need, in the caller's row order.

    ``mu`` holds the fitted means (float64, 8 bytes per row); ``y``, ``trials`` and
    ``weights`` are the response (successes when ``trials`` is given), trials and
    prior weights as given, each stored in the narrowest dtype that holds it
    exactly (:func:`compact`: 1 byte per row for a 0/1 response), or None when
    absent; ``index`` labels the rows.
    """

    mu: np.ndarray
    y: np.ndarray
    trials: object
    weights: object
    index: pd.Index


def compact(values):
    """``values`` (numeric, finite) as a new array of the narrowest of uint8, int32 and
    float64 that holds every value exactly (None stays None)."""
    if values is None:
        return None
    a = np.asarray(values, dtype=np.float64)
    if a.size and np.array_equal(a, np.floor(a)):
        lo, hi = a.min(), a.max()
        for dtype in (np.uint8, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return a.astype(dtype)
    return a.copy()


def _unavailable(name, why):
    return AttributeError(f"{name} is not available: {why}")


def effect_label(factor, effect):
    """The label of one random effect in :attr:`GLMMResult.sigma`: the factor for its
    intercept, ``factor:effect`` for a slope."""
    return factor if effect == "(Intercept)" else f"{factor}:{effect}"


def sigma_of(re_cov):
    """:attr:`GLMMResult.sigma` (standard deviations, labelled by :func:`effect_label`)
    from per-factor covariance matrices."""
    labels, sds = [], []
    for f, cov in re_cov.items():
        for e in cov.index:
            labels.append(effect_label(f, e))
            sds.append(float(np.sqrt(max(cov.loc[e, e], 0.0))))
    return pd.Series(sds, index=labels, dtype=np.float64, name="sd")


def _varcorr_rows(factor, cov):
    """lme4's ``as.data.frame(VarCorr())`` rows of one factor's covariance matrix."""
    names = list(cov.index)
    c = cov.to_numpy(np.float64)
    sd = np.sqrt(np.clip(np.diag(c), 0.0, None))
    rows = [(factor, e, None, float(c[i, i]), float(sd[i])) for i, e in enumerate(names)]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            corr = c[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
            rows.append((factor, names[i], names[j], float(c[i, j]), float(corr)))
    return rows


@dataclass
class GLMMResult:
    r"""A fitted GLMM (see :func:`pyglmm.glmm`); engines return subclasses.

    The model: :math:`g(\mu_i) = \eta_i = o_i + x_i^\top\beta + \sum_k b_{k,g_k(i)}`,
    :math:`b_{k,g} \sim N(0, \sigma_k^2)`,
    :math:`\mathrm{Var}(y_i \mid b) = \phi V(\mu_i)/a_i` (prior weights :math:`a_i`).

    statsmodels names: :attr:`params`, :attr:`bse`, :attr:`tvalues` (=
    :attr:`zvalues`), :attr:`pvalues`, :meth:`conf_int`, :meth:`cov_params`,
    :attr:`nobs`, :attr:`fittedvalues`, :attr:`resid_response`,
    :attr:`resid_pearson`, :attr:`resid_deviance`.  lme4 names: :meth:`fixef`,
    :meth:`ranef`, :meth:`VarCorr`, :attr:`ngroups`.

    Accuracy of a PQL fit (the crossed engine).  PQL (penalised
    quasi-likelihood) maximises no likelihood: it iterates a linearised
    (working-response) mixed model, so

    * there is **no log-likelihood, AIC or BIC** (none is printed or reported;
      compare models by their estimates and standard errors, or refit with a
      likelihood-based tool);
    * :attr:`params` and the variances are PQL estimates: for binary data with
      few rows per level they are shrunk towards zero (near glmer's
      ``nAGQ=0``); for gaussian data they are close to maximum likelihood
      (lmer's ``REML = FALSE``: the diagonal trace treats :math:`\beta` as
      known, so with few levels the variances are below REML's, as ML's
      are), and for counts that are not small, to maximum likelihood;
    * :attr:`bse`, :meth:`cov_params`, :attr:`zvalues`, :attr:`pvalues` and
      :meth:`conf_int` are Wald quantities from the working model at the
      converged weights with the variances taken as known (eq. 24 of Ghosh,
      Hastie & Owen 2022), computed by backfitting: approximate;
    * :meth:`ranef`'s conditional standard deviations use the diagonal
      approximation :math:`1/\sqrt{\sum_{i \in g} w_i + 1/\sigma_k^2}` (each
      level as if the other factors' effects and :math:`\beta` were known), so
      they understate lme4's ``condVar``;
    * :meth:`VarCorr` uses Schall's update with the diagonal trace
      approximation.

    :attr:`fittedvalues` and the residuals are conditional on the random
    effects' modes (lme4's ``fitted()``), per row in the caller's order.  A
    model read by :func:`pyglmm.load` has none of them (a saved model stores
    estimates, not rows): asking raises ``AttributeError``; score the training
    rows with :meth:`predict` instead.  Memory: 8 bytes per row for the fitted
    means, plus the response, trials and weights in their narrowest exact
    dtypes (1 byte per row for a 0/1 response).

    Attributes
    ----------
    coef : pandas.Series
        Fixed effects :math:`\hat\beta` (also :attr:`params`).
    cov : pandas.DataFrame or None
        :math:`\widehat{\mathrm{cov}}(\hat\beta)` (None if not computed, ``se=False``).
    sigma : pandas.Series
        Random-effect standard deviations :math:`\hat\sigma_k`, one per random
        effect: labelled by the factor for its intercept and ``factor:column``
        for a random slope (see :func:`effect_label`).
    re_cov : dict of pandas.DataFrame or None
        For engines with random slopes: per factor, the covariance matrix of its
        random effects (``q x q``, indexed by the effect names, ``(Intercept)``
        first, as lme4 names them).  None: every factor has a random intercept
        only, with variance ``sigma**2``.
    dispersion : float
        :math:`\hat\phi` (1 when fixed; the residual variance for gaussian).
    b, b_var : dict of pandas.Series or pandas.DataFrame
        Conditional modes of the random effects and their (diagonal)
        conditional variances, per factor, indexed by level: a Series for a
        random intercept, a DataFrame with one column per effect otherwise.
    loglik : float or None
        The maximised log-likelihood, for engines that maximise one (None for PQL).
    n_obs, n_levels : int, dict
        Rows; levels per factor.
    df_resid, pearson_chi2, deviance : float
        Residual degrees of freedom :math:`N - p - \sum_k (q_k - \nu_k)`,
        Pearson's statistic and the deviance of the conditional model at the modes.
    iterations, converged, singular : int, bool, list of str
        Iterations of the fit, convergence, factors whose variance is at
        (numerically) zero.
    rows : RowData or None
        What the per-row outputs need (None for a loaded model).
    separation : list of str
        Fixed-effect columns that (quasi-)separate the response, whose
        estimates diverge (the fit stopped early and warned with
        :class:`~pyglmm.SeparationWarning`); empty for a regular fit.
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
    converged: bool
    singular: list
    seconds: float
    timings: dict
    backend: str
    threads: int
    warnings: list = field(default_factory=list)
    separation: list = field(default_factory=list)
    # What predict() needs to code new data as the training data were coded.
    intercept: bool = False
    offset_name: object = None
    has_offset: bool = False
    coding: object = None  # pyglmm.data.coding.FixedCoding of a formula fit
    rows: object = field(default=None, repr=False)
    re_cov: object = None
    loglik: object = None

    #: The engine's name, written to saved models so that :func:`load` rebuilds the same class.
    engine = "crossed"

    #: One line naming the fitting method (the summary's title); engines override it.
    method = "an unspecified method"
    #: What the summary says about the likelihood; engines override it.
    likelihood_note = ""

    # --- fixed effects (statsmodels) ----------------------------------------------
    @property
    def params(self):
        """Fixed effects :math:`\\hat\\beta` (a Series indexed by column name)."""
        return self.coef.rename(None)

    def _cov(self, name):
        if self.cov is None:
            raise _unavailable(name, "the fit was run with se=False (refit with se=True)")
        return self.cov

    def cov_params(self):
        """:math:`\\widehat{\\mathrm{cov}}(\\hat\\beta)` as a DataFrame (approximate for PQL,
        see the class docstring)."""
        return self._cov("cov_params").copy()

    @property
    def bse(self):
        """Standard errors of :attr:`params` (approximate for PQL)."""
        return pd.Series(np.sqrt(np.diag(self._cov("bse"))), self.coef.index)

    @property
    def se(self):
        """:attr:`bse`, or None when the covariance was not computed."""
        return None if self.cov is None else self.bse

    @property
    def zvalues(self):
        """Wald statistics :math:`\\hat\\beta / \\mathrm{se}` (referred to N(0, 1))."""
        return self.params / self.bse

    @property
    def tvalues(self):
        """Same as :attr:`zvalues` (statsmodels' name; the reference is N(0, 1))."""
        return self.zvalues

    @property
    def pvalues(self):
        """Two-sided Wald p-values from N(0, 1) (approximate for PQL)."""
        from scipy.special import ndtr

        return 2 * ndtr(-self.zvalues.abs())

    def conf_int(self, alpha=0.05):
        """Wald :math:`1-\\alpha` confidence intervals: a DataFrame with columns 0
        (lower) and 1 (upper), as statsmodels' (approximate for PQL)."""
        from scipy.special import ndtri

        if not (isinstance(alpha, (int, float, np.floating)) and 0 < alpha < 1):
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        q = ndtri(1 - alpha / 2)
        bse = self.bse
        return pd.DataFrame({0: self.params - q * bse, 1: self.params + q * bse})

    @property
    def nobs(self):
        """Number of rows the model was fitted to."""
        return self.n_obs

    def coef_table(self, alpha=0.05):
        """Fixed effects with standard errors, Wald z, two-sided p-values and
        :math:`1-\\alpha` confidence intervals, as a DataFrame (only ``coef``
        without a covariance)."""
        tab = pd.DataFrame({"coef": self.coef})
        if self.cov is not None:
            ci = self.conf_int(alpha)
            tab["se"], tab["z"], tab["p_value"] = self.bse, self.zvalues, self.pvalues
            tab["ci_lower"], tab["ci_upper"] = ci[0], ci[1]
        return tab

    # --- random effects (lme4) ------------------------------------------------------
    def fixef(self):
        """Fixed effects, as lme4's ``fixef()`` (same as :attr:`params`)."""
        return self.params

    def ranef(self):
        """Conditional modes of the random effects and their conditional standard
        deviations, as lme4's ``as.data.frame(ranef(fit, condVar = TRUE))``.

        Returns
        -------
        dict of pandas.DataFrame
            Per factor, indexed by level: ``condval`` (the mode) and ``condsd``
            (for the crossed engine a diagonal approximation that understates
            lme4's, see the class docstring).  A factor with random slopes has
            one row per level and effect, in lme4's long form, with a ``term``
            column naming the effect.
        """
        out = {}
        for f, modes in self.b.items():
            if isinstance(modes, pd.Series):
                out[f] = pd.DataFrame({"condval": modes, "condsd": np.sqrt(self.b_var[f])})
            else:
                out[f] = pd.concat([pd.DataFrame({"term": e, "condval": modes[e],
                                                  "condsd": np.sqrt(self.b_var[f][e])})
                                    for e in modes.columns])
        return out

    def random_terms(self):
        """The effects of each grouping factor, ``{factor: [names]}`` (``(Intercept)`` first)."""
        if self.re_cov is None:
            return {f: ["(Intercept)"] for f in self.sigma.index}
        return {f: list(cov.index) for f, cov in self.re_cov.items()}

    def VarCorr(self):  # noqa: N802 (lme4's name)
        """Variance components, as lme4's ``as.data.frame(VarCorr(fit))``: per
        factor, one row per effect (``grp``, ``var1`` the effect, ``var2`` None,
        ``vcov`` the variance, ``sdcor`` the standard deviation), then one row
        per pair of effects (``var1``, ``var2``, ``vcov`` the covariance,
        ``sdcor`` the correlation); and a ``Residual`` row for the gaussian
        family."""
        if self.re_cov is None:
            rows = [(f, "(Intercept)", None, float(s**2), float(s)) for f, s in self.sigma.items()]
        else:
            rows = [row for f, cov in self.re_cov.items() for row in _varcorr_rows(f, cov)]
        if self.family == "gaussian":
            rows.append(("Residual", None, None, float(self.dispersion),
                         float(np.sqrt(self.dispersion))))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    @property
    def ngroups(self):
        """Levels per grouping factor (lme4's ``ngrps()``), a Series."""
        return pd.Series(self.n_levels, dtype=np.int64, name="ngroups")

    @property
    def factor_names(self):
        return list(self.b)

    # --- likelihood -------------------------------------------------------------------
    @property
    def df_model(self):
        """Estimated parameters: fixed effects, covariance parameters of the random
        effects and (when estimated) the dispersion; AIC and BIC count these."""
        n_cov = sum(len(names) * (len(names) + 1) // 2 for names in self.random_terms().values())
        return len(self.coef) + n_cov + int(self.dispersion_mode == "estimate")

    def _loglik(self, name):
        if self.loglik is None:
            raise _unavailable(name, f"the fit by {self.method} reports no log-likelihood")
        return float(self.loglik)

    @property
    def llf(self):
        """The maximised log-likelihood (statsmodels' name; lme4's ``logLik``)."""
        return self._loglik("llf")

    @property
    def aic(self):
        r"""Akaike's criterion :math:`-2\ell + 2k`, :math:`k` = :attr:`df_model`."""
        return -2 * self._loglik("aic") + 2 * self.df_model

    @property
    def bic(self):
        r"""Schwarz's criterion :math:`-2\ell + k \log N`, :math:`k` = :attr:`df_model`."""
        return -2 * self._loglik("bic") + np.log(self.n_obs) * self.df_model

    # --- per-row outputs (statsmodels) ----------------------------------------------
    def _rows(self, name):
        if self.rows is None:
            raise _unavailable(name, "a loaded model stores estimates, not per-row outputs; "
                               "score the training rows with predict(data, type='response')")
        return self.rows

    def _fitted_family(self):
        from ..families import get_family

        return get_family(self.family)

    def _response(self, name):
        """(rows, proportion or response, prior weights or None) for the residuals."""
        r = self._rows(name)
        y = r.y.astype(np.float64)
        prior = None if r.weights is None else r.weights.astype(np.float64)
        if r.trials is not None:
            trials = r.trials.astype(np.float64)
            y = y / trials
            prior = trials if prior is None else prior * trials
        return r, y, prior

    @property
    def fittedvalues(self):
        """Fitted means :math:`h(\\hat\\eta_i)` at the random effects' modes, per row in
        the caller's order (for binomial the probability, also with trials).  These
        are the means the fit used: :meth:`predict` (``type="response"``) of the
        training rows, except where the fit clamps :math:`\\hat\\eta` (see
        :mod:`pyglmm.families`)."""
        r = self._rows("fittedvalues")
        return pd.Series(r.mu, index=r.index)

    @property
    def resid_response(self):
        """Response residuals :math:`y_i - \\hat\\mu_i`; with binomial trials
        :math:`m_i`, successes minus :math:`m_i \\hat\\mu_i` (as statsmodels)."""
        r = self._rows("resid_response")
        y = r.y.astype(np.float64)
        fitted = r.mu if r.trials is None else r.trials * r.mu
        return pd.Series(y - fitted, index=r.index)

    @property
    def resid_pearson(self):
        """Pearson residuals :math:`\\sqrt{a_i}\\,(y_i - \\hat\\mu_i)/\\sqrt{V(\\hat\\mu_i)}`
        (prior weights times trials :math:`a_i`, not divided by :math:`\\phi`, as
        statsmodels; their squares sum to :attr:`pearson_chi2`)."""
        r, y, prior = self._response("resid_pearson")
        res = (y - r.mu) / np.sqrt(self._fitted_family().variance(r.mu))
        return pd.Series(res if prior is None else np.sqrt(prior) * res, index=r.index)

    @property
    def resid_deviance(self):
        """Deviance residuals :math:`\\mathrm{sign}(y_i - \\hat\\mu_i)\\sqrt{a_i d(y_i, \\hat\\mu_i)}`
        (their squares sum to :attr:`deviance`)."""
        r, y, prior = self._response("resid_deviance")
        return pd.Series(self._fitted_family().resid_deviance(y, r.mu, prior), index=r.index)

    # --- display --------------------------------------------------------------------
    def iterations_text(self):
        """How the summary counts the fit's iterations; engines override it."""
        return f"{self.iterations} iterations"

    def fit_description(self):
        """The summary's line about the fit (iterations, status, time, backend)."""
        status = "converged" if self.converged else "NOT CONVERGED"
        return (f"{self.iterations_text()}, {status}; {self.seconds:.3g} s on backend "
                f"{self.backend} ({self.threads} thread{'s' if self.threads != 1 else ''})")

    def summary(self):
        """The printed summary (also ``str(result)``)."""
        return format_summary(self)

    def __str__(self):
        return self.summary()

    def __repr__(self):
        return (f"<{type(self).__name__} {self.formula!r}: {self.family}, n_obs={self.n_obs}, "
                f"converged={self.converged}>")

    # --- prediction ---------------------------------------------------------------
    def predict(self, newdata=None, **options):
        """Predict on new rows: the linear predictor (``type="link"``) or the mean
        (``type="response"``).

        ``newdata`` is a DataFrame for formula fits (``X=`` and ``groups=`` for
        array fits); :func:`pyglmm.results.scoring.predict` documents every option.
        """
        from .scoring import predict

        return predict(self, newdata, **options)

    # --- serialisation --------------------------------------------------------------
    def extra_to_dict(self):
        """What the engine saves beyond the base fields (engines override; see
        :mod:`pyglmm.results.io`)."""
        return {}

    @classmethod
    def extra_from_dict(cls, d):
        """The constructor arguments :meth:`extra_to_dict` saved (checked)."""
        return {}

    def to_dict(self, full=False):
        """A JSON-ready dict (see :func:`pyglmm.results.io.to_dict`; no per-row outputs)."""
        from .io import to_dict

        return to_dict(self, full)

    def to_json(self, path=None, full=False):
        """Strict JSON text of :meth:`to_dict` (a non-finite number, such as the NaN
        standard error of a separating column, is written as ``null``); written to
        ``path`` if given."""
        from .io import dumps

        text = dumps(self.to_dict(full=full), indent=1, default=str)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    def save(self, path):
        """Save the estimates and what :meth:`predict` needs (not the per-row outputs);
        :func:`pyglmm.load` reads it."""
        from .io import save

        save(self, path)


def load(path):
    """Load a result saved with :meth:`GLMMResult.save` (it has no per-row outputs)."""
    from .io import load as _load

    return _load(path)
