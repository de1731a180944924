"""Shared type aliases, with TransformerLens's axis names.

Shapes live in signatures (``Float[Tensor, "batch pos d_model"]``); this module holds the
aliases that more than one module uses so they are spelled once.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_interp.positions import Positions

__all__ = [
    "Tokens",
    "AttentionMask",
    "Logits",
    "Resid",
    "HeadActs",
    "Pattern",
    "PositionSelection",
    "IndexSelection",
    "HookFn",
    "NameFilter",
    "SiteKind",
    "MetricFn",
    "Reduce",
]

Tokens: TypeAlias = Int[Tensor, "batch pos"]
AttentionMask: TypeAlias = Int[Tensor, "batch pos"] | Bool[Tensor, "batch pos"]
Logits: TypeAlias = Float[Tensor, "batch pos d_vocab"]
Resid: TypeAlias = Float[Tensor, "batch pos d_model"]
HeadActs: TypeAlias = Float[Tensor, "batch pos head_index d_head"]
Pattern: TypeAlias = Float[Tensor, "batch head_index query_pos key_pos"]

# Positions: see tl_interp.positions (ints, slices, lists, masks, per-row indices, "last",
# "all", From(k), token finders).
PositionSelection: TypeAlias = Positions
# Heads, neurons and batch rows: an int, a slice, a list of ints or a boolean mask. (Lists are
# typed Sequence[Any]: the selection checks every item itself, where a type checker samples one.)
IndexSelection: TypeAlias = int | slice | Sequence[Any] | Tensor | None

# A TransformerLens hook function: fn(activation, hook=HookPoint) -> activation | None.
HookFn: TypeAlias = Callable[..., Any]
# Where an intervention acts: one exact hook name, several, or a predicate over names.
NameFilter: TypeAlias = str | Sequence[str] | Callable[[str], bool]

# What a study measures: a function of logits ``(batch, pos, d_vocab) -> scalar``; a ``ti.metrics``
# ``Metric`` or ``MetricSet`` (each callable on logits) adds per-prompt values and intervals.
MetricFn: TypeAlias = Callable[..., Any]
# How the positions a read selects are combined: ``None`` keeps each, ``"mean"`` averages them per row.
Reduce: TypeAlias = Literal["mean"] | None

SiteKind: TypeAlias = Literal[
    "embed",
    "pos_embed",
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "attn_in",
    "mlp_in",
    "q",
    "k",
    "v",
    "z",
    "result",
    "rot_q",
    "rot_k",
    "pattern",
    "attn_scores",
    "mlp_pre",
    "mlp_pre_linear",
    "mlp_post",
    "ln1_scale",
    "ln1_normalized",
    "ln2_scale",
    "ln2_normalized",
    "ln_final_scale",
    "ln_final_normalized",
]

_ = (torch, Bool, Float, Int)  # re-exported for type aliases above
