"""Figures: white where nothing changed, symlog with honest labels, and save() that round-trips or says why not."""

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tl_interp as ti
from tl_interp.errors import OptionError, UnsupportedError
from tl_interp.patching import PatchingResult
from tl_interp.results import Provenance, Result
from tl_interp.viz._plotly import Figure
from tl_interp.viz._scale import symlog
from tl_interp.viz.figures import heatmap

BASE, SOURCE = -5.49, 2.25


def _sweep() -> PatchingResult:
    """A (layer, pos) patching result whose every cell but two is the unpatched base value."""
    values = torch.full((4, 6), BASE)
    values[2, 3], values[3, 5] = SOURCE, 0.0
    return PatchingResult(values, ("layer", "pos"), "logit_diff", Provenance.make("m"),
                          extras={"base": torch.tensor(BASE), "source": torch.tensor(SOURCE)})


def test_a_raw_patching_heatmap_is_white_at_the_base_run_and_says_so() -> None:
    trace = _sweep().figure().data[0]
    assert trace.zmid == pytest.approx(BASE)  # the colour scale's midpoint: unpatched cells are white
    unpatched = np.asarray(trace.z)[0, 0]
    assert unpatched == pytest.approx(trace.zmid)
    assert trace.colorbar.title.text == "logit_diff; white = base run -5.49"


def test_the_normalised_patching_view_is_centred_on_zero_and_labelled() -> None:
    trace = _sweep().figure(which="normalized").data[0]
    assert trace.zmid == 0.0 and np.asarray(trace.z)[0, 0] == 0.0
    assert trace.colorbar.title.text == "fraction recovered (0 = base run, 1 = source run)"


def test_other_results_stay_centred_on_zero() -> None:
    r = Result(torch.tensor([[1.0, -3.0]]), ("layer", "pos"), "m", Provenance("x"))
    trace = r.figure().data[0]
    assert trace.zmid == 0.0 and trace.colorbar.title.text == "values"


def test_symlog_heatmap_draws_numpy_symlog_and_labels_ticks_with_real_values() -> None:
    values = torch.tensor([[-300.0, -0.02, 0.0], [0.5, 7.0, 4000.0]])
    fig = heatmap(values, x_labels=["a", "b", "c"], y_labels=["0", "1"], x_title="pos", y_title="layer",
                  colorbar="difference", value_scale="symlog", linthresh=0.1)
    trace = fig.data[0]
    v = values.double().numpy()
    reference = np.sign(v) * np.log10(1 + np.abs(v) / 0.1)  # matplotlib's SymLogNorm shape, base 10
    np.testing.assert_allclose(np.asarray(trace.z, dtype=float), reference, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(trace.customdata, dtype=float), v)  # hover: the real values
    for where, text in zip(trace.colorbar.tickvals, trace.colorbar.ticktext):  # each label is the value there
        real = float(text)
        assert np.sign(real) * np.log10(1 + abs(real) / 0.1) == pytest.approx(where, abs=1e-9)
    assert {"1e+04", "-1e+03", "0", "1"} <= set(trace.colorbar.ticktext)  # decades spanning the values
    assert trace.zmid == 0.0 and trace.colorbar.title.text == "difference; symlog, linear within ±0.1"


def test_symlog_around_a_base_value_is_symlog_of_the_differences() -> None:
    trace = _sweep().figure(value_scale="symlog", linthresh=0.01).data[0]
    z = np.asarray(trace.z, dtype=float)
    assert z[0, 0] == 0.0 and z[2, 3] == pytest.approx(np.log10(1 + (SOURCE - BASE) / 0.01))
    assert "-5.49" in trace.colorbar.ticktext  # the centre tick is the base run, in real units


def test_symlog_bars_keep_real_values_on_the_axis() -> None:
    r = Result(torch.tensor([1000.0, -0.5, 3.0]), ("layer",), "m", Provenance("x"))
    fig = r.figure(value_scale="symlog", linthresh=1.0)
    assert np.asarray(fig.data[0].y, dtype=float)[0] == pytest.approx(np.log10(1001.0))
    assert list(fig.data[0].customdata) == [1000.0, -0.5, 3.0] and "1e+03" in fig.layout.yaxis.ticktext


def test_symlog_of_the_function_and_bad_scales_are_refused() -> None:
    assert symlog(torch.tensor([-9.0, 0.0, 99.0]), 1.0).tolist() == [-1.0, 0.0, 2.0]
    with pytest.raises(OptionError, match="value_scale='log'; choose 'linear' or 'symlog'"):
        _sweep().figure(value_scale="log")
    with pytest.raises(OptionError, match="linthresh=0.0 must be a positive number"):
        _sweep().figure(value_scale="symlog", linthresh=0.0)
    with pytest.raises(OptionError, match="pass value_scale='symlog' with it"):
        _sweep().figure(linthresh=1.0)


