"""``pyglmm.glmm``: one entry point that picks the engine for a formula."""

from ..data.formula import parse_formula

ENGINE_CHOICES = ("auto", "crossed", "agq")


def choose_engine(formula, engine="auto", nagq=None):
    """The engine that fits ``formula``: ``engine`` if it names one, else (``"auto"``)
    ``"agq"`` when ``nagq`` is given or the formula has random slopes, ``"crossed"``
    otherwise."""
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINE_CHOICES))}, got {engine!r}")
    if engine == "crossed" and nagq is not None:
        raise ValueError("nagq is an option of engine='agq' (adaptive quadrature); the crossed "
                         "engine fits by PQL")
    if engine != "auto":
        return engine
    return "agq" if nagq is not None or parse_formula(formula).has_slopes else "crossed"


def glmm(formula, data, family="binomial", *, engine="auto", nagq=None, **options):
    r"""Fit a GLMM from an lme4-style formula with the engine that suits it.

    Engines:

    * ``"crossed"`` (:func:`pyglmm.engines.crossed.glmm`): any number of crossed
      random intercepts ``(1|user) + (1|item)`` by Schall's PQL with clubbed
      backfitting, at millions of rows; no likelihood.
    * ``"agq"`` (:func:`pyglmm.engines.agq.glmm_agq`): one grouping factor with a
      random intercept and up to two random slopes, ``(1 + t|g)``, by maximum
      likelihood with ``nagq``-point adaptive Gauss–Hermite quadrature (glmer's
      ``nAGQ``; 1 is the Laplace approximation), with log-likelihood, AIC, BIC
      and observed-information standard errors.

    ``engine="auto"`` (default) picks ``"agq"`` when ``nagq`` is given or the
    formula has random slopes, ``"crossed"`` otherwise; name an engine to force
    it (``engine="agq"`` on a random-intercept model fits it by Laplace).
    ``options`` go to the engine's function (see there for the model, the
    objective and every option).

    Raises
    ------
    ValueError
        ``nagq`` with ``engine="crossed"``, or an unknown engine.
    DataError
        From the engine, e.g. ``engine="agq"`` with two or more grouping
        factors (naming them).
    """
    chosen = choose_engine(formula, engine, nagq)
    if chosen == "agq":
        from .agq.api import glmm_agq

        return glmm_agq(formula, data, family, nagq=1 if nagq is None else nagq, **options)
    from .crossed.api import glmm as glmm_crossed

    return glmm_crossed(formula, data, family, **options)
