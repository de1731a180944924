"""Every outside library's internals tl_interp relies on, in one place, each behind a check.

The engine's fast paths use parts of TransformerLens (TL) that are not its public API: the
key-value cache classes and their fields, ``Attention.calculate_qkv_matrices`` called with an
empty query, the block and attention classes, the list of post-norm architectures, how the
forward pass starts mid-stack and how the model head applies its soft cap. A TL release that
changed one of them would give wrong numbers, not an error, if the engine used it blindly.
So each fast path asks ``usable(feature)``: the guard checks the installed TL version against
the tested range and the internal's shape (classes, fields, signatures); when a check fails
the engine falls back to the exact full forward pass and says so once (``FastPathWarning``).
A feature with no exact fallback refuses to run (``require`` raises ``UnsupportedError``);
those are checked by behaviour alone (each check runs the internal on a tiny object), not by
version: a release outside the tested range that keeps them still runs.
``tests/test_compat.py`` holds one behavioural test per internal, so an upgrade fails loudly.

One module per topic, each registering its checks with ``_guard`` (imported here for that):

- ``tl``: which TransformerLens is installed (HookedTransformer or TransformerBridge), sae-lens's
  availability, building a zoo model natively on TL 4;
- ``kv_cache``: key-value caches, where a forward call starts, TL's own default mask
  (fast path ``"kv_cache"``);
- ``blocks``: the mid-stack start, the final block at the last position, what blocks write
  (``"forward"``, ``"split_qkv"``);
- ``model_head``: final norm + unembedding + soft cap (``"head"``);
- ``norms``: TL's norms as one fused kernel (``fused_norm``);
- ``switches``: hook points a config never fires, per-component hook switches;
- ``hook_points``: a HookPoint's hook list (adding one hook, removing exactly it), plain modules;
- ``forward``: wrapping a model instance's ``forward`` / ``generate``;
- ``convert``: TL's ``weight_conversions`` and ``SUPPORTED_ACTIVATIONS``;
- ``sae``: sae-lens's ``cfg.metadata``; ``hub``: the Hugging Face hub's offline switch;
- ``torch_functions``: torch's switches for a watching ``Tensor`` subclass.

Nothing outside this package imports a TransformerLens or sae-lens module other than their
public top levels (``tests/test_compat.py`` greps for it). The names below are re-exported for
``from tl_interp import compat; compat.head(...)``.
"""

from tl_interp.compat import _guard, attention, convert, forward, hook_points, hub, layout, sae, tl, torch_functions  # noqa: F401
from tl_interp.compat._guard import TESTED_RANGE, require, tl_version, usable
from tl_interp.compat.blocks import (attention_output_norms, final_block_cache, final_block_last, final_block_reason,
                                     final_block_step, linear_writes_reason)
from tl_interp.compat.model_head import head, head_columns, head_is_plain, reusing_unembed_weight, unembed_weight_of
from tl_interp.compat.hook_points import blocks_are_plain
from tl_interp.compat.norms import fused_norm
from tl_interp.compat.kv_cache import (call_offset, frozen_prefix_cache, kv_cache_reason, kv_entries, kv_previous_mask,
                                       new_kv_cache, tl_default_mask)
from tl_interp.compat.switches import edge_graph_reason, edge_hooks_on, receiver_hooks, silent_reason
from tl_interp.compat.tl import (has_hooked_transformer, is_bridge, is_hooked_transformer, require_hooked, require_sae,
                                 sae_lens_reason)

__all__ = ["TESTED_RANGE", "tl_version", "usable", "require", "silent_reason", "call_offset", "is_hooked_transformer",
           "new_kv_cache", "kv_entries", "frozen_prefix_cache", "final_block_last", "final_block_cache",
           "final_block_step", "head", "head_columns",
           "linear_writes_reason", "head_is_plain", "blocks_are_plain", "kv_previous_mask", "tl_default_mask",
           "final_block_reason", "unembed_weight_of", "reusing_unembed_weight", "receiver_hooks",
           "edge_graph_reason", "edge_hooks_on", "kv_cache_reason", "attention_output_norms",
           "has_hooked_transformer", "is_bridge", "fused_norm", "require_hooked", "require_sae", "sae_lens_reason"]
