"""Site names, layouts, and name resolution with suggestions."""

from typing import get_args

import pytest

from tests.conftest import _cfg, _hooked, llama_style
from tl_interp import HookNameError, site
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
    (lambda: site("z", -1), r"layer must be a non-negative int"),
])
def test_site_errors_say_what_to_write(call, message: str) -> None:
    with pytest.raises(HookNameError, match=message):
        call()


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
