"""Reports in a real headless browser: no console errors, nothing fetched, every widget drawn.

Debian's ``chromium`` driven by Playwright's Python client with the system browser (never
``playwright install``). Run with ``-m browser`` (CI does, after installing chromium); without
chromium these tests fail and say how to install it. Screenshots go to ``tmp_path`` and, when
``TL_INTERP_SCREENSHOTS`` names a folder, there too.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp import hooks, site

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# drawn: React replaced the static preview with the widget
ALL_DRAWN = ("() => [...document.querySelectorAll('.tl-cv')].every("
             "e => e.childElementCount > 0 && !e.querySelector('.tl-cv-static'))")


def chromium_path() -> str:
    path = os.environ.get("TL_INTERP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail("the browser tests need Debian's chromium and it is not installed: run "
                    "`apt-get install -y chromium` (.ci/run does), or set TL_INTERP_CHROMIUM to a chromium binary")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright's Python client: `./dev.sh setup` installs the dev extra")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


def open_page(browser: Any, path: Path, screenshot: Path) -> dict[str, Any]:
    """Load ``path``; return console errors, requests that tried to leave it, widgets and their sizes."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("websocket", lambda ws: outside.append(ws.url))
    url = path.resolve().as_uri()

    def only_the_page(route: Any) -> None:
        requested = route.request.url
        if requested == url or requested.startswith("data:"):
            route.continue_()
        else:
            outside.append(requested)
            route.abort()

    context.route("**/*", only_the_page)
    page.on("request", lambda r: None if r.url in (url,) or r.url.startswith("data:") else outside.append(r.url))
    page.goto(url, wait_until="load")
    try:
        page.wait_for_function(ALL_DRAWN, timeout=60_000)
    except Exception:  # reported below, with the widgets that stayed empty
        pass
    widgets = page.evaluate("() => [...document.querySelectorAll('.tl-cv')].map(e => [e.dataset.element, "
                            "e.querySelector('.tl-cv-static') ? 0 : e.childElementCount, "
                            "e.getBoundingClientRect().height])")
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("TL_INTERP_SCREENSHOTS"):
        target = Path(os.environ["TL_INTERP_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / screenshot.name)
    context.close()
    return {"errors": errors, "outside": sorted(set(outside)), "widgets": widgets}


def check(loaded: dict[str, Any], expected_widgets: int) -> None:
    assert loaded["errors"] == [], loaded["errors"]
    assert loaded["outside"] == [], f"requests left the page: {loaded['outside']}"
    assert len(loaded["widgets"]) == expected_widgets
    empty = [w for w in loaded["widgets"] if w[1] == 0 or w[2] < 10]
    assert empty == [], f"circuitsvis widgets that did not render: {empty}"


def every_view_report(path: Path) -> int:
    """A page with every kind of view, card, result and figure; returns its widget count."""
    induction, ordinal = ti.models.load("induction-2l"), ti.models.load("ordinal-4l")
    sae = ti.models.load_sae("ordinal-4l-res-l2")
    tokens = ti.models.zoo.repeated_tokens(6, 8, generator=torch.Generator().manual_seed(0))
    knock_out = hooks.zero_ablate(site("z", 1), heads=[2])  # the induction head
    no_previous_token = hooks.zero_ablate(site("z", 0))  # the heads that feed it
    prompts = ["one, two, three,", "january, february, march,", "monday, tuesday,", "five, six, seven,"]
    adapter = ti.models.adapt(ordinal)
    batch = adapter.tokenize(prompts)
    scan = ti.ablation.scan(induction, tokens, ti.metrics.loss(tokens), n_boot=200, progress=False)
    four, eight = (int(adapter.tokenize(w, prepend_bos=False).tokens[0, 0]) for w in ("four", "eight"))
    sweep = ti.patching.sweep(ordinal, adapter.tokenize(["one, two, three,"]).tokens,
                              adapter.tokenize(["five, six, seven,"]).tokens, ti.metrics.logit_diff(four, eight),
                              site="resid_pre", progress=False)
    store = hooks.cache("blocks.2.hook_mlp_out")
    store.run(ordinal, batch.tokens, attention_mask=batch.attention_mask)
    report = ti.viz.Report("Every view tl_interp draws")
    report.heading("attention").view(ti.viz.attention(induction, tokens[0], layer=1, heads=[2, 0],
                                                      intervention=no_previous_token))
    report.heading("predictions").view(ti.viz.predictions(induction, tokens[0], intervention=knock_out, top_k=5))
    report.heading("tokens").view(ti.viz.tokens(sweep.labels["pos"], sweep.values[1], title="patching, layer 1"))
    report.view(ti.viz.tokens(sweep.labels["pos"], {f"layer {i}": sweep.values[i] for i in range(4)}))
    report.heading("topk").view(ti.viz.topk(batch.str_tokens, store["blocks.2.hook_mlp_out"], neurons=[0, 5, 9],
                                            attention_mask=batch.attention_mask, k=3))
    report.view(ti.viz.topk(batch.str_tokens, store["blocks.2.hook_mlp_out"], neurons=[0, 5, 9], layout="tokens",
                            attention_mask=batch.attention_mask, k=3))
    report.heading("results").add(scan).add(sweep).add(knock_out)
    with torch.no_grad():
        _, cache = ordinal.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    top_feature = int(sae.encode(cache["blocks.2.hook_resid_pre"])[:, 1:].amax((0, 1)).argmax())
    report.heading("a feature card").card(ti.viz.feature_card(ordinal, sae, prompts, top_feature))
    report.write(path)
    return 8


def test_a_report_with_every_view_type_renders_offline(browser: Any, tmp_path: Path) -> None:
    n = every_view_report(tmp_path / "every_view.html")
    check(open_page(browser, tmp_path / "every_view.html", tmp_path / "every_view.png"), n)
    assert (tmp_path / "every_view.png").stat().st_size > 10_000


def test_a_notebook_style_view_replaces_its_static_preview(browser: Any, tmp_path: Path) -> None:
    view = ti.viz.attention(ti.models.load("induction-2l"), torch.tensor([0, 5, 6, 7, 5, 6]), layer=1)
    assert "tl-cv-static" in view.html()
    page = tmp_path / "standalone.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{view.standalone_html()}"
                    "</body></html>")
    check(open_page(browser, page, tmp_path / "standalone.png"), 1)


def test_the_checks_catch_console_errors_outside_requests_and_empty_widgets(browser: Any, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><div class='tl-cv' data-element='Nothing'><div class='tl-cv-static'>x</div></div>"
                    "<img src='https://example.invalid/x.png'><script>console.error('boom')</script></body></html>")
    loaded = open_page(browser, page, tmp_path / "broken.png")
    assert "boom" in loaded["errors"] and "https://example.invalid/x.png" in loaded["outside"]
    assert [w[:2] for w in loaded["widgets"]] == [["Nothing", 0]]
    with pytest.raises(AssertionError):
        check(loaded, 1)


def test_the_main_jobs_report_renders_offline(browser: Any, tmp_path: Path) -> None:
    chromium_path()  # fail before the minutes of the study if the browser is missing
    out = tmp_path / "reports"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, str(ROOT / "demos" / "main_study.py"), "--out", str(out)], check=True,
                   timeout=1800, env=env, cwd=tmp_path)
    loaded = open_page(browser, out / "main_study.html", tmp_path / "main_study.png")
    check(loaded, 1)
    assert loaded["widgets"][0][0] == "AttentionHeads"
