"""Site names, layouts, and name resolution with suggestions."""

from typing import Any, get_args

import pytest
import torch

import tl_interp as ti
from tests.conftest import _cfg, _hooked, llama_style
from tests.reliability import no_forward, tiny
from tl_interp import HookNameError, hooks, site
from tl_interp._types import SiteKind
from tl_interp.sites import _TEMPLATES, hook_names, resolve, site_info


def test_site_kinds_and_templates_agree() -> None:
    assert set(get_args(SiteKind)) == set(_TEMPLATES)


def test_every_site_kind_names_a_real_hook_point() -> None:
    full = _hooked()(_cfg(use_split_qkv_input=True, use_hook_mlp_in=True, gated_mlp=True,
                                  positional_embedding_type="rotary", rotary_dim=8))
    names = set(full.hook_dict)
    for kind, template in _TEMPLATES.items():
        name = site(kind, 1) if "{layer}" in template else site(kind)
        if kind == "pos_embed":  # rotary models have no learned positions
            continue
        assert name in names, name


def test_site_spells_transformer_lens_names() -> None:
    assert site("resid_pre", 3) == "blocks.3.hook_resid_pre"
    assert site("pattern", 0) == "blocks.0.attn.hook_pattern"
    assert site("mlp_post", 2) == "blocks.2.mlp.hook_post"
    assert site("ln_final_scale") == "ln_final.hook_scale"


@pytest.mark.parametrize("call, message", [
    (lambda: site("resid_pr", 0), r"unknown site kind 'resid_pr'; did you mean 'resid_pre'"),
    (lambda: site("z"), r"site\('z'\) needs a layer: site\('z', layer\)"),
    (lambda: site("embed", 2), r"site\('embed'\) is model-level and takes no layer"),
])
def test_site_errors_say_what_to_write(call, message: str) -> None:
    with pytest.raises(HookNameError, match=message):
        call()


def test_a_negative_layer_is_a_selection_error() -> None:
    with pytest.raises(ti.SelectionError, match=r"site\('z', -1\): layer -1 is out of range"):
        site("z", -1)
    with pytest.raises(ti.errors.TypeCheckError, match=r"ti\.site: layer is 1\.5"):
        site("z", 1.5)  # type: ignore[arg-type]


def test_resolve_suggests_the_closest_names() -> None:
    model = llama_style()
    with pytest.raises(HookNameError, match=r"did you mean 'blocks.1.attn.hook_z'"):
        resolve(model, "blocks.1.attn.hook_zz")
    with pytest.raises(HookNameError, match=r"no hook point 'blocks.7.hook_resid_pre'"):
        resolve(model, ["blocks.0.hook_resid_pre", "blocks.7.hook_resid_pre"])
    with pytest.raises(HookNameError, match=r"an empty list of hook names selects nothing"):
        resolve(model, [])


def test_resolve_filters_in_model_order() -> None:
    assert resolve(llama_style(), lambda n: n.endswith("hook_resid_post")) == (
        "blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


def test_site_info_knows_gqa_key_value_heads() -> None:
    model = llama_style()
    assert site_info(model, site("k", 0)).sizes == {"head_index": 2, "d_head": 8}
    assert site_info(model, site("z", 0)).sizes == {"head_index": 4, "d_head": 8}
    assert site_info(model, site("pattern", 1)).axes == ("batch", "head_index", "query_pos", "key_pos")
    assert site_info(model, site("mlp_post", 1)).sizes == {"d_mlp": 64}


def test_hook_names_rejects_a_plain_module() -> None:
    import torch

    with pytest.raises(HookNameError, match="has no hook_dict"):
        hook_names(torch.nn.Linear(2, 2))


# -- issue 10's reliability probes (formerly tests/test_reliability_hooks.py), beside the module they test --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


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


# -- names ------------------------------------------------------------------------------
def test_a_typo_in_a_hook_name_suggests_the_right_one() -> None:
    with no_forward(tiny()), pytest.raises(HookNameError, match="did you mean 'blocks.0.hook_resid_pre'"):
        hooks.zero_ablate("blocks.0.hook_resid_pr").run(tiny(), TOKENS)
