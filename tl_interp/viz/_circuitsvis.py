"""circuitsvis, offline: its bundled React code inlined once per page, and no network, ever.

circuitsvis's own ``render`` inlines its 1.3 MB bundle (``circuitsvis/dist/cdn/iife.js``)
into every widget, ``str()`` of a render is HTML that loads the bundle from a CDN, and
``RenderedHTML._repr_html_`` opens a connection to a public host to choose between the two.
Here a ``Widget`` is only the name of a circuitsvis React component and its props (the same
props circuitsvis's Python functions pass to ``render``). ``bundle_script()`` is the bundle
as one classic ``<script>``, which defines ``window.CircuitsVis``; ``Widget.html()`` is a
``<div>`` and a call of ``CircuitsVis.render`` into it. A page carries the bundle once and
any number of widgets after it (``Report`` does this).

In a notebook, the first view a kernel displays carries the bundle and later ones reuse it,
as plotly's ``notebook`` renderer does with plotly.js: outputs of one notebook share one page
in Jupyter and VS Code. Colab isolates each output, so there every view carries its own copy.
A view whose page lacks the bundle (its first output was cleared) says so in place of the
widget; ``View.standalone_html()`` always works.
"""

import functools
import html
import json
import math
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import util
from pathlib import Path
from typing import Any

from tl_interp.errors import ArtifactError, InputError

__all__ = ["Widget", "Panel", "View", "bundle_script", "notebook_html", "reset_notebook"]

BUNDLE_MARKER = "tl-interp-circuitsvis-bundle"
_notebook = {"bundle_shown": False}


def _bundle_path() -> Path:
    spec = util.find_spec("circuitsvis")
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError("circuitsvis is not installed; `pip install circuitsvis` (a tl_interp dependency)")
    path = Path(next(iter(spec.submodule_search_locations))) / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise ArtifactError(f"circuitsvis's bundle is missing at {path}; reinstall circuitsvis")
    return path


@functools.lru_cache(maxsize=1)
def bundle_js() -> str:
    """circuitsvis's browser bundle, safe to inline: no ``</script`` and no source-map URL."""
    text = _bundle_path().read_text(encoding="utf-8")
    # "<\/script" is the same string to JavaScript but cannot close the <script> element;
    # the source-map comment would make developer tools fetch a file that is not there.
    text = text.replace("</script", "<\\/script")
    return "\n".join(line for line in text.splitlines() if not line.startswith("//# sourceMappingURL="))


def bundle_script() -> str:
    """The ``<script>`` that defines ``window.CircuitsVis``; include it once per page, first."""
    return f'<script id="{BUNDLE_MARKER}">{bundle_js()}</script>'


def _json_value(value: Any) -> Any:
    if hasattr(value, "detach"):
        value = value.detach().cpu().tolist()
    elif hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"circuitsvis props must be finite numbers, got {value}; replace NaN/inf first "
                         "(e.g. tensor.nan_to_num())")
    return value


