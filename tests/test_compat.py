"""Every outside library's internal tl_interp relies on, checked by behaviour (the engine's
against TL's own forward pass), and a scan that nothing outside ``tl_interp.compat`` uses one.

If a TransformerLens release changes one of them, the test of that internal fails here (and
``compat.usable`` turns the fast path off, so studies still give exact values, more slowly;
an internal with no exact fallback refuses to run, ``compat.require``).
"""

import ast
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor
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


@pytest.mark.hooked  # the fast paths' internals are HookedTransformer's
@pytest.mark.parametrize("feature", ["kv_cache", "forward", "split_qkv", "head"])
def test_every_guard_passes_on_the_installed_transformer_lens(feature: str) -> None:
    assert compat.usable(feature), compat._guard.reason(feature)


def test_the_version_guard_refuses_untested_releases() -> None:
    assert compat._guard.version_reason("3.9.0") is None
    assert "outside the range" in compat._guard.version_reason("4.0.0")
    assert "outside the range" in compat._guard.version_reason("2.16.1")


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
    monkeypatch.setattr(compat._guard, "tl_version", lambda: "9.0.0")  # an untested TransformerLens
    compat._guard.reason.cache_clear()
    compat._guard._warn_once.cache_clear()
    try:
        with pytest.warns(FastPathWarning, match="outside the range"):
            slow = ti.patching.sweep(model, clean, corrupted, metric, progress=False)
    finally:
        compat._guard.reason.cache_clear()
        compat._guard._warn_once.cache_clear()
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


# -- the internals with no exact fallback (compat.require) --------------------------------------
@pytest.mark.parametrize("feature", ["hook_points", "forward_wrap",
                                     pytest.param("weight_conversions", marks=pytest.mark.hooked),
                                     pytest.param("sae_metadata", marks=pytest.mark.sae),
                                     pytest.param("sae_trainer", marks=pytest.mark.sae), "hub_offline"])
def test_every_internal_without_a_fallback_is_as_expected(feature: str) -> None:
    assert compat._guard.reason(feature) is None
    compat.require(feature, "the test")


def test_a_changed_internal_without_a_fallback_refuses_before_any_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    model = gpt2_style()
    calls: list[int] = []
    model.blocks[0].hook_resid_pre.add_hook(lambda act, hook: calls.append(1), dir="fwd")
    monkeypatch.setitem(compat._guard.NO_FALLBACK, "hook_points", lambda: "HookPoint.add_hook changed")
    compat._guard.reason.cache_clear()
    try:
        with pytest.raises(ti.errors.UnsupportedError, match=r"attaching a hook: .*HookPoint.add_hook changed.*"
                                                             r"constraints.txt"):
            hooks.zero_ablate("blocks.0.hook_resid_pre").run(model, TOKENS)
    finally:
        compat._guard.reason.cache_clear()
    assert calls == []  # refused before the forward pass, leaving nothing attached
    assert "forward" not in model.__dict__ and compat.hook_points.attached_hooks(model.blocks[0].hook_resid_pre) == 1
    model.reset_hooks()


def test_a_hook_added_and_removed_leaves_the_users_own_hooks_in_place() -> None:
    from tl_interp.compat.hook_points import add_forward_hook, attached_hooks, remove_forward_hook

    model = gpt2_style()
    point = model.hook_dict["blocks.0.hook_resid_post"]
    point.add_hook(lambda act, hook: act * 2, dir="fwd")  # the user's
    users = model(TOKENS)
    handle = add_forward_hook(point, lambda act, hook: act * 0)
    assert attached_hooks(point) == 2
    assert not torch.equal(model(TOKENS), users)
    remove_forward_hook(point, handle)
    assert attached_hooks(point) == 1
    assert torch.equal(model(TOKENS), users)  # the user's hook still runs, ours never again
    model.reset_hooks()
    assert attached_hooks(point) == 0


