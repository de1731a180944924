"""Cells whose edit changes nothing take the base run's value without a pass.

With skipping off (``skip_unchanged=False``) such a cell still gets its own pass, started at
the first position the metric reads (every position before it is the base run's), so it is
computed, exactly, at the smallest cost.

Each cell's hooks are applied to the base run's activations at their sites, in the model's
hook order. A cell's first edited site sees exactly the base activation in a real pass (nothing
upstream of it changed), so if every hook returns its input bit for bit, the pass would be the
base run itself. Where a hook does change something, the first position it changes bounds the
``prefix_kv`` path: positions before it are unchanged at every layer (hooks built by
``tl_interp.hooks`` act position by position).

A hook function may declare its ``footprint`` (the first position it can change, None if it
returns every input bit for bit): a cell whose hooks all declare one is not run here. The
declaration must be conservative: never later than the first position the hook changes.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp._context import RunContext, running
from tl_interp.hooks._select import position_axis
from tl_interp.sites import site_info

__all__ = ["footprints", "UNCHANGED"]

UNCHANGED = -1
_UNDECLARED = object()


def _changed_from(pos: int | None, before: Tensor, after: Tensor) -> int | None:
    """The first position (along axis ``pos``; None: no position axis) where ``after``
    differs from ``before`` (bit for bit), or None."""
    if after.shape != before.shape:
        return 0
    if before.dtype.is_floating_point:  # -0.0 vs 0.0 and NaNs count as changes
        ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[before.element_size()]
        diff = after.contiguous().view(ints) != before.contiguous().view(ints)
    else:
        diff = after != before
    if pos is None:
        return 0 if bool(diff.any()) else None
    others = tuple(d for d in range(diff.ndim) if d != pos)
    changed = (diff.any(dim=others) if others else diff).nonzero()
    return int(changed[0]) if len(changed) else None


def footprints(model: Any, bound: Sequence[Mapping[str, list[Any]]], base: Mapping[str, Tensor],
               context: RunContext) -> list[int]:
    """Per cell: ``UNCHANGED``, or the first position its hooks change (0 when unknown)."""
    order = {name: i for i, name in enumerate(model.hook_dict)}
    axes: dict[str, int | None] = {}  # each site's position axis, looked up once
    out = []
    with running(context), torch.no_grad():
        for cell in bound:
            declared = [getattr(fn, "footprint", _UNDECLARED) for fns in cell.values() for fn in fns]
            if declared and _UNDECLARED not in declared:
                changed = [d for d in declared if d is not None]
                out.append(min(changed) if changed else UNCHANGED)
                continue
            first: int | None = None
            for name in sorted(cell, key=lambda n: order.get(n, len(order))):
                if name not in base:
                    first = 0
                    break
                act = base[name]
                for fn in cell[name]:
                    result = fn(act.clone(), hook=model.hook_dict[name])
                    edited = act if result is None else result
                    if name not in axes:
                        axes[name] = position_axis(site_info(model, name).axes_for(act.ndim))
                    where = _changed_from(axes[name], act, edited)
                    if where is not None:
                        first = where if first is None else min(first, where)
                    act = edited
            out.append(UNCHANGED if first is None else first)
    return out
