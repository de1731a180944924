"""Run the final block's queries, attention output and MLP at the last position only, when the
metric reads nothing else: its keys and values for earlier positions are ``ln1`` and the
key/value projections of its input (``compat.final_block_last``, TL's generation step)."""

from typing import Any

from torch import Tensor

from tl_interp import compat
from tl_interp.models._adapter import Tokenized

__all__ = ["reason"]


def reason(model: Any, batch: Tokenized, read_positions: Tensor | None, read_reason: str | None) -> str | None:
    """Why the final block can't run at the last position alone, or None."""
    if read_reason is not None or read_positions is None:
        return "needs the read-only head"
    if batch.padded:
        return "the batch is padded"
    if not bool((read_positions == batch.tokens.shape[1] - 1).all()):
        return "the metric reads positions before the last"
    if getattr(model.cfg, "attention_dir", "causal") != "causal":
        return "attention is bidirectional"
    why = compat.final_block_reason(model)
    if why is not None:
        return why
    if not (compat.usable("split_qkv") and compat.usable("kv_cache")):
        return "a TransformerLens guard failed"
    if not compat.blocks_are_plain(model, model.cfg.n_layers - 1):
        return "a hook is attached inside the final block"
    return None
