"""Selections: which positions, heads, neurons and batch rows a hook touches.

A ``Selection`` is checked against a site's layout when an intervention is bound (indices in
range for the sizes the model's config fixes) and turned into a boolean mask broadcastable
to the activation when the hook runs. Edits are ``torch.where(mask, edited, act)``, so an
unselected entry is returned bit-for-bit.

Positions follow ``tl_interp.positions`` (ints, slices, lists, masks, per-row indices,
``"last"``, ``"all"``, ``From(k)``). They are absolute positions of the sequence: the run
context (``tl_interp._context``) says which window of positions an activation covers (a
key-value-cached generation step, or an engine pass that starts from a cached prefix), and which
positions are padding; this module is the one place that turns that into masks and fits
per-position tensors to the activation's window. Where nothing describes the run (a ``bind()``
hook run by TransformerLens itself, or an activation ``generate`` computes outside its forward
calls), a selection that would need that description refuses to run rather than guess.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tl_interp._context import RunContext, current
from tl_interp._types import IndexSelection
from tl_interp.errors import SelectionError, ShapeError, UnsupportedError
from tl_interp.positions import Finder, From, Positions, describe, real_bounds
from tl_interp.sites import SiteInfo

__all__ = ["Selection", "apply_masked", "fit_to_activation", "position_axis", "layout", "index_mask"]

_POS_AXES = ("pos", "query_pos")
_FEATURE_AXES = ("d_mlp", "d_model", "d_feature", "d_head", "d_vocab", "d_sae")
_KV_LEAVES = ("hook_k", "hook_v", "hook_rot_k", "hook_k_input", "hook_v_input")  # count KV heads on GQA
_HEAD_SITE_HINT = "head-indexed sites are z, q, k, v, result, pattern, attn_scores (e.g. site('z', layer))"


def _freeze(sel: object, field: str) -> object:
    """Lists become tuples so a selection cannot change after the intervention is built."""
    if isinstance(sel, bool):
        raise SelectionError(f"a selection cannot be a bool ({sel!r}); give an index, slice, list or mask")
    if isinstance(sel, str):
        if field != "positions" or sel not in ("all", "last"):
            raise SelectionError(f"{field}={sel!r}: the only named selections are positions='last' and "
                                 "positions='all'")
        return sel
    if isinstance(sel, Finder):
        raise UnsupportedError(f"positions={sel!r} finds positions by token; hooks need them resolved "
                               "first: pass positions=finder.resolve(model, tokens) (one index per row)")
    if isinstance(sel, From) and field != "positions":
        raise SelectionError(f"{field}={sel!r}: From(k) selects positions only")
    if isinstance(sel, slice) and sel.step is not None and (isinstance(sel.step, bool) or not isinstance(sel.step, int)
                                                           or sel.step <= 0):
        raise SelectionError(f"{field}={describe(sel)}: a slice's step must be a positive int, got {sel.step!r}")
    if isinstance(sel, Sequence) and not isinstance(sel, Tensor):
        items = tuple(sel)
        if not items:  # an empty list would make the hook a silent no-op
            raise SelectionError(f"{field}=[] selects nothing; give at least one index, or {field}=None for all")
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int):
                raise SelectionError(f"selection lists hold ints; got {item!r} in {list(items)!r}")
        return items
    if isinstance(sel, Tensor):
        if sel.dtype != torch.bool and sel.dtype.is_floating_point:
            raise SelectionError(f"a selection tensor must be bool or integer, not {sel.dtype}")
        if sel.dtype != torch.bool and sel.numel() == 0:
            raise SelectionError(f"{field}: an empty index tensor selects nothing; give at least one index")
        return sel.detach()
    return sel


def index_mask(sel: object, n: int, what: str, context: str) -> Tensor:
    """A (n,) boolean mask for a 1-D selection over an axis of length n (an int, a slice, a list
    or tensor of indices, negative from the end, or a boolean mask); ``SelectionError`` names
    ``context`` and ``what`` when it selects nothing or is out of range.

    Example:
        >>> index_mask([0, -1], 4, "head", "heads=").tolist()
        [True, False, False, True]
    """
    mask = torch.zeros(n, dtype=torch.bool)
    if isinstance(sel, slice):
        mask[sel] = True
        if not bool(mask.any()):
            raise SelectionError(f"{context}: the {what} slice {describe(sel)} selects nothing of {n} {what}s")
        return mask
    if isinstance(sel, Tensor) and sel.dtype == torch.bool:
        if sel.shape != (n,):
            raise SelectionError(f"{context}: the {what} mask has shape {tuple(sel.shape)}, the site has {n} {what}s")
        return sel.cpu()
    indices = [sel] if isinstance(sel, int) else [int(i) for i in (sel.tolist() if isinstance(sel, Tensor) else sel)]
    for i in indices:
        if not -n <= i < n:
            raise SelectionError(f"{context}: {what} {i} is out of range; the site has {n} {what}s "
                                 f"(0..{n - 1}, or negative from the end)")
    mask[indices] = True
    return mask


@dataclass(frozen=True)
class Layout:
    """Where an activation's positions sit in the sequence, and which are real (run context)."""

    batch: int
    offset: int
    total: int
    real: Tensor | None  # (batch, total)


