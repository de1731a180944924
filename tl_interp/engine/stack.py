"""Many interventions in one forward pass: each acts on its own group of rows.

A stacked pass runs ``n`` cells (interventions) on ``n`` copies of a batch of ``B`` rows:
cell ``i`` owns rows ``i*B .. (i+1)*B``. ``stack`` turns the cells into one ``Intervention``
whose hook at each point calls every cell's own hook function on that cell's rows only, in
the run context of those rows (their padding, their window of positions), so a cell in a
stacked pass computes exactly what the same intervention computes applied by hand to the
batch alone. Rows of cells without a hook at a point pass through untouched.

A hook function may carry ``together`` (a function ``(act, hook, payloads, batch)``) and
``payload``: when every cell with a hook at a point has exactly one, all sharing the same
``together``, that function edits every cell's rows in one call (``payloads``: each cell's
payload, None for a cell without a hook there, whose rows it must return untouched). It must
compute, row for row, what each cell's own hook computes alone.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp._context import RunContext, current, running
from tl_interp.errors import ShapeError
from tl_interp.intervention import Hook, Intervention
from tl_interp.sites import SiteInfo

__all__ = ["stack", "bound_cells"]


def bound_cells(model: Any, cells: Sequence[Intervention]) -> list[dict[str, list[Any]]]:
    """Each cell's hook functions by hook name, bound to ``model`` (all checks run here; a hook
    name the cells share is resolved and checked once)."""
    out, memo = [], {}  # type: ignore[var-annotated]
    for cell in cells:
        by_name: dict[str, list[Any]] = {}
        for name, fn, _ in cell._bind(model, None, memo):
            by_name.setdefault(name, []).append(fn)
        out.append(by_name)
    return out


def stack(bound: Sequence[dict[str, list[Any]]], batch: int, label: str = "stacked cells") -> Intervention:
    """One intervention running cell ``i``'s hooks on rows ``i*batch .. (i+1)*batch``.

    Args:
        bound: per cell, its bound hook functions by hook name (``bound_cells``).
        batch: rows per cell.
        label: for ``print``.

    Example:
        >>> import torch
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> from tl_interp import hooks
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> model, tokens = HookedTransformer(cfg), torch.tensor([[1, 2, 3]])
        >>> cells = [hooks.scale("blocks.0.hook_mlp_out", s) for s in (0.0, 1.0)]
        >>> out = stack(bound_cells(model, cells), 1).run(model, tokens.repeat(2, 1))
        >>> torch.allclose(out[1], model(tokens)[0], atol=1e-6), torch.allclose(out[0], cells[0].run(model, tokens)[0], atol=1e-6)
        (True, True)
    """
    names = list(dict.fromkeys(name for cell in bound for name in cell))
    n = len(bound)
    hooks = []
    for name in names:
        per_cell = [cell.get(name, []) for cell in bound]
        hooks.append(Hook(name, _builder(per_cell, batch, n), f"{label} ({n} cells) at {name}"))
    return Intervention(tuple(hooks))


def _together(per_cell: list[list[Any]]) -> Any:
    """The one function editing every cell's rows at once (see the module docstring), or None."""
    shared = None
    for fns in per_cell:
        if not fns:
            continue
        fn = getattr(fns[0], "together", None) if len(fns) == 1 else None
        if fn is None or (shared is not None and fn is not shared):
            return None
        shared = fn
    return shared


def _builder(per_cell: list[list[Any]], batch: int, n: int):
    together = _together(per_cell)
    payloads = [fns[0].payload if fns else None for fns in per_cell] if together is not None else []

    def build(name: str, info: SiteInfo):
        def _stacked(act: Tensor, hook: Any) -> Tensor:
            if act.shape[0] != n * batch:
                raise ShapeError(f"stacked cells at {name}: expected {n} x {batch} rows, got {act.shape[0]}")
            ctx = current() or RunContext()
            if together is not None:
                with running(ctx):
                    out = together(act, hook, payloads, batch)
                return act if out is None else out
            pieces = []
            for i, fns in enumerate(per_cell):
                part = act[i * batch:(i + 1) * batch]
                if fns:
                    with running(ctx.rows(i * batch, (i + 1) * batch)):
                        for fn in fns:
                            out = fn(part, hook=hook)
                            part = part if out is None else out
                pieces.append(part)
            return torch.cat(pieces)

        return _stacked

    return build
