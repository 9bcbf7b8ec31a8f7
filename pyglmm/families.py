r"""GLM families with their canonical links: binomial-logit, poisson-log and gaussian-identity.

Each family gives, as R's ``family`` objects and statsmodels' families do, the
link and inverse link, the variance function :math:`V(\mu)`, the unit deviance,
the deviance, the deviance residuals and the (conditional) log-likelihood, and
checks a response.  The kernels (C++, numba, numpy) know a family by its id
(``code``; enum ``Family`` in ``csrc/common/types.hpp``) and compute its IRLS
quantities themselves; the numpy twin calls :meth:`Family.irls_mean`,
:meth:`Family.variance` and :meth:`Family.unit_deviance` here, and the other two
are tested against it.

Inside the fit the linear predictor is clamped (:meth:`Family.irls_mean`) so
that the working weights and responses stay finite:

* binomial: :math:`\eta \in [-30, 30]`, as R's ``binomial()$linkinv``, so
  :math:`V(\mu) \ge 9.4 \cdot 10^{-14}`;
* poisson: :math:`\mu = \max(e^{\min(\eta, 100)}, \epsilon)` with
  :math:`\epsilon` the double precision machine epsilon.  The floor is R's
  ``poisson()$linkinv``; the ceiling :math:`e^{100} \approx 2.7 \cdot 10^{43}`
  is far above any count a double holds exactly (:math:`2^{53} \approx 9 \cdot
  10^{15}`) and far below the overflow of :math:`e^\eta` (at 709.8) and of the
  sums of :math:`w x x^\top` over rows, so it only ever acts on a diverging
  iterate and keeps it finite.
"""

import warnings

import numpy as np

GAUSSIAN, BINOMIAL, POISSON = 0, 1, 2  # the kernels' family ids (enum Family in csrc/common/types.hpp)
EPS = float(np.finfo(np.float64).eps)
BINOMIAL_ETA_MAX = 30.0  # IRLS clamp |eta| <= 30 (kEtaClamp in csrc/common/common.hpp)
POISSON_ETA_MAX = 100.0  # IRLS clamp eta <= 100 (kPoissonEtaMax in csrc/common/common.hpp)


