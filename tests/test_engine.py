"""The engine: every cell's value equals its intervention run by hand, on every path.

Each fast path is checked on its own against the model's plain forward pass (``fast_paths``
off), and its eligibility check is checked to turn it off where it would not be exact.
"""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import gpt2_style, llama_style
from tl_interp import hooks, site
from tl_interp.engine.inputs import as_batch
from tl_interp.engine.passes import CostModel
from tl_interp.engine.run import BaseRun, EngineOptions

TOKENS = torch.randint(1, 61, (3, 7), generator=torch.Generator().manual_seed(1))
METRIC = ti.metrics.logit_diff(torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), positions=-1)  # unpadded
FREE_PASSES = CostModel(pass_cost_tokens=(("cpu", 0),))  # one band per position: every prefix path taken


def _cells(model: Any) -> list[Any]:
    """Cells of every kind, at several layers and positions."""
    source = hooks.cache(site("resid_pre", 1)).collect(model, TOKENS.flip(1))[site("resid_pre", 1)]
    return [hooks.patch(site("resid_pre", 1), source, positions=p) for p in (0, 3, 6)] + [
        hooks.zero_ablate(site("z", 0), heads=h) for h in (0, 3)] + [
        hooks.add(site("resid_post", 0), torch.full((32,), 0.5), positions="last"),
        hooks.scale(site("mlp_out", 1), 0.0, positions=[2, 5]),
        hooks.scale(site("mlp_out", 1), 1.0)]  # changes nothing: skipped


def _names(model: Any, cells: list[Any]) -> list[str]:
    return [name for cell in cells for name, _ in cell.bind(model)]


def _by_hand(model: Any, cells: list[Any]) -> torch.Tensor:
    return torch.stack([METRIC.per_prompt(cell.run(model, TOKENS)) for cell in cells])


@pytest.mark.parametrize("make", [gpt2_style, llama_style])
@pytest.mark.parametrize("options", [
    EngineOptions(),
    EngineOptions(cost=FREE_PASSES),
    EngineOptions(fast_paths=False),
    EngineOptions(skip_unchanged=False, cost=FREE_PASSES),
    EngineOptions(memory_mb=0.001),
], ids=["default", "every-prefix", "full-forward", "no-skipping", "one-cell-a-pass"])
def test_every_cell_equals_its_intervention_run_by_hand(make: Any, options: EngineOptions) -> None:
    model = make()
    cells = _cells(model)
    base = BaseRun(model, as_batch(model, TOKENS), METRIC, _names(model, cells), options)
    values = base.evaluate(cells)
    assert_close(values, _by_hand(model, cells), rtol=0, atol=2e-5)
    assert_close(base.values, METRIC.per_prompt(model(TOKENS)), rtol=0, atol=2e-5)
    if options.fast_paths and options.skip_unchanged:
        assert base.stats["cells_skipped"] >= 1
    if options.cost is FREE_PASSES:
        assert base.stats["prefix_passes"] > 0 and base.stats["final_block_split"] > 0
    if not options.fast_paths:
        assert all(v.startswith("off") for k, v in base.paths.items() if k != "skip_unchanged")


PLAIN = {  # plain logits -> scalar functions: one position (traced), and every position (full logits)
    "last": lambda logits: (logits[:, -1, 1] - logits[:, -1, 4]).mean(),
    "every position": lambda logits: logits[:, :, 1].log_softmax(-1).mean(),
}


@pytest.mark.parametrize("make", [gpt2_style, llama_style])
@pytest.mark.parametrize("kind", list(PLAIN))
@pytest.mark.parametrize("options", [EngineOptions(cost=FREE_PASSES), EngineOptions(skip_unchanged=False, cost=FREE_PASSES)],
                         ids=["every-prefix", "no-skipping"])
def test_every_cell_of_a_plain_metric_equals_its_intervention_run_by_hand(make: Any, kind: str,
                                                                         options: EngineOptions) -> None:
    model = make()
    cells, metric = _cells(model), PLAIN[kind]
    base = BaseRun(model, as_batch(model, TOKENS), metric, _names(model, cells), options)
    expected = torch.stack([metric(cell.run(model, TOKENS)) for cell in cells])
    assert_close(base.evaluate(cells), expected, rtol=0, atol=2e-5)
    assert base.stats["prefix_passes"] > 0  # positions before a pass's window: base keys, values and logits
    assert (base.paths["read_only"] == "on") is (kind == "last")


