"""The passes over the rows that Schall's loop, the standard errors and the checks
around them make: the one seam between the algorithm and where the rows live.

:func:`~pyglmm.engines.crossed.schall.fit_schall`,
:func:`~pyglmm.engines.crossed.inference.beta_covariance` and the crossed
engine's ``_fit`` reach the rows only through a :class:`RowPasses`; everything
else they do is per-level vectors and p x p matrices.  :class:`DesignPasses`
runs the passes on one in-process :class:`~pyglmm.data.design.Design`;
:class:`pyglmm.engines.crossed.cluster.passes.ClusterPasses` runs them on
partitions persisted on a Dask cluster and reduces their sums in partition order.
"""

import numpy as np

from ...data.design import Design
from . import degenerate


class RowPasses:
    """What the fit needs from its rows.

    Attributes
    ----------
    d : Design or an object with a Design's per-level attributes
        ``n, p, n_eff, offsets, n_levels, counts, XtX, feature_names,
        factor_names, levels, response_name, has_intercept, factor_slices()``
        (an in-process fit's Design has the rows too).
    w0
        The unscaled working weights of the last :meth:`stats` pass with
        ``design=True``, in whatever form :meth:`smooth_step` and
        :meth:`sandwich` take them back.
    """

    d = None
    w0 = None

    def stats(self, family, beta, b, dbeta, db, design, G, h, S):
        """The fused pass (kernel ``stats_pass``) at (beta, b): returns the 4 scalars and,
        with ``design``, writes G = X'W0X, h = X'W0z, S = Z'W0[X, 1, z] and keeps w0."""
        raise NotImplementedError

    def backfit(self, c, beta, b, tol, max_iter):
        """Clubbed backfitting (kernel ``club_backfit``) at the weights of the last pass,
        with the per-level inputs ``c`` (schall.ClubInputs); updates beta, b in place
        and returns (sweeps, rel)."""
        raise NotImplementedError

    def smooth_step(self, k, w0, s, D, A, work):
        """One block step of the smoother of X's columns (kernel ``smooth_step``) for
        factor k; returns (num, den)."""
        raise NotImplementedError

    def sandwich(self, A, w0, scale, H, ZU, M0):
        """The sandwich pass (kernel ``sandwich_pass``) with r_i = x_i - sum_k A[codes_ik]
        and u_i = scale w0_i r_i: writes H, ZU and M0."""
        raise NotImplementedError

    def covariance_sums(self, fit, tol, max_iter):
        """(H, M, iterations, rel) of the standard errors (eq. 24) computed where the rows
        are, or None (the default) for ``inference``'s smoother and sandwich pass over
        :meth:`smooth_step` and :meth:`sandwich`."""
        return None

    def initial_values(self, family):
        """(start of every sigma2_k and of phi, start of the first factor's effects)."""
        raise NotImplementedError

    def certificate(self, bounds, delta):
        """:func:`~pyglmm.engines.crossed.degenerate.separation_certificate` of ``delta``."""
        raise NotImplementedError

    def check_response(self, family):
        """:func:`~pyglmm.engines.crossed.degenerate.check_response_varies`."""
        raise NotImplementedError

    def exact_fit_error(self, phi, start):
        """The DataError for a dispersion that fell to 0 (see ``degenerate.exact_fit_error``)."""
        raise NotImplementedError

    def conditional_fit(self, family, beta, b):
        """(deviance at the modes, fitted means per row in the caller's order, or None
        where the rows are not in this process)."""
        raise NotImplementedError


def passes_of(d, kern, nthreads):
    """``d`` itself if it is a :class:`RowPasses`, else the passes over Design ``d``."""
    return d if isinstance(d, RowPasses) else DesignPasses(d, kern, nthreads)


class DesignPasses(RowPasses):
    """The passes over one in-process Design with kernel module ``kern`` on ``nthreads``."""

    def __init__(self, d: Design, kern, nthreads):
        self.d, self.kern, self.nthreads = d, kern, nthreads
        self.w0 = np.empty(d.n)

    def stats(self, family, beta, b, dbeta, db, design, G, h, S):
        d = self.d
        return self.kern.stats_pass(family, d.X, d.codes, d.y, d.prior, d.offset, beta, b, dbeta,
                                    db, design, self.w0, G, h, S, self.nthreads, d.xcat)

    def backfit(self, c, beta, b, tol, max_iter):
        d = self.d
        sweeps, rel = self.kern.club_backfit(d.codes, d.offsets, self.w0, 1.0, c.h, c.s, c.D, c.tq,
                                             c.chol, d.XtX, d.counts, beta, b, tol, max_iter,
                                             self.nthreads)
        return int(sweeps), float(rel)

    def smooth_step(self, k, w0, s, D, A, work):
        d = self.d
        return self.kern.smooth_step(d.codes, d.offsets, k, w0, s, D, d.counts, d.has_intercept,
                                     A, work, self.nthreads)

    def sandwich(self, A, w0, scale, H, ZU, M0):
        d = self.d
        self.kern.sandwich_pass(d.X, d.codes, A, w0, scale, np.empty(0), H, ZU, M0, self.nthreads,
                                d.xcat)

    def initial_values(self, family):
        from .schall import _initial_scale, _initial_shift

        return _initial_scale(self.d, family), _initial_shift(self.d, family)

    def certificate(self, bounds, delta):
        return degenerate.separation_certificate(self.d, bounds, delta)

    def check_response(self, family):
        degenerate.check_response_varies(self.d, family)

    def exact_fit_error(self, phi, start):
        return degenerate.exact_fit_error(self.d, phi, start)

    def conditional_fit(self, family, beta, b):
        """The deviance and the fitted means from the IRLS kernel: the inverse link of
        the linear predictor, clamped as in the fit (see pyglmm/families.py; only
        |eta| > 30 for binomial, eta > 100 or mu < 2.2e-16 for poisson are affected),
        which keeps the logarithms finite."""
        d = self.d
        eta, mu, w, z = (np.empty(d.n) for _ in range(4))
        self.kern.linear_predictor(d.X, d.codes, beta, b, d.offset, eta, self.nthreads, d.xcat)
        deviance = self.kern.irls_quantities(family.code, eta, d.y, d.prior, d.offset, mu, w, z,
                                             self.nthreads)
        return deviance, d.to_caller_order(mu)
