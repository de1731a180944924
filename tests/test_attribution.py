"""Attribution patching and integrated gradients against hand-computed gradients and exact patching."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import PlanRecorder, gpt2_style, llama_style
from tests.reliability import no_forward, tiny
from tests.token_pair import CLEAN, CORRUPTED, METRIC
from tl_interp.errors import InputError, OptionError, UnsupportedError


def pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Any]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 61, (4, 7), generator=g)
    corrupted = clean.clone()
    corrupted[:, 3] = torch.randint(1, 61, (4,), generator=g)
    return clean, corrupted, ti.metrics.logit_diff(torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8]), positions=-1)


def test_attribution_patching_equals_the_gradient_formula() -> None:
    model = gpt2_style()
    clean, corrupted, metric = pair()
    _, clean_cache = model.run_with_cache(clean)
    grads: dict[str, torch.Tensor] = {}
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(2)]
    _, corrupted_cache = model.run_with_cache(corrupted)
    model.zero_grad()
    logits = model.run_with_hooks(corrupted, bwd_hooks=[(n, lambda g, hook: grads.update({hook.name: g})) for n in names])
    metric(logits).backward()
    model.reset_hooks()
    model.zero_grad()
    expected = torch.stack([((clean_cache[n] - corrupted_cache[n]) * grads[n]).sum((0, 3)) for n in names])
    est = ti.patching.attribution(model, clean, corrupted, metric, site="z", over=("pos", "head_index"), progress=False)
    assert_close(est.values - est.base, expected, rtol=1e-4, atol=1e-5)


def test_integrated_gradients_over_a_whole_layer_sum_to_the_exact_patch() -> None:
    model = llama_style()
    clean, corrupted, metric = pair(1)
    exact = ti.patching.sweep(model, clean, corrupted, metric, over=(), progress=False)
    ig = ti.patching.attribution(model, clean, corrupted, metric, over=(), method="ig", steps=64, progress=False)
    assert_close(ig.values, exact.values, rtol=0, atol=2e-3)  # completeness (midpoint rule error ~1/steps^2)


def test_compare_exact_reports_agreement() -> None:
    model = llama_style()
    clean, corrupted, metric = pair(2)
    est = ti.patching.attribution(model, clean, corrupted, metric, site="attn_out", method="ig", steps=32,
                                  compare_exact=True, progress=False)
    settings = est.provenance.settings
    assert settings["pearson_r"] > 0.8
    assert torch.equal(est.extras["exact"], ti.patching.sweep(model, clean, corrupted, metric, site="attn_out",
                                                              progress=False).values)


def test_attribution_of_a_resid_sweep_is_batched_like_unbatched() -> None:
    model = gpt2_style()
    clean, corrupted, _ = pair(3)
    answers, wrong = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    whole = ti.patching.attribution(model, clean, corrupted, ti.metrics.logit_diff(answers, wrong), progress=False)
    singles = [ti.patching.attribution(model, clean[i:i + 1], corrupted[i:i + 1],
                                       ti.metrics.logit_diff(answers[i:i + 1], wrong[i:i + 1]), progress=False)
               for i in range(4)]
    assert_close(whole.values - whole.base, torch.stack([s.values - s.base for s in singles]).mean(0),
                 rtol=1e-4, atol=1e-5)


# (site, over) -> the axes of the activation (batch first) TL's gradient is summed over, by hand
LAYOUT_SUMS = {
    ("resid_pre", ("pos",)): (0, 2),
    ("z", ("head_index",)): (0, 1, 3),
    ("z", ("pos", "head_index")): (0, 3),
    ("pattern", ("head_index",)): (0, 2, 3),
    ("pattern", ("head_index", "dest_pos")): (0, 3),
    ("mlp_post", ("d_mlp",)): (0, 1),
    ("mlp_post", ("pos",)): (0, 2),
}


@pytest.mark.parametrize("site, over", list(LAYOUT_SUMS))
def test_attribution_cells_sum_the_gradient_formula_over_each_layout(site: str, over: tuple) -> None:
    model = gpt2_style()
    clean, corrupted, metric = pair()
    names = [ti.site(site, layer) for layer in range(2)]
    _, clean_cache = model.run_with_cache(clean)
    _, corrupted_cache = model.run_with_cache(corrupted)
    grads: dict[str, torch.Tensor] = {}
    model.reset_hooks()
    for name in names:  # TransformerLens's own backward hooks capture the gradients
        model.add_hook(name, lambda g, hook: grads.__setitem__(hook.name, g.detach()), dir="bwd")
    base = metric(model(corrupted))
    base.backward()
    model.reset_hooks()
    est = ti.patching.attribution(model, clean, corrupted, metric, site=site, over=over, progress=False)
    for layer, name in enumerate(names):
        contrib = (clean_cache[name] - corrupted_cache[name]) * grads[name]
        assert_close(est.values[layer], (base.detach() + contrib.sum(LAYOUT_SUMS[(site, over)])).float(),
                     rtol=1e-4, atol=1e-5)


def _ig_by_hand(model: Any, base: torch.Tensor, source: torch.Tensor, metric: Any, name: str,
                steps: int) -> torch.Tensor:
    """Integrated gradients at one site with TransformerLens hooks, one point per forward pass."""
    _, base_cache = model.run_with_cache(base)
    _, source_cache = model.run_with_cache(source)
    a, delta = base_cache[name], source_cache[name] - base_cache[name]
    total = torch.zeros_like(a)
    for s in range(steps):
        point = (a + (s + 0.5) / steps * delta).requires_grad_(True)
        logits = model.run_with_hooks(base, fwd_hooks=[(name, lambda act, hook: point)])
        (grad,) = torch.autograd.grad(metric(logits), [point])
        total += grad
    return (delta * total / steps).sum((0, 2))  # over="pos": batch and d_model summed


@pytest.mark.parametrize("memory_mb", [1024.0, 0.05])
def test_integrated_gradients_on_the_engine_equal_a_hook_loop_at_any_memory_budget(memory_mb: float) -> None:
    model = gpt2_style()
    clean, corrupted, metric = pair(4)
    recorder = PlanRecorder()
    ig = ti.patching.attribution(model, clean, corrupted, metric, method="ig", steps=5, memory_mb=memory_mb,
                                 executor=recorder, progress=False)
    by_hand = torch.stack([_ig_by_hand(model, corrupted, clean, metric, ti.site("resid_pre", layer), 5)
                           for layer in range(2)])
    assert_close(ig.values - ig.base, by_hand, rtol=1e-4, atol=1e-5)
    # the cells are a Plan with the budget, one per site
    assert [p.sites for p in recorder.plans] == [(ti.site("resid_pre", 0),), (ti.site("resid_pre", 1),)]
    assert all(p.options.memory_mb == memory_mb and p.options.grad and len(p.cells) == 5 for p in recorder.plans)
    assert torch.equal(ti.patching.attribution(model, clean, corrupted, metric, method="ig", steps=5,
                                               memory_mb=memory_mb, progress=False).values, ig.values)


def test_integrated_gradients_refuse_an_executor_in_another_process_before_any_forward_pass() -> None:
    class Elsewhere:  # any executor that runs its cells outside this process (RayExecutor is one)
        def run(self, plan, *, progress=True):
            raise AssertionError("no cell may reach another process")

    model = gpt2_style()
    clean, corrupted, metric = pair(5)
    with no_forward(model), pytest.raises(UnsupportedError, match=r"method='ig'.*Elsewhere.*autograd graph"):
        ti.patching.attribution(model, clean, corrupted, metric, method="ig", executor=Elsewhere(), progress=False)
    with no_forward(model), pytest.raises(OptionError, match="memory_mb must be positive"):
        ti.patching.attribution(model, clean, corrupted, metric, method="ig", memory_mb=0, progress=False)


# -- issue 10's reliability probes (formerly tests/test_reliability_studies.py), beside the module they test --
@pytest.mark.parametrize("kwargs, error, message", [
    ({"metric": ti.metrics.accuracy(3)}, InputError, "needs a metric autograd can differentiate"),  # unclear error
    ({"method": "ig", "steps": 0}, OptionError, "steps must be at least 1, got 0"),  # own probe
    ({"method": "grad"}, OptionError, "method must be one of 'atp', 'ig'"),  # own probe
])
def test_attribution_refuses_what_it_cannot_compute_before_any_forward_pass(kwargs: dict[str, Any], error: type,
                                                                             message: str) -> None:
    model = tiny()
    metric = kwargs.pop("metric", METRIC)
    with no_forward(model), pytest.raises(error, match=message):
        ti.patching.attribution(model, CLEAN, CORRUPTED, metric, progress=False, **kwargs)
