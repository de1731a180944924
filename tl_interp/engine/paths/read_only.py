"""Unembed only where the metric reads: passes stop at the final residual stream, keep one
position per row, and the engine's head (``compat.head``: final norm, unembedding, soft cap)
turns those rows into logits -- exactly the end of the model's own forward, on fewer rows.

A ``ti.metrics`` metric says where it reads; a plain function is traced (``engine.reads``) on
the base run's logits, and every later call of it is checked against the position found."""

from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp.metrics import is_metric

__all__ = ["reason", "take"]


def reason(model: Any, metric: Any, *, traceable: bool = False) -> str | None:
    """Why logits can't be computed at the read positions alone, or None.

    A plain ``logits -> scalar`` function says nothing about where it reads: with ``traceable``
    None means "if tracing it on the base run's logits names one position" (``engine.reads``).
    """
    if not compat.is_hooked_transformer(model):
        return f"{type(model).__name__} runs its own head"
    if not is_metric(metric) and not traceable:
        return "the metric is a plain function of the full logits (staged, or gradients kept)"
    if is_metric(metric) and metric.positions is None:
        return f"the metric {metric.name} reads every position"
    if not compat.head_is_plain(model):
        return "a hook is attached to ln_final or unembed, so the model's own head must run"
    if not (compat.usable("head") and compat.usable("forward")):
        return "a TransformerLens guard failed"
    return None


def take(resid: Tensor, positions: Tensor, offset: int) -> Tensor:
    """Rows of ``resid`` ``(rows, window, d)`` at absolute ``positions`` ``(rows,)`` of a window
    starting at ``offset``: ``(rows, d)``."""
    rows = torch.arange(resid.shape[0], device=resid.device)
    return resid[rows, positions.to(resid.device) - offset]
