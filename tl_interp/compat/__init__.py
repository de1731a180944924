"""Every outside library's internals tl_interp relies on, in one place, each behind a check.

The engine's fast paths use parts of TransformerLens (TL) that are not its public API: the
key-value cache classes and their fields, ``Attention.calculate_qkv_matrices`` called with an
empty query, the block and attention classes, the list of post-norm architectures, how the
forward pass starts mid-stack and how the model head applies its soft cap. A TL release that
changed one of them would give wrong numbers, not an error, if the engine used it blindly.
So each fast path asks ``usable(feature)``: the guard checks the installed TL version against
the tested range and the internal's shape (classes, fields, signatures); when a check fails
the engine falls back to the exact full forward pass and says so once (``FastPathWarning``).
``tests/test_compat.py`` holds one behavioural test per internal, so an upgrade fails loudly.

Also here: which hook points a TL config never fires (``silent_reason``), and how far into
the sequence a forward call starts (``call_offset``: key-value-cached generation).

The other internals live in this package's modules, each behind ``require``:
``hook_points`` (a HookPoint's hook list: adding one hook and removing exactly it),
``forward`` (wrapping a model instance's ``forward`` / ``generate``), ``convert`` (TL's
``weight_conversions`` and ``SUPPORTED_ACTIVATIONS``), ``sae`` (sae-lens's
``cfg.metadata``) and ``hub`` (the Hugging Face hub's offline switch). Nothing outside this
package imports a TransformerLens or sae-lens module other than their public top levels
(``tests/test_compat.py`` greps for it). A fast path whose internal fails its check is turned
off (``usable``); a feature with no exact fallback refuses to run (``require`` raises
``UnsupportedError``). Those are checked by behaviour alone (each check runs the internal on a
tiny object), not by version: a release outside the tested range that keeps them still runs.
"""

import contextlib
import functools
import importlib.metadata
import inspect
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

# the other internals, each module registering its checks with _guard (imported for that)
from tl_interp.compat import _guard, convert, forward, hook_points, hub, layout, sae, tl  # noqa: F401
from tl_interp.compat._guard import require
from tl_interp.compat.tl import has_hooked_transformer, is_bridge, require_hooked, require_sae, sae_lens_reason
from tl_interp.errors import FastPathWarning

__all__ = ["TESTED_RANGE", "tl_version", "usable", "require", "silent_reason", "call_offset", "is_hooked_transformer",
           "new_kv_cache", "kv_entries", "frozen_prefix_cache", "final_block_last", "head", "head_columns",
           "linear_writes_reason", "head_is_plain", "blocks_are_plain", "kv_previous_mask", "tl_default_mask",
           "final_block_reason", "unembed_weight_of", "reusing_unembed_weight", "receiver_hooks",
           "edge_graph_reason", "edge_hooks_on", "kv_cache_reason", "attention_output_norms",
           "has_hooked_transformer", "is_bridge", "require_hooked", "require_sae", "sae_lens_reason"]

TESTED_RANGE = ((3, 9), (4, 0))  # [3.9, 4.0): the versions the compatibility tests ran on
_QK_NORM_IN_FORWARD = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


def tl_version() -> str:
    """The installed transformer-lens version string."""
    try:
        return importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - TL is a dependency
        return "0"


def _version_reason(version: str) -> str | None:
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    low, high = TESTED_RANGE
    if len(parts) < 2 or not low <= parts < high:
        return (f"transformer-lens {version} is outside the range tl_interp's fast paths are tested on "
                f"(>={low[0]}.{low[1]},<{high[0]}.{high[1]})")
    return None


def _has_fields(cls: type, fields: tuple[str, ...]) -> bool:
    declared = set(getattr(cls, "__dataclass_fields__", {})) | set(getattr(cls, "__annotations__", {}))
    return all(f in declared for f in fields)