def layout(rows: int, window: int, context: str, *, needs_padding: bool = False) -> Layout:
    """The layout of an activation with ``rows`` rows and ``window`` positions, in this run."""
    ctx = current()
    if ctx is None:  # a hook from bind() run by TransformerLens itself: nothing describes the batch
        if needs_padding:
            raise UnsupportedError(f"{context}: this selection ('last', 'all' or From(k)) follows each row's padding, "
                                   "but the hook runs outside tl_interp's runs (a bind() hook in TransformerLens's "
                                   "run_with_hooks), where nothing says where rows end; run it with Intervention.run "
                                   "or .applied, or select literal positions (-1, slice(k, None)) for an unpadded batch")
        ctx = RunContext()
    if ctx.outside_forward:
        raise UnsupportedError(f"{context}: this activation is computed outside the model's forward calls while it "
                               "generates (HookedTransformer.generate embeds the sequence itself), so nothing says "
                               "which positions it covers; select positions at a block's hook point (e.g. "
                               "blocks.0.hook_resid_pre), or every position (positions=None)")
    if needs_padding and not ctx.padding_known:
        raise UnsupportedError(f"{context}: this selection follows each row's padding, but the model tokenised a "
                               "list of strings itself, so nothing knows where its rows end; pass token ids and "
                               "their mask (ti.models.adapt(model).tokenize(prompts)), or use Intervention.run")
    if not ctx.offset_known:
        raise UnsupportedError(f"{context}: positions are selected by absolute index, but this forward call "
                               "continues a generation cache whose length tl_interp cannot read; steer generation "
                               "with ti.steering.generate, or select every position (positions=None)")
    total = ctx.offset + window
    real = ctx.real
    if real is not None:
        if real.shape[0] != rows or real.shape[1] < total:
            raise ShapeError(f"{context}: the attention mask of this run has shape {tuple(real.shape)}; the "
                             f"activation has {rows} rows at positions {ctx.offset}..{total - 1}")
        real = real[:, :total].bool()
    return Layout(rows, ctx.offset, total, real)


