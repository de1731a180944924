"""Every TransformerLens internal the engine relies on, checked against TL's own forward pass.

If a TransformerLens release changes one of them, the test of that internal fails here (and
``compat.usable`` turns the fast path off, so studies still give exact values, more slowly).
"""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import gpt2_style, llama_style
from tl_interp import hooks
from tl_interp import compat
from tl_interp.errors import FastPathWarning


@pytest.fixture(params=["gpt2", "llama_gqa"])
def model(request: pytest.FixtureRequest) -> Any:
    return {"gpt2": gpt2_style, "llama_gqa": llama_style}[request.param]()


TOKENS = torch.randint(1, 61, (3, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("feature", ["kv_cache", "forward", "split_qkv", "head"])
def test_every_guard_passes_on_the_installed_transformer_lens(feature: str) -> None:
    assert compat.usable(feature), compat._reason(feature)


def test_the_version_guard_refuses_untested_releases() -> None:
    assert compat._version_reason("3.9.0") is None
    assert "outside the range" in compat._version_reason("4.0.0")
    assert "outside the range" in compat._version_reason("2.16.1")


def test_the_head_is_the_end_of_the_models_own_forward(model: Any) -> None:
    resid = model(TOKENS, stop_at_layer=model.cfg.n_layers)
    assert_close(compat.head(model, resid), model(TOKENS), rtol=0, atol=1e-6)
    weight = compat.unembed_weight_of(model)  # the same product on a copy made once
    assert torch.equal(compat.head(model, resid, unembed_weight=weight), compat.head(model, resid))


def test_a_frozen_prefix_cache_gives_the_suffix_of_the_full_forward(model: Any) -> None:
    # the base run fills TL's cache; a pass from position 4 on against its frozen copy (3 copies
    # of the batch, starting mid-stack at layer 1) equals the full forward at positions 4..
    cache = compat.new_kv_cache(model, 3)
    full_resid = hooks.cache("blocks.1.hook_resid_pre")
    full = full_resid.run(model, TOKENS, past_kv_cache=cache, attention_mask=torch.ones_like(TOKENS))
    kv = compat.kv_entries(cache)
    prefix = compat.frozen_prefix_cache(model, kv, 4, 2, range(1, model.cfg.n_layers))
    start = full_resid["blocks.1.hook_resid_pre"][:, 4:].repeat(2, 1, 1)
    suffix = model(start, start_at_layer=1, past_kv_cache=prefix)
    assert compat.call_offset({"past_kv_cache": prefix}) == 4
    assert_close(suffix, full[:, 4:].repeat(2, 1, 1), rtol=0, atol=1e-5)
    assert_close(model(TOKENS), full, rtol=0, atol=1e-5)  # a cache-filling forward is the plain forward


def test_the_final_block_at_the_last_position_equals_the_full_block(model: Any) -> None:
    last = model.cfg.n_layers - 1
    name = f"blocks.{last}.hook_resid_pre"
    resid = hooks.cache(name)
    resid.run(model, TOKENS)
    out = compat.final_block_last(model, resid[name], None)
    full = model.blocks[last](resid[name])
    assert_close(out[:, 0], full[:, -1], rtol=0, atol=1e-5)
    assert compat.final_block_reason(model) is None


def test_hook_points_the_config_never_fires_are_named() -> None:
    model = gpt2_style()
    model.cfg.use_attn_result = False
    reason = compat.silent_reason(model, "blocks.0.attn.hook_result")
    assert reason is not None and "use_attn_result" in reason
    assert compat.silent_reason(model, "blocks.0.hook_resid_pre") is None


def test_a_failed_guard_warns_once_and_studies_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    model = gpt2_style()
    clean = TOKENS
    corrupted = clean.clone()
    corrupted[:, 3] = 5
    metric = ti.metrics.logit_diff(torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]))
    fast = ti.patching.sweep(model, clean, corrupted, metric, progress=False)
    monkeypatch.setattr(compat, "tl_version", lambda: "9.0.0")  # an untested TransformerLens
    compat._reason.cache_clear()
    compat._warn_once.cache_clear()
    try:
        with pytest.warns(FastPathWarning, match="outside the range"):
            slow = ti.patching.sweep(model, clean, corrupted, metric, progress=False)
    finally:
        compat._reason.cache_clear()
        compat._warn_once.cache_clear()
    assert slow.provenance.settings["engine"]["mid_stack"].startswith("off")
    assert_close(slow.values, fast.values, rtol=0, atol=1e-5)


def test_receiver_hooks_fire_each_heads_own_inputs_and_are_switched_off_again() -> None:
    model = llama_style()  # grouped-query: 4 query heads, 2 key-value heads
    tokens = torch.tensor([[1, 2, 3, 4]])
    plain = model(tokens)
    with compat.receiver_hooks(model, split_qkv=True, mlp_in=True, ungroup=True):
        logits, cache = model.run_with_cache(tokens)
        assert cache["blocks.1.hook_k_input"].shape == (1, 4, 4, 32)  # one key input per query head
        assert cache["blocks.1.attn.hook_k"].shape[2] == 4 and "blocks.1.hook_mlp_in" in cache
        torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)  # the same function, more hook points
    assert not (model.cfg.use_split_qkv_input or model.cfg.use_hook_mlp_in
                or model.cfg.ungroup_grouped_query_attention)
