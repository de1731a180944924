"""Rendering: plotly figures and circuitsvis views of results, and offline HTML reports.

Plotting libraries are imported lazily, inside the functions that need them.
"""

from tl_interp.viz.report import Report

__all__ = ["Report"]
