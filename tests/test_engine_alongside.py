"""``BaseRun(alongside=...)``: another batch of the same shape runs in the base run's forward pass; the
base run, the other batch's activations and its metric equal separate runs, and the engine's passes
from such a base run (``LocalExecutor(base=...)``) equal a fresh one's."""

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import gpt2_style, llama_style
from tl_interp import hooks
from tl_interp.engine.executors import LocalExecutor, Plan
from tl_interp.engine.inputs import as_batch
from tl_interp.engine.passes import CostModel
from tl_interp.engine.run import BaseRun, EngineOptions
from tl_interp.errors import InputError

CLEAN = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
OTHER = torch.tensor([[1, 7, 3, 8, 5, 9], [2, 5, 9, 3, 7, 1]])
METRIC = ti.metrics.logit_diff(torch.tensor([3, 4]), torch.tensor([5, 2]))
KEEP = ["blocks.0.attn.hook_z", "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"]


@pytest.mark.parametrize("make", [gpt2_style, llama_style])
@pytest.mark.parametrize("fast", [True, False])
def test_a_batch_alongside_the_base_run_equals_separate_runs(make, fast) -> None:
    model = make()
    clean, other = as_batch(model, CLEAN), as_batch(model, OTHER)
    options = EngineOptions(fast_paths=fast, cost=CostModel(pass_cost_tokens=(("cpu", 0),)))  # prefixes pay
    sites = ("blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out")
    alone = BaseRun(model, clean, METRIC, sites, options)
    both = BaseRun(model, clean, METRIC, sites, options, alongside=other, alongside_names=KEEP)
    assert both.paths == alone.paths
    assert_close(both.values, alone.values, atol=1e-6, rtol=0)
    for name in alone.acts:
        assert_close(both.acts[name], alone.acts[name], atol=1e-6, rtol=0)
    for (k, v), (k0, v0) in zip(both.kv, alone.kv, strict=True):
        assert_close(k, k0, atol=1e-6, rtol=0)
        assert_close(v, v0, atol=1e-6, rtol=0)
    assert len(both.kv) == (model.cfg.n_layers if fast else 0)  # the key-value cache of the base rows alone
    cache = hooks.cache(KEEP)
    with torch.no_grad():
        logits = cache.run(model, OTHER)
    assert sorted(both.alongside_acts) == sorted(KEEP)
    for name in KEEP:
        assert_close(both.alongside_acts[name], cache[name], atol=1e-6, rtol=0)
    assert_close(both.alongside_values, METRIC.at(clean).per_prompt(logits[None])[0], atol=1e-5, rtol=0)
    cache = hooks.cache(KEEP)  # the same names on the base rows, read in that pass too
    with torch.no_grad():
        cache.run(model, CLEAN)
    assert sorted(both.batch_acts) == sorted(KEEP)
    for name in KEEP:
        assert_close(both.batch_acts[name], cache[name], atol=1e-6, rtol=0)
    # the engine's passes from this base run equal a fresh base run's (the executor reuses it)
    # (an edit at the last position alone starts its pass there, on the base rows' keys and values)
    cells = (hooks.scale("blocks.1.hook_resid_pre", 0.5), hooks.scale("blocks.1.hook_mlp_out", 0.0),
             hooks.scale("blocks.1.hook_resid_pre", 0.5, positions=[5]))
    plan = Plan(model, clean, METRIC, cells, ((0,), (1,), (2,)), sites, options)
    reused, fresh = LocalExecutor(both).run(plan, progress=False), LocalExecutor().run(plan, progress=False)
    assert reused.stats["prefix_passes"] == fresh.stats["prefix_passes"] == (1 if fast else 0)
    assert_close(reused.values, fresh.values, atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="no alongside batch"):
        alone.alongside_values  # noqa: B018


def test_an_alongside_batch_of_another_shape_or_a_base_run_of_another_plan_is_refused() -> None:
    model = gpt2_style()
    clean = as_batch(model, CLEAN)
    with pytest.raises(InputError, match="alongside"):
        BaseRun(model, clean, METRIC, alongside=as_batch(model, OTHER[:, :5]))
    base = BaseRun(model, clean, METRIC, ("blocks.1.hook_resid_pre",), alongside=as_batch(model, OTHER))
    plan = Plan(model, clean, METRIC, (hooks.scale("blocks.0.hook_mlp_out", 0.0),), ((0,),), ("blocks.0.hook_mlp_out",))
    with pytest.raises(ValueError, match="another plan"):
        LocalExecutor(base).run(plan, progress=False)
