"""What a patching sweep iterates over: sites, granularities, variants and their masks.

A *granularity* names the output axes after ``layer`` (``("pos",)``, ``("head",)``,
``("pos", "head")``, ``("head", "dest_pos")`` ...). Each cell of the grid at one layer is a
*variant*: the set of entries of the site's activation to patch. Variants are stacked along
the batch: variant v owns rows ``v*B .. (v+1)*B``, and one boolean mask over the stacked
activation says which entries each row group patches.
"""

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from tl_interp.errors import HookNameError

__all__ = ["Grid", "make_grid", "SWEEP_SITES"]

# site kind -> (activation axes after batch, default granularity, allowed granularities)
SWEEP_SITES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "resid_pre": (("pos", "d"), ("pos",), (("pos",), ())),
    "resid_mid": (("pos", "d"), ("pos",), (("pos",), ())),
    "resid_post": (("pos", "d"), ("pos",), (("pos",), ())),
    "attn_out": (("pos", "d"), ("pos",), (("pos",), ())),
    "mlp_out": (("pos", "d"), ("pos",), (("pos",), ())),
    "mlp_pre": (("pos", "d"), ("neuron",), (("neuron",), ("pos",), ())),
    "mlp_post": (("pos", "d"), ("neuron",), (("neuron",), ("pos",), ())),
    "z": (("pos", "head", "d"), ("head",), (("head",), ("pos", "head"))),
    "q": (("pos", "head", "d"), ("head",), (("head",), ("pos", "head"))),
    "k": (("pos", "head", "d"), ("head",), (("head",), ("pos", "head"))),
    "v": (("pos", "head", "d"), ("head",), (("head",), ("pos", "head"))),
    "result": (("pos", "head", "d"), ("head",), (("head",), ("pos", "head"))),
    "pattern": (("head", "dest_pos", "src_pos"), ("head",), (("head",), ("head", "dest_pos"))),
}
_ACT_AXIS = {"pos": "pos", "dest_pos": "dest_pos", "head": "head", "neuron": "d"}


@dataclass(frozen=True)
class Grid:
    """The cells of a sweep at one layer and how to mask a chunk of them."""

    kind: str
    over: tuple[str, ...]
    sizes: dict[str, int]
    batch: int

    @property
    def cells(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*[range(self.sizes[a]) for a in self.over]))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.sizes[a] for a in self.over)

    def mask(self, cells: list[tuple[int, ...]], act_shape: tuple[int, ...]) -> Tensor:
        """Boolean mask over the stacked activation ``(len(cells) * batch, *act_shape[1:])``."""
        act_axes = SWEEP_SITES[self.kind][0]
        mask = torch.zeros(len(cells) * self.batch, *act_shape[1:], dtype=torch.bool)
        for v, cell in enumerate(cells):
            index: list[object] = [slice(v * self.batch, (v + 1) * self.batch)] + [slice(None)] * len(act_axes)
            for axis_name, i in zip(self.over, cell):
                index[1 + act_axes.index(_ACT_AXIS[axis_name])] = i
            mask[tuple(index)] = True
        return mask

    def changes(self, source: Tensor, base: Tensor) -> Tensor:
        """``(n_cells, batch)``: whether patching each cell writes, in each row, any value that
        differs (bit for bit) from the one already there. A cell that changes nothing in a
        row leaves that row's forward pass exactly the base run's.

        ``base`` is the activation ``(batch, *act)``; ``source`` the same shape or one row.
        """
        act_axes = SWEEP_SITES[self.kind][0]
        source = source.to(base.device, base.dtype)
        if base.dtype.is_floating_point or base.dtype.is_complex:  # -0.0 vs 0.0 and NaNs count as changes
            ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[base.element_size()]
            source, base = source.view(ints), base.view(ints)
        diff = (source != base).expand(base.shape)
        keep = [1 + act_axes.index(_ACT_AXIS[axis]) for axis in self.over]
        rest = [d for d in range(1, diff.ndim) if d not in keep]
        if rest:
            diff = diff.any(dim=tuple(rest))
        # remaining dims: batch, then the kept axes in activation order -> order of self.over
        order = sorted(keep)
        diff = diff.permute(0, *[1 + order.index(k) for k in keep])
        return diff.reshape(diff.shape[0], -1).T


def make_grid(kind: str, over: tuple[str, ...] | None, *, seq_len: int, n_heads: int, n_kv_heads: int,
              batch: int, d_mlp: int | None = None) -> Grid:
    """The grid for a site kind and granularity, with an error listing the valid ones."""
    if kind not in SWEEP_SITES:
        raise HookNameError(f"sweeps cover the sites {', '.join(SWEEP_SITES)}; got {kind!r}")
    _, default, allowed = SWEEP_SITES[kind]
    chosen = default if over is None else tuple(over)
    if chosen not in allowed:
        options = ", ".join(repr(("layer",) + a) for a in allowed)
        raise HookNameError(f"a {kind} sweep can go over {options}; got {('layer',) + chosen!r}")
    heads = n_kv_heads if kind in ("k", "v") else n_heads
    sizes = {"pos": seq_len, "dest_pos": seq_len, "head": heads, "neuron": d_mlp or 0}
    return Grid(kind, chosen, sizes, batch)
