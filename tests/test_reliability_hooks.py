"""Reliability probes (issue 10): hook points, names, non-finite edits, interrupts.

Selections (positions, heads, neurons, rows) are in ``test_reliability_selections.py``.

Each test is one probe: the input, and either the exact expected behaviour (against a plain
TransformerLens run with hand-written hooks) or the typed error and its message. "Before
any forward pass" is checked with ``no_forward`` (a model whose forward raises).
"""

import inspect
import re
from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import ToyMLP, bridge_llama, no_hooks_attached
from tests.reliability import no_forward, tiny, tl_run
from tl_interp import hooks, site
from tl_interp.errors import HookNameError, InputError, SelectionError, ShapeError

TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))
_BRIDGE: list[Any] = []


def bridge(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not _BRIDGE:
        _BRIDGE.append(bridge_llama(str(tmp_path_factory.mktemp("bridge"))))
    return _BRIDGE[0]


# -- issue item 1: hook points that exist but never fire -----------------------------------
@pytest.mark.parametrize("make, switch", [
    (lambda: hooks.zero_ablate(site("result", 0), heads=0), "use_attn_result"),  # probe 1: result w/o switch
    (lambda: hooks.zero_ablate(site("attn_in", 0)), "use_attn_in"),  # probe 1: attn_in w/o switch
    (lambda: hooks.zero_ablate("blocks.0.hook_q_input"), "use_split_qkv_input"),  # probe 1: q_input
    (lambda: hooks.zero_ablate("blocks.1.hook_k_input"), "use_split_qkv_input"),  # probe 1: k_input
    (lambda: hooks.add("blocks.0.hook_v_input", torch.ones(32)), "use_split_qkv_input"),  # probe 1: v_input
    (lambda: hooks.scale(site("mlp_in", 1), 2.0), "use_hook_mlp_in"),  # probe 1: mlp_in
])
def test_a_hook_point_behind_a_config_switch_is_refused_naming_the_switch(make: Any, switch: str) -> None:
    model = tiny(use_attn_result=False)
    with no_forward(model), pytest.raises(HookNameError, match=rf"never fires.*cfg\.{switch}=True.*set_{switch}"):
        make().run(model, TOKENS)


@pytest.mark.parametrize("kind, message", [
    ("mlp_out", "never fires on this model: the model is attention-only"),  # probe 1: mlp_out on attn-only
    ("mlp_in", "never fires on this model: the model is attention-only"),
    ("mlp_post", "no hook point 'blocks.0.mlp.hook_post'"),  # own probes: points the model doesn't have
    ("mlp_pre", "no hook point 'blocks.0.mlp.hook_pre'"),
    ("resid_mid", "no hook point 'blocks.0.hook_resid_mid'"),
])
def test_an_mlp_site_on_an_attention_only_model_is_refused(kind: str, message: str) -> None:
    model = tiny(attn_only=True, d_mlp=None, act_fn=None)
    with no_forward(model), pytest.raises(HookNameError, match=message):
        hooks.zero_ablate(site(kind, 0)).run(model, TOKENS)


def test_rotary_and_gated_only_sites_are_refused_on_other_models() -> None:
    # own probe: rot_q on learned positions, mlp_pre_linear on a plain MLP (TL omits both points)
    model = tiny()
    with no_forward(model):
        with pytest.raises(HookNameError, match="no hook point 'blocks.0.attn.hook_rot_q'"):
            hooks.zero_ablate(site("rot_q", 0)).validate(model)
        with pytest.raises(HookNameError, match="no hook point 'blocks.0.mlp.hook_pre_linear'"):
            hooks.zero_ablate(site("mlp_pre_linear", 0)).validate(model)


@pytest.mark.parametrize("study", ["sweep", "scan", "attribution"])
def test_studies_at_a_silent_site_fail_before_any_forward_pass(study: str) -> None:
    # probe 1: "studies at those sites fail late with a raw KeyError"
    model = tiny(use_attn_result=False)
    metric = ti.metrics.logit_diff(1, 2)
    run = {"sweep": lambda: ti.patching.sweep(model, TOKENS, TOKENS.flip(0), metric, site="result", progress=False),
           "scan": lambda: ti.ablation.scan(model, TOKENS, metric, site="result", n_boot=10, progress=False),
           "attribution": lambda: ti.patching.attribution(model, TOKENS, TOKENS.flip(0), metric, site="result",
                                                          progress=False)}[study]
    with no_forward(model), pytest.raises(HookNameError, match="use_attn_result"):
        run()


def test_with_the_switch_on_the_result_hook_edits_exactly_that_head() -> None:
    # probe 1, correct behaviour: with use_attn_result the same edit is exact
    model = tiny()  # use_attn_result=True
    head_0 = lambda a, hook: torch.cat([a[:, :, :1] * 0, a[:, :, 1:]], 2)  # noqa: E731
    expected = tl_run(model, TOKENS, [(site("result", 0), head_0)])
    assert_close(hooks.zero_ablate(site("result", 0), heads=0).run(model, TOKENS), expected, rtol=0, atol=0)


def test_a_name_filter_skips_points_that_never_fire_and_edits_the_rest() -> None:
    # probe 1: "a predicate means wherever it applies"
    model = tiny(use_attn_result=False)
    iv = hooks.zero_ablate(lambda n: n.endswith(("attn.hook_result", "0.hook_resid_pre")))
    expected = tl_run(model, TOKENS, [(site("resid_pre", 0), lambda a, hook: a * 0)])
    assert_close(iv.run(model, TOKENS), expected, rtol=0, atol=0)


def test_a_name_filter_matching_only_silent_points_is_refused() -> None:
    model = tiny(use_attn_result=False)
    with no_forward(model), pytest.raises(HookNameError, match="never fires"):
        hooks.zero_ablate(lambda n: n.endswith("attn.hook_result")).run(model, TOKENS)


def test_on_a_bridge_a_point_that_never_fired_is_an_error_after_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    # probe 1 on TransformerBridge: silent points are only known after a forward pass
    model = bridge(tmp_path_factory)
    tokens = torch.randint(4, 100, (2, 5))
    message = r"zero-ablate at blocks\.0\.attn\.hook_result: the hook point\(s\).*never fired"
    with pytest.raises(HookNameError, match=message):
        hooks.zero_ablate("blocks.0.attn.hook_result").run(model, tokens)
    assert no_hooks_attached(model)


def test_on_a_bridge_applied_reports_a_point_that_never_fired(tmp_path_factory: pytest.TempPathFactory) -> None:
    # own probe: the same under .applied() (the check runs when the block exits)
    model = bridge(tmp_path_factory)
    with pytest.raises(HookNameError, match="never fired"):
        with hooks.zero_ablate("blocks.1.attn.hook_result").applied(model):
            model(torch.randint(4, 100, (2, 5)))
    assert no_hooks_attached(model) and "forward" not in model.__dict__


# -- issue item 5: TransformerBridge aliases --------------------------------------------------
def test_bridge_aliases_in_a_list_are_edited_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    # probe 5: blocks.1.hook_in and blocks.1.hook_resid_pre name one HookPoint
    model = bridge(tmp_path_factory)
    tokens = torch.randint(4, 100, (2, 5))
    v = torch.randn(32)
    once = tl_run(model, tokens, [("blocks.1.hook_resid_pre", lambda a, hook: a + v)])
    both = hooks.add(["blocks.1.hook_in", "blocks.1.hook_resid_pre"], v).run(model, tokens)
    assert_close(both, once, rtol=0, atol=0)


def test_bridge_aliases_matched_by_a_filter_are_edited_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    # probe 5 with a predicate
    model = bridge(tmp_path_factory)
    tokens = torch.randint(4, 100, (2, 5))
    once = tl_run(model, tokens, [("blocks.1.hook_resid_pre", lambda a, hook: a * 3)])
    iv = hooks.scale(lambda n: n in ("blocks.1.hook_in", "blocks.1.hook_resid_pre"), 3.0)
    assert_close(iv.run(model, tokens), once, rtol=0, atol=0)


def test_a_cache_keeps_every_alias(tmp_path_factory: pytest.TempPathFactory) -> None:
    # probe 5, reads: a cache may hold both names of one point (nothing is applied twice)
    model = bridge(tmp_path_factory)
    store = hooks.cache(["blocks.1.hook_in", "blocks.1.hook_resid_pre"]).collect(model, torch.randint(4, 100, (2, 5)))
    assert set(store) == {"blocks.1.hook_in", "blocks.1.hook_resid_pre"}
    assert torch.equal(store["blocks.1.hook_in"], store["blocks.1.hook_resid_pre"])


def test_a_name_listed_twice_is_edited_once() -> None:
    # own probe: duplicated names
    model = tiny()
    v = torch.randn(32)
    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), lambda a, hook: a + v)])
    assert_close(hooks.add([site("resid_pre", 1)] * 2, v).run(model, TOKENS), expected, rtol=0, atol=0)


