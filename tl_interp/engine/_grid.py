"""What a study iterates over at each layer: site kinds, granularities (``over``) and cells.

``over`` names the result axes after ``layer``, in TransformerLens's vocabulary:
``("pos",)``, ``("head_index",)``, ``("pos", "head_index")``, ``("head_index", "dest_pos")``,
``("d_mlp",)`` or ``()`` (the whole site). Each cell of a layer's grid is one selection of the
site's activation (a position, a head, a neuron ...), given to a hook factory as
``positions=`` / ``heads=`` / ``neurons=``.
"""

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tl_interp.errors import OptionError, SelectionError, TlInterpDeprecationWarning

__all__ = ["SWEEP_SITES", "Grid", "make_grid", "model_grid", "check_layers", "normalize_over", "OVER_ALIASES"]

_RESID = (("pos",), (("pos",), ()))
_MLP = (("d_mlp",), (("d_mlp",), ("pos",), ()))
_HEADS = (("head_index",), (("head_index",), ("pos", "head_index")))
# site kind -> (default granularity, allowed granularities)
SWEEP_SITES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "resid_pre": _RESID, "resid_mid": _RESID, "resid_post": _RESID, "attn_out": _RESID, "mlp_out": _RESID,
    "mlp_pre": _MLP, "mlp_post": _MLP,
    "z": _HEADS, "q": _HEADS, "k": _HEADS, "v": _HEADS, "result": _HEADS,
    "pattern": (("head_index",), (("head_index",), ("head_index", "dest_pos"))),
}
OVER_ALIASES = {"head": "head_index", "neuron": "d_mlp", "heads": "head_index", "neurons": "d_mlp"}
_SELECTOR = {"pos": "positions", "dest_pos": "positions", "head_index": "heads", "d_mlp": "neurons"}


def normalize_over(over: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``over`` as a tuple of axis names (a single name is one axis; old names warn)."""
    if over is None:
        return None
    axes = (over,) if isinstance(over, str) else tuple(over)
    out = []
    for axis in axes:
        if axis in OVER_ALIASES:
            warnings.warn(f"over={axis!r} is now {OVER_ALIASES[axis]!r} (TransformerLens's axis name)",
                          TlInterpDeprecationWarning, stacklevel=4)
            axis = OVER_ALIASES[axis]
        out.append(axis)
    return tuple(out)


@dataclass(frozen=True)
class Grid:
    """The cells of one site kind at one layer."""

    kind: str
    over: tuple[str, ...]
    sizes: dict[str, int]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[a] for a in self.over)

    @property
    def act_axes(self) -> tuple[str, ...]:
        """The site's activation axes after ``batch``, named as the grid names them."""
        if self.kind == "pattern":
            return ("head_index", "dest_pos", "src_pos")
        if SWEEP_SITES[self.kind] is _HEADS:
            return ("pos", "head_index", "d_head")
        return ("pos", "d_mlp") if SWEEP_SITES[self.kind] is _MLP else ("pos", "d_model")

    def sum_to_cells(self, contrib: Tensor) -> Tensor:
        """Per-entry contributions ``(batch, *activation)`` summed over the batch and every axis
        the grid does not keep: ``self.shape``."""
        keep = [1 + self.act_axes.index(a) for a in self.over]
        drop = [d for d in range(contrib.ndim) if d not in keep]
        return contrib.sum(drop) if drop else contrib

    @property
    def cells(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*[range(self.sizes[a]) for a in self.over]))

    def selection(self, cell: tuple[int, ...]) -> dict[str, Any]:
        """The hook-factory selection of one cell, e.g. ``{"positions": 3, "heads": 1}``."""
        return {_SELECTOR[axis]: index for axis, index in zip(self.over, cell)}


def make_grid(kind: str, over: str | Sequence[str] | None, *, seq_len: int, n_heads: int, n_kv_heads: int,
              d_mlp: int | None = None) -> Grid:
    """The grid for a site kind and granularity, with an error listing the valid ones."""
    if kind not in SWEEP_SITES:
        raise OptionError(f"sweeps cover the site kinds {', '.join(SWEEP_SITES)}; got {kind!r}")
    default, allowed = SWEEP_SITES[kind]
    chosen = default if over is None else normalize_over(over)
    if chosen not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise OptionError(f"a {kind} sweep goes over {options} (the result axes after 'layer'); got {chosen!r}")
    heads = n_kv_heads if kind in ("k", "v") else n_heads
    sizes = {"pos": seq_len, "dest_pos": seq_len, "head_index": heads, "d_mlp": d_mlp or 0}
    return Grid(kind, chosen, sizes)


def model_grid(model: Any, kind: str, over: str | Sequence[str] | None, seq_len: int) -> Grid:
    """``make_grid`` with the sizes read from the model's config (key-value heads for k/v)."""
    cfg = model.cfg
    return make_grid(kind, over, seq_len=seq_len, n_heads=cfg.n_heads,
                     n_kv_heads=getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
                     d_mlp=getattr(cfg, "d_mlp", None))


def check_layers(model: Any, layers: Sequence[int] | None) -> list[int]:
    """The layers a study runs over (default all), each checked against the model.

    Example:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(cfg=SimpleNamespace(n_layers=2))
        >>> check_layers(model, None), check_layers(model, [1])
        ([0, 1], [1])
        >>> check_layers(model, [2, -1])
        Traceback (most recent call last):
        ...
        tl_interp.errors.SelectionError: layers [2, -1] are out of range; the model has layers 0..1
    """
    n_layers = model.cfg.n_layers
    chosen = list(range(n_layers)) if layers is None else list(layers)
    if not chosen:
        raise SelectionError("layers is empty; give at least one layer (or None for all)")
    bad = [layer for layer in chosen if isinstance(layer, bool) or not 0 <= layer < n_layers]
    if bad:
        raise SelectionError(f"layers {bad} are out of range; the model has layers 0..{n_layers - 1}")
    return chosen