def props_json(props: Mapping[str, Any]) -> str:
    """Props as JSON that is safe inside ``<script>`` (no ``<``, ``>``, ``&`` or line separators)."""
    text = json.dumps({k: _json_value(v) for k, v in props.items() if v is not None}, allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


@dataclass(frozen=True)
class Widget:
    """One circuitsvis React component (``element``, e.g. ``"AttentionHeads"``) with its props.

    ``preview`` is static HTML shown where JavaScript does not run (GitHub's notebook viewer);
    React replaces it when the widget renders.
    """

    element: str
    props: Mapping[str, Any]
    preview: str = ""

    def html(self, *, preview: bool = True) -> str:
        """A ``<div>`` and the script that renders into it (the page must carry the bundle)."""
        dom_id = f"tlcv-{uuid.uuid4().hex[:12]}"
        missing = html.escape(" (circuitsvis is not loaded on this page: re-run the cell that first showed "
                              "a tl_interp view, or use view.standalone_html() / ti.viz.Report)")
        static = (f'<div class="tl-cv-static">{self.preview}<div style="color:#666;font-size:11px">static '
                  "preview; the interactive circuitsvis view needs JavaScript</div></div>") \
            if self.preview and preview else ""
        return (f'<div id="{dom_id}" class="tl-cv" data-element="{html.escape(self.element)}">{static}</div>'
                f'<script>(function(){{if(!window.CircuitsVis){{document.getElementById("{dom_id}")'
                f'.append("{missing}");return;}}CircuitsVis.render("{dom_id}",CircuitsVis.{self.element},'
                f"{props_json(self.props)});}})();</script>")


@dataclass(frozen=True)
class Panel:
    """A widget with a caption; a View lays its panels out side by side."""

    caption: str
    widget: Widget


@dataclass(frozen=True)
class View:
    """A picture made of circuitsvis widgets; displays itself in notebooks, goes into a Report.

    Attributes:
        title: what the view shows.
        panels: the widgets, side by side (e.g. without and with an intervention).
        data: the numbers drawn, as tensors and lists (``patterns``, ``values``, ``tokens`` ...).
        note: one line under the title (model, settings).
    """

    title: str
    panels: tuple[Panel, ...]
    data: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    def __repr__(self) -> str:
        elements = ", ".join(p.widget.element for p in self.panels)
        return f"View({self.title!r}; {elements})"

    def html(self, *, preview: bool = True) -> str:
        """The view's HTML without the bundle (for a page that carries it once).

        Args:
            preview: include each widget's static preview (for viewers without JavaScript;
                a Report, always opened in a browser, leaves it out).
        """
        note = f'<div class="tl-note">{html.escape(self.note)}</div>' if self.note else ""
        cells = "".join(
            f'<div class="tl-panel" style="flex:1 1 0;min-width:320px">'
            f'<div class="tl-caption" style="font-weight:600;margin:4px 0">{html.escape(p.caption)}</div>'
            f"{p.widget.html(preview=preview)}</div>"
            for p in self.panels)
        return (f'<div class="tl-interp-view"><div class="tl-title" style="font-weight:700">'
                f'{html.escape(self.title)}</div>{note}'
                f'<div style="display:flex;gap:16px;flex-wrap:wrap">{cells}</div></div>')

    def standalone_html(self) -> str:
        """The view with its own copy of the bundle: works on any page, offline."""
        return bundle_script() + self.html()

    def page(self) -> str:
        """A complete offline HTML page of the view (what ``save`` writes)."""
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title></head>"
                f"<body style='font-family:system-ui,sans-serif;margin:16px'>{self.standalone_html()}</body></html>")

    def save(self, path: str | os.PathLike[str], *, width: int = 1200, height: int = 900) -> Path:
        """Write the view: ``.html`` (offline, the bundle inlined), or ``.png`` / ``.pdf`` drawn by a
        local headless Chromium (``tl_interp.viz._save.save_view``); the suffix picks the format.

        Example:
            >>> import tempfile
            >>> view = View("demo", (Panel("", Widget("ColoredTokens", {"tokens": ["a"], "values": [1.0]})),))
            >>> "CircuitsVis.render" in view.save(tempfile.mkdtemp() + "/view.html").read_text()
            True
        """
        from tl_interp.viz._save import save_view

        return save_view(self.page(), path, width=width, height=height)

    def _repr_html_(self) -> str:
        return notebook_html(self.html())


def notebook_html(fragment: str) -> str:
    """``fragment`` for a notebook output: the bundle rides along on a kernel's first view only."""
    include = not _notebook["bundle_shown"] or "google.colab" in sys.modules
    _notebook["bundle_shown"] = True
    return (bundle_script() if include else "") + fragment


def reset_notebook() -> None:
    """Make the next notebook view carry the bundle again (after clearing every output)."""
    _notebook["bundle_shown"] = False
