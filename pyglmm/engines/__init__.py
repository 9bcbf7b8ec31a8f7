"""Fitting engines, one subpackage each.

``crossed``: crossed random intercepts at millions of rows by Schall's PQL with
clubbed backfitting (Ghosh, Hastie & Owen 2022).  Every engine builds on the
shared layers: :mod:`pyglmm.data` (formulas, designs, validation),
:mod:`pyglmm.families`, :mod:`pyglmm.backends` (kernel registry) and
:mod:`pyglmm.results`.
"""