def _check_kv_cache() -> str | None:
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache as Cache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

    if not _has_fields(Cache, ("entries", "previous_attention_mask", "frozen")):
        return "TransformerLensKeyValueCache no longer has entries / previous_attention_mask / frozen"
    if not _has_fields(Entry, ("past_keys", "past_values", "frozen")):
        return "TransformerLensKeyValueCacheEntry no longer has past_keys / past_values / frozen"
    if list(inspect.signature(Cache.init_cache).parameters)[:3] != ["cfg", "device", "batch_size"]:
        return "TransformerLensKeyValueCache.init_cache(cfg, device, batch_size) changed"
    return None


def _check_forward() -> str | None:
    HookedTransformer = tl.require_hooked("the engine's mid-stack start")

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


def _check_head() -> str | None:
    from transformer_lens.utilities import apply_softcap  # noqa: F401 - presence is the check

    return None


_CHECKS = {"kv_cache": _check_kv_cache, "forward": _check_forward, "split_qkv": _check_split_qkv,
           "head": _check_head, "layout": layout.check}


@functools.cache
def _reason(feature: str) -> str | None:
    if feature in _guard.NO_FALLBACK:  # no exact fallback: checked by behaviour only (compat/_guard.py)
        return _guard.reason(feature)
    version = _version_reason(tl_version())
    if version:
        return version
    try:
        return _CHECKS[feature]()
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        return f"{feature}: {type(err).__name__}: {err}"


@functools.cache
def _warn_once(feature: str, reason: str) -> None:
    warnings.warn(f"tl_interp fast path '{feature}' is off ({reason}); the exact full forward pass runs "
                  "instead (slower, same results)", FastPathWarning, stacklevel=3)


def usable(feature: str) -> bool:
    """Whether a TL internal the engine uses is present and as expected (warns once if not).

    Example:
        >>> usable("kv_cache") == has_hooked_transformer()  # a HookedTransformer internal: none on TL 4
        True
    """
    reason = _reason(feature)
    if reason is not None:
        _warn_once(feature, reason)
    return reason is None


def is_hooked_transformer(model: Any) -> bool:
    """Whether ``model`` is a HookedTransformer (or subclass, e.g. HookedSAETransformer); always
    False on TransformerLens 4, which has none."""
    cls = tl.hooked_transformer_class()
    return cls is not None and isinstance(model, cls)


# -- hook points that never fire ------------------------------------------------------------
_SWITCHES = (
    ("attn.hook_result", "use_attn_result", True),
    ("hook_attn_in", "use_attn_in", True),
    ("hook_q_input", "use_split_qkv_input", True),
    ("hook_k_input", "use_split_qkv_input", True),
    ("hook_v_input", "use_split_qkv_input", True),
    ("hook_mlp_in", "use_hook_mlp_in", True),
    ("hook_tokens", "use_hook_tokens", True),
)
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
            setter = {"use_attn_result": "set_use_attn_result", "use_attn_in": "set_use_attn_in",
                      "use_split_qkv_input": "set_use_split_qkv_input", "use_hook_mlp_in": "set_use_hook_mlp_in"}
            fix = f" (call model.{setter[switch]}(True))" if switch in setter else ""
            return f"it is computed only with cfg.{switch}=True{fix}"
    if name.endswith(("hook_rot_q", "hook_rot_k")) and cfg.positional_embedding_type != "rotary":
        return f"it exists only with rotary embeddings (this model's are {cfg.positional_embedding_type!r})"
    if name == "hook_pos_embed" and cfg.positional_embedding_type not in ("standard", "shortformer"):
        return f"the model adds no positional embedding (its embeddings are {cfg.positional_embedding_type!r})"
    if name.endswith("mlp.hook_pre_linear") and not getattr(cfg, "gated_mlp", False):
        return "it exists only in gated MLPs (cfg.gated_mlp=True)"
    return None


