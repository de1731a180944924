"""Selections: which positions, heads, neurons and batch rows a hook touches.

A ``Selection`` is checked against a site's layout when an intervention is bound (indices in
range for the sizes the model's config fixes) and turned into a boolean mask broadcastable
to the activation when the hook runs. Edits are ``torch.where(mask, edited, act)``, so an
unselected entry is returned bit-for-bit.

Positions accept an int (negative allowed), a slice, a list of ints, a boolean mask over
positions ``(pos,)`` or over ``(batch, pos)``, or an integer tensor with one position per
batch row ``(batch,)`` (e.g. ``Tokenized.last_index``, the last non-pad token of each row).
Heads, neurons and rows accept an int, a slice, a list of ints or a boolean mask.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tl_interp._types import IndexSelection, PositionSelection
from tl_interp.errors import SelectionError
from tl_interp.sites import SiteInfo

__all__ = ["Selection", "apply_masked"]

_POS_AXES = ("pos", "query_pos")
_FEATURE_AXES = ("d_mlp", "d_model", "d_feature", "d_head", "d_vocab", "d_sae")
_KV_LEAVES = ("hook_k", "hook_v", "hook_rot_k", "hook_k_input", "hook_v_input")  # count KV heads on GQA
_HEAD_SITE_HINT = "head-indexed sites are z, q, k, v, result, pattern, attn_scores (e.g. site('z', layer))"


def _freeze(sel: object) -> object:
    """Lists become tuples so a selection cannot change after the intervention is built."""
    if isinstance(sel, bool):
        raise SelectionError(f"a selection cannot be a bool ({sel!r}); give an index, slice, list or mask")
    if isinstance(sel, Sequence) and not isinstance(sel, (str, Tensor)):
        items = tuple(sel)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int):
                raise SelectionError(f"selection lists hold ints; got {item!r} in {list(items)!r}")
        return items
    if isinstance(sel, Tensor):
        if sel.dtype != torch.bool and sel.dtype.is_floating_point:
            raise SelectionError(f"a selection tensor must be bool or integer, not {sel.dtype}")
        return sel.detach()
    return sel


def _fmt(sel: object) -> str:
    if isinstance(sel, slice):
        start = "" if sel.start is None else sel.start
        stop = "" if sel.stop is None else sel.stop
        return f"{start}:{stop}" + ("" if sel.step is None else f":{sel.step}")
    if isinstance(sel, tuple):
        return str(list(sel))
    if isinstance(sel, Tensor):
        kind = "mask" if sel.dtype == torch.bool else "per-row"
        return f"<{kind} {tuple(sel.shape)}>"
    return str(sel)


def _index_mask(sel: object, n: int, what: str, context: str) -> Tensor:
    """A (n,) boolean mask for a 1-D selection over an axis of length n."""
    mask = torch.zeros(n, dtype=torch.bool)
    if isinstance(sel, slice):
        mask[sel] = True
        return mask
    if isinstance(sel, Tensor) and sel.dtype == torch.bool:
        if sel.shape != (n,):
            raise SelectionError(f"{context}: the {what} mask has shape {tuple(sel.shape)}, the site has {n} {what}s")
        return sel.cpu()
    indices = [sel] if isinstance(sel, int) else [int(i) for i in (sel.tolist() if isinstance(sel, Tensor) else sel)]
    for i in indices:
        if not -n <= i < n:
            raise SelectionError(f"{context}: {what} {i} is out of range; the site has {n} {what}s (0..{n - 1}, or negative from the end)")
    mask[indices] = True
    return mask


@dataclass(frozen=True, eq=False)
class Selection:
    """Which entries of a site's activation a hook touches; ``None`` means all."""

    positions: PositionSelection = None
    heads: IndexSelection = None
    neurons: IndexSelection = None
    rows: IndexSelection = None
    # An explicit boolean mask broadcastable to the activation, ANDed with the rest: for
    # selections no product of per-axis choices can express (a different head in each row).
    mask_: Tensor | None = None

    def __post_init__(self) -> None:
        for field in ("positions", "heads", "neurons", "rows"):
            object.__setattr__(self, field, _freeze(getattr(self, field)))
        if self.mask_ is not None and self.mask_.dtype != torch.bool:
            raise SelectionError(f"mask= must be a boolean tensor, not {self.mask_.dtype}")

    @property
    def is_everything(self) -> bool:
        return self.mask_ is None and all(getattr(self, f) is None for f in ("positions", "heads", "neurons", "rows"))

    def __str__(self) -> str:
        parts = [f"{label} {_fmt(getattr(self, field))}"
                 for field, label in (("heads", "heads"), ("neurons", "neurons"), ("positions", "pos"), ("rows", "rows"))
                 if getattr(self, field) is not None]
        if self.mask_ is not None:
            parts.append(f"mask {tuple(self.mask_.shape)}")
        return ", ".join(parts)

    # -- binding-time checks -----------------------------------------------------------
    def check(self, context: str, info: SiteInfo) -> None:
        """Raise SelectionError if the selection cannot apply at this site (no forward pass)."""
        if info.axes is None:
            return  # an unknown layout is checked when the activation arrives
        self._axes_for(context, info.axes)
        if self.heads is not None and "head_index" in info.sizes:
            what = "key-value head" if info.name.endswith(_KV_LEAVES) else "head"
            _index_mask(self.heads, info.sizes["head_index"], what, context)
        if self.neurons is not None and info.axes[-1] in info.sizes:
            _index_mask(self.neurons, info.sizes[info.axes[-1]], "neuron", context)
        if info.seq_len is not None and self.positions is not None and not isinstance(self.positions, Tensor):
            _index_mask(self.positions, info.seq_len, "position", context)

    def _axes_for(self, context: str, axes: tuple[str, ...]) -> dict[str, int]:
        """Map each selection field to the axis index it selects along."""
        where: dict[str, int] = {}
        if self.rows is not None:
            where["rows"] = 0
        if self.positions is not None:
            pos = [i for i, a in enumerate(axes) if a in _POS_AXES]
            if not pos:
                raise SelectionError(f"{context}: positions= needs a site with a position axis; this site's axes are {axes}")
            where["positions"] = pos[0]
        if self.heads is not None:
            if "head_index" not in axes:
                raise SelectionError(f"{context}: heads= needs a head-indexed site; this site's axes are {axes} ({_HEAD_SITE_HINT})")
            where["heads"] = axes.index("head_index")
        if self.neurons is not None:
            if axes[-1] not in _FEATURE_AXES:
                raise SelectionError(f"{context}: neurons= selects along a feature axis; this site's last axis is {axes[-1]!r}")
            where["neurons"] = len(axes) - 1
        return where

    # -- run-time masks ----------------------------------------------------------------
    def mask(self, act: Tensor, axes: tuple[str, ...], context: str) -> Tensor | None:
        """A boolean mask broadcastable to ``act`` (``None`` when everything is selected)."""
        if self.is_everything:
            return None
        where = self._axes_for(context, axes)
        mask: Tensor | None = None
        for field, axis in where.items():
            sel = getattr(self, field)
            n = act.shape[axis]
            if field == "positions" and isinstance(sel, Tensor) and (sel.ndim == 2 or sel.dtype != torch.bool):
                part = self._row_positions(sel, act.shape[0], n, axis, act.ndim, context)
            else:
                what = {"rows": "row", "positions": "position", "heads": "head", "neurons": "neuron"}[field]
                vec = _index_mask(sel, n, what, context)
                shape = [1] * act.ndim
                shape[axis] = n
                part = vec.view(shape)
            part = part.to(act.device)
            mask = part if mask is None else mask & part
        if self.mask_ is not None:
            if self.mask_.ndim > act.ndim or any(m not in (1, a) for m, a in zip(reversed(self.mask_.shape), reversed(act.shape))):
                raise SelectionError(f"{context}: mask= has shape {tuple(self.mask_.shape)}, which does not "
                                     f"broadcast to the activation's shape {tuple(act.shape)}")
            explicit = self.mask_.to(act.device)
            mask = explicit if mask is None else mask & explicit
        return mask

    @staticmethod
    def _row_positions(sel: Tensor, batch: int, n: int, axis: int, ndim: int, context: str) -> Tensor:
        """(batch, pos) mask from a per-row index tensor or a 2-D boolean mask."""
        if sel.dtype == torch.bool:
            if sel.shape != (batch, n):
                raise SelectionError(f"{context}: the position mask has shape {tuple(sel.shape)}, the activation has (batch, pos) = ({batch}, {n})")
            rows = sel.cpu()
        else:
            if sel.shape != (batch,):
                raise SelectionError(f"{context}: per-row positions need one index per row, shape ({batch},); got {tuple(sel.shape)}")
            idx = sel.cpu().long()
            if bool(((idx < -n) | (idx >= n)).any()):
                raise SelectionError(f"{context}: per-row positions {idx.tolist()} out of range for {n} positions")
            rows = torch.zeros(batch, n, dtype=torch.bool)
            rows[torch.arange(batch), idx % n] = True
        shape = [1] * ndim
        shape[0], shape[axis] = batch, n
        return rows.view(shape)


def apply_masked(act: Tensor, edited: Tensor, mask: Tensor | None) -> Tensor:
    """``edited`` where ``mask`` is set, ``act`` elsewhere (``edited`` everywhere if no mask)."""
    if mask is None:
        if edited.shape == act.shape:
            return edited.to(act.dtype)
        return torch.broadcast_to(edited, act.shape).to(act.dtype).contiguous()
    return torch.where(mask, edited.to(act.dtype), act)
