"""Fitted models: the result object (``base``), its printed summary (``summary``)."""

from .base import GLMMResult, load

__all__ = ["GLMMResult", "load"]
