"""``save(path)`` for pictures: HTML offline always, PNG / SVG / PDF through a local Chromium.

The format is the path's suffix. HTML needs nothing: plotly.js or circuitsvis's bundle is
inlined, so the file opens offline. Static export runs a headless Chromium on this machine
and never touches the network: a plotly figure goes through kaleido (>= 1, which drives a
system Chrome/Chromium; ``pip install 'tl_interp[export]'``) with plotly.py's own copy of
plotly.js and MathJax off; a circuitsvis view is drawn in its standalone page and captured
with Chromium's ``--screenshot`` / ``--print-to-pdf``. What is missing (kaleido, a browser,
a format) is named in an ``UnsupportedError`` with the fix, before anything is written.
Files are written atomically (temporary file, then rename).
"""

import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from tl_interp._io import atomic_file, check_target
from tl_interp.errors import OptionError, UnsupportedError

__all__ = ["chromium_path", "save_figure", "save_html", "save_view", "FIGURE_FORMATS", "VIEW_FORMATS"]

FIGURE_FORMATS = (".html", ".png", ".svg", ".pdf", ".jpeg", ".jpg", ".webp")
VIEW_FORMATS = (".html", ".png", ".pdf")
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_INSTALL = ("`apt-get install chromium` (Debian/Ubuntu) or any Chrome/Chromium, or set TL_INTERP_CHROMIUM to "
            "its binary")


def chromium_path() -> str:
    """The Chrome/Chromium binary static export runs: ``TL_INTERP_CHROMIUM``, else the first on PATH.

    Raises:
        UnsupportedError: none is installed (saying how to install one; HTML needs none).
    """
    given = os.environ.get("TL_INTERP_CHROMIUM")
    if given:
        if not Path(given).is_file():
            raise UnsupportedError(f"TL_INTERP_CHROMIUM={given!r} is not a file; point it at a Chrome/Chromium "
                                   "binary, or unset it to search PATH")
        return given
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise UnsupportedError(f"static export (PNG/SVG/PDF) needs a local Chrome/Chromium and none is on PATH "
                           f"(looked for {', '.join(_BROWSERS)}): {_INSTALL}. Saving as .html needs no browser")


def _suffix(path: str | os.PathLike[str], formats: tuple[str, ...], what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise OptionError(f"save({str(path)!r}): a {what} saves as {', '.join(formats)} (the path's suffix picks "
                          f"the format), not {suffix or 'a path without a suffix'!r}")
    return suffix


def save_html(page: str, path: str | os.PathLike[str]) -> Path:
    """Write a self-contained HTML page atomically; returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)


def _kaleido() -> Any:
    try:
        import kaleido
    except ImportError:
        raise UnsupportedError("static export of plotly figures needs kaleido >= 1: `pip install "
                               "'tl_interp[export]'` (or `pip install 'kaleido>=1'`); saving as .html needs "
                               "nothing") from None
    version = metadata.version("kaleido")
    if int(version.split(".")[0]) < 1:
        raise UnsupportedError(f"kaleido {version} is installed; tl_interp drives a local Chromium through "
                               "kaleido >= 1: `pip install 'tl_interp[export]'`")
    return kaleido


def save_figure(fig: Any, path: str | os.PathLike[str], *, width: int | None = None, height: int | None = None,
                scale: float = 2.0) -> Path:
    """Save a plotly figure: ``.html`` (plotly.js inlined, offline) or ``.png``/``.svg``/``.pdf``/``.jpeg``/``.webp``.

    Args:
        fig: a plotly figure.
        path: where; its suffix picks the format.
        width, height: pixels of a static image (default: the figure's layout, else 1000 x 600).
        scale: pixel density of PNG/JPEG/WebP (2 = sharp on slides).

    Returns:
        The path written.

    Raises:
        OptionError: an unknown suffix. UnsupportedError: kaleido or Chromium missing (static only).

    Example:
        >>> import plotly.graph_objects as go, tempfile
        >>> path = save_figure(go.Figure(go.Bar(y=[1, 2])), tempfile.mkdtemp() + "/bars.html")
        >>> "Plotly.newPlot" in path.read_text()
        True
    """
    suffix = _suffix(path, FIGURE_FORMATS, "plotly figure")
    if suffix == ".html":
        return save_html(fig.to_html(full_html=True, include_plotlyjs=True), path)
    check_target(path)
    kaleido, browser = _kaleido(), chromium_path()
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not plotly_js.is_file():  # kaleido would fetch plotly.js from a CDN: never
        raise UnsupportedError(f"plotly.py's own plotly.js is missing at {plotly_js}; reinstall plotly")
    layout = fig.layout
    opts = {"format": "jpeg" if suffix == ".jpg" else suffix[1:], "scale": scale,
            "width": width or layout.width or 1000, "height": height or layout.height or 600}
    data = kaleido.calc_fig_sync(fig.to_plotly_json(), opts=opts,
                                 kopts={"plotlyjs": str(plotly_js), "mathjax": False, "path": browser})
    with atomic_file(path) as tmp:
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return Path(path)


_LAUNCH = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000"]


def save_view(page: str, path: str | os.PathLike[str], *, width: int = 1200, height: int = 900,
              timeout: float = 120.0) -> Path:
    """Save a view's standalone page: ``.html``, or ``.png`` / ``.pdf`` drawn by a local headless Chromium.

    Raises:
        OptionError: an unknown suffix (``.svg``: a circuitsvis view is HTML, not a vector picture).
        UnsupportedError: no Chromium (``.png`` / ``.pdf``), or it failed to draw the page.
    """
    suffix = _suffix(path, VIEW_FORMATS, "circuitsvis view (HTML drawn by React)")
    if suffix == ".html":
        return save_html(page, path)
    check_target(path)
    browser = chromium_path()
    with tempfile.TemporaryDirectory(prefix="tl-interp-view-") as folder:
        source, out = Path(folder) / "view.html", Path(folder) / f"out{suffix}"
        source.write_text(page, encoding="utf-8")
        what = f"--screenshot={out}" if suffix == ".png" else f"--print-to-pdf={out}"
        args = [browser, *_LAUNCH, f"--user-data-dir={Path(folder) / 'profile'}", f"--window-size={width},{height}",
                "--no-pdf-header-footer", what, source.as_uri()]
        run = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        if run.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
            raise UnsupportedError(f"{browser} could not draw the view into {suffix} (exit {run.returncode}): "
                                   f"{run.stderr.strip()[-400:]}; save it as .html instead")
        with atomic_file(path) as tmp:
            shutil.copyfile(out, tmp)
    return Path(path)