# -- issue item 10: non-finite numbers and dtype overflow ----------------------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("make", [
    lambda: hooks.add(site("resid_pre", 0), torch.full((32,), NAN)),  # probe 10: NaN vector
    lambda: hooks.add(site("resid_pre", 0), torch.ones(32), scale=INF),  # probe 10: inf multiplier
    lambda: hooks.scale(site("resid_pre", 0), NAN),  # probe 10: NaN scale
    lambda: hooks.scale(site("resid_pre", 0), torch.tensor([1.0, INF])),  # own probe: tensor scale
    lambda: hooks.set_component(site("resid_pre", 0), torch.ones(32), NAN),  # probe 10: set_component value
    lambda: hooks.set_component(site("resid_pre", 0), torch.full((32,), INF), 1.0),  # own: its direction
    lambda: hooks.mean_ablate(site("resid_pre", 0), torch.full((32,), NAN)),  # own probe: mean
    lambda: hooks.resample_ablate(site("resid_pre", 0), torch.full((3, 5, 32), INF)),  # own: reference
    lambda: hooks.clamp_features(0, NAN),  # probe 10: clamp value
    lambda: hooks.scale_features(0, INF),  # own probe
    lambda: hooks.add_features(torch.tensor([0.0, NAN])),  # own probe
    lambda: hooks.project_out(site("resid_pre", 0), torch.full((32,), NAN)),  # own probe: basis
])
def test_non_finite_numbers_are_refused_when_the_hook_is_built(make: Any) -> None:
    with pytest.raises(InputError, match="non-finite"):
        make().validate(tiny())  # feature edits refuse when made; hooks at the latest when bound