def test_a_user_hook_on_the_final_norm_keeps_a_full_logits_metric_on_full_positions() -> None:
    model = llama_style()

    def copy_last_into_first(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act[:, 0] = act[:, -1]  # across positions: the base run's position 0 is stale in a cell
        return act

    cells, metric = _cells(model), PLAIN["every position"]
    model.add_hook("ln_final.hook_normalized", copy_last_into_first, is_permanent=True)
    try:
        base = BaseRun(model, as_batch(model, TOKENS), metric, _names(model, cells), EngineOptions(cost=FREE_PASSES))
        assert base.paths["prefix_kv"].startswith("off: needs the read-only head")
        expected = torch.stack([metric(cell.run(model, TOKENS)) for cell in cells])
        assert_close(base.evaluate(cells), expected, rtol=0, atol=2e-5)
    finally:
        model.reset_hooks(including_permanent=True)


def test_a_user_hook_on_the_final_norm_turns_the_read_only_head_off_and_stays_exact() -> None:
    model = gpt2_style()

    def zero_first(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act[:, 0] = 0.0  # positional: wrong if the engine ran ln_final on read positions only
        return act

    cells = _cells(model)
    model.add_hook("ln_final.hook_normalized", zero_first, is_permanent=True)
    try:
        base = BaseRun(model, as_batch(model, TOKENS), METRIC, _names(model, cells))
        assert base.paths["read_only"] == "off: a hook is attached to ln_final or unembed, so the model's own head must run"
        assert_close(base.evaluate(cells), _by_hand(model, cells), rtol=0, atol=2e-5)
    finally:
        model.reset_hooks(including_permanent=True)


def test_padded_rows_read_their_last_real_token() -> None:
    model = llama_style()
    tokens = TOKENS.clone()
    mask = torch.ones_like(tokens)
    mask[1, 4:] = 0
    tokens[1, 4:] = 0
    batch = as_batch(model, tokens, attention_mask=mask)
    cells = [hooks.zero_ablate(site("z", 1), heads=h) for h in range(4)]
    last = ti.metrics.logit_diff(torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]))  # each row's last real token
    values = BaseRun(model, batch, last, [site("z", 1)]).evaluate(cells)
    for row, n in ((0, 7), (1, 4)):
        metric = ti.metrics.logit_diff(torch.tensor([[1, 2, 3][row]]), torch.tensor([[4, 5, 6][row]]), positions=-1)
        one = tokens[row:row + 1, :n]
        expected = torch.stack([metric.per_prompt(c.run(model, one))[0] for c in cells])
        assert_close(values[:, row], expected, rtol=0, atol=2e-5)


def test_a_plain_metric_function_refuses_padding_and_works_without() -> None:
    model = gpt2_style()
    mask = torch.ones_like(TOKENS)
    mask[0, 5:] = 0
    with pytest.raises(ti.InputError, match="plain metric function sees the logits of the padded batch"):
        BaseRun(model, as_batch(model, TOKENS, attention_mask=mask), lambda logits: logits[:, -1, 0].mean())
    base = BaseRun(model, as_batch(model, TOKENS), lambda logits: logits[:, -1, 0].mean(), [site("z", 0)])
    cells = [hooks.zero_ablate(site("z", 0), heads=h) for h in range(4)]
    expected = torch.stack([c.run(model, TOKENS)[:, -1, 0].mean() for c in cells])
    assert_close(base.evaluate(cells), expected, rtol=0, atol=2e-5)
    assert base.paths["read_only"] == "on"  # traced: it reads the last position only (engine.reads)
    assert base.paths["plain_metric"].startswith("plain metric traced: it reads position 6 only")


def test_a_plain_metric_reading_every_position_keeps_the_full_logits() -> None:
    model = llama_style()
    base = BaseRun(model, as_batch(model, TOKENS), lambda logits: logits[:, :, 0].mean(), [site("z", 0)])
    cells = [hooks.zero_ablate(site("z", 0), heads=h) for h in range(4)]
    expected = torch.stack([c.run(model, TOKENS)[:, :, 0].mean() for c in cells])
    assert_close(base.evaluate(cells), expected, rtol=0, atol=2e-5)
    assert base.paths["read_only"] == ("off: plain metric reads the full logits: it reads every position (the "
                                       "read-only head computes one position per row)")


def test_gradients_flow_through_stacked_cells() -> None:
    model = gpt2_style()
    name = site("resid_pre", 1)
    act = hooks.cache(name).collect(model, TOKENS)[name]
    points = (act.unsqueeze(0) * torch.tensor([0.5, 1.0]).view(2, 1, 1, 1)).requires_grad_(True)
    base = BaseRun(model, as_batch(model, TOKENS), METRIC, [name], EngineOptions(grad=True))
    values = base.evaluate([hooks.patch(name, points[i]) for i in range(2)])
    (grad,) = torch.autograd.grad(values.sum(), [points])
    ref = points.detach().clone().requires_grad_(True)
    total = sum(METRIC.per_prompt(hooks.patch(name, ref[i]).run(model, TOKENS)).sum() for i in range(2))
    (expected,) = torch.autograd.grad(total, [ref])
    assert_close(grad, expected, rtol=1e-4, atol=1e-6)
