"""Interventions: identity, composition, printing, hook hygiene, validation before running."""

import dataclasses
from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import Case, ToyMLP, llama_style, no_hooks_attached
from tests.reliability import tiny
from tl_interp import HookNameError, Intervention, SelectionError, ShapeError, hooks, site


def test_identity_intervention_leaves_logits_bit_identical(case: Case) -> None:
    assert torch.equal(Intervention.identity().run(case.model, case.inputs), case.model(case.inputs))


def test_caching_everything_matches_run_with_cache_and_changes_nothing(case: Case) -> None:
    everything = hooks.cache(lambda name: True)
    assert torch.equal(everything.run(case.model, case.inputs), case.model(case.inputs))
    _, reference = case.model.run_with_cache(case.inputs)
    for name in reference.keys():
        assert torch.equal(everything[name], reference[name]), name


def test_patch_clean_into_clean_leaves_clean_logits(tcase: Case) -> None:
    clean = hooks.cache(lambda name: name.endswith(("hook_resid_pre", "hook_z", "hook_attn_out")))
    clean_logits = clean.run(tcase.model, tcase.inputs)
    patched = hooks.patch(lambda name: name.endswith(("hook_resid_pre", "hook_z", "hook_attn_out")), clean.store)
    assert torch.equal(patched.run(tcase.model, tcase.inputs), clean_logits)


def test_composition_runs_hooks_in_order_at_the_same_point(tcase: Case) -> None:
    width = tcase.model.cfg.d_model
    v = torch.ones(width)
    after = hooks.cache(tcase.resid)
    (hooks.add(tcase.resid, v) + hooks.scale(tcase.resid, 0.0) + hooks.add(tcase.resid, 2 * v) + after).run(
        tcase.model, tcase.inputs)
    assert torch.equal(after[tcase.resid], torch.full_like(after[tcase.resid], 2.0))


def test_sum_of_interventions_composes_and_prints_each_step() -> None:
    parts = [hooks.zero_ablate(site("z", 0), heads=i) for i in range(3)]
    iv = sum(parts)
    assert isinstance(iv, Intervention) and len(iv) == 3
    assert str(iv).splitlines() == [
        "Intervention (3 hooks):",
        "  1. zero-ablate (heads 0) at blocks.0.attn.hook_z",
        "  2. zero-ablate (heads 1) at blocks.0.attn.hook_z",
        "  3. zero-ablate (heads 2) at blocks.0.attn.hook_z",
    ]


