"""The plotly figure every tl_interp function returns: a ``plotly.graph_objects.Figure`` with ``save``.

Imported lazily (it imports plotly). ``Figure`` behaves exactly as plotly's own; ``savable``
turns a figure plotly built (``make_subplots``) into one, keeping its subplot grid.
"""

import os
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from tl_interp.viz._save import save_figure

__all__ = ["Figure", "savable"]


class Figure(go.Figure):
    """A plotly figure with ``save(path)``: ``.html`` offline, ``.png`` / ``.svg`` / ``.pdf`` static."""

    def save(self, path: str | os.PathLike[str], *, width: int | None = None, height: int | None = None,
             scale: float = 2.0) -> Path:
        """Write the figure; the suffix picks the format (see ``tl_interp.viz._save.save_figure``).

        Example:
            >>> import tempfile
            >>> fig = Figure(go.Bar(y=[1, 2]))
            >>> fig.save(tempfile.mkdtemp() + "/bars.html").suffix
            '.html'
        """
        return save_figure(self, path, width=width, height=height, scale=scale)


def savable(fig: Any) -> Figure:
    """``fig`` as a ``Figure`` (the same data, layout and subplot grid)."""
    return fig if isinstance(fig, Figure) else Figure(fig)
