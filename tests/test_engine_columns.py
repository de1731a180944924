"""Issue 26's SmolLM2 costs, each path against an independent reference: TL's weights stored the
way its forward multiplies by them (``compat.layout``: bit-identical, restored), and the head
unembedding only the vocabulary entries a metric reads (``head_columns``), for ``ti.metrics``
metrics that say which (``Metric.narrowed``) and for plain functions traced to them."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import gpt2_style, llama_style
from tl_interp import compat, hooks, site
from tl_interp.compat import layout
from tl_interp.engine import reads
from tl_interp.engine.inputs import as_batch
from tl_interp.engine.run import BaseRun, EngineOptions, Staged

TOKENS = torch.randint(1, 61, (3, 7), generator=torch.Generator().manual_seed(1))
RIGHT, WRONG = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
A, B, C = 7, 19, 23


def _cells(model: Any) -> list[Any]:
    source = hooks.cache(site("resid_pre", 1)).collect(model, TOKENS.flip(1))[site("resid_pre", 1)]
    return [hooks.patch(site("resid_pre", 1), source, positions=p) for p in range(7)] + [
        hooks.zero_ablate(site("z", 0), heads=h) for h in range(4)]


# -- compat.layout ---------------------------------------------------------------------------
def test_the_layout_check_passes_on_the_installed_transformer_lens() -> None:
    assert layout.check() is None and compat.usable("layout")


@pytest.mark.parametrize("make", [gpt2_style, llama_style])
def test_weights_stored_transposed_give_bit_identical_logits_and_are_restored_after_an_error(make: Any) -> None:
    model = make()
    before = model(TOKENS)
    params = {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"), layout.forward_layout(model):
        assert len(layout.relaid(model)) > 0
        assert torch.equal(model(TOKENS), before)
        raise RuntimeError("boom")
    assert {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()} == params


def test_a_sweep_with_and_without_the_layout_is_bit_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    model = llama_style()  # gated MLP, grouped-query attention: every relaid kind
    clean, corrupted = TOKENS, TOKENS.flip(1)
    metric = ti.metrics.logit_diff(RIGHT, WRONG, positions=-1)
    on = ti.patching.sweep(model, clean, corrupted, metric, progress=False)
    monkeypatch.setattr(layout, "relaid", lambda model, **kw: [])
    off = ti.patching.sweep(model, clean, corrupted, metric, progress=False)
    assert torch.equal(on.values, off.values) and torch.equal(on.extras["source"], off.extras["source"])


def test_one_key_value_head_is_left_in_its_layout() -> None:
    # TL's rearrange of a single head's K is a strided view, which F.linear multiplies in another order
    w = torch.randn(1, 8, 4)
    assert not layout._copied_by_tl(w) and layout._copied_by_tl(torch.randn(2, 8, 4))


@pytest.mark.parametrize("heads", [1, 2, 9])
def test_a_large_weight_probed_on_meta_answers_as_the_rearrange_itself(heads: int) -> None:
    w = torch.randn(heads, 576, 128)  # above _PROBE_ON_META: no copy is made to answer
    assert w.numel() > layout._PROBE_ON_META
    for stored in (w, w.permute(0, 2, 1).contiguous().permute(0, 2, 1), w[:, :, :64]):
        assert layout._copied_by_tl(stored) == stored.permute(0, 2, 1).reshape(-1, 576).is_contiguous()


# -- head columns for ti.metrics -------------------------------------------------------------
@pytest.mark.parametrize("make", [gpt2_style, llama_style])
def test_a_logit_difference_unembeds_only_its_answers_and_equals_the_full_head(make: Any) -> None:
    model = make()
    metric = ti.metrics.logit_diff(RIGHT, WRONG, positions=-1)
    cells = _cells(model)
    names = [site("resid_pre", 1), site("z", 0)]
    narrow = BaseRun(model, as_batch(model, TOKENS), metric, names)
    full = BaseRun(model, as_batch(model, TOKENS), ti.metrics.MetricSet({"ld": metric}), names)
    assert narrow.paths["head_columns"] == "on: 6 of 61 vocabulary entries"
    assert full.paths["head_columns"] == "off: the metric may read any vocabulary entry"
    by_hand = torch.stack([metric.per_prompt(c.run(model, TOKENS)) for c in cells])
    assert_close(narrow.evaluate(cells), by_hand, rtol=0, atol=2e-5)
    assert_close(narrow.evaluate(cells), full.evaluate(cells)["ld"], rtol=0, atol=2e-5)
    assert_close(narrow.values, metric.per_prompt(model(TOKENS)), rtol=0, atol=2e-5)


def test_a_staged_metric_keeps_every_vocabulary_entry() -> None:
    model = gpt2_style()
    staged = Staged(ti.metrics.top_token(positions=-1), lambda top: ti.metrics.logit_diff(top.long(), 0, positions=-1))
    base = BaseRun(model, as_batch(model, TOKENS), staged, [site("z", 0)])
    assert base.paths["head_columns"].startswith("off: a staged metric")


def test_narrowing_keeps_missing_answers_missing() -> None:
    logits = torch.randn(3, 4, 30)
    metric = ti.metrics.logit_diff(torch.tensor([5, -1, 9]), torch.tensor([2, 2, 29]), positions=-1)
    columns, small = metric.narrowed()
    assert columns.tolist() == [2, 5, 9, 29]
    assert_close(small.per_prompt(logits[..., columns]), metric.per_prompt(logits), equal_nan=True)
    assert torch.isnan(small.per_prompt(logits[..., columns])[1])


# -- head columns for plain functions --------------------------------------------------------
def last(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, A] - logits[:, -1, B]).mean()


def softmax_last(logits: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1)[:, -1, A].mean()


@pytest.mark.parametrize("make", [gpt2_style, llama_style])
@pytest.mark.parametrize("metric, columns", [(last, "on: 2 of 61 vocabulary entries"),
                                             (softmax_last, "off: the plain metric reads every vocabulary entry")])
def test_a_plain_metric_unembeds_only_the_entries_it_reads(make: Any, metric: Any, columns: str) -> None:
    model = make()
    cells = _cells(model)
    base = BaseRun(model, as_batch(model, TOKENS), metric, [site("resid_pre", 1), site("z", 0)])
    values = base.evaluate(cells)
    assert base.paths["head_columns"].startswith(columns), base.paths["head_columns"]
    assert base.paths["read_only"] == "on" and base.stats["plain_recomputed"] == 0
    assert_close(values, torch.stack([metric(c.run(model, TOKENS)) for c in cells]), rtol=0, atol=2e-5)


def test_a_plain_metric_reading_another_entry_in_some_cells_is_recomputed_on_full_logits() -> None:
    model = llama_style()
    cells = _cells(model)
    with torch.no_grad():
        by_last = torch.stack([last(c.run(model, TOKENS)) for c in cells])
        base_value = float(last(model(TOKENS)))
    below = by_last[by_last < base_value - 1e-4]
    assert below.numel() > 0, "the case needs cells below the base value"
    threshold = (base_value + float(below.max())) / 2

    def other_entry(logits: torch.Tensor) -> torch.Tensor:  # the same position, another vocabulary entry
        value = last(logits)
        return value if float(value.detach()) >= threshold else logits[:, -1, C].mean()

    base = BaseRun(model, as_batch(model, TOKENS), other_entry, [site("resid_pre", 1), site("z", 0)])
    values = base.evaluate(cells)
    assert base.paths["head_columns"] == "on: 2 of 61 vocabulary entries"
    assert base.stats["plain_recomputed"] == below.numel()
    assert_close(values, torch.stack([other_entry(c.run(model, TOKENS)) for c in cells]), rtol=0, atol=2e-5)


def test_the_trace_names_the_vocabulary_entries_and_refuses_others() -> None:
    logits = torch.randn(2, 5, 11)
    _, trace = reads.traced(lambda x: x[torch.arange(2), -1, torch.tensor([3, 8])].sum() + x[:, 2, 1].sum(), logits)
    assert trace.positions == {2, 4} and trace.columns == {1, 3, 8}
    _, trace = reads.traced(lambda x: x[:, -1].sum(), logits)
    assert trace.columns == reads.EVERY
    value, trace = reads.traced(lambda x: x[:, -1, 4].sum(), logits, frozenset({4}), frozenset({3, 8}))
    assert value is None and "vocabulary entries that were not computed" in trace.refused
    value, trace = reads.traced(lambda x: x.softmax(-1)[:, -1, 3].sum(), logits, frozenset({4}), frozenset({3}))
    assert value is None and "vocabulary entries that were not computed" in trace.refused