def test_a_cosine_matrix_figure_takes_symlog_too() -> None:
    cm = ti.weights.cosine_matrix(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    assert "symlog" in cm.figure(value_scale="symlog").data[0].colorbar.title.text


# -- save ---------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::tl_interp.errors.TlInterpWarning")
def test_every_figure_the_toolkit_returns_can_save(tmp_path: Path) -> None:
    sweep = _sweep()
    figures = [sweep.figure(), Result(torch.ones(3), ("layer",), "m", Provenance("x")).figure(),
               ti.weights.cosine_matrix(torch.eye(3) + 0.1).figure(),
               ti.similarity.compare(torch.randn(12, 3), torch.randn(12, 3), measures=("cka",), n_permutations=10,
                                     n_boot=5).figure()]
    for fig in figures:
        assert isinstance(fig, Figure) and callable(fig.save)


def _plotted(page: str) -> tuple[list[Any], dict[str, Any]]:
    """The data and layout a saved page passes to ``Plotly.newPlot``."""
    decoder = json.JSONDecoder()
    at = page.index("Plotly.newPlot(")
    at = page.index(",", page.index('"', at)) + 1
    data, end = decoder.raw_decode(page, at + len(page[at:]) - len(page[at:].lstrip()))
    rest = page[end:].lstrip()[1:]
    layout, _ = decoder.raw_decode(rest.lstrip())
    return data, layout


def test_a_figure_saved_as_html_round_trips_offline(tmp_path: Path) -> None:
    fig = _sweep().figure()
    text = fig.save(tmp_path / "sweep.html").read_text()
    assert len(text) > 1_000_000 and '<script src="https://cdn' not in text  # plotly.js inlined, not fetched
    data, layout = _plotted(text)
    np.testing.assert_array_equal(np.asarray(data[0]["z"], dtype=float), np.asarray(fig.data[0].z, dtype=float))
    assert data[0]["zmid"] == pytest.approx(BASE) and layout["title"]["text"] == fig.layout.title.text


def test_a_view_saved_as_html_carries_its_bundle_and_numbers(tmp_path: Path) -> None:
    view = ti.viz.tokens(["The", " cat"], [0.25, -1.5])
    text = view.save(tmp_path / "view.html").read_text()
    assert text.startswith("<!doctype html>") and "tl-interp-circuitsvis-bundle" in text
    assert "CircuitsVis.render" in text and "-1.5" in text and "cdn" not in text.split("<script")[0]


def test_save_refuses_unknown_formats_naming_the_ones_it_writes(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"saves as \.html, \.png, \.svg, \.pdf.*not '\.gif'"):
        _sweep().figure().save(tmp_path / "x.gif")
    with pytest.raises(OptionError, match=r"circuitsvis view .* saves as \.html, \.png, \.pdf.*not '\.svg'"):
        ti.viz.tokens(["a"], [1.0]).save(tmp_path / "x.svg")
    assert not list(tmp_path.iterdir())


def test_static_export_without_a_browser_is_a_clear_error_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("TL_INTERP_CHROMIUM", raising=False)
    for save in (_sweep().figure().save, ti.viz.tokens(["a"], [1.0]).save):
        with pytest.raises(UnsupportedError, match=r"needs a local Chrome/Chromium.*apt-get install chromium.*\.html "
                                                   "needs no browser"):
            save(tmp_path / "x.png")
    monkeypatch.setenv("TL_INTERP_CHROMIUM", str(tmp_path / "nowhere"))
    with pytest.raises(UnsupportedError, match="TL_INTERP_CHROMIUM=.* is not a file"):
        _sweep().figure().save(tmp_path / "x.svg")
    assert not list(tmp_path.glob("x.*"))


def test_static_export_without_kaleido_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido -> ImportError
    with pytest.raises(UnsupportedError, match=r"needs kaleido >= 1: `pip install 'tl_interp\[export\]'`"):
        _sweep().figure().save(tmp_path / "x.png")


def test_the_attention_view_names_its_layer_once(tmp_path: Path) -> None:
    view = ti.viz.attention(ti.models.load("induction-2l"), torch.tensor([5, 6, 7, 5, 6]), layer=1, heads=[2])
    page = view.html()
    assert view.title.startswith("Attention patterns, layer 1") and page.count("layer 1") == 1
    assert [p.caption for p in view.panels] == [""]