def test_an_instance_forward_wraps_that_model_only_and_generate_steps_pass_it() -> None:
    from tl_interp.compat.forward import install, installed_forward, uninstall

    model, other = gpt2_style(), gpt2_style()
    seen: list[int] = []
    original = model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        return original(*args, **kwargs)

    previous = install(model, forward, None)
    assert installed_forward(model) is forward and installed_forward(other) is None
    model(TOKENS)
    other(TOKENS)
    assert len(seen) == 1
    model.generate(TOKENS[:1, :3], max_new_tokens=3, use_past_kv_cache=False, verbose=False, do_sample=False,
                   stop_at_eos=False)
    assert len(seen) == 4  # one forward per generated token
    uninstall(model, previous)
    assert "forward" not in model.__dict__ and installed_forward(model) is None
    model.forward = forward  # a user's own instance forward is put back after a wrap
    previous = install(model, original, None)
    uninstall(model, previous)
    assert model.__dict__["forward"] is forward


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "LlamaForCausalLM"])
def test_tl_weight_conversions_reproduce_the_hugging_face_forward(arch: str) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from tl_interp.compat.convert import weight_converter
    from tl_interp.models._convert import hooked_config_dict

    torch.manual_seed(0)
    if arch == "GPT2LMHeadModel":
        hf = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=16, vocab_size=61,
                                        architectures=[arch]))
    else:
        hf = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=64, vocab_size=61,
                                          max_position_embeddings=16, architectures=[arch]))
    cfg = HookedTransformerConfig.from_dict({**hooked_config_dict(hf.config, model_name="tiny"), "device": "cpu",
                                             "dtype": torch.float32})
    model = HookedTransformer(cfg)
    with torch.no_grad():
        model.load_and_process_state_dict(weight_converter(arch)(hf.eval(), cfg), fold_ln=False,
                                          center_writing_weights=False, center_unembed=False)
        assert_close(model(TOKENS), hf(TOKENS).logits, rtol=0, atol=1e-4)


def test_the_activations_tl_lists_are_the_ones_its_mlps_run() -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from tl_interp.compat.convert import supported_activations

    names = supported_activations()
    assert {"gelu_new", "silu", "gelu", "relu"} <= names
    for act in ("gelu_new", "silu", "relu"):
        cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4, d_vocab=5, act_fn=act,
                                      d_mlp=16)
        assert HookedTransformer(cfg)(torch.tensor([[1, 2]])).shape == (1, 2, 5)


def test_an_saes_hook_point_and_positions_are_read_from_its_config() -> None:
    from sae_lens import TopKSAE, TopKSAEConfig

    from tl_interp.compat.sae import sae_hook_name, sae_metadata, sae_seqpos_slice
    from tl_interp.models.saes import load_sae

    meta = sae_metadata(hook_name="blocks.1.hook_resid_pre", seqpos_slice=[2, None])
    sae = TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=2, metadata=meta))
    assert sae_hook_name(sae) == "blocks.1.hook_resid_pre" and sae_seqpos_slice(sae) == (2, None)
    assert sae_hook_name(TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=2))) is None
    bundled = load_sae("ordinal-4l-res-l2")  # a bundled SAE, as sae-lens loads it from disk
    assert sae_hook_name(bundled) == "blocks.2.hook_resid_pre"
    assert sae_seqpos_slice(bundled) == (1, None)


def test_the_hub_is_offline_inside_and_restored_after_even_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    from tl_interp.compat.hub import hub_offline

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(RuntimeError, match="inside"), hub_offline():
        # what huggingface_hub and transformers consult before any request
        assert hub_constants.is_offline_mode() and os.environ["TRANSFORMERS_OFFLINE"] == "1"
        raise RuntimeError("inside")
    assert not hub_constants.is_offline_mode()
    assert "HF_HUB_OFFLINE" not in os.environ


# -- nothing outside compat/ touches the outside libraries' internals -------------------------------
PUBLIC = {"transformer_lens", "transformer_lens.hook_points", "transformer_lens.model_bridge", "transformer_lens.utils",
          "sae_lens"}
# internals that are no module: attribute chains, names and strings only compat/ may use
INTERNAL_NAMES = {"fwd_hooks", "bwd_hooks", "add_hook", "HF_HUB_OFFLINE", "SUPPORTED_ACTIVATIONS", "weight_conversions"}
# private attributes of other libraries that are not TransformerLens's or sae-lens's
OTHER_PRIVATE = {"_actor_id": "Ray's ActorID (distributed/_cluster.py)"}
PACKAGE = Path(ti.__file__).parent


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "compat" not in p.relative_to(PACKAGE).parts)