# -- how far into the sequence a forward call starts --------------------------------------
def kv_previous_mask(cache: Any) -> Tensor | None:
    """The attention mask a TL key-value cache holds for the positions it has seen."""
    mask = getattr(cache, "previous_attention_mask", None)
    return mask if isinstance(mask, Tensor) else None


def call_offset(kwargs: dict[str, Any]) -> int | None:
    """The absolute position of a forward call's first input position: 0 without a cache, the
    cached length with one; None when a cache is present but its length can't be read."""
    cache = kwargs.get("past_kv_cache")
    if cache is not None:
        entries = getattr(cache, "entries", None)
        if entries:  # layers a pass skips hold empty entries: the longest entry is the prefix
            return max(int(e.past_keys.shape[1]) for e in entries)
        return None
    position = kwargs.get("cache_position")  # TransformerBridge / Hugging Face generation
    if isinstance(position, Tensor) and position.numel():
        return int(position.min())
    hf_cache = kwargs.get("past_key_values")
    if hf_cache is not None:
        length = getattr(hf_cache, "get_seq_length", None)
        return int(length()) if callable(length) else None
    return 0


def tl_default_mask(model: Any, tokens: Tensor) -> Tensor | None:
    """The attention mask TL's forward computes itself for a token tensor passed without one:
    only for left-padding tokenizers (otherwise it attends to every position)."""
    tok = getattr(model, "tokenizer", None)
    if not is_hooked_transformer(model) or tok is None or getattr(tok, "padding_side", "right") != "left":
        return None
    from transformer_lens.utilities.tokenize_utils import get_attention_mask

    return get_attention_mask(tok, tokens, model.cfg.default_prepend_bos)


# -- key-value caches ------------------------------------------------------------------------
def new_kv_cache(model: Any, rows: int) -> Any:
    """An empty TL key-value cache for ``rows`` rows (filled by a forward pass)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, rows)


def kv_entries(cache: Any) -> list[tuple[Tensor, Tensor]]:
    """``(keys, values)`` per layer of a filled cache, as TL stores them (post q/k norm, pre rotary)."""
    return [(e.past_keys, e.past_values) for e in cache.entries]


def frozen_prefix_cache(model: Any, kv: list[tuple[Tensor, Tensor]], first_pos: int, copies: int,
                        layers: range) -> Any:
    """A frozen cache holding positions ``< first_pos`` of the base run, repeated ``copies`` times,
    for the layers a pass runs (the others are never read)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

    cfg = model.cfg
    rows = kv[0][0].shape[0] * copies
    device = kv[0][0].device
    entries = []
    for i in range(cfg.n_layers):
        if i in layers:
            k, v = kv[i]
            entries.append(Entry(past_keys=k[:, :first_pos].repeat(copies, 1, 1, 1),
                                 past_values=v[:, :first_pos].repeat(copies, 1, 1, 1), frozen=True))
        else:
            entries.append(Entry.init_cache_entry(cfg, device, rows))
    mask = torch.ones(rows, first_pos, dtype=torch.long, device=device)
    return TransformerLensKeyValueCache(entries=entries, previous_attention_mask=mask, frozen=True)


def final_block_last(model: Any, resid: Tensor, prefix: tuple[Tensor, Tensor] | None) -> Tensor:
    """The final block's output at the last position, from its input ``resid`` (positions p..).

    The keys and values of the positions before the last are what TL's attention computes and
    appends to a key-value cache (``ln1`` then ``calculate_qkv_matrices``; rotary comes after,
    on the whole key sequence); with the prefix's (positions < p) they form the cache of a
    one-token step of the block at the last position -- TL's own generation step.
    """
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

    block = model.blocks[model.cfg.n_layers - 1]
    empty = Entry.init_cache_entry(model.cfg, resid.device, resid.shape[0])
    keys, values = [empty.past_keys], [empty.past_values]
    if prefix is not None:
        keys.append(prefix[0])
        values.append(prefix[1])
    if resid.shape[1] > 1:
        x = block.ln1(resid[:, :-1])
        _, k, v = block.attn.calculate_qkv_matrices(x[:, :0], x, x)  # no query positions
        keys.append(k)
        values.append(v)
    entry = Entry(past_keys=torch.cat(keys, 1), past_values=torch.cat(values, 1), frozen=True)
    return block(resid[:, -1:], past_kv_cache_entry=entry)


