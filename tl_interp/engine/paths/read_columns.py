"""Unembed only the vocabulary entries the metric reads: a ``ti.metrics`` metric that names
them (``Metric.columns``, e.g. ``logit_diff``'s two answers) gets logits computed at those
columns alone (``compat.head_columns``: the final norm, those columns of the unembedding, the
soft cap) and NaN everywhere else, so a read outside them could never pass for a number. On a
large vocabulary (SmolLM2: 49,152 entries) the full unembedding of every cell's read rows costs
more than the last block; this path makes it a few dot products per row.
"""

from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp.metrics import is_metric
from tl_interp.sites import d_vocab_out

__all__ = ["reason", "head"]


def reason(metric: Any, read_reason: str | None) -> str | None:
    """Why logits can't be computed at the metric's vocabulary entries alone, or None."""
    if read_reason is not None:
        return "needs the read-only head"
    if not is_metric(metric) or getattr(metric, "columns", None) is None:
        return "the metric does not name the vocabulary entries it reads"
    return None


def head(model: Any, rows: Tensor, columns: Tensor) -> Tensor:
    """``(rows, d_vocab)`` logits of final residuals ``rows`` ``(rows, d_model)``: exact at
    ``columns``, NaN elsewhere."""
    out = torch.full((rows.shape[0], d_vocab_out(model)), float("nan"), dtype=rows.dtype, device=rows.device)
    index = columns.to(rows.device)
    out[:, index] = compat.head_columns(model, rows, index).to(out.dtype)
    return out