def _positions_mask(sel: object, lay: Layout, window: int, context: str) -> Tensor:
    """``(rows, window)`` or ``(window,)`` boolean mask of a position selection in this window."""
    total, win = lay.total, slice(lay.offset, lay.total)
    device = lay.real.device if lay.real is not None else None
    if isinstance(sel, str) or isinstance(sel, From):
        if sel == "all":
            return torch.ones(window, dtype=torch.bool) if lay.real is None else lay.real[:, win]
        if lay.real is None:
            first = torch.zeros(lay.batch, dtype=torch.long)
            last = torch.full((lay.batch,), total - 1, dtype=torch.long)
            real = torch.ones(lay.batch, total, dtype=torch.bool)
        else:
            (first, last), real = real_bounds(lay.real), lay.real
        pos = torch.arange(total, device=real.device)
        if sel == "last":
            rows = pos[None, :] == last[:, None]
        else:
            start = first + sel.index
            if bool((start > last).any()):
                short = (start > last).nonzero().flatten().tolist()
                raise SelectionError(f"{context}: positions={sel!r} selects nothing in rows {short}, which have "
                                     f"fewer than {sel.index + 1} real tokens")
            rows = real & (pos[None, :] >= start[:, None])
        return rows[:, win]
    if isinstance(sel, Tensor) and (sel.ndim == 2 or sel.dtype != torch.bool):
        if sel.dtype == torch.bool:  # (batch, pos) mask over the whole sequence
            if sel.shape != (lay.batch, total):
                raise SelectionError(f"{context}: the position mask has shape {tuple(sel.shape)}; the sequence is "
                                     f"(batch, pos) = ({lay.batch}, {total})")
            return sel.to(device)[:, win]
        if sel.shape != (lay.batch,):
            raise SelectionError(f"{context}: per-row positions need one index per row, shape ({lay.batch},); "
                                 f"got {tuple(sel.shape)}")
        idx = sel.cpu().long()
        if bool(((idx < -total) | (idx >= total)).any()):
            raise SelectionError(f"{context}: per-row positions {idx.tolist()} are out of range for {total} positions")
        rows = torch.zeros(lay.batch, total, dtype=torch.bool)
        rows[torch.arange(lay.batch), idx % total] = True
        return rows[:, win]
    if isinstance(sel, Tensor) and sel.shape != (total,):
        raise SelectionError(f"{context}: the position mask has {sel.shape[0]} entries, the sequence has {total} "
                             "positions (during generation the sequence grows: select positions by index, a "
                             "slice or From(k) instead)")
    return index_mask(sel, total, "position", context)[win]


@dataclass(frozen=True, eq=False)
class Selection:
    """Which entries of a site's activation a hook touches; ``None`` means all."""

    positions: Positions = None
    heads: IndexSelection = None
    neurons: IndexSelection = None
    rows: IndexSelection = None
    # An explicit boolean mask broadcastable to the activation, ANDed with the rest: for
    # selections no product of per-axis choices can express (a different head in each row).
    mask_: Tensor | None = None

    def __post_init__(self) -> None:
        for field in ("positions", "heads", "neurons", "rows"):
            object.__setattr__(self, field, _freeze(getattr(self, field), field))
        if self.mask_ is not None and self.mask_.dtype != torch.bool:
            raise SelectionError(f"mask= must be a boolean tensor, not {self.mask_.dtype}")

    @property
    def is_everything(self) -> bool:
        return self.mask_ is None and all(getattr(self, f) is None for f in ("positions", "heads", "neurons", "rows"))

    def __str__(self) -> str:
        parts = [f"{label} {describe(getattr(self, field))}"
                 for field, label in (("heads", "heads"), ("neurons", "neurons"), ("positions", "pos"), ("rows", "rows"))
                 if getattr(self, field) is not None]
        if self.mask_ is not None:
            parts.append(f"mask {tuple(self.mask_.shape)}")
        return ", ".join(parts)

    # -- binding-time checks -----------------------------------------------------------
    def check(self, context: str, info: SiteInfo) -> None:
        """Raise SelectionError if the selection cannot apply at this site (no forward pass)."""
        if info.axes is None:
            if self.heads is not None:  # generic layouts have no head axis: refuse now, not mid-run
                raise SelectionError(f"{context}: heads= needs a head-indexed site, and tl_interp does not know the "
                                     f"layout of {info.name!r} (a custom module's hook point, read as batch first, "
                                     "features last); select along the last axis with neurons=, or give hooks.patch "
                                     "a mask= broadcastable to the activation")
            return  # an unknown layout is checked when the activation arrives
        self._axes_for(context, info.axes)
        if self.heads is not None and "head_index" in info.sizes:
            what = "key-value head" if info.name.endswith(_KV_LEAVES) else "head"
            index_mask(self.heads, info.sizes["head_index"], what, context)
        if self.neurons is not None and info.axes[-1] in info.sizes:
            index_mask(self.neurons, info.sizes[info.axes[-1]], "neuron", context)
        literal = not isinstance(self.positions, (Tensor, str, From)) and self.positions is not None
        if info.seq_len is not None and literal:
            index_mask(self.positions, info.seq_len, "position", context)

    def _axes_for(self, context: str, axes: tuple[str, ...]) -> dict[str, int]:
        """Map each selection field to the axis index it selects along."""
        where: dict[str, int] = {}
        if self.rows is not None:
            where["rows"] = 0
        if self.positions is not None:
            pos = position_axis(axes)
            if pos is None:
                raise SelectionError(f"{context}: positions= needs a site with a position axis; this site's axes "
                                     f"are {axes}")
            where["positions"] = pos
        if self.heads is not None:
            if "head_index" not in axes:
                raise SelectionError(f"{context}: heads= needs a head-indexed site; this site's axes are {axes} "
                                     f"({_HEAD_SITE_HINT})")
            where["heads"] = axes.index("head_index")
        if self.neurons is not None:
            if axes[-1] not in _FEATURE_AXES:
                raise SelectionError(f"{context}: neurons= selects along a feature axis; this site's last axis is "
                                     f"{axes[-1]!r}")
            where["neurons"] = len(axes) - 1
        return where

    # -- run-time masks ----------------------------------------------------------------
    def mask(self, act: Tensor, axes: tuple[str, ...], context: str) -> Tensor | None:
        """A boolean mask broadcastable to ``act`` (``None`` when everything is selected)."""
        if self.is_everything:
            return None
        where = self._axes_for(context, axes)
        pos_axis = position_axis(axes)
        lay = layout(act.shape[0], act.shape[pos_axis] if pos_axis is not None else 1, context,
                     needs_padding=isinstance(self.positions, (str, From)))
        mask: Tensor | None = None
        for field, axis in where.items():
            sel = getattr(self, field)
            shape = [1] * act.ndim
            if field == "positions":
                part = _positions_mask(sel, lay, act.shape[axis], context)
                if part.ndim == 2:
                    shape[0] = part.shape[0]
                shape[axis] = part.shape[-1]
            elif field == "rows":
                part = index_mask(sel, lay.batch, "row", context)
                shape[0] = part.shape[0]
            else:
                what = {"heads": "head", "neurons": "neuron"}[field]
                part = index_mask(sel, act.shape[axis], what, context)
                shape[axis] = part.shape[0]
            part = part.reshape(shape).to(act.device)
            mask = part if mask is None else mask & part
        if self.mask_ is not None:
            explicit = fit_to_activation(self.mask_, act, axes, "mask=", context)
            mask = explicit if mask is None else mask & explicit
        return mask


