"""The ridge engine's result: :class:`~pyglmm.GLMMResult` plus the
hyperparameters (lambda, b, A), the effective degrees of freedom, the solver
and the empirical-Bayes search for b."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...data.coding import json_field, levels_from_json
from ...results.base import GLMMResult
from ...results.io import float_matrix


BRIEF = ("lambda", "b", "residual_sd", "edf", "solver")


@dataclass(repr=False)
class RidgeResult(GLMMResult):
    r"""A linear mixed model with a ridge prior on the fixed effects and an
    inverse-Wishart prior on each random-effect covariance (see
    :func:`pyglmm.ridge_lmm`).

    :attr:`loglik` is the marginal log-likelihood :math:`\log p(y \mid \hat\beta_u,
    \hat\Sigma, \hat\sigma^2, \hat\lambda)` with :math:`\beta_p` and the random
    effects integrated out: with no penalised column it is lme4's ML
    ``logLik``.  :attr:`cov` is the posterior covariance of the fixed effects
    (flat prior on the unpenalised ones: lme4's ``vcov`` for those); for the
    penalised ones the Wald z and p-values are those of a shrunken estimate.

    Attributes
    ----------
    lam : float or None
        :math:`\lambda`, the ridge precision relative to :math:`\sigma^2` on the
        standardised penalised columns (None without penalised columns).
    b : float
        The inverse-Wishart weight on the target (0: maximum likelihood).
    A : dict of pandas.DataFrame
        The targets (prior modes) per factor.
    penalized : list of str
        The penalised fixed-effect columns.
    edf : float
        Effective degrees of freedom, the trace of the hat matrix of the fitted values.
    solver : str
        ``"primal"`` or ``"dual"``.
    lam_auto, b_auto : bool
        Whether lambda and b were chosen by empirical Bayes.
    b_search : pandas.DataFrame
        The values of b tried by empirical Bayes and their Laplace log evidence
        (empty when b was given).
    b_cv : pandas.DataFrame
        With ``b="cv"``: the CV curve, one row per b of the grid: ``cv_loglik`` (the
        held-out marginal log-likelihood summed over folds) and ``fold0``, ``fold1``, ...
        (each fold's); empty otherwise.
    cv_folds : pandas.Series
        With ``b="cv"``: the fold of each level of the grouping factor.
    """

    lam: object = None
    b_weight: float = 0.0
    A: dict = field(default_factory=dict)
    penalized: list = field(default_factory=list)
    edf: float = np.nan
    solver: str = "primal"
    lam_auto: bool = False
    b_auto: bool = False
    b_search: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["b", "log_evidence"]))
    b_cv: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["b", "cv_loglik"]))
    cv_folds: pd.Series = field(default_factory=lambda: pd.Series(dtype=np.int64, name="fold"))

    engine = "ridge"
    method = "maximum a posteriori (ridge + inverse-Wishart priors; EM)"
    likelihood_note = "loglik: marginal log-likelihood at the estimates, lme4's ML scale"

    @property
    def Sigma(self):  # noqa: N802 (the model's name)
        """The random-effect covariance matrices per factor (same as :attr:`re_cov`)."""
        return self.re_cov

    @property
    def residual_sd(self):
        return float(np.sqrt(self.dispersion))

    def iterations_text(self):
        return f"{self.iterations} E-steps ({self.solver} solver)"

    def summary(self):
        lam = "none penalised" if self.lam is None else f"{self.lam:.6g}" + (
            " (empirical Bayes)" if self.lam_auto else " (given)")
        how = " (empirical Bayes)" if self.b_auto else (
            f" ({self.b_cv.shape[1] - 2}-fold cross-validation)" if len(self.b_cv) else " (given)")
        b = f"{self.b_weight:.4g}" + how
        lines = [f"Ridge LMM: lambda {lam}; b {b}; effective df {self.edf:.4g}",
                 f"  penalised columns: {', '.join(self.penalized) if self.penalized else 'none'}"]
        for f, A in self.A.items():
            lines.append(f"  target A of {f!r}: diag " + ", ".join(f"{v:.4g}" for v in np.diag(A)))
        if len(self.b_cv):
            lines.append("  cross-validation (held-out marginal log-likelihood): "
                         + ", ".join(f"b {b:.3g}: {v:.6g}" for b, v in zip(self.b_cv.b, self.b_cv.cv_loglik)))
        return super().summary() + "\n\n" + "\n".join(lines)

    def to_dict(self, full=False):
        """:meth:`GLMMResult.to_dict`; the brief form adds ``lambda``, ``b``, ``Sigma``
        (the random-effect covariance as nested lists, effects in the term's order; with
        several random terms a list of them in formula order), ``residual_sd``, ``edf``
        and ``solver`` (``loglik`` is lme4's ML scale), and ``b_cv`` (the CV curve, columns
        as lists) when b was chosen by cross-validation."""
        out = super().to_dict(full)
        if full:
            return out
        mats = [c.to_numpy(np.float64).tolist() for c in self.re_cov.values()]
        brief = BRIEF + (("b_cv",) if len(self.b_cv) else ())
        return {**out, **{k: v for k, v in self.extra_to_dict().items() if k in brief},
                "Sigma": mats[0] if len(mats) == 1 else mats}

    def extra_to_dict(self):
        return {
            "lambda": None if self.lam is None else float(self.lam), "b": float(self.b_weight),
            "A": {f: a.to_numpy(np.float64).tolist() for f, a in self.A.items()},
            "residual_sd": self.residual_sd, "penalized": list(self.penalized),
            "edf": float(self.edf), "solver": self.solver, "lam_auto": bool(self.lam_auto),
            "b_auto": bool(self.b_auto),
            "b_search": {"b": self.b_search["b"].tolist(),
                         "log_evidence": self.b_search["log_evidence"].tolist()},
            "b_cv": {c: self.b_cv[c].astype(float).tolist() for c in self.b_cv.columns},
            "cv_folds": self.cv_folds.astype(int).tolist(),
        }

    @classmethod
    def extra_from_dict(cls, d):
        lam = json_field(d, "lambda", (int, float, type(None)))
        A = {}
        for f, a in json_field(d, "A", dict).items():
            names = list(json_field(d["random_effects"], f, dict, "random_effects")["terms"])
            A[f] = pd.DataFrame(float_matrix(a, f"A.{f}", len(names), len(names)), names, names)
        search = json_field(d, "b_search", dict)
        cv = json_field(d, "b_cv", dict)
        for c, v in cv.items():
            if not isinstance(v, list) or not all(isinstance(x, (int, float)) for x in v):
                raise ValueError(f"field 'b_cv.{c}' must be a list of numbers")
        folds = json_field(d, "cv_folds", list)
        index = None
        if folds:  # aligned with the levels of the single random factor
            (f, saved), = json_field(d, "random_effects", dict).items()
            index = levels_from_json(json_field(saved, "levels", dict, f"random_effects.{f}"),
                                     f"random_effects.{f}.levels").rename(f)
            if len(index) != len(folds) or not all(isinstance(k, int) for k in folds):
                raise ValueError(f"field 'cv_folds' must hold one fold number per level of {f!r}")
        return dict(lam=None if lam is None else float(lam), b_weight=float(json_field(d, "b", (int, float))),
                    A=A, penalized=list(json_field(d, "penalized", list)),
                    edf=float(json_field(d, "edf", (int, float))), solver=json_field(d, "solver", str),
                    lam_auto=json_field(d, "lam_auto", bool), b_auto=json_field(d, "b_auto", bool),
                    b_search=pd.DataFrame({"b": json_field(search, "b", list, "b_search"),
                                           "log_evidence": json_field(search, "log_evidence", list,
                                                                      "b_search")}),
                    b_cv=pd.DataFrame(cv) if cv else pd.DataFrame(columns=["b", "cv_loglik"]),
                    cv_folds=pd.Series(folds, index=index, dtype=np.int64, name="fold"))