def test_nan_in_source_activations_is_refused_before_any_forward_pass() -> None:
    # own probe: NaN in source activations
    model = tiny()
    source = torch.randn(2, 5, 32)
    source[1, 2, 3] = NAN
    message = "patch at blocks.0.hook_resid_pre: the source activation has non-finite"
    with no_forward(model), pytest.raises(InputError, match=message):
        hooks.patch(site("resid_pre", 0), source).run(model, TOKENS)


def test_a_vector_that_overflows_float16_is_refused_before_any_forward_pass() -> None:
    # probe 10: "an fp16 model turns a large vector into inf"
    model = tiny(dtype=torch.float16)
    with no_forward(model), pytest.raises(InputError, match=r"1e\+05, beyond the largest torch.float16 value"):
        hooks.add(site("resid_pre", 1), torch.ones(32) * 1e5).run(model, TOKENS)


@pytest.mark.parametrize("make", [
    lambda: hooks.scale(site("resid_pre", 1), 1e6),  # own probe: a factor that overflows fp16
    lambda: hooks.set_component(site("resid_pre", 1), torch.ones(32), 1e6),
    lambda: hooks.mean_ablate(site("resid_pre", 1), torch.full((32,), 1e6)),
    lambda: hooks.patch(site("resid_pre", 1), torch.full((2, 5, 32), 1e6)),
])
def test_an_edit_that_overflows_float16_at_run_time_is_an_error_not_inf(make: Any) -> None:
    model = tiny(dtype=torch.float16)
    with pytest.raises(InputError, match="wrote non-finite values .* into a torch.float16 activation"):
        make().run(model, TOKENS)
    assert no_hooks_attached(model)