def final_block_reason(model: Any) -> str | None:
    """Why the final block's keys and values are not exactly ``ln1`` + ``calculate_qkv_matrices``
    of its input (so it can't run its queries at the last position alone), or None."""
    from transformer_lens.components import Attention, GroupedQueryAttention, TransformerBlock

    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # an older TransformerLens has no post-norm blocks
        POST_NORM_ARCHITECTURES = ()
    cfg = model.cfg
    block = model.blocks[cfg.n_layers - 1]
    if type(block) is not TransformerBlock or type(block.attn) not in (Attention, GroupedQueryAttention):
        return f"the final block is a {type(block).__name__} with {type(block.attn).__name__}"
    flags = [f for f in ("use_attn_in", "use_split_qkv_input", "load_in_4bit", "use_logn_attn", "use_dynamic_ntk_rope")
             if getattr(cfg, f, False)]
    if flags:
        return f"cfg sets {flags}"
    if kv_cache_reason(model) is not None:  # final_block_last builds a TL cache entry
        return kv_cache_reason(model)
    if getattr(cfg, "n_devices", 1) != 1 or getattr(cfg, "clip_qkv", None) is not None:
        return "multi-device or clipped q/k/v"
    if cfg.original_architecture in (*_QK_NORM_IN_FORWARD, *POST_NORM_ARCHITECTURES):
        return f"{cfg.original_architecture} applies norms outside calculate_qkv_matrices"
    return None


def linear_writes_reason(model: Any) -> str | None:
    """Why a block's heads / neurons do not write ``z @ W_O + b_O`` / ``post @ W_out + b_out``
    straight into the residual stream (so per-head or per-neuron contributions would not sum to
    ``hook_attn_out`` / ``hook_mlp_out``), or None."""
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:
        POST_NORM_ARCHITECTURES = ()
    cfg = model.cfg
    if getattr(cfg, "use_normalization_before_and_after", False):
        return "each block normalises its attention and MLP outputs (ln1_post / ln2_post) before the residual add"
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        return f"{cfg.original_architecture} is post-norm (ln1 / ln2 after attention and MLP)"
    if getattr(cfg, "num_experts", None):
        return "the MLPs are mixtures of experts"
    return None


# -- the model head ---------------------------------------------------------------------------
def head(model: Any, resid: Tensor, *, unembed_weight: Tensor | None = None) -> Tensor:
    """Final norm, unembedding and logit soft cap of residuals ``(..., d_model)``: exactly the
    end of ``HookedTransformer.forward``.

    ``unembed_weight`` is ``unembed_weight_of(model)`` computed once by a caller that unembeds
    many times: TL's ``Unembed.forward`` copies the transposed ``W_U`` into contiguous memory on
    every call (as Hugging Face's layout), which for a large vocabulary costs more than the
    product itself. With no hook on the unembedding (``head_is_plain``) the same
    ``F.linear(x, W_U.T.contiguous(), b_U)`` is computed on the copy.
    """
    from transformer_lens.utilities import apply_softcap

    shape = resid.shape
    x = resid.reshape(-1, 1, shape[-1])
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    if unembed_weight is None:
        logits = model.unembed(x)
    else:
        logits = torch.nn.functional.linear(x, unembed_weight, model.unembed.b_U)
    logits = apply_softcap(logits, model.cfg.output_logits_soft_cap)
    return logits.reshape(*shape[:-1], logits.shape[-1])