def position_axis(axes: tuple[str, ...]) -> int | None:
    """The index of the (query) position axis in ``axes``, or None."""
    return next((i for i, a in enumerate(axes) if a in _POS_AXES), None)


def fit_to_activation(t: Tensor, act: Tensor, axes: tuple[str, ...], what: str, context: str) -> Tensor:
    """``t``, shaped like the activation over the whole sequence (or like one row of it, or
    broadcastable to it), cut to the activation's window of positions."""
    pos = position_axis(axes)
    if pos is None or t.ndim < act.ndim - 1:
        return t.to(act.device)
    lay = layout(act.shape[0], act.shape[pos], context)
    axis = pos if t.ndim == act.ndim else pos - 1
    if t.shape[axis] not in (1, act.shape[pos]):
        if t.shape[axis] < lay.total or lay.offset == 0:
            why = ("during generation the sequence grows past the prompt; select the prompt's positions explicitly"
                   if lay.offset else f"give {what} for {act.shape[pos]} positions: a run on inputs of the same "
                   "token length")
            raise ShapeError(f"{context}: {what} covers {t.shape[axis]} positions; the activation is at positions "
                             f"{lay.offset}..{lay.total - 1} ({why})")
        t = t.narrow(axis, lay.offset, act.shape[pos])
    return t.to(act.device)


def apply_masked(act: Tensor, edited: Tensor, mask: Tensor | None) -> Tensor:
    """``edited`` where ``mask`` is set, ``act`` elsewhere (``edited`` everywhere if no mask)."""
    if mask is None:
        if edited.shape == act.shape:
            return edited.to(act.dtype)
        return torch.broadcast_to(edited, act.shape).to(act.dtype).contiguous()
    return torch.where(mask, edited.to(act.dtype), act)