def test_bfloat16_holds_a_large_vector_exactly_as_transformer_lens_adds_it() -> None:
    # own probe: bfloat16 has float32's range: the same vector is fine there
    model = tiny(dtype=torch.bfloat16)
    v = torch.ones(32) * 1e5
    expected = tl_run(model, TOKENS, [(site("resid_pre", 1), lambda a, hook: a + v.to(a.dtype))])
    out = hooks.add(site("resid_pre", 1), v).run(model, TOKENS)
    assert bool(out.isfinite().all())
    assert_close(out, expected, rtol=0, atol=0)


def test_a_scale_past_float32_is_refused() -> None:
    # own probe: huge scales
    with no_forward(tiny()), pytest.raises(InputError, match="non-finite|beyond the largest"):
        hooks.add(site("resid_pre", 0), torch.ones(32), scale=1e39).run(tiny(), TOKENS)


# -- names ------------------------------------------------------------------------------
def test_a_typo_in_a_hook_name_suggests_the_right_one() -> None:
    with no_forward(tiny()), pytest.raises(HookNameError, match="did you mean 'blocks.0.hook_resid_pre'"):
        hooks.zero_ablate("blocks.0.hook_resid_pr").run(tiny(), TOKENS)


def test_an_empty_list_of_names_and_a_filter_matching_nothing_are_refused() -> None:
    # own probes: name filters matching nothing, empty lists of names
    with no_forward(tiny()):
        with pytest.raises(HookNameError, match="empty list of hook names"):
            hooks.zero_ablate([]).run(tiny(), TOKENS)
        with pytest.raises(HookNameError, match="matches none of the model's"):
            hooks.zero_ablate(lambda n: n.endswith("hook_nothing")).run(tiny(), TOKENS)


# -- custom modules ------------------------------------------------------------------------
def test_heads_on_a_custom_modules_site_is_refused_before_any_forward_pass() -> None:
    # unclear error: "heads= on a custom module's site reporting the wrong axes"
    model = ToyMLP()
    pairs = torch.randint(0, 12, (3, 2))
    with no_forward(model), pytest.raises(SelectionError, match="does not know the layout of 'hook_hidden'"):
        hooks.zero_ablate("hook_hidden", heads=0).run(model, pairs)


def test_neurons_on_a_custom_modules_site_edit_the_last_axis() -> None:
    # own probe, correct behaviour: neurons= on a custom site is its feature axis
    model = ToyMLP()
    pairs = torch.randint(0, 12, (3, 2))

    def zero_3(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[..., 3] = 0
        return out

    expected = tl_run(model, pairs, [("hook_hidden", zero_3)])
    assert_close(hooks.zero_ablate("hook_hidden", neurons=3).run(model, pairs), expected, rtol=0, atol=0)


def test_a_source_of_another_length_is_refused_without_talking_about_generation() -> None:
    # own probe: a patch source cached on a longer run is not silently cut to the activation
    model = tiny()
    message = r"covers 6 positions; the activation is at positions 0\.\.4 \(give the source"
    with pytest.raises(ShapeError, match=message):
        hooks.patch(site("resid_pre", 1), torch.randn(2, 6, 32)).run(model, TOKENS)
    assert no_hooks_attached(model)


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


# -- documentation -------------------------------------------------------------------------
def test_hook_docstrings_name_only_functions_that_exist() -> None:
    # unclear error: "the mean_ablate docstring names a function that doesn't exist"
    missing = []
    for name in hooks.__all__:
        doc = inspect.getdoc(getattr(hooks, name)) or ""
        for ref in re.findall(r"\bti\.([a-z_]+(?:\.[A-Za-z_]+)*)\(", doc):
            obj: Any = ti
            for part in ref.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"hooks.{name}: ti.{ref}")
    assert not missing, missing
