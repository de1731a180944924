"""Start a pass at the first edited layer: layers below it equal the base run, whose residual
stream there (``blocks.L.hook_resid_pre``) is cached and repeated for every cell."""

from collections.abc import Iterable
from typing import Any

from tl_interp import compat
from tl_interp.sites import site_info

__all__ = ["reason", "start_layer"]


def reason(model: Any) -> str | None:
    """Why passes can't start mid-stack on this model, or None."""
    if not compat.is_hooked_transformer(model):
        return f"{type(model).__name__} has no start_at_layer forward (only HookedTransformer does)"
    if model.cfg.positional_embedding_type == "shortformer":
        return "shortformer models add positional embeddings inside attention"
    if not compat.usable("forward"):
        return "the TransformerLens forward guard failed"
    return None


def start_layer(model: Any, names: Iterable[str]) -> int | None:
    """The earliest block any of ``names`` sits in; None if one is outside the blocks (embeddings)."""
    layers = [site_info(model, n).layer for n in names]
    if not layers or any(layer is None for layer in layers):
        return None
    return min(layers)  # type: ignore[type-var]
