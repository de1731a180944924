"""What a TransformerLens forward call carries besides its tokens: the key-value cache (made,
read, frozen for a prefix), where in the sequence the call starts, and the mask TL computes
itself when given none.

The engine's prefix paths (``prefix_kv``, ``split_final``) build TL's cache classes and read
their fields (``entries``, ``past_keys``, ``previous_attention_mask``, ``frozen``): internals,
not TL's public API, so they are used only when ``usable("kv_cache")``.
"""

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import renamed
from tl_interp.compat._guard import FAST_PATHS
from tl_interp.compat.tl import is_hooked_transformer

__all__ = ["new_kv_cache", "kv_entries", "frozen_prefix_cache", "kv_previous_mask", "kv_cache_reason",
           "call_offset", "tl_default_mask"]


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


FAST_PATHS.update({"kv_cache": _check_kv_cache})


@renamed(rows="n_rows")
def new_kv_cache(model: Any, n_rows: int) -> Any:
    """An empty TL key-value cache for ``n_rows`` rows (filled by a forward pass)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, n_rows)


def kv_entries(cache: Any) -> list[tuple[Tensor, Tensor]]:
    """``(keys, values)`` per layer of a filled cache, as TL stores them (post q/k norm, pre rotary)."""
    return [(e.past_keys, e.past_values) for e in cache.entries]


def frozen_prefix_cache(model: Any, kv: list[tuple[Tensor, Tensor]], first_pos: int, copies: int,
                        layers: Sequence[int]) -> Any:
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


def kv_previous_mask(cache: Any) -> Tensor | None:
    """The attention mask a TL key-value cache holds for the positions it has seen."""
    mask = getattr(cache, "previous_attention_mask", None)
    return mask if isinstance(mask, Tensor) else None


def kv_cache_reason(model: Any) -> str | None:
    """Why TL's key-value cache can't run this model as configured, or None: with grouped-query
    attention ungrouped, attention keeps a key / value per query head while TL's forward checks
    the cache against ``n_key_value_heads``."""
    cfg = model.cfg
    if getattr(cfg, "n_key_value_heads", None) is not None and getattr(cfg, "ungroup_grouped_query_attention", False):
        return "grouped-query attention is ungrouped (TL's cache holds n_key_value_heads per layer)"
    return None


def call_offset(kwargs: dict[str, Any]) -> int | None:
    """The absolute position of a forward call's first input position: 0 without a cache, the
    cached length with one; None when a cache is present but its length can't be read.

    Example:
        >>> call_offset({}), call_offset({"cache_position": torch.tensor([5])})
        (0, 5)
    """
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
