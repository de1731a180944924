"""Caching hooks: capture only the activations (and positions) asked for.

``cache`` reads activations without changing them. It keeps just the named sites and the
selected positions / heads / rows, optionally moves them to another device or dtype as they
arrive (so a long sweep does not hold everything on the accelerator), and can capture the
gradients flowing back into the same sites for attribution methods.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp._device import check_device
from tl_interp._types import IndexSelection, NameFilter, PositionSelection
from tl_interp.errors import HookNameError, SelectionError, UnsupportedError
from tl_interp.hooks._select import Selection, layout
from tl_interp.positions import From, real_bounds
from tl_interp.intervention import Hook, Intervention
from tl_interp.sites import SiteInfo, describe_where

__all__ = ["cache", "CacheIntervention", "ActivationStore"]


class ActivationStore(Mapping[str, Tensor]):
    """The activations (and gradients) a cache captured on its most recent run, by hook name.

    Each binding of the cache to a model (every ``run`` / ``applied``) clears the entries of
    the sites it binds, so nothing stale from an earlier run survives.
    """

    def __init__(self) -> None:
        self._acts: dict[str, Tensor] = {}
        self._grads: dict[str, Tensor] = {}

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._acts[name]
        except KeyError:
            held = ", ".join(self._acts) or "nothing yet (run the model under the cache first)"
            raise HookNameError(f"the cache holds no activation for {name!r}; it holds {held}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    @property
    def gradients(self) -> Mapping[str, Tensor]:
        """Gradients w.r.t. the cached activations, after a backward pass (``gradients=True``)."""
        return dict(self._grads)

    def _forget(self, name: str) -> None:
        self._acts.pop(name, None)
        self._grads.pop(name, None)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self._acts.items())
        return f"ActivationStore({shapes})"


@dataclass(frozen=True)
class CacheIntervention(Intervention):
    """An Intervention that captures activations; read them from ``.store`` (or index it).

    Composing with ``+`` returns a plain Intervention; keep this object to read the store.
    """

    store: ActivationStore = field(default_factory=ActivationStore, compare=False)

    def __getitem__(self, name: str) -> Tensor:
        return self.store[name]

    def collect(self, model: Any, *args: Any, **kwargs: Any) -> ActivationStore:
        """Run ``model(*args, **kwargs)`` under the cache and return what it captured.

        Example:
            >>> import torch
            >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
            >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4,
            ...                               n_ctx=4, d_vocab=5, act_fn="relu", d_mlp=16)
            >>> acts = cache("blocks.0.hook_resid_post", positions=-1).collect(
            ...     HookedTransformer(cfg), torch.tensor([[1, 2, 3]]))
            >>> tuple(acts["blocks.0.hook_resid_post"].shape)
            (1, 8)
        """
        self.run(model, *args, **kwargs)
        return self.store


def _positions_index(chosen: object, act: Tensor, axis: int, context: str) -> tuple[str, Tensor | None]:
    """How a cache keeps positions: ``("all", None)``, ``("rows", (batch,) window index)`` (one
    position per row, axis dropped) or ``("list", window indices)`` (axis kept)."""
    rows, window = act.shape[0], act.shape[axis]
    symbolic = isinstance(chosen, (str, From))
    lay = layout(rows, window, context, needs_padding=symbolic)
    if chosen == "all":
        return "all", None
    if isinstance(chosen, From):
        raise UnsupportedError(f"{context}: a cache keeps one rectangular tensor; From(k) selects a different "
                               "number of positions per row. Cache positions='all' and use the attention mask")
    real = lay.real
    if chosen == "last" or (isinstance(chosen, Tensor) and chosen.dtype != torch.bool):
        if chosen == "last":
            idx = (real_bounds(real)[1].cpu() if real is not None else torch.full((rows,), lay.total - 1))
        else:
            if chosen.shape != (rows,):
                raise SelectionError(f"{context}: per-row positions need shape ({rows},), got {tuple(chosen.shape)}")
            idx = chosen.cpu().long()
            if bool(((idx < -lay.total) | (idx >= lay.total)).any()):
                raise SelectionError(f"{context}: per-row positions {idx.tolist()} are out of range for {lay.total} "
                                     "positions")
            idx = idx % lay.total
        kind = "rows"
    elif isinstance(chosen, int):
        if not -lay.total <= chosen < lay.total:
            raise SelectionError(f"{context}: position {chosen} is out of range for {lay.total} positions")
        idx, kind = torch.full((rows,), chosen % lay.total), "rows"
    else:
        mask = torch.as_tensor(chosen) if isinstance(chosen, Tensor) else None
        if mask is not None and (mask.ndim != 1 or mask.shape[0] != lay.total):
            raise SelectionError(f"{context}: a cache takes a ({lay.total},) position mask, not {tuple(mask.shape)} "
                                 "(a 2-D mask would make ragged rows)")
        every = torch.arange(lay.total)
        picked = every[mask.cpu()] if mask is not None else every[chosen] if isinstance(chosen, slice) \
            else torch.tensor([i % lay.total for i in chosen]) if all(-lay.total <= i < lay.total for i in chosen) \
            else None
        if picked is None:
            raise SelectionError(f"{context}: positions {list(chosen)} are out of range for {lay.total} positions")
        outside = picked[(picked < lay.offset) | (picked >= lay.total)]
        if len(outside):
            raise SelectionError(f"{context}: positions {outside.tolist()} are outside this pass's positions "
                                 f"{lay.offset}..{lay.total - 1}")
        return "list", picked - lay.offset
    if real is not None and not bool(real[torch.arange(rows), idx.to(real.device)].all()):
        pads = (~real[torch.arange(rows), idx.to(real.device)]).nonzero().flatten().tolist()
        raise SelectionError(f"{context}: position(s) {idx[pads].tolist()} are padding in rows {pads}; "
                             "use positions='last' for each row's last real token")
    if bool(((idx < lay.offset) | (idx >= lay.total)).any()):
        raise SelectionError(f"{context}: the selected positions are outside this pass's positions "
                             f"{lay.offset}..{lay.total - 1}")
    return kind, idx - lay.offset


def _take(act: Tensor, axes: tuple[str, ...], sel: Selection, context: str) -> Tensor:
    """The selected part of ``act``: an int, ``"last"`` or per-row position drops the axis,
    others keep it. Axes are handled from the last to the first so dropping one never shifts
    another's index."""
    out = act
    for part, axis in sorted(sel._axes_for(context, axes).items(), key=lambda kv: -kv[1]):
        chosen = getattr(sel, part)
        n = act.shape[axis]
        if part == "positions":
            kind, index = _positions_index(chosen, act, axis, context)
            if kind == "rows":
                rows = torch.arange(act.shape[0], device=act.device)
                out = out.movedim(axis, 1)[rows, index.to(act.device)]
            elif kind == "list":
                out = out.index_select(axis, index.to(act.device))
        elif isinstance(chosen, int):
            if not -n <= chosen < n:
                raise SelectionError(f"{context}: {part} index {chosen} is out of range for {n} entries")
            out = out.select(axis, chosen)
        elif isinstance(chosen, slice):
            out = out[(slice(None),) * axis + (chosen,)]
        else:
            index = torch.as_tensor(chosen, device=act.device)
            if index.dtype == torch.bool:
                if index.shape != (n,):
                    raise SelectionError(f"{context}: a cache takes a ({n},) mask for {part}, not "
                                         f"{tuple(index.shape)} (a 2-D mask would make ragged rows)")
                index = index.nonzero().flatten()
            out = out.index_select(axis, index % n)
    return out


