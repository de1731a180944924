"""Offline reports: each bundle inlined once per page, nothing fetched, any saved result renders."""

import re
from pathlib import Path
from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp.cli import main
from tl_interp.errors import ArtifactError, TypeCheckError
from tl_interp.results import Provenance, Result
from tl_interp.viz._circuitsvis import BUNDLE_MARKER

from tests.test_viz_views import no_network  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("no_network")



def views(n: int) -> list[Any]:
    gen = torch.Generator().manual_seed(0)
    return [ti.viz.tokens([f"t{j}" for j in range(12)], torch.randn(12, generator=gen), title=f"view {i}")
            for i in range(n)]


def test_twenty_views_cost_less_than_twice_one_view(tmp_path: Path) -> None:
    sizes = {}
    for n in (1, 20):
        report = ti.viz.Report(f"{n} views")
        for v in views(n):
            report.view(v)
        page = Path(report.write(tmp_path / f"{n}.html")).read_text()
        assert page.count(BUNDLE_MARKER) == 1 and page.count('class="tl-cv"') == n
        sizes[n] = len(page.encode())
    assert sizes[20] < 2 * sizes[1], sizes
    assert sizes[1] > 1_000_000  # the bundle is really inlined, not linked


def test_a_page_links_nothing_outside_itself() -> None:
    report = ti.viz.Report("offline")
    fig = Result(torch.ones(2, 3), ("layer", "pos"), "m", Provenance("x")).figure()
    report.view(views(1)[0]).figure(fig).figure(fig)
    page = report.html()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?(https?:)?//", page)
    assert page.count(BUNDLE_MARKER) == 1
    assert page.count("window.PlotlyConfig") == 1  # plotly.js inlined with the first figure only


def test_add_takes_what_a_notebook_shows_and_refuses_the_rest() -> None:
    r = Result(torch.tensor([1.0, 2.0]), ("pos",), "m", Provenance("x"))
    iv = ti.hooks.zero_ablate(ti.site("z", 0))
    report = ti.viz.Report("mixed").add(views(1)[0]).add(r).add(iv).add("some prose").add(r.to_frame())
    page = report.html()
    assert "tl-interp-result" in page and "tl-interp-intervention" in page and "some prose" in page
    assert page.count("<table") >= 2
    with pytest.raises(TypeCheckError, match="cannot add a dict"):
        report.add({"a": 1})


def test_cli_renders_any_saved_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = Result(torch.tensor([[0.25, -1.0]]), ("layer", "pos"), "logit diff", Provenance.make("toy", seed=7))
    path = r.save(tmp_path / "r.safetensors")
    assert main(["report", str(path), "-o", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert capsys.readouterr().out.strip() == str(tmp_path / "page.html")
    assert "Result: logit diff (toy)" in page and "seed: 7" in page and "plotly" in page
    assert ">-1</td>" in page and ">0.25</td>" in page


def test_cli_rebuilds_a_study_result_as_its_own_kind(tmp_path: Path) -> None:
    model = ti.models.load("induction-2l")
    tokens = ti.models.zoo.repeated_tokens(4, 6, generator=torch.Generator().manual_seed(0))
    scan = ti.ablation.scan(model, tokens, ti.metrics.loss(tokens), n_boot=100, progress=False)
    path = scan.save(tmp_path / "scan.safetensors")
    assert main(["report", str(path)]) == 0
    page = path.with_suffix(".html").read_text()
    assert "AblationResult" in page and "most damaging first" in page


def test_cli_names_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no result file at"):
        main(["report", str(tmp_path / "missing.safetensors")])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="is not a tl_interp result"):
        main(["report", str(tmp_path / "junk.safetensors")])
