"""Running TransformerLens's stack in parts: starting mid-stack, the final block's queries at
the last position alone, and what each block writes into the residual stream.

``HookedTransformer.forward(start_at_layer=, stop_at_layer=)`` (fast path ``"forward"``) and
``Attention.calculate_qkv_matrices`` called with an empty query (``"split_qkv"``) are internals
the engine's fast paths use; ``final_block_reason`` and ``linear_writes_reason`` say from the
config and the module classes when a model's blocks are not what those paths assume.
"""

import inspect
from typing import Any

import torch
from torch import Tensor

from tl_interp.compat._guard import FAST_PATHS
from tl_interp.compat.tl import require_hooked

__all__ = ["architecture", "post_norm_architectures", "final_block_last", "final_block_cache", "final_block_step",
           "final_block_reason", "linear_writes_reason",
           "attention_output_norms"]

_QK_NORM_IN_FORWARD = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


def _check_forward() -> str | None:
    HookedTransformer = require_hooked("the engine's mid-stack start")

    params = inspect.signature(HookedTransformer.forward).parameters
    missing = [p for p in ("start_at_layer", "stop_at_layer", "past_kv_cache", "attention_mask") if p not in params]
    return f"HookedTransformer.forward lost {missing}" if missing else None


def _check_split_qkv() -> str | None:
    from transformer_lens.components import Attention, TransformerBlock

    params = list(inspect.signature(Attention.calculate_qkv_matrices).parameters)
    if params[:4] != ["self", "query_input", "key_input", "value_input"]:
        return "Attention.calculate_qkv_matrices(query_input, key_input, value_input) changed"
    if "past_kv_cache_entry" not in inspect.signature(TransformerBlock.forward).parameters:
        return "TransformerBlock.forward no longer takes past_kv_cache_entry"
    return None


FAST_PATHS.update({"forward": _check_forward, "split_qkv": _check_split_qkv})


def architecture(model: Any) -> str | None:
    """The Hugging Face architecture a model's config names (``"LlamaForCausalLM"``), or None:
    a HookedTransformer keeps it in ``cfg.original_architecture``, a TransformerLens 4 bridge in
    ``cfg.architecture`` (its ``original_architecture`` is None).

    Example:
        >>> from types import SimpleNamespace
        >>> architecture(SimpleNamespace(cfg=SimpleNamespace(original_architecture=None, architecture="Olmo2ForCausalLM")))
        'Olmo2ForCausalLM'
    """
    cfg = model.cfg
    return getattr(cfg, "original_architecture", None) or getattr(cfg, "architecture", None)


def post_norm_architectures() -> frozenset[str]:
    """The Hugging Face architectures TL runs post-norm (``ln1`` / ``ln2`` after attention and
    MLP); empty on a TransformerLens that has none.

    Example:
        >>> "LlamaForCausalLM" in post_norm_architectures()
        False
    """
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # an older TransformerLens has no post-norm blocks
        return frozenset()
    return frozenset(POST_NORM_ARCHITECTURES)


def final_block_last(model: Any, resid: Tensor, prefix: tuple[Tensor, Tensor] | None) -> Tensor:
    """The final block's output at the last position, from its input ``resid`` (positions p..).

    The keys and values of the positions before the last are what TL's attention computes and
    appends to a key-value cache (``ln1`` then ``calculate_qkv_matrices``; rotary comes after,
    on the whole key sequence); with the prefix's (positions < p) they form the cache of a
    one-token step of the block at the last position -- TL's own generation step.
    """
    return final_block_step(model, resid[:, -1:], final_block_cache(model, resid, prefix))