def expit(x):
    """Logistic function without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _weights(weights):
    return 1.0 if weights is None or np.size(weights) == 0 else np.asarray(weights, dtype=np.float64)


class Family:
    """A GLM family with its canonical link (base class; use :func:`get_family`).

    Attributes
    ----------
    name, link : str
        As R spells them (``binomial``/``logit``, ``poisson``/``log``,
        ``gaussian``/``identity``).
    code : int
        The kernels' family id.
    irls : bool
        Whether the working weights depend on the fit (no for gaussian).
    default_dispersion : str
        ``"fixed"`` (:math:`\\phi = 1`, as glmer for binomial and poisson) or
        ``"estimate"`` (the residual variance of the gaussian family).

    In the methods, ``y`` is the response (for binomial the proportion of
    successes), ``mu`` the mean and ``weights`` the prior weights (for binomial
    times the number of trials); ``None`` means all ones.
    """

    name = link = ""
    code = -1
    irls = True
    default_dispersion = "fixed"

    def linkfun(self, mu):
        """The link :math:`g(\\mu) = \\eta`."""
        raise NotImplementedError

    def linkinv(self, eta):
        """The inverse link :math:`\\mu = g^{-1}(\\eta)` (without the fit's clamp)."""
        raise NotImplementedError

    def mean(self, eta):
        """The inverse link (same as :meth:`linkinv`)."""
        return self.linkinv(eta)

    def irls_mean(self, eta):
        """The mean the fit uses: :meth:`linkinv` of the clamped linear predictor
        (see the module docstring)."""
        return self.linkinv(eta)

    def variance(self, mu):
        """The variance function :math:`V(\\mu)`: :math:`\\mathrm{Var}(y) = \\phi V(\\mu) / a`."""
        raise NotImplementedError

    def unit_deviance(self, y, mu):
        """The unit deviance :math:`d(y, \\mu)`, per row."""
        raise NotImplementedError

    def deviance(self, y, mu, weights=None):
        """The deviance :math:`\\sum_i a_i d(y_i, \\mu_i)`."""
        return float(np.sum(_weights(weights) * self.unit_deviance(y, mu)))

    def resid_deviance(self, y, mu, weights=None):
        """Deviance residuals :math:`\\mathrm{sign}(y - \\mu) \\sqrt{a\\, d(y, \\mu)}`."""
        unit = np.maximum(self.unit_deviance(y, mu), 0.0)  # rounding can make it -0.0
        return np.sign(np.asarray(y) - mu) * np.sqrt(_weights(weights) * unit)

    def loglike_obs(self, y, mu, weights=None, scale=1.0):
        """Per-row log-likelihood of ``y`` given the mean (the conditional
        likelihood of a GLMM at given random effects, not the marginal one)."""
        raise NotImplementedError

    def loglike(self, y, mu, weights=None, scale=1.0):
        """Sum of :meth:`loglike_obs`."""
        return float(np.sum(self.loglike_obs(y, mu, weights, scale)))

    def check_response(self, y, trials, name, index=None):
        """Check a float64 response; return it as the fit models it (binomial: the
        proportion of successes).  Errors name column ``name`` and the first bad row
        (labelled by ``index`` if given)."""
        return y

    def __repr__(self):
        return f"<pyglmm family {self.name} ({self.link})>"


class Gaussian(Family):
    """Gaussian response, identity link: :math:`V(\\mu) = 1`, :math:`\\phi` the residual variance."""

    name, link, code, irls, default_dispersion = "gaussian", "identity", GAUSSIAN, False, "estimate"

    def linkfun(self, mu):
        return np.asarray(mu, dtype=np.float64)

    def linkinv(self, eta):
        return np.asarray(eta, dtype=np.float64)

    def variance(self, mu):
        return np.ones_like(mu, dtype=np.float64)

    def unit_deviance(self, y, mu):
        return (np.asarray(y) - mu) ** 2

    def loglike_obs(self, y, mu, weights=None, scale=1.0):
        a = _weights(weights)
        return -0.5 * (a * (np.asarray(y) - mu) ** 2 / scale + np.log(2 * np.pi * scale / a))


class Binomial(Family):
    """Binomial proportions (0/1 or successes / trials), logit link: :math:`V(\\mu) = \\mu(1-\\mu)`."""

    name, link, code = "binomial", "logit", BINOMIAL

    def linkfun(self, mu):
        mu = np.asarray(mu, dtype=np.float64)
        return np.log(mu) - np.log1p(-mu)

    def linkinv(self, eta):
        return expit(np.asarray(eta, dtype=np.float64))

    def irls_mean(self, eta):
        return expit(np.clip(eta, -BINOMIAL_ETA_MAX, BINOMIAL_ETA_MAX))

    def variance(self, mu):
        return mu * (1.0 - mu)

    def unit_deviance(self, y, mu):
        """:math:`2[y \\log(y/\\mu) + (1-y) \\log((1-y)/(1-\\mu))]`, with :math:`0 \\log 0 = 0`."""
        from scipy.special import rel_entr

        y = np.asarray(y, dtype=np.float64)
        return 2.0 * (rel_entr(y, mu) + rel_entr(1.0 - y, 1.0 - mu))

    def loglike_obs(self, y, mu, weights=None, scale=1.0):
        """With ``weights`` the numbers of trials :math:`m` (y the proportions):
        :math:`\\log\\binom{m}{my} + my\\log\\mu + m(1-y)\\log(1-\\mu)`."""
        from scipy.special import gammaln, xlog1py, xlogy

        m, y = _weights(weights), np.asarray(y, dtype=np.float64)
        k = m * y
        return (gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
                + xlogy(k, mu) + xlog1py(m - k, -mu))

    def check_response(self, y, trials, name, index=None):
        from .data.validation import _row_label as row_label, show_value
        from .exceptions import DataError

        if trials is None:
            bad = (y != 0) & (y != 1)
            if bad.any():
                pos = np.flatnonzero(bad)
                examples = ", ".join(show_value(v) for v in np.unique(y[pos])[:5])
                raise DataError(f"response {name!r} must be 0/1 for the binomial family: "
                                f"{pos.size} row(s) hold other values ({examples}), first at "
                                f"{row_label(index, pos[0])}; give successes with trials= for counts")
            return y
        bad = (trials <= 0) | (y < 0) | (y > trials)
        if bad.any():
            pos = np.flatnonzero(bad)[0]
            raise DataError(f"response {name!r} must lie in [0, trials] with trials > 0: "
                            f"{show_value(y[pos])} successes of {show_value(trials[pos])} trials at "
                            f"{row_label(index, pos)}")
        fractional = (y != np.floor(y)) | (trials != np.floor(trials))
        if fractional.any():
            pos = np.flatnonzero(fractional)
            warnings.warn(f"response {name!r}: {pos.size} row(s) have non-integer successes or trials, "
                          f"first {show_value(y[pos[0]])} of {show_value(trials[pos[0]])} at "
                          f"{row_label(index, pos[0])}; fitting them as quasi-binomial proportions",
                          UserWarning, stacklevel=4)
        return y / trials


class Poisson(Family):
    """Counts, log link: :math:`V(\\mu) = \\mu`; an offset :math:`\\log(\\text{exposure})`
    models rates."""

    name, link, code = "poisson", "log", POISSON

    def linkfun(self, mu):
        return np.log(mu)

    def linkinv(self, eta):
        with np.errstate(over="ignore"):  # beyond eta = 709.8 the mean is inf
            return np.exp(np.asarray(eta, dtype=np.float64))

    def irls_mean(self, eta):
        return np.maximum(np.exp(np.minimum(eta, POISSON_ETA_MAX)), EPS)

    def variance(self, mu):
        return np.asarray(mu, dtype=np.float64)

    def unit_deviance(self, y, mu):
        """:math:`2[y \\log(y/\\mu) - (y - \\mu)]`, with :math:`0 \\log 0 = 0`."""
        from scipy.special import rel_entr

        y = np.asarray(y, dtype=np.float64)
        return 2.0 * (rel_entr(y, mu) - (y - mu))

    def loglike_obs(self, y, mu, weights=None, scale=1.0):
        """:math:`a\\,(y \\log\\mu - \\mu - \\log y!)` (prior weights as replication counts, as R)."""
        from scipy.special import gammaln, xlogy

        y = np.asarray(y, dtype=np.float64)
        return _weights(weights) * (xlogy(y, mu) - mu - gammaln(y + 1))

    def check_response(self, y, trials, name, index=None):
        """Counts must be non-negative (an error); a non-integer count gets a warning
        (as glmer), since the fit itself (quasi-likelihood) is defined for any
        :math:`y \\ge 0`, e.g. rates with their exposures as prior weights."""
        from .data.validation import _row_label as row_label, show_value
        from .exceptions import DataError

        negative = y < 0
        if negative.any():
            pos = np.flatnonzero(negative)
            raise DataError(f"response {name!r} must be non-negative counts for the poisson "
                            f"family: {pos.size} row(s) are negative, first "
                            f"{show_value(y[pos[0]])} at {row_label(index, pos[0])}")
        fractional = y != np.floor(y)
        if fractional.any():
            pos = np.flatnonzero(fractional)
            warnings.warn(f"response {name!r} has {pos.size} non-integer count(s) for the poisson "
                          f"family, first {show_value(y[pos[0]])} at {row_label(index, pos[0])}; "
                          "fitting them as quasi-Poisson data", UserWarning, stacklevel=4)
        return y


FAMILIES = {f.name: f for f in (Binomial(), Poisson(), Gaussian())}
_BY_CODE = {f.code: f for f in FAMILIES.values()}


def get_family(name):
    """The :class:`Family` called ``name`` (``"binomial"``, ``"poisson"`` or ``"gaussian"``)."""
    try:
        return FAMILIES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def family_of_code(code):
    """The :class:`Family` with kernel id ``code``."""
    return _BY_CODE[int(code)]
