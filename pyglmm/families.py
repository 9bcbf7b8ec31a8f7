"""Families supported by the crossed-effects fit: binomial-logit and gaussian-identity."""

from dataclasses import dataclass

import numpy as np

GAUSSIAN, BINOMIAL = 0, 1  # the kernels' family ids (enum Family in csrc/common/types.hpp)


def expit(x):
    """Logistic function without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass(frozen=True)
class Family:
    """A GLM family with its canonical link.

    Attributes
    ----------
    name, link : str
        As R spells them (``binomial``/``logit``, ``gaussian``/``identity``).
    code : int
        The kernels' family id.
    irls : bool
        Whether the working weights depend on the fit (no for gaussian).
    default_dispersion : str
        ``"fixed"`` (phi = 1, textbook for Bernoulli data) or ``"estimate"``.
    """

    name: str
    link: str
    code: int
    irls: bool
    default_dispersion: str

    def mean(self, eta):
        """Inverse link (the overflow-safe logistic for binomial)."""
        return expit(eta) if self.code == BINOMIAL else eta


FAMILIES = {
    "binomial": Family("binomial", "logit", BINOMIAL, True, "fixed"),
    "gaussian": Family("gaussian", "identity", GAUSSIAN, False, "estimate"),
}


def get_family(name):
    """The :class:`Family` called ``name``."""
    try:
        return FAMILIES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}") from None
