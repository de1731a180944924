"""Results: summaries, rankings and figures of tl_interp's typed results."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.reliability import tiny
from tests.token_pair import CLEAN, METRIC
from tl_interp.ablation import AblationResult
from tl_interp.errors import OptionError, SelectionError, TypeCheckError, UnsupportedError
from tl_interp.patching import PatchingResult
from tl_interp.results import Provenance, Result


# -- issue 10's reliability probes (formerly tests/test_reliability_studies.py) --
def test_equal_clean_and_corrupted_runs_have_no_normalized_view() -> None:
    # probe 11: "clean == corrupted gives NaN normalized" (or, with rounding, arbitrary numbers)
    result = ti.patching.sweep(tiny(), CLEAN, CLEAN, METRIC, progress=False)
    with pytest.raises(UnsupportedError, match="give the same metric value .* within float32 rounding.*read .values"):
        result.normalized
    assert_close(result.values, result.base.expand_as(result.values), rtol=1e-6, atol=1e-6)


def _patching(values: torch.Tensor, base: float = 0.0, source: float = 1.0) -> PatchingResult:
    return PatchingResult(values=values, axes=("layer", "pos"), metric="m", provenance=Provenance.make("test"),
                          extras={"base": torch.tensor(base), "source": torch.tensor(source)})


def test_top_lists_nan_cells_last() -> None:
    # probe 11: "top() lists NaN first"
    values = torch.tensor([[float("nan"), 0.5], [-2.0, float("nan")]])
    top = _patching(values).top(4, by="values")
    assert [v for _, v in top[:2]] == [-2.0, 0.5]
    assert all(v != v for _, v in top[2:])


@pytest.mark.parametrize("k, error, message", [
    (0, SelectionError, r"AblationResult.top: k=0 is out of range; choose k >= 1"),
    (-1, SelectionError, r"AblationResult.top: k=-1 is out of range"),
    (True, TypeCheckError, r"AblationResult.top: k must be an int, not True"),
    (2.5, TypeCheckError, r"k must be an int, not 2.5"),
])
def test_top_refuses_a_k_that_is_not_a_positive_int(k: Any, error: type, message: str) -> None:
    # probe 11: "ranking(0) returns everything and ranking(-1) drops one"
    result = AblationResult(values=torch.tensor([[0.1, -0.3]]), axes=("layer", "head_index"), metric="m",
                            provenance=Provenance.make("test"))
    with pytest.raises(error, match=message):
        result.top(k)


def test_top_signed_and_smallest_first_puts_the_most_harmful_unit_first() -> None:
    # probe 11, correct behaviour: with higher_is_better the most negative effect is first
    result = AblationResult(values=torch.tensor([[0.1, -0.3], [0.2, -0.1]]), axes=("layer", "head_index"), metric="m",
                            provenance=Provenance.make("test", settings={"higher_is_better": True}))
    assert result.higher_is_better
    assert list(result.top(2, absolute=False, largest=False).columns["index"]) == [(0, 1), (1, 1)]
    assert len(result.top(4)) == 4
    with pytest.raises(SelectionError, match=r"AblationResult.top: k=10 is out of range: there are 4 entries"):
        result.top(10)  # never quietly fewer than asked for


def test_a_figure_of_a_view_that_does_not_exist_names_the_views() -> None:
    # unclear error: result.figure(which="bogus") raised a bare KeyError
    result = _patching(torch.randn(2, 6))
    with pytest.raises(OptionError, match=r"figure\(which='bogus'\): .* choose one of 'values', 'base', 'normalized'"):
        result.figure(which="bogus")
    with pytest.raises(OptionError, match="that view has shape \\(\\)"):
        result.figure(which="base")
    fig = result.figure(which="normalized")
    assert_close(torch.tensor(fig.data[0].z, dtype=torch.float64), result.normalized.double(), rtol=0, atol=0)


def test_a_results_repr_is_a_short_summary_and_the_data_stays_whole() -> None:
    # unclear error: "a result's repr prints every tensor in full (7 KB for a 30 x 14 sweep)"
    values = torch.randn(30, 14, generator=torch.Generator().manual_seed(2))
    result = _patching(values)
    text = repr(result)
    assert len(text) < 300 and "layer=30, pos=14" in text and "top:" in text
    flat = values.flatten()
    assert f"{float(flat[flat.abs().argmax()]):.4g}" in text
    frame = result.to_frame()
    assert len(frame) == 420 and torch.equal(torch.tensor(frame["value"].to_numpy()), values.flatten())


def test_figures_and_top_refuse_what_they_cannot_show() -> None:
    # own probes: a 4-D result has no default figure; top(k) needs k >= 1 and a known view
    four = Result(values=torch.zeros(2, 2, 2, 2), axes=("layer", "pos", "head_index", "d_head"), metric="m",
                  provenance=Provenance.make("test"))
    with pytest.raises(UnsupportedError, match="no default figure for 4-D values"):
        four.figure()
    with pytest.raises(SelectionError, match=r"PatchingResult.top: k=0 is out of range; choose k >= 1"):
        _patching(torch.randn(2, 6)).top(0)
    with pytest.raises(OptionError, match="takes 'normalized' or 'values'"):
        _patching(torch.randn(2, 6)).top(3, by="recovered")


def test_top_without_k_lists_up_to_ten_entries_and_an_explicit_k_beyond_them_is_refused() -> None:
    small = ti.results.Result(torch.tensor([[1.0, -3.0, 2.0]]), ("layer", "pos"), "logit diff",
                              ti.results.Provenance("m", seed=0))
    assert [label for label, _ in small.top()] == ["layer 0, pos 1", "layer 0, pos 2", "layer 0, pos 0"]
    large = ti.results.Result(torch.arange(30.0).reshape(3, 10), ("layer", "pos"), "logit diff",
                              ti.results.Provenance("m", seed=0))
    assert len(large.top()) == 10 and large.top()[0][1] == 29.0
    assert len(large.top(per="layer").by_row()) == 3
    with pytest.raises(SelectionError, match="there are 3 entries"):
        small.top(4)
