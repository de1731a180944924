"""Static export in the browser run: PNG / SVG / PDF written offline and opened in headless chromium.

Run with ``-m browser`` (CI does, after installing Debian's chromium); they need kaleido (the
``export`` extra) for plotly figures and chromium for everything.
"""

import base64
from pathlib import Path
from typing import Any

import pytest
import torch

import tl_interp as ti
from tests.test_browser import browser, chromium_path  # noqa: F401  (the module's browser fixture)
from tl_interp.patching import PatchingResult
from tl_interp.results import Provenance

pytestmark = pytest.mark.browser

# the share of an image's pixels that are not (near) white, read back through a canvas
INK = """async (src) => {
  const img = new Image(); img.src = src; await img.decode();
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; let ink = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235) ink++;
  return [img.naturalWidth, img.naturalHeight, ink / (c.width * c.height)];
}"""


def _opened(browser: Any, image: Path) -> list[float]:  # noqa: F811
    """Open ``image`` (as a data: URL, so the canvas may read it back): its size and share of non-white pixels."""
    kind = {".png": "image/png", ".svg": "image/svg+xml"}[image.suffix]
    context = browser.new_context()
    page = context.new_page()
    page.set_content("<!doctype html><body></body>")
    measured = page.evaluate(INK, f"data:{kind};base64,{base64.b64encode(image.read_bytes()).decode()}")
    context.close()
    return measured


def _sweep() -> PatchingResult:
    values = torch.linspace(-5.49, 2.25, 24).reshape(4, 6)
    return PatchingResult(values, ("layer", "pos"), "logit_diff", Provenance.make("m"),
                          extras={"base": torch.tensor(-5.49), "source": torch.tensor(2.25)})


def test_a_figure_saved_as_png_opens_in_the_browser_at_its_size(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    chromium_path()
    pytest.importorskip("kaleido", reason="the export extra: pip install 'tl_interp[export]'")
    path = _sweep().figure(value_scale="symlog").save(tmp_path / "sweep.png", width=500, height=400, scale=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, ink = _opened(browser, path)
    assert (width, height) == (500, 400) and ink > 0.05  # a drawn heatmap, not a blank page


def test_a_figure_saved_as_svg_and_pdf_is_vector_output(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("kaleido", reason="the export extra: pip install 'tl_interp[export]'")
    fig = _sweep().figure()
    svg = fig.save(tmp_path / "sweep.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "logit_diff" in svg
    assert fig.save(tmp_path / "sweep.pdf").read_bytes()[:5] == b"%PDF-"
    width, _, ink = _opened(browser, tmp_path / "sweep.svg")
    assert width > 0 and ink > 0.1


def test_a_view_saved_as_png_shows_the_drawn_widget(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    view = ti.viz.attention(ti.models.load("induction-2l"), torch.tensor([5, 6, 7, 5, 6, 7, 5, 6]), layer=1)
    path = view.save(tmp_path / "attention.png", width=900, height=700)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, ink = _opened(browser, path)
    assert (width, height) == (900, 700) and ink > 0.02
    assert view.save(tmp_path / "attention.pdf").read_bytes()[:5] == b"%PDF-"


def test_a_feature_card_saved_as_png_is_drawn(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from tests.test_viz_feature_card import _card

    path = _card(48, 48).save(tmp_path / "card.png")
    width, height, ink = _opened(browser, path)
    assert (width, height) == (1200, 700) and ink > 0.01


def test_the_browser_tests_and_static_export_drive_the_system_chromium(browser: Any) -> None:  # noqa: F811
    # CI machines have only Debian's chromium (the README's set-up: `apt-get install chromium`); a
    # browser Playwright downloaded (`playwright install`, ~/.cache/ms-playwright) must never be the
    # one that runs, here or in kaleido's export (which gets tl_interp's chromium_path explicitly)
    import subprocess

    from tl_interp.viz._save import chromium_path as export_chromium

    system = chromium_path()
    for path in (system, export_chromium()):
        assert "ms-playwright" not in str(Path(path).resolve()), path
    reported = subprocess.run([system, "--version"], capture_output=True, text=True, timeout=60).stdout
    assert browser.version and browser.version in reported, (browser.version, reported)  # the launched binary
