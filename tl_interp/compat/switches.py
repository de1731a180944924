"""TransformerLens config switches: which hook points a config never fires, and switching on
the per-component hook points path patching and circuits read and write.

TL computes some hook points only when a ``cfg`` flag is set (``use_attn_result``,
``use_split_qkv_input``, ...), and some exist only for some architectures; a hook there would
silently never run. ``silent_reason`` names the switch (checked before any forward pass);
``receiver_hooks`` sets the switches for a block and restores the config on every exit.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

from tl_interp.compat.blocks import architecture, post_norm_architectures
from tl_interp.compat.tl import has_hooked_transformer, is_hooked_transformer

__all__ = ["silent_reason", "receiver_hooks", "edge_graph_reason", "edge_hooks_on"]

_SWITCHES = (
    ("attn.hook_result", "use_attn_result", True),
    ("hook_attn_in", "use_attn_in", True),
    ("hook_q_input", "use_split_qkv_input", True),
    ("hook_k_input", "use_split_qkv_input", True),
    ("hook_v_input", "use_split_qkv_input", True),
    ("hook_mlp_in", "use_hook_mlp_in", True),
    ("hook_tokens", "use_hook_tokens", True),
)
_SETTERS = {"use_attn_result": "set_use_attn_result", "use_attn_in": "set_use_attn_in",
            "use_split_qkv_input": "set_use_split_qkv_input", "use_hook_mlp_in": "set_use_hook_mlp_in"}
_MLP_PARTS = ("hook_mlp_in", "hook_mlp_out", "hook_resid_mid", ".mlp.", ".ln2.")


def silent_reason(model: Any, name: str) -> str | None:
    """Why the hook point ``name`` never fires on this model (a config switch), or None.

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4, d_vocab=5,
        ...                               act_fn="relu", d_mlp=16)
        >>> silent_reason(HookedTransformer(cfg), "blocks.0.attn.hook_result")
        'it is computed only with cfg.use_attn_result=True (call model.set_use_attn_result(True))'
    """
    if not is_hooked_transformer(model):
        return None  # other families are checked after a run: a hook that never fired is an error
    cfg = model.cfg
    if getattr(cfg, "attn_only", False) and any(part in name for part in _MLP_PARTS):
        return "the model is attention-only (cfg.attn_only=True): it has no MLP"
    for suffix, switch, needed in _SWITCHES:
        if name.endswith(suffix) and bool(getattr(cfg, switch, False)) != needed:
            fix = f" (call model.{_SETTERS[switch]}(True))" if switch in _SETTERS else ""
            return f"it is computed only with cfg.{switch}=True{fix}"
    if name.endswith(("hook_rot_q", "hook_rot_k")) and cfg.positional_embedding_type != "rotary":
        return f"it exists only with rotary embeddings (this model's are {cfg.positional_embedding_type!r})"
    if name == "hook_pos_embed" and cfg.positional_embedding_type not in ("standard", "shortformer"):
        return f"the model adds no positional embedding (its embeddings are {cfg.positional_embedding_type!r})"
    if name.endswith("mlp.hook_pre_linear") and not getattr(cfg, "gated_mlp", False):
        return "it exists only in gated MLPs (cfg.gated_mlp=True)"
    return None


_COMPONENT_SWITCHES = {"split_qkv": "use_split_qkv_input", "attn_result": "use_attn_result",
                       "mlp_in": "use_hook_mlp_in", "ungroup": "ungroup_grouped_query_attention"}


@contextlib.contextmanager
def receiver_hooks(model: Any, *, split_qkv: bool = False, attn_result: bool = False, mlp_in: bool = False,
                   ungroup: bool = False) -> Iterator[None]:
    """Within the block, TL fires each head's own q/k/v input hook (``use_split_qkv_input``),
    each head's result (``use_attn_result``), the MLP's input hook (``use_hook_mlp_in``) and, on
    grouped-query models, gives every query head its own key and value
    (``ungroup_grouped_query_attention``: TL repeats the shared K/V weights inside each forward
    pass; the model's parameters are not copied). Switches that don't apply (an MLP input on an
    attention-only model, ungrouping without GQA) stay off. The config is restored on every exit
    path. The one place path patching and circuits switch these on.

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4, d_vocab=5,
        ...                               act_fn="relu", d_mlp=16)
        >>> model = HookedTransformer(cfg)
        >>> with receiver_hooks(model, split_qkv=True):
        ...     model.cfg.use_split_qkv_input
        True
        >>> model.cfg.use_split_qkv_input
        False
    """
    cfg = model.cfg
    wanted = {"split_qkv": split_qkv, "attn_result": attn_result,
              "mlp_in": mlp_in and not getattr(cfg, "attn_only", False),
              "ungroup": ungroup and getattr(cfg, "n_key_value_heads", None) is not None}
    flags = [_COMPONENT_SWITCHES[name] for name, on in wanted.items() if on]
    saved = {flag: getattr(cfg, flag, False) for flag in flags}
    try:
        for flag in flags:
            setattr(cfg, flag, True)
        yield
    finally:
        for flag, value in saved.items():
            setattr(cfg, flag, value)


def edge_graph_reason(model: Any) -> str | None:
    """Why a model's residual stream is not a sum of per-head / per-MLP outputs that each reader
    (a head's query, key, value input, an MLP's input, the unembedding) takes in whole, so that
    "edges" between components are not well defined; None when they are."""
    if not has_hooked_transformer():
        return ("an edge graph needs TransformerLens's HookedTransformer (per-head q/k/v inputs and per-head "
                "results), which TransformerLens 4 removed")
    if not is_hooked_transformer(model):
        return (f"edge graphs need a HookedTransformer (per-head q/k/v inputs and per-head results); got "
                f"{type(model).__name__}")
    cfg = model.cfg
    if architecture(model) in post_norm_architectures():
        return (f"{architecture(model)} is post-norm: each sublayer's output is normalised before it is "
                "added to the residual stream, so a head's contribution to a later input is not its own output "
                "but depends on every other head of its layer")
    if getattr(cfg, "n_devices", 1) != 1:
        return "the model is split over several devices"
    return None


def edge_hooks_on(model: Any) -> contextlib.AbstractContextManager[None]:
    """Every hook point an edge-level study reads and writes (``receiver_hooks`` with all
    switches): per-head q/k/v inputs, per-head results, the MLP input and, for grouped-query
    attention, one key / value input per query head."""
    return receiver_hooks(model, split_qkv=True, attn_result=True, mlp_in=True, ungroup=True)