@checked
def cache(where: NameFilter, *, positions: PositionSelection = None, heads: IndexSelection = None,
          rows: IndexSelection = None, device: str | torch.device | None = None,
          dtype: torch.dtype | None = None, detach: bool = True, gradients: bool = False) -> CacheIntervention:
    """Capture activations at ``where`` (only the selected positions/heads/rows).

    Args:
        where: hook name, names, or name predicate (``lambda n: n.endswith("resid_pre")``).
        positions: keep only these positions (an int, ``"last"`` or a per-row index tensor such
            as ``Tokenized.last_index`` takes one position per row and drops the axis; reading a
            pad position that way is an error). ``"all"`` keeps every position.
        heads, rows: keep only these heads / batch rows.
        device, dtype: move / cast captured tensors as they arrive (e.g. ``"cpu"``).
        detach: store detached tensors (default); ``False`` keeps the autograd graph.
        gradients: also capture d(output)/d(activation) when a backward pass runs.

    Returns:
        A CacheIntervention; after a run, ``iv["blocks.0.hook_resid_pre"]`` or ``iv.store``.

    Example:
        >>> c = cache(lambda n: n.endswith("hook_resid_pre"), positions=-1, device="cpu")
        >>> print(c)
        Intervention (1 hook):
          1. cache (pos -1) at <names where <lambda>>
    """
    if device is not None:
        check_device(device, "cache")
    selection = Selection(positions, heads, None, rows)
    store = ActivationStore()

    def build(name: str, info: SiteInfo):
        context = f"cache at {name}"
        selection.check(context, info)
        store._forget(name)

        def _cache(act: Tensor, hook: object) -> None:
            kept = _take(act, info.axes_for(act.ndim), selection, context)
            if gradients and act.requires_grad:
                def keep_grad(grad: Tensor) -> None:
                    g = _take(grad, info.axes_for(grad.ndim), selection, context)
                    store._grads[name] = g.detach().to(device=device or g.device, dtype=dtype or g.dtype)
                act.register_hook(keep_grad)
            if detach:
                kept = kept.detach()
            store._acts[name] = kept.to(device=device or kept.device, dtype=dtype or kept.dtype)

        return _cache

    build.__name__ = "cache"
    selected = str(selection)
    description = f"cache{f' ({selected})' if selected else ''} at {describe_where(where)}"
    where = where if isinstance(where, str) or callable(where) else tuple(where)
    return CacheIntervention((Hook(where, build, description, reads_only=True),), store)
