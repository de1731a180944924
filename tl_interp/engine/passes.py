"""How cells are grouped into stacked forward passes: a memory model and a cost model.

Memory: one pass over ``rows`` rows and ``pos`` positions holds, per (row, position), about
``8 d_model`` floats of residual-stream tensors (block input and output, norms, attention and
MLP outputs, the stacked hook's copy), ``3 d_mlp`` (MLP pre/post/gate), ``4 d_head n_heads``
(q, k, v, z), ``3 n_heads pos`` (scores, pattern, an edited copy) and, when the full logits
are computed, ``3 d_vocab`` (logits and a metric's softmax). The number of cells per pass is
the budget over that.

Cost (for passes that start at a cell's first edited position): a pass starting at position
p over c cells computes ``rows * c * (pos - p)`` token-blocks, plus a fixed cost per pass
(kernel launches, Python and hook overhead in every block: ~48 tokens' worth on CPU, where
``compat.layout`` spares TL's per-call weight copies; more on accelerators). Cells sorted by
first position are cut into contiguous bands that minimise the total (dynamic programming
over at most ``max_band`` positions per band).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tl_interp._checks import renamed
from tl_interp.sites import d_vocab_out

__all__ = ["CostModel", "cells_per_pass", "chunks", "merge_layers"]


@dataclass(frozen=True)
class CostModel:
    """The constants of the pass planner (see the module docstring); override per call.

    Attributes:
        pass_cost_tokens: fixed cost of one pass in token-blocks, by device type.
        other_device_pass_cost: the same for devices not listed.
        max_band: the widest band of first positions considered.
        block_cost_tokens: fixed cost of running one block in a pass, in token-blocks (TL
            re-lays out the block's weights on every call): cells whose first edited layer is
            later may join an earlier layer's passes when that is cheaper (``merge_layers``).
    """

    pass_cost_tokens: tuple[tuple[str, int], ...] = (("cpu", 48),)
    other_device_pass_cost: int = 512
    max_band: int = 64
    block_cost_tokens: int = 30

    def pass_cost(self, device_type: str) -> int:
        return dict(self.pass_cost_tokens).get(device_type, self.other_device_pass_cost)


def floats_per_token(model: Any, seq: int, full_logits: bool) -> int:
    """Floats one (row, position) holds during a pass (module docstring)."""
    cfg = model.cfg
    d_mlp = getattr(cfg, "d_mlp", None) or 0
    heads = cfg.n_heads
    vocab = d_vocab_out(model)
    return 8 * cfg.d_model + 3 * d_mlp + 4 * cfg.d_head * heads + 3 * heads * seq + (3 * vocab if full_logits else 0)


def rows_per_pass(model: Any, seq: int, memory_mb: float, *, full_logits: bool) -> int:
    """Rows of ``seq`` tokens one forward pass holds within ``memory_mb``."""
    return cells_per_pass(model, 1, seq, memory_mb, full_logits)


@renamed(batch="n_rows")
def cells_per_pass(model: Any, n_rows: int, seq: int, memory_mb: float, full_logits: bool) -> int:
    """How many cells (copies of an ``n_rows`` x ``seq`` input) fit one pass in ``memory_mb``."""
    per_cell = 4.0 * n_rows * seq * floats_per_token(model, seq, full_logits)
    return max(1, int(memory_mb * 2**20 // per_cell))


@renamed(rows="n_rows")
def chunks(first: Sequence[int], per_pass: int, seq: int, n_rows: int, cost: CostModel,
           device_type: str) -> list[tuple[list[int], int]]:
    """Cells (by index) in passes, each with the first position it must compute.

    ``first[i]`` is the first position cell i changes (0 when every position must run).
    """
    order = sorted(range(len(first)), key=lambda i: first[i])
    if not order:
        return []
    if all(first[i] == 0 for i in order):
        return [(order[lo:lo + per_pass], 0) for lo in range(0, len(order), per_pass)]
    positions = sorted(set(first[i] for i in order))
    counts = [sum(1 for i in order if first[i] == p) for p in positions]
    out = []
    for lo, hi in _bands(positions, counts, per_pass, seq, n_rows, cost.pass_cost(device_type), cost.max_band):
        group = [i for i in order if positions[lo] <= first[i] <= positions[hi - 1]]
        out += [(group[k:k + per_pass], first[group[k]]) for k in range(0, len(group), per_pass)]
    return out


@renamed(rows="n_rows")
def merge_layers(groups: dict[int | None, list[int]], first: Sequence[int], *, n_layers: int, seq: int, n_rows: int,
                 per_pass: int, cost: CostModel) -> list[tuple[int | None, list[int]]]:
    """Start-layer groups of cells, some merged into an earlier layer's passes.

    A group starting at layer L joins the passes of an earlier group (starting at L0) when
    recomputing layers L0..L-1 for its cells (``rows * (seq - first) * (L - L0)`` token-blocks)
    costs less than the blocks L.. of the passes it would need on its own. Cells editing the
    final block keep their own passes (so the others can still run it at the last position).
    """
    order = sorted(groups, key=lambda layer: -1 if layer is None else layer)
    merged: list[tuple[int | None, list[int]]] = []
    for layer in order:
        members = groups[layer]
        if merged and layer is not None and merged[-1][0] is not None and layer < n_layers - 1:
            start = merged[-1][0]
            extra = sum(n_rows * (seq - first[i]) * (layer - start) for i in members)
            saved = cost.block_cost_tokens * (n_layers - layer) * -(-len(members) // per_pass)
            if extra <= saved:
                merged[-1] = (start, merged[-1][1] + members)
                continue
        merged.append((layer, list(members)))
    return merged


def _bands(positions: list[int], counts: list[int], per_pass: int, seq: int, rows: int, pass_cost: int,
           max_band: int) -> list[tuple[int, int]]:
    """Contiguous groups ``[i, j)`` of the sorted positions with the least estimated cost."""
    n = len(positions)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        cells = 0
        for i in range(j - 1, max(-1, j - 1 - max_band), -1):  # wide bands never pay: their cost is quadratic
            cells += counts[i]
            passes = -(-cells // per_pass)
            total = best[i] + passes * pass_cost + rows * cells * (seq - positions[i])
            if total < best[j]:
                best[j], cut[j] = total, i
    groups, j = [], n
    while j > 0:
        groups.append((cut[j], j))
        j = cut[j]
    return groups[::-1]
