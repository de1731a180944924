"""Every Result and Intervention displays itself in a notebook: a short summary, no JavaScript."""

import re
from pathlib import Path

import pytest
import torch

import tl_interp as ti
import tl_interp.ablation
import tl_interp.patching
import tl_interp.steering
from tl_interp import hooks, site
from tl_interp.results import Provenance, Result
from tl_interp.results._result import _KINDS

from tests.test_viz_views import no_network  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("no_network")
STEERING = Path(__file__).resolve().parents[1] / "results" / "steering_numbers_months" / "report.safetensors"



def cell_texts(page: str) -> list[str]:
    return re.findall(r"<td[^>]*>([^<]*)</td>", page)


def test_a_small_base_result_is_a_labelled_heat_table_with_provenance() -> None:
    values = torch.tensor([[0.5, -1.25], [2.0, 0.0]])
    r = Result(values, ("layer", "pos"), "logit diff", Provenance.make("toy", seed=3, interventions=["zero z"]),
               labels={"pos": ("The", " cat")})
    page = r._repr_html_()
    assert "<script" not in page and "logit diff" in page and "layer=2 x pos=2" in page
    assert cell_texts(page)[:4] == ["0.5", "-1.25", "2", "0"]
    assert "The" in page and " cat" in page
    assert "provenance" in page and "seed: 3" in page and "zero z" in page
    # negative cells red, positive blue, the largest magnitude fully saturated
    assert "background:#2166ac" in page and "background:#b2182b" not in page


def test_a_large_result_is_summarised_by_its_largest_cells() -> None:
    values = torch.zeros(3, 50, 7)
    values[1, 20, 4] = -9.0
    values[2, 3, 0] = 5.0
    r = Result(values, ("layer", "pos", "head"), "effect", Provenance("toy"))
    page = r._repr_html_()
    assert "the 10 largest |values| of 1050" in page
    rows = re.findall(r"<tr><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td></tr>", page)
    assert rows[:2] == [("layer 1, pos 20, head 4", "-9"), ("layer 2, pos 3, head 0", "5")]
    assert len(page) < 20_000


def test_patching_result_shows_the_fraction_recovered_and_both_baselines() -> None:
    model = ti.models.load("ordinal-4l")
    adapter = ti.models.adapt(model)
    clean, corrupted = adapter.tokenize(["one, two, three,"]), adapter.tokenize(["five, six, seven,"])
    four, eight = (int(adapter.tokenize(w, prepend_bos=False).tokens[0, 0]) for w in ("four", "eight"))
    result = ti.patching.sweep(model, clean.tokens, corrupted.tokens, ti.metrics.logit_diff(four, eight),
                               site="resid_pre", progress=False)
    page = result._repr_html_()
    assert f"base run {float(result.base):.3g}, source run {float(result.source):.3g}" in page
    shown = [float(x) for x in cell_texts(page)[: result.values.numel()]]
    expected = [float(f"{v:.3g}") for v in result.normalized.flatten().tolist()]
    assert shown == expected
    assert "PatchingResult" in page and "recovered" in page


def test_ablation_result_ranks_the_known_induction_head_first() -> None:
    model = ti.models.load("induction-2l")
    tokens = ti.models.zoo.repeated_tokens(8, 10, generator=torch.Generator().manual_seed(0))
    result = ti.ablation.scan(model, tokens, ti.metrics.loss(tokens), over="head_index", n_boot=200, progress=False)
    page = result._repr_html_()
    ranking = page.split("most damaging first:")[1]
    first = re.search(r"<tbody><tr><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>", ranking)
    assert first is not None and first.group(1) == "L1 H2"
    damaging = result.top(1, absolute=False, largest=not result.higher_is_better)  # a loss: higher hurts
    assert float(first.group(2)) == pytest.approx(damaging.values[0], rel=1e-3)
    assert "95% CI" in page and "unablated metric" in page


@pytest.mark.skipif(not STEERING.is_file(), reason="the steering demo's committed result is not in this checkout")
def test_steering_report_shows_each_vector_at_its_best_multiplier() -> None:
    report = Result.load(STEERING)
    assert type(report).__name__ == "SteeringReport"
    page = report._repr_html_()
    frame = report.table("accuracy")
    body = page.split("every row):")[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body)[1:]  # skip the header
    assert len(rows) == 1 + len(report.vectors) < len(frame)
    first_vector = re.findall(r"<td[^>]*>([^<]*)</td>", rows[1])
    mean = torch.nan_to_num(report.metric_values("accuracy").double(), nan=0.0).mean(-1)
    k = int(mean[0].argmax())
    assert first_vector[0] == report.vectors[0] and float(first_vector[1]) == report.scales[k]
    assert first_vector[2] == frame.iloc[1 + k][report.tasks[0]]
    assert len(page) < 40_000


def test_every_registered_result_kind_renders_from_its_base_fields() -> None:
    # a result kind registered later (geometry, similarity, ...) is covered by the generic summary
    for kind, cls in _KINDS.items():
        r = cls(values=torch.arange(6.0).reshape(2, 3), axes=("layer", "pos"), metric="m", provenance=Provenance("x"))
        page = r._repr_html_()
        assert cls.__name__ in page and "<table" in page and "provenance" in page, kind


def test_interventions_list_their_hooks_in_order_escaped() -> None:
    iv = hooks.zero_ablate(site("z", 1), heads=[3]) + ti.Intervention.single("blocks.0.hook_resid_pre",
                                                                          lambda a, hook: a, "<scale>")
    page = iv._repr_html_()
    items = re.findall(r"<li><code>([^<]*)</code></li>", page)
    assert items == ["zero-ablate (heads [3]) at blocks.1.attn.hook_z", "&lt;scale&gt; at blocks.0.hook_resid_pre"]
    assert "2 hooks, applied in order" in page
    assert "identity" in ti.Intervention.identity()._repr_html_()


class _Shown:
    def __repr__(self) -> str:
        return "plain repr"

    def _repr_html_(self) -> str:
        return "<b>rich</b>"


def test_show_prints_outside_a_kernel_and_displays_the_html_inside_one(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    import IPython
    import IPython.display

    ti.viz.show(_Shown())  # no kernel under pytest: printed
    assert capsys.readouterr().out == "plain repr\n"
    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj._repr_html_()))
    ti.viz.show(_Shown())
    assert shown == ["<b>rich</b>"] and capsys.readouterr().out == ""
