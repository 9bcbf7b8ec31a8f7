"""One-shot federation from summary statistics: the site side
(:func:`site_summary`), the versioned JSON message, and the analyst's fits
(:func:`fit_summaries`: direct, or on pseudo-data)."""

from .api import fit_summaries, read_summary, site_summary, write_summary
from .result import SummariesResult

__all__ = ["site_summary", "write_summary", "read_summary", "fit_summaries", "SummariesResult"]