def final_block_cache(model: Any, resid: Tensor, prefix: tuple[Tensor, Tensor] | None) -> Any:
    """The final block's frozen key-value cache entry for the positions of ``resid`` (its input
    at positions p.. up to the end) but the last, after the ``prefix``'s (positions < p):
    ``ln1`` then ``calculate_qkv_matrices`` with no query position. The block's ``hook_k`` /
    ``hook_v`` fire on every position of ``resid`` (a window that ends where the sequence
    ends, as everywhere else); the last position's keys and values are dropped here and
    computed again by the block's own step."""
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

    block = model.blocks[model.cfg.n_layers - 1]
    cfg = model.cfg
    # grouped-query attention ungrouped: a key / value per query head (no prefix then: TL's cache
    # of a base run holds n_key_value_heads, so prefix_kv is off and passes start at position 0)
    ungrouped = getattr(cfg, "n_key_value_heads", None) is not None and getattr(cfg, "ungroup_grouped_query_attention",
                                                                                False)
    if ungrouped and prefix is not None:
        raise ValueError("final_block_cache: a cached prefix holds n_key_value_heads, the ungrouped block n_heads")
    n = cfg.n_heads if ungrouped else (cfg.n_key_value_heads or cfg.n_heads)
    empty = torch.empty(resid.shape[0], 0, n, cfg.d_head, device=resid.device, dtype=cfg.dtype)
    keys, values = [empty], [empty]
    if prefix is not None:
        keys.append(prefix[0])
        values.append(prefix[1])
    if resid.shape[1] > 1:
        x = block.ln1(resid)
        _, k, v = block.attn.calculate_qkv_matrices(x[:, :0], x, x)  # no query positions
        keys.append(k[:, :-1])
        values.append(v[:, :-1])
    return Entry(past_keys=torch.cat(keys, 1), past_values=torch.cat(values, 1), frozen=True)


def final_block_step(model: Any, resid: Tensor, entry: Any) -> Tensor:
    """The final block at one position ``resid`` ``(batch, 1, d_model)`` against the cache
    ``entry`` (``final_block_cache``): TL's generation step."""
    return model.blocks[model.cfg.n_layers - 1](resid, past_kv_cache_entry=entry)


def final_block_reason(model: Any) -> str | None:
    """Why the final block's keys and values are not exactly ``ln1`` + ``calculate_qkv_matrices``
    of its input (so it can't run its queries at the last position alone), or None."""
    from transformer_lens.components import Attention, GroupedQueryAttention, TransformerBlock

    cfg = model.cfg
    block = model.blocks[cfg.n_layers - 1]
    if type(block) is not TransformerBlock or type(block.attn) not in (Attention, GroupedQueryAttention):
        return f"the final block is a {type(block).__name__} with {type(block.attn).__name__}"
    flags = [f for f in ("use_attn_in", "use_split_qkv_input", "load_in_4bit", "use_logn_attn", "use_dynamic_ntk_rope")
             if getattr(cfg, f, False)]
    if flags:
        return f"cfg sets {flags}"
    if getattr(cfg, "n_devices", 1) != 1 or getattr(cfg, "clip_qkv", None) is not None:
        return "multi-device or clipped q/k/v"
    if architecture(model) in (*_QK_NORM_IN_FORWARD, *post_norm_architectures()):
        return f"{architecture(model)} applies norms outside calculate_qkv_matrices"
    return None


def linear_writes_reason(model: Any) -> str | None:
    """Why a block's heads / neurons do not write ``z @ W_O + b_O`` / ``post @ W_out + b_out``
    straight into the residual stream (so per-head or per-neuron contributions would not sum to
    ``hook_attn_out`` / ``hook_mlp_out``), or None."""
    cfg = model.cfg
    if getattr(cfg, "use_normalization_before_and_after", False):
        return "each block normalises its attention and MLP outputs (ln1_post / ln2_post) before the residual add"
    if architecture(model) in post_norm_architectures():
        return f"{architecture(model)} is post-norm (ln1 / ln2 after attention and MLP)"
    if getattr(cfg, "num_experts", None):
        return "the MLPs are mixtures of experts"
    return None


def attention_output_norms(model: Any) -> list[tuple[Any, Tensor]] | None:
    """Per layer, ``(norm, b_O)`` when the model normalises each attention output before adding it
    to the residual stream (Gemma's ``ln1_post``, ``cfg.use_normalization_before_and_after``): the
    layer adds ``norm(sum of its heads' results + b_O)``. None for models that add the sum itself.
    (The MLP's post-norm sits before ``hook_mlp_out``, so an MLP's output stays additive.)"""
    if not getattr(model.cfg, "use_normalization_before_and_after", False):
        return None
    return [(block.ln1_post, block.attn.b_O) for block in model.blocks]
