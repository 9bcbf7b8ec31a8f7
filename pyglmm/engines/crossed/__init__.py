"""Crossed random-effects GLMMs by Schall's PQL with clubbed backfitting.

Modules: ``api`` (:func:`glmm`, :func:`glmm_from_arrays`), ``schall`` (the
outer loop), ``inference`` (eq. 24 and the naive comparison), ``result``
(:class:`~pyglmm.engines.crossed.result.CrossedResult`), and the kernel
twins ``kernels_numpy`` (reference) and ``kernels_numba`` of the C++ kernels in
``csrc/crossed/``.
"""

from .api import glmm, glmm_from_arrays

__all__ = ["glmm", "glmm_from_arrays"]