def head_columns(model: Any, resid: Tensor, columns: Tensor) -> Tensor:
    """``head(model, resid)[..., columns]`` without computing the other logits: the final norm,
    the unembedding's ``columns`` and the soft cap (a tuned lens trains on a sampled vocabulary,
    whose full unembedding would cost 30x its forward on CPU)."""
    from transformer_lens.utilities import apply_softcap

    shape = resid.shape
    x = resid.reshape(-1, 1, shape[-1])
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = x @ model.unembed.W_U[:, columns] + model.unembed.b_U[columns]
    logits = apply_softcap(logits, model.cfg.output_logits_soft_cap)
    return logits.reshape(*shape[:-1], logits.shape[-1])


_REUSED: ContextVar[dict[tuple[int, int], Tensor] | None] = ContextVar("tl_interp_unembed_weights", default=None)


def unembed_weight_of(model: Any) -> Tensor:
    """The unembedding weight in the layout TL's ``Unembed.forward`` multiplies by (made once
    per ``reusing_unembed_weight`` block; keyed by the parameter's version, so an edited
    ``W_U`` is never served stale)."""
    w = model.unembed.W_U
    cache = _REUSED.get()
    key = (id(w), w._version)
    if cache is not None and key in cache:
        return cache[key]
    out = w.T.contiguous()
    if cache is not None:
        cache[key] = out
    return out


@contextlib.contextmanager
def reusing_unembed_weight() -> Iterator[None]:
    """Within the block, ``unembed_weight_of`` copies each model's ``W_U`` once (a study that
    runs several base runs -- steering's groups of prompts by length -- unembeds once each)."""
    token = _REUSED.set({})
    try:
        yield
    finally:
        _REUSED.reset(token)


def _plain(module: Any) -> bool:
    from transformer_lens.hook_points import HookPoint

    for name, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        if name.rsplit(".", 1)[-1].startswith("hook_") and type(m) is not HookPoint:
            return False  # a hook point replaced (e.g. by an SAE spliced in)
    return True


def head_is_plain(model: Any) -> bool:
    """No hook attached to ``ln_final`` or ``unembed`` (a user's hook there must see the model's
    own head run on every position, so the engine's head may not replace it)."""
    parts = [getattr(model, "ln_final", None), getattr(model, "unembed", None)]
    return all(_plain(p) for p in parts if p is not None)


def blocks_are_plain(model: Any, first: int) -> bool:
    """No hook attached in blocks ``first..`` (positions are sliced there on the prefix paths)."""
    return all(_plain(block) for block in model.blocks[first:])


# -- per-component hook points (path patching, circuits) ---------------------------------------
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


# -- edge-level studies (ti.circuits) -------------------------------------------------------
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
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # an older TransformerLens has no post-norm blocks
        POST_NORM_ARCHITECTURES = set()
    cfg = model.cfg
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        return (f"{cfg.original_architecture} is post-norm: each sublayer's output is normalised before it is "
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


def kv_cache_reason(model: Any) -> str | None:
    """Why TL's key-value cache can't run this model as configured, or None: with grouped-query
    attention ungrouped, attention keeps a key / value per query head while TL's forward checks
    the cache against ``n_key_value_heads``."""
    cfg = model.cfg
    if getattr(cfg, "n_key_value_heads", None) is not None and getattr(cfg, "ungroup_grouped_query_attention", False):
        return "grouped-query attention is ungrouped (TL's cache holds n_key_value_heads per layer)"
    return None


def attention_output_norms(model: Any) -> list[tuple[Any, Tensor]] | None:
    """Per layer, ``(norm, b_O)`` when the model normalises each attention output before adding it
    to the residual stream (Gemma's ``ln1_post``, ``cfg.use_normalization_before_and_after``): the
    layer adds ``norm(sum of its heads' results + b_O)``. None for models that add the sum itself.
    (The MLP's post-norm sits before ``hook_mlp_out``, so an MLP's output stays additive.)"""
    if not getattr(model.cfg, "use_normalization_before_and_after", False):
        return None
    return [(block.ln1_post, block.attn.b_O) for block in model.blocks]
