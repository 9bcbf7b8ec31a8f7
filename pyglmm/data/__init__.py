"""Shared data layer: formula parsing (``formula``), input checks that name the
column, row or level at fault (``validation``), the kernels' row layout
(``design``) and file readers (``readers``)."""
