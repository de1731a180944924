"""A standalone, offline HTML report: headings, prose, tables and plotly figures.

The first figure embeds plotly.js inline, so the file opens in a browser with no network;
later figures reuse it. Written atomically (temporary file, then rename).
"""

import html
import os
from collections.abc import Sequence
from typing import Any

from tl_interp._io import atomic_file

__all__ = ["Report"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
"""


class Report:
    """Collects sections and writes one self-contained HTML file.

    Example:
        >>> import tempfile, os
        >>> r = Report("Demo")
        >>> r.text("Hello").table(["a", "b"], [[1, 2.5]])
        Report('Demo', 2 blocks)
        >>> path = r.write(os.path.join(tempfile.mkdtemp(), "r.html"))
        >>> "<td>2.5</td>" in open(path).read()
        True
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._blocks: list[str] = []
        self._has_plotly = False

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

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 4) -> "Report":
        def cell(v: Any) -> str:
            if isinstance(v, float):
                return html.escape(f"{v:.{digits}g}")
            return html.escape(str(v))

        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self._blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, fig: Any) -> "Report":
        """Add a plotly figure (plotly.js is inlined once, for offline viewing)."""
        include = "inline" if not self._has_plotly else False
        self._has_plotly = True
        self._blocks.append(fig.to_html(full_html=False, include_plotlyjs=include))
        return self

    def html(self) -> str:
        body = "\n".join(self._blocks)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>")

    def write(self, path: str | os.PathLike[str]) -> str:
        """Write the report atomically; returns the path written."""
        with atomic_file(path) as tmp:
            tmp.write_text(self.html(), encoding="utf-8")
        return str(path)
