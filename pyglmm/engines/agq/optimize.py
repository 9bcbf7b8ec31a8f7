r"""The outer optimiser: Newton's method with a line search on a callable
log-likelihood, with boundary handling for log-scale variance parameters.

:func:`maximize` takes ``evaluate(x, deriv) -> (loglik, grad, hess)`` (deriv 0:
value only; 2: with the gradient and Hessian), so the pooled fit, a federated
coordinator (summing its sites' answers) and a one-shot summary engine can
share it.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Optimum:
    """What :func:`maximize` found.

    ``x`` the maximiser (``-inf`` in a bounded coordinate that was fixed at
    the boundary), ``loglik``, ``grad`` and ``hess`` at ``x`` (in the
    optimiser's parameters; zero rows/columns for fixed coordinates),
    ``free`` the coordinates that were optimised, ``iterations``,
    ``converged``, ``decrement`` (the last Newton decrement) and ``history``
    (one dict per iteration: ``iteration``, ``loglik``, ``decrement``, ``step``
    the line search's step length, ``fixed`` coordinates put on the boundary).
    """

    x: np.ndarray
    loglik: float
    grad: np.ndarray
    hess: np.ndarray
    free: np.ndarray
    iterations: int
    converged: bool
    decrement: float
    history: list = field(default_factory=list)


def newton_direction(g, h):
    r"""The ascent direction :math:`|{-H}|^{-1} g` with :math:`|{-H}|` the
    eigen-decomposition of :math:`-H` with absolute eigenvalues (floored at
    :math:`10^{-8}` of the largest): Newton's step where :math:`-H` is positive
    definite, an ascent direction everywhere."""
    lam, vec = np.linalg.eigh(-h)
    floor = 1e-8 * max(np.abs(lam).max(initial=0.0), 1e-300)
    return vec @ ((vec.T @ g) / np.maximum(np.abs(lam), floor))


def maximize(evaluate, x0, *, bounded=(), scale=1.0, tol=1e-10, max_iter=100, callback=None,
             watch=None):
    r"""Maximise ``evaluate`` by Newton's method with a backtracking line search.

    Iteration: the direction :math:`\delta` = :func:`newton_direction` on the free
    coordinates; the step :math:`t\delta` with the largest :math:`t \in \{1,
    1/2, ...\}` (down to :math:`2^{-30}`) that satisfies Armijo's condition
    :math:`f(x + t\delta) \ge f(x) + 10^{-4} t\, g^\top\delta`.  Convergence:
    the Newton decrement :math:`g^\top\delta / 2 < ` ``tol`` (the predicted
    gain of a full Newton step, in log-likelihood units) at a point where
    :math:`-H` is positive definite.

    Boundary: the coordinates in ``bounded`` are logs of scale parameters
    (the diagonal of a Cholesky factor); ``-inf`` puts one at exactly 0.  Near 0
    the log-likelihood is flat in such a coordinate and Newton would approach 0
    by a constant step per iteration, so: a bounded coordinate that a step
    moves down below :math:`\log(0.05\,s)` (``scale`` :math:`s`) is tried at
    ``-inf``, and kept there (no longer optimised) if that does not lower the
    log-likelihood; at convergence each coordinate so fixed is tried at
    :math:`\log(c\,s)`, :math:`c \in \{10^{-3}, 0.01, 0.03, 0.1\}`, and freed
    again (once) at the best of them if that raises the log-likelihood.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x, deriv)`` -> ``(loglik, grad, hess)`` (grad and hess may be
        None when ``deriv`` is 0).  A non-finite log-likelihood is treated as
        worse than any finite one.
    x0 : array
        Start.
    bounded : sequence of int
    scale, tol : float
    max_iter : int
    callback : callable, optional
        Called with each iteration's history dict.
    watch : callable, optional
        Called as ``watch(x, iteration)`` at the start (iteration 0) and after each
        iteration (the separation monitor,
        :class:`pyglmm.engines.agq.reporting.SeparationWatch`); it returns None or
        ``(delta, fix)``: a direction :math:`\delta` along which the objective is
        known to increase without bound and the coordinates to fix.  :math:`x`
        then moves along :math:`\delta` by steps :math:`\delta, 2\delta,
        4\delta, ...` while the gain is at least ``tol`` (so that the terms that
        vanish at infinity are negligible), the coordinates ``fix`` are fixed there
        (no longer optimised) and Newton goes on with the others: their limit.

    Returns
    -------
    Optimum
    """
    x = np.array(x0, dtype=np.float64)
    bounded = np.asarray(bounded, dtype=np.int64)
    try_below, release_at = np.log(0.05 * scale), np.log(np.array([1e-3, 1e-2, 0.03, 0.1]) * scale)
    history, released = [], set()
    f, g, h = evaluate(x, 2)
    if not np.isfinite(f):
        raise FloatingPointError(f"the log-likelihood at the start is {f}")
    converged, dec = False, np.inf
    frozen = np.zeros(len(x), bool)  # coordinates pushed to (near) infinity by ``watch``
    x, f, g, h = _watched(evaluate, watch, x, 0, f, g, h, frozen, tol)
    for it in range(1, max_iter + 1):
        free = np.isfinite(x) & ~frozen
        gf, hf = g[free], h[np.ix_(free, free)]
        step = np.zeros_like(x)
        step[free] = newton_direction(gf, hf)
        dec = float(gf @ step[free]) / 2
        if dec < tol and np.linalg.eigvalsh(-hf).min(initial=np.inf) > 0:
            x, f, freed = _release(evaluate, x, f, bounded, release_at, released)
            if not freed:
                converged = True
                break
            f, g, h = evaluate(x, 2)
            continue
        t, f_new = 1.0, -np.inf
        while t >= 2.0 ** -30:
            trial = np.where(free, x + t * step, x)
            f_new = evaluate(trial, 0)[0]
            if np.isfinite(f_new) and f_new >= f + 1e-4 * t * 2 * dec:
                break
            t /= 2
        else:
            if not np.isfinite(f_new) or f_new < f:
                break  # no ascent along the direction: stop (reported as not converged)
        x, fixed = trial, []
        for k in bounded:
            if np.isfinite(x[k]) and step[k] < 0 and x[k] < try_below and k not in released:
                at_zero = x.copy()
                at_zero[k] = -np.inf
                f_zero = evaluate(at_zero, 0)[0]
                if f_zero >= f_new:
                    x, f_new = at_zero, f_zero
                    fixed.append(int(k))
        f, g, h = evaluate(x, 2)
        row = {"iteration": it, "loglik": f, "decrement": dec, "step": t, "fixed": fixed}
        history.append(row)
        if callback is not None:
            callback(row)
        x, f, g, h = _watched(evaluate, watch, x, it, f, g, h, frozen, tol)
    free = np.isfinite(x) & ~frozen
    return Optimum(x, f, g, h, free, len(history), converged, dec, history)


def _watched(evaluate, watch, x, iteration, f, g, h, frozen, tol):
    """Ask ``watch`` about ``x``; along a direction it returns, push and freeze (see
    :func:`maximize`).  Returns (x, f, g, h), updated if it moved."""
    found = None if watch is None else watch(x, iteration)
    if found is None:
        return x, f, g, h
    delta, fix = found
    step = 1.0
    for _ in range(64):
        trial = x + step * delta
        f_new = evaluate(trial, 0)[0]
        if not np.isfinite(f_new) or f_new <= f:
            break
        x, f, gain = trial, f_new, f_new - f
        if gain < tol:
            break
        step *= 2
    frozen |= fix
    f, g, h = evaluate(x, 2)
    return x, f, g, h


def _release(evaluate, x, f, bounded, release_at, released):
    """Free (once each) the coordinates at the boundary where one of ``release_at``
    (logs of small scales) is better, at the best of them (Newton crawls in log
    scale from a point far below the optimum)."""
    freed = False
    for k in bounded:
        if not np.isfinite(x[k]) and k not in released:
            for value in release_at:
                trial = x.copy()
                trial[k] = value
                f_trial = evaluate(trial, 0)[0]
                if f_trial > f:
                    x, f, freed = trial, f_trial, True
            released.add(int(k))
    return x, f, freed