def test_interventions_are_immutable() -> None:
    iv = hooks.zero_ablate(site("resid_pre", 0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        iv.hooks = ()  # type: ignore[misc]
    combined = iv + iv
    assert len(iv) == 1 and len(combined) == 2


def test_bind_gives_transformer_lens_fwd_hooks(tcase: Case) -> None:
    iv = hooks.zero_ablate(tcase.heads, heads=[0, 2], positions=-1) + hooks.scale(tcase.resid, 1.5)

    def zero_heads(act: torch.Tensor, hook: Any) -> torch.Tensor:  # the same edits, written by hand
        act = act.clone()
        act[:, -1, [0, 2]] = 0.0
        return act

    def scale(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return act * 1.5

    by_hand = tcase.model.run_with_hooks(tcase.inputs, fwd_hooks=[(tcase.heads, zero_heads), (tcase.resid, scale)])
    assert torch.equal(tcase.model.run_with_hooks(tcase.inputs, fwd_hooks=iv.bind(tcase.model)), by_hand)
    assert torch.equal(iv.run(tcase.model, tcase.inputs), by_hand)
    assert iv.bind(tcase.model)[0][1].__name__ == "_zero_ablate"


class Boom(Exception):
    pass


def test_no_hook_remains_after_an_exception_inside_applied(case: Case) -> None:
    iv = hooks.zero_ablate(case.resid) + hooks.cache(lambda name: True)
    with pytest.raises(Boom):
        with iv.applied(case.model):
            case.model(case.inputs)
            raise Boom()
    assert no_hooks_attached(case.model)


def test_no_hook_remains_after_an_exception_inside_run(case: Case) -> None:
    def explode(act: torch.Tensor, hook: Any) -> None:
        raise Boom()

    iv = hooks.zero_ablate(case.resid) + Intervention.single(case.resid, explode, "explode")
    with pytest.raises(Boom):
        iv.run(case.model, case.inputs)
    assert no_hooks_attached(case.model)


def test_no_hook_remains_after_keyboard_interrupt() -> None:
    model = llama_style()
    with pytest.raises(KeyboardInterrupt):
        with hooks.scale(site("resid_pre", 1), 2.0).applied(model):
            raise KeyboardInterrupt
    assert no_hooks_attached(model)


def test_a_users_own_hooks_are_left_in_place(case: Case) -> None:
    calls: list[str] = []
    point = case.model.hook_dict[case.resid]
    point.add_hook(lambda act, hook: calls.append("mine"))
    try:
        hooks.zero_ablate(case.resid).run(case.model, case.inputs)
        assert len(point.fwd_hooks) == 1
        case.model(case.inputs)
        assert calls == ["mine", "mine"]
    finally:
        case.model.reset_hooks(including_permanent=True)


def test_hooks_stay_attached_for_generate_and_backward() -> None:
    model = llama_style()
    tokens = torch.randint(1, 61, (1, 4))
    iv = hooks.add(site("resid_post", 1), torch.randn(32), scale=20.0)
    with iv.applied(model):
        steered = model.generate(tokens, max_new_tokens=4, do_sample=False, verbose=False, stop_at_eos=False)
    with model.hooks(fwd_hooks=iv.bind(model)):
        reference = model.generate(tokens, max_new_tokens=4, do_sample=False, verbose=False, stop_at_eos=False)
    assert torch.equal(steered, reference)
    assert no_hooks_attached(model)


def test_cache_captures_gradients_like_a_backward_hook() -> None:
    model = llama_style()
    tokens = torch.randint(1, 61, (2, 5))
    name = site("resid_mid", 0)
    grads = hooks.cache(name, gradients=True)
    with grads.applied(model):
        model(tokens, return_type="loss").backward()
    expected: dict[str, torch.Tensor] = {}
    model.zero_grad()
    logits = model.run_with_hooks(tokens, return_type="loss", bwd_hooks=[(name, lambda g, hook: expected.update(g=g))])
    logits.backward()
    model.reset_hooks()
    assert_close(grads.store.gradients[name], expected["g"])


# -- validation happens before any forward pass ---------------------------------------

def _forward_counter(model: Any) -> list[int]:
    count: list[int] = []
    first = next(iter(model.hook_dict.values()))
    first.add_hook(lambda act, hook: count.append(1))
    return count


@pytest.mark.parametrize("make_iv, error, message", [
    (lambda: hooks.zero_ablate("blocks.0.hook_resid_pr"), HookNameError,
     r"no hook point 'blocks.0.hook_resid_pr'; did you mean 'blocks.0.hook_resid_pre'"),
    (lambda: hooks.cache(lambda n: n.endswith("hook_residual")), HookNameError,
     r"the name filter <lambda> matches none of the model's \d+ hook points"),
    (lambda: hooks.zero_ablate(site("z", 1), heads=[4]), SelectionError,
     r"zero_ablate at blocks.1.attn.hook_z: head 4 is out of range; the site has 4 heads"),
    (lambda: hooks.zero_ablate(site("k", 1), heads=2), SelectionError,
     r"key-value head 2 is out of range; the site has 2 key-value heads"),
    (lambda: hooks.add(site("resid_post", 1), torch.randn(31)), ShapeError,
     r"add at blocks.1.hook_resid_post: the vector has 31 entries, the site has d_model=32"),
    (lambda: hooks.zero_ablate(site("resid_pre", 0), heads=1), SelectionError,
     r"heads= needs a head-indexed site"),
    (lambda: hooks.zero_ablate(site("mlp_post", 0), neurons=[64]), SelectionError,
     r"neuron 64 is out of range; the site has 64 neurons"),
    (lambda: hooks.zero_ablate(site("resid_pre", 0), positions=9), SelectionError,
     r"position 9 is out of range; the site has 7 positions"),
    (lambda: hooks.project_out(site("resid_pre", 0), torch.randn(2, 16)), ShapeError,
     r"project_out at blocks.0.hook_resid_pre: the basis has 16 entries, the site has d_model=32"),
])
def test_bad_input_fails_before_the_first_forward_pass(make_iv: Any, error: type, message: str) -> None:
    model = llama_style()
    count = _forward_counter(model)
    with pytest.raises(error, match=message):
        make_iv().run(model, torch.randint(1, 61, (2, 7)))
    assert count == [] and all(not hp.fwd_hooks for name, hp in model.hook_dict.items() if name != "hook_embed")


def test_positions_on_a_site_without_positions_is_an_error_naming_the_hook() -> None:
    toy, pairs = ToyMLP(), torch.randint(0, 12, (5, 2))
    with pytest.raises(SelectionError, match=r"zero_ablate at hook_hidden: positions= needs a site with a position axis"):
        hooks.zero_ablate("hook_hidden", positions=0).run(toy, pairs)
    assert no_hooks_attached(toy)


def test_wrong_width_on_a_custom_module_fails_with_the_hook_named() -> None:
    # A custom module's config does not fix widths, so the check runs when the activation arrives.
    toy, pairs = ToyMLP(), torch.randint(0, 12, (5, 2))
    with pytest.raises(ShapeError, match=r"add at hook_hidden: the vector has shape \(5,\)"):
        hooks.add("hook_hidden", torch.randn(5)).run(toy, pairs)
    assert no_hooks_attached(toy)


def test_selection_values_are_validated_when_built() -> None:
    for _ in range(10):  # every item is checked, not a random one
        with pytest.raises(SelectionError, match=r"selection lists hold ints; got 1.5 in \[0, 1.5\]"):
            hooks.zero_ablate(site("z", 0), heads=[0, 1.5])  # type: ignore[list-item]
    with pytest.raises(SelectionError, match="a selection tensor must be bool or integer"):
        hooks.zero_ablate(site("z", 0), heads=torch.tensor([0.0, 1.0]))
    with pytest.raises(SelectionError, match="cannot be a bool"):
        hooks.zero_ablate(site("z", 0), heads=True)


# -- issue 10's reliability probes (formerly tests/test_reliability_hooks.py), beside the module they test --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


# -- interrupts -----------------------------------------------------------------------------
def test_keyboard_interrupt_mid_run_leaves_no_hooks_and_the_forward_restored() -> None:
    # own probe: KeyboardInterrupt mid-run
    model = tiny()

    def interrupt(act: torch.Tensor, hook: Any) -> torch.Tensor:
        raise KeyboardInterrupt

    iv = hooks.zero_ablate(site("resid_pre", 0)) + ti.Intervention.single(site("resid_pre", 1), interrupt)
    with pytest.raises(KeyboardInterrupt):
        iv.run(model, TOKENS)
    assert no_hooks_attached(model) and "forward" not in model.__dict__


def test_keyboard_interrupt_inside_a_sweep_leaves_no_hooks() -> None:
    # own probe: interrupted during the engine's stacked passes
    model = tiny()
    calls = []

    def metric(logits: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 6:  # 1: checked on dummy logits, 2: the base run, 3-5: its trace, 6: the first cell
            raise KeyboardInterrupt
        return logits[:, -1, 1].mean()

    with pytest.raises(KeyboardInterrupt):
        ti.patching.sweep(model, TOKENS, TOKENS.flip(0), metric, progress=False)
    assert no_hooks_attached(model) and "forward" not in model.__dict__


def test_generate_on_a_model_that_is_not_a_hooked_transformer_is_refused_under_hooks() -> None:
    # Only HookedTransformer's key-value-cached generate has its steps checked against the hooks'
    # positions and sources; another model's generate (TL 4's Bridge) is refused before it runs.
    class WithGenerate(ToyMLP):
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("generation ran unchecked")

    toy = WithGenerate()
    with hooks.scale("hook_hidden", 2.0).applied(toy):
        toy(torch.randint(0, 12, (3, 2)))  # forward calls still run under the hooks
        with pytest.raises(ti.errors.UnsupportedError, match="needs TransformerLens's HookedTransformer: WithGenerate is not one.*Intervention.run"):
            toy.generate(torch.zeros(1, 2, dtype=torch.long))
    assert "generate" not in toy.__dict__  # restored: the class's own generate again
