"""Run only the positions a pass can change. Under causal attention an edit at position p
leaves every position < p as in the base run, at every layer; so a pass whose cells all edit
positions >= p runs positions p.. against a frozen copy of the base run's keys and values for
0..p-1 (filled by TL's own key-value cache during the base run). A metric of the full logits
gets the base run's logits at positions 0..p-1, which they equal for the same reason."""

from typing import Any

from tl_interp import compat
from tl_interp.models._adapter import Tokenized

__all__ = ["reason"]


def reason(model: Any, batch: Tokenized, metric: Any, head_reason: str | None) -> str | None:
    """Why passes can't start at their first edited position, or None. ``head_reason``: why
    neither the read-only head nor full logits (earlier positions from the base run) can end a
    pass that starts mid-sequence, or None."""
    if head_reason is not None:
        return f"needs the read-only head ({head_reason})"
    if batch.padded:
        return "the batch is padded (rows end at different positions)"
    if batch.tokens.shape[1] < 2:
        return "a single position"
    cfg = model.cfg
    if getattr(cfg, "attention_dir", "causal") != "causal":
        return "attention is bidirectional"
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        return f"{cfg.positional_embedding_type} positional embeddings"
    if compat.kv_cache_reason(model) is not None:
        return compat.kv_cache_reason(model)
    if not compat.usable("kv_cache"):
        return "the TransformerLens key-value cache guard failed"
    return None
