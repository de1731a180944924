"""One attention head computed outside TransformerLens's block (``circuits._receiving``): the
rotary embedding is TL's own ``apply_rotary`` (fast path ``"rotary"``); the rest -- scores
scaled by ``attn_scale``, the causal mask, softmax, the pattern times the values -- is the
plain attention ``head_attention_reason`` checks the model has.
"""

import inspect
from typing import Any

import torch
from torch import Tensor

from tl_interp.compat._guard import FAST_PATHS, usable
from tl_interp.compat.blocks import architecture, post_norm_architectures

__all__ = ["head_attention_reason", "attend", "mlp"]

_QK_NORM_IN_FORWARD = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


def _check_rotary() -> str | None:
    from transformer_lens.components import Attention

    params = list(inspect.signature(Attention.apply_rotary).parameters)
    if params[:3] != ["self", "x", "past_kv_pos_offset"]:
        return "Attention.apply_rotary(x, past_kv_pos_offset, ...) changed"
    return None


def _check_apply_mlp() -> str | None:
    from transformer_lens.components import TransformerBlock

    params = list(inspect.signature(TransformerBlock.apply_mlp).parameters)
    return None if params[:2] == ["self", "normalized_resid"] else "TransformerBlock.apply_mlp(normalized_resid) changed"


FAST_PATHS.update({"rotary": _check_rotary, "apply_mlp": _check_apply_mlp})


def head_attention_reason(model: Any) -> str | None:
    """Why a head's attention is not the plain ``softmax(causal(q k^T / attn_scale)) v`` of its
    q/k/v projections (rotary on q and k), added as ``z @ W_O[h]`` to the residual stream
    before the MLP reads it, or None."""
    from transformer_lens.components import Attention, GroupedQueryAttention, TransformerBlock

    cfg = model.cfg
    for block in model.blocks:
        if type(block) is not TransformerBlock or type(block.attn) not in (Attention, GroupedQueryAttention):
            return f"a block is a {type(block).__name__} with {type(block.attn).__name__}"
        if getattr(block.attn, "attn_type", "global") != "global":
            return f"{block.attn.attn_type} (windowed) attention"
    flags = [f for f in ("use_attn_in", "use_split_qkv_input", "load_in_4bit", "use_logn_attn", "use_dynamic_ntk_rope",
                         "use_qk_norm", "use_attention_sinks", "parallel_attn_mlp", "use_normalization_before_and_after")
             if getattr(cfg, f, False)]
    if flags:
        return f"cfg sets {flags}"
    if cfg.dtype not in (torch.float32, torch.float64):  # TL upcasts half-precision scores; attend does not
        return f"{cfg.dtype} weights (the hand attention is exact in float32/float64)"
    if getattr(cfg, "n_devices", 1) != 1 or getattr(cfg, "clip_qkv", None) is not None:
        return "multi-device or clipped q/k/v"
    if (getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0:
        return "attention scores are soft-capped"
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        return f"{cfg.positional_embedding_type} positional embeddings"
    if getattr(cfg, "attention_dir", "causal") != "causal":
        return "attention is bidirectional"
    if architecture(model) in (*_QK_NORM_IN_FORWARD, *post_norm_architectures()):
        return f"{architecture(model)} applies norms outside the q/k/v projections"
    if not cfg.attn_only and not usable("apply_mlp"):
        return "the TransformerLens apply_mlp guard failed"
    if cfg.positional_embedding_type == "rotary" and not usable("rotary"):
        return "the TransformerLens apply_rotary guard failed"
    return None


def attend(module: Any, q_proj: Tensor, k_proj: Tensor, v_proj: Tensor, queries_from: int = 0) -> Tensor:
    """``z`` ``(batch, pos, n, d_head)`` of ``n`` independent heads of the attention ``module``
    (``model.blocks[L].attn``) from their pre-rotary projections ``q_proj, k_proj, v_proj``
    ``(batch, pos, n, d_head)``: TL's rotary (``apply_rotary`` from position 0), scores over ``attn_scale``, the
    causal mask, softmax (NaN rows to zero, as TL), the pattern times the values. Exact for a
    model ``head_attention_reason`` passes. ``queries_from``: ``z`` of the queries at positions
    ``queries_from..`` alone, ``(batch, pos - queries_from, n, d_head)`` (every key still read).

    Example:
        >>> import torch
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_heads=4, d_head=4, n_ctx=8, d_vocab=11,
        ...                               act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        ...                               rotary_dim=4, n_key_value_heads=2, seed=0)
        >>> model = HookedTransformer(cfg)
        >>> _, cache = model.run_with_cache(torch.tensor([[1, 5, 2, 7, 3]]))
        >>> attn, n = model.blocks[0].attn, cfg.n_heads // cfg.n_key_value_heads  # keys/values per query head
        >>> q, k, v = (cache[f"blocks.0.attn.hook_{x}"] for x in "qkv")
        >>> z = attend(attn, q, k.repeat_interleave(n, 2), v.repeat_interleave(n, 2))
        >>> torch.allclose(z, cache["blocks.0.attn.hook_z"], atol=1e-6)
        True
        >>> torch.allclose(attend(attn, q, k.repeat_interleave(n, 2), v.repeat_interleave(n, 2), queries_from=3),
        ...                cache["blocks.0.attn.hook_z"][:, 3:], atol=1e-6)
        True
    """
    q, k = q_proj[:, queries_from:], k_proj
    if module.cfg.positional_embedding_type == "rotary":
        q, k = module.apply_rotary(q, queries_from, None), module.apply_rotary(k, 0, None)
    scores = torch.einsum("bqnd,bknd->bnqk", q, k) / module.attn_scale
    pos = scores.shape[-1]
    causal = torch.ones(pos, pos, dtype=torch.bool, device=scores.device).tril()[queries_from:]
    pattern = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
    return torch.einsum("bnqk,bknd->bqnd", pattern, v_proj)


def mlp(module: Any, resid: Tensor) -> Tensor:
    """The MLP output (``hook_mlp_out``: ``ln2``, the MLP, any post-norm) of the block ``module``
    for the residual stream ``resid`` it reads."""
    return module.apply_mlp(module.ln2(resid))