def _defined_names() -> set[str]:
    """Every name tl_interp defines or assigns (its own private names are not outside ones)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
    return names


def _outside_internals(path: Path, defined: set[str]) -> list[str]:
    text = path.read_text()
    found = [f"{path.name}: doctest imports {m}" for m in
             re.findall(r">>> .*?(?:from|import) ((?:transformer_lens|sae_lens)[\w.]*)", text) if m not in PUBLIC]
    found += [f"{path.name}: doctest reads {m}" for m in re.findall(
        rf"(?:>>>|\.\.\.) .*?(\.(?:{'|'.join(INTERNAL_NAMES)}|_forward_hooks|_forward_pre_hooks|metadata\.hook_name|"
        r"metadata\.seqpos_slice)\b)", text)]
    for node in ast.walk(ast.parse(text)):
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                   else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{path.name}:{node.lineno}: imports {m}" for m in modules
                  if m.split(".")[0] in ("transformer_lens", "sae_lens") and m not in PUBLIC]
        if isinstance(node, ast.Attribute):
            if node.attr in INTERNAL_NAMES:
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
            elif node.attr in ("hook_name", "seqpos_slice") and getattr(node.value, "attr", None) == "metadata":
                found.append(f"{path.name}:{node.lineno}: .metadata.{node.attr}")
            elif (node.attr.startswith("_") and not node.attr.startswith("__") and node.attr not in defined
                  and node.attr not in OTHER_PRIVATE):
                found.append(f"{path.name}:{node.lineno}: private .{node.attr}")
        if isinstance(node, (ast.Name, ast.Constant)) and (getattr(node, "id", None) in INTERNAL_NAMES
                                                           or getattr(node, "value", None) in INTERNAL_NAMES):
            found.append(f"{path.name}:{node.lineno}: {getattr(node, 'id', None) or node.value}")
    return found


def test_no_transformer_lens_or_sae_lens_internal_is_used_outside_compat() -> None:
    defined = _defined_names()
    found = [f for path in _sources() for f in _outside_internals(path, defined)]
    assert found == []


def test_the_internals_scan_finds_a_planted_internal(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text('"""\n>>> from sae_lens.saes.sae import SAEMetadata\n>>> point.fwd_hooks\n"""\n'
                       "from transformer_lens.pretrained import weight_conversions\n"
                       "def f(point, sae, module):\n"
                       "    point.fwd_hooks.clear()\n"
                       "    return sae.cfg.metadata.hook_name, module._forward_hooks, 'HF_HUB_OFFLINE'\n")
    found = _outside_internals(planted, _defined_names())
    assert len(found) == 7, found


def test_torch_function_switches_run_a_subclass_operation_as_on_a_plain_tensor() -> None:
    # the plain-metric probe (engine/reads.py) watches logits through these two switches
    from tl_interp.compat import torch_functions

    seen: list[str] = []

    class Watch(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", "?"))
            with torch_functions.as_plain_tensors():
                return func(*args, **(kwargs or {}))

    x = torch.arange(3.0).as_subclass(Watch)
    out = x * 2
    assert type(out) is torch.Tensor and torch.equal(out, torch.tensor([0.0, 2.0, 4.0])) and seen
    assert torch_functions.leaves(((x, [1]), {"k": x})) == [x, 1, x]
    assert torch_functions.usable()


# -- the fast paths' smaller internals, each against the model's own forward -------------------------
def test_the_head_at_some_columns_is_those_columns_of_the_whole_head(model: Any) -> None:
    resid = model(TOKENS, stop_at_layer=model.cfg.n_layers)
    columns = torch.tensor([3, 0, 17, 60])
    assert_close(compat.head_columns(model, resid, columns), model(TOKENS)[..., columns], rtol=0, atol=1e-6)


def test_a_hook_on_the_head_or_a_block_is_seen_and_its_removal_too() -> None:
    model = gpt2_style()
    assert compat.head_is_plain(model) and compat.blocks_are_plain(model, 0)
    handle = model.unembed.register_forward_hook(lambda module, args, out: out)
    assert not compat.head_is_plain(model) and compat.blocks_are_plain(model, 0)
    handle.remove()
    model.blocks[1].hook_resid_post.add_hook(lambda act, hook: act, dir="fwd")
    assert compat.head_is_plain(model) and compat.blocks_are_plain(model, 2) and not compat.blocks_are_plain(model, 1)
    model.reset_hooks()
    assert compat.blocks_are_plain(model, 0)


def _attention_writes(model: Any) -> tuple[Tensor, Tensor]:
    """Layer 0's ``hook_attn_out`` and the sum of its heads' results plus ``b_O``."""
    _, cache = model.run_with_cache(TOKENS)
    return cache["blocks.0.hook_attn_out"], cache["blocks.0.attn.hook_result"].sum(2) + model.blocks[0].attn.b_O


def test_heads_write_linearly_unless_the_block_normalises_its_outputs() -> None:
    plain = gpt2_style()
    out, summed = _attention_writes(plain)
    assert compat.linear_writes_reason(plain) is None and compat.attention_output_norms(plain) is None
    assert_close(summed, out, rtol=0, atol=1e-5)

    from tests.conftest import _cfg, _hooked

    normed = _hooked()(_cfg(normalization_type="RMS", use_normalization_before_and_after=True)).eval()
    out, summed = _attention_writes(normed)
    assert "ln1_post" in compat.linear_writes_reason(normed)
    assert not torch.allclose(summed, out, atol=1e-3)  # the heads' sum is not what the layer adds
    norm, b_O = compat.attention_output_norms(normed)[0]
    assert b_O is normed.blocks[0].attn.b_O
    assert_close(norm(summed), out, rtol=0, atol=1e-5)  # the layer adds norm(sum of results + b_O)


def test_ungrouped_query_attention_is_refused_by_the_cache_reason() -> None:
    model = llama_style()
    assert compat.kv_cache_reason(model) is None
    with compat.receiver_hooks(model, ungroup=True):
        assert "ungrouped" in compat.kv_cache_reason(model)
        # the final block at the last position handles ungrouped keys / values (with no cached prefix)
        assert compat.final_block_reason(model) is None
    assert compat.kv_cache_reason(model) is None


def test_an_edge_graph_needs_a_pre_norm_hooked_transformer() -> None:
    from tests.conftest import ToyMLP

    assert compat.edge_graph_reason(gpt2_style()) is None
    assert "HookedTransformer" in compat.edge_graph_reason(ToyMLP())
    model = gpt2_style()
    post_norm = sorted(compat.blocks.post_norm_architectures())
    if post_norm:  # TransformerLens lists the post-norm architectures it runs
        model.cfg.original_architecture = post_norm[0]
        assert "post-norm" in compat.edge_graph_reason(model)


def test_the_mask_tl_computes_for_left_padded_tokens_is_the_one_its_forward_uses() -> None:
    from types import SimpleNamespace

    model = gpt2_style()
    tokens = TOKENS.clone()
    tokens[0, :3] = 0  # row 0 is left-padded
    assert compat.tl_default_mask(model, tokens) is None  # no tokenizer: TL attends everywhere
    model.tokenizer = SimpleNamespace(padding_side="left", pad_token_id=0, bos_token_id=0)
    model.cfg.default_prepend_bos = False  # (with a BOS, TL counts the last leading pad as the BOS)
    mask = compat.tl_default_mask(model, tokens)
    assert mask[0].tolist() == [0, 0, 0, 1, 1, 1, 1] and bool(mask[1:].all())
    assert_close(model(tokens, attention_mask=mask)[0, 3:], model(tokens)[0, 3:], rtol=0, atol=1e-5)
    assert not torch.allclose(model(tokens, attention_mask=torch.ones_like(tokens))[0, 3:], model(tokens)[0, 3:])


def test_a_bridge_of_a_post_norm_architecture_is_refused_as_a_hooked_transformer_is() -> None:
    # TransformerLens 4's bridge names its architecture in cfg.architecture (original_architecture
    # is None there): a post-norm model read only through the latter would pass as pre-norm
    from types import SimpleNamespace

    post_norm = sorted(compat.blocks.post_norm_architectures())
    if not post_norm:
        pytest.skip("this TransformerLens lists no post-norm architectures")
    bridge_cfg = SimpleNamespace(original_architecture=None, architecture=post_norm[0])
    assert "post-norm" in compat.linear_writes_reason(SimpleNamespace(cfg=bridge_cfg))
    hooked_cfg = SimpleNamespace(original_architecture=post_norm[0])
    assert "post-norm" in compat.linear_writes_reason(SimpleNamespace(cfg=hooked_cfg))
    assert compat.linear_writes_reason(SimpleNamespace(cfg=SimpleNamespace(architecture="LlamaForCausalLM"))) is None


def test_storage_uses_and_writes_see_views_and_writes_through_them() -> None:
    # engine/reads.py's HiddenLogits reuses one buffer only while these two see every view and write
    from tl_interp.compat import torch_functions

    with torch.inference_mode():  # the engine scores inside inference mode; its buffer is a normal tensor
        with torch.inference_mode(False):
            buffer = torch.zeros(2, 3)
        alone, version = torch_functions.storage_uses(buffer), torch_functions.writes(buffer)
        kept = buffer[1].as_strided((2,), (1,), 0)
        assert torch_functions.storage_uses(buffer) == alone + 1
        kept.fill_(1.0)
        assert torch_functions.writes(buffer) > version and buffer[0, :2].tolist() == [1.0, 1.0]
        del kept
        assert torch_functions.storage_uses(buffer) == alone
    assert torch_functions.counts_usable()
