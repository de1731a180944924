"""A standalone, offline HTML report: prose, tables, plotly figures, circuitsvis views, cards.

Each JavaScript bundle is inlined once per page, not once per widget: plotly.js with the
first figure, circuitsvis's bundle in the page head when the page has a view; so the file
opens in a browser with no network and 20 views cost little more than one. Results,
interventions and feature cards are added as the same HTML they show in a notebook.
Written atomically (temporary file, then rename).
"""

import abc
import html
import os
from collections.abc import Sequence
from typing import Any

from tl_interp._io import atomic_file
from tl_interp.errors import TypeCheckError
from tl_interp.viz._circuitsvis import View, bundle_script

__all__ = ["Report", "Card"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
"""


class Card(abc.ABC):
    """A block of self-contained HTML that a page shows as it is (``ti.viz.feature_card``'s cards)."""

    @abc.abstractmethod
    def html(self) -> str:
        """The block's HTML."""


class Report:
    """Collects sections and writes one self-contained HTML file.

    ``add`` takes anything a notebook would show: a ``View``, a ``FeatureCard``, a Result,
    an Intervention, a plotly figure, a pandas DataFrame or a string.

    Example:
        >>> import tempfile, os
        >>> r = Report("Demo")
        >>> r.text("Hello").table(["a", "b"], [[1, 2.5]])
        Report('Demo', 2 blocks)
        >>> path = r.write(os.path.join(tempfile.mkdtemp(), "r.html"))
        >>> ">2.5</td>" in open(path).read()
        True
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._blocks: list[str] = []
        self._has_plotly = False
        self._has_views = False

    def __repr__(self) -> str:
        return f"Report({self.title!r}, {len(self._blocks)} blocks)"

    def heading(self, text: str) -> "Report":
        self._blocks.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def text(self, text: str, *, note: bool = False) -> "Report":
        cls = ' class="note"' if note else ""
        self._blocks.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def code(self, text: str) -> "Report":
        self._blocks.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def table(self, columns: Sequence[str], data: Sequence[Sequence[Any]], *, digits: int = 4) -> "Report":
        """Add a table: ``data`` holds one sequence per row (floats to ``digits`` significant digits)."""
        from tl_interp.viz.html import table_html

        self._blocks.append(table_html(columns, data, digits=digits))
        return self

    def figure(self, fig: Any) -> "Report":
        """Add a plotly figure (plotly.js is inlined once, for offline viewing)."""
        include = "inline" if not self._has_plotly else False
        self._has_plotly = True
        self._blocks.append(fig.to_html(full_html=False, include_plotlyjs=include))
        return self

    def view(self, view: View) -> "Report":
        """Add a circuitsvis view (the page carries circuitsvis's bundle once)."""
        self._has_views = True
        self._blocks.append(view.html(preview=False))  # a browser draws the widget itself
        return self

    def card(self, card: Any) -> "Report":
        """Add an SAE feature card (``ti.viz.feature_card``)."""
        self._blocks.append(card.html())
        return self

    def result(self, result: Any, *, figure: bool = True) -> "Report":
        """Add a Result: its summary table and provenance, and its default figure when it has one."""
        from tl_interp.viz.html import result_html

        self._blocks.append(result_html(result))
        if figure:
            try:
                fig = result.figure()
            except ValueError:  # no default figure for this shape: the summary table stands alone
                return self
            self.figure(fig)
        return self

    def add(self, item: Any) -> "Report":
        """Add a view, card, result, intervention, circuit, plotly figure, DataFrame or text."""
        from tl_interp.circuits._circuit import Circuit
        from tl_interp.intervention import Intervention
        from tl_interp.results import Result
        from tl_interp.viz.html import intervention_html

        if isinstance(item, View):
            return self.view(item)
        if isinstance(item, Card):
            return self.card(item)
        if isinstance(item, Result):
            return self.result(item)
        if isinstance(item, Intervention):
            self._blocks.append(intervention_html(item))
            return self
        if isinstance(item, str):
            return self.text(item)
        if hasattr(item, "to_plotly_json"):
            return self.figure(item)
        if isinstance(item, Circuit):  # its SVG graph
            self._blocks.append(item._repr_html_())
            return self
        if hasattr(item, "columns") and hasattr(item, "itertuples"):
            return self.table([str(c) for c in item.columns], [list(r) for r in item.itertuples(index=False)])
        raise TypeCheckError(f"Report.add: cannot add a {type(item).__name__}; add a View, FeatureCard, Result, "
                             "Intervention, Circuit, plotly figure, pandas DataFrame or str")

    def html(self) -> str:
        body = "\n".join(self._blocks)
        scripts = bundle_script() if self._has_views else ""
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style>{scripts}</head><body><h1>{html.escape(self.title)}</h1>\n{body}\n"
                "</body></html>")

    def save(self, path: str | os.PathLike[str]) -> str:
        """The same as ``write``: every picture in tl_interp has ``save(path)``."""
        return self.write(path)

    def write(self, path: str | os.PathLike[str]) -> str:
        """Write the report atomically; returns the path written.

        A file already at ``path`` is replaced (you named it).

        Raises:
            ArtifactError: ``path`` is a directory or lies under a file (naming it and the fix).
        """
        with atomic_file(path) as tmp:
            tmp.write_text(self.html(), encoding="utf-8")
        return str(path)
