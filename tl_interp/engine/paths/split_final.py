"""Run the final block's queries, attention output and MLP at the last position only, when the
metric reads nothing else: its keys and values for earlier positions are ``ln1`` and the
key/value projections of its input (``compat.final_block_cache``), then the block runs one
step at the last position against them (``compat.final_block_step``, TL's generation step).

Cells may also edit anything else in the final block when every hook they hold there follows
the run context's window of positions (its hook functions carry ``windowed = True``: circuits'
faithfulness rows): those hooks fire in both steps too (``hook_q`` with no position while the
cache is built), and ``windowed_cells`` says when a pass's cells are all such.

Cells may edit the final block's keys and values (``blocks.{n-1}.attn.hook_k`` / ``hook_v``,
e.g. an edge into a last-layer head's key or value input): those hook points fire in both
steps, on windows of positions that end where the sequence ends (positions p.. to build the
cache, then the last position in the block's own step, whose keys and values replace the
first step's there), and ``last_position`` tells the hooks which positions those are (the run
context's window). Under causal attention the query at the last position reads every key and
value, so the metric sees exactly what the full block gives it.
"""

from typing import Any

from torch import Tensor

from tl_interp import compat
from tl_interp._context import RunContext, running
from tl_interp.models._adapter import Tokenized

__all__ = ["reason", "kv_sites", "windowed_cells", "last_position"]


def reason(model: Any, batch: Tokenized, read_positions: Tensor | None, read_reason: str | None) -> str | None:
    """Why the final block can't run at the last position alone, or None."""
    if read_reason is not None or read_positions is None:
        return "needs the read-only head"
    if batch.padded:
        return "the batch is padded"
    if not bool((read_positions == batch.tokens.shape[1] - 1).all()):
        return "the metric reads positions before the last"
    if getattr(model.cfg, "attention_dir", "causal") != "causal":
        return "attention is bidirectional"
    why = compat.final_block_reason(model)
    if why is not None:
        return why
    if not (compat.usable("split_qkv") and compat.usable("kv_cache")):
        return "a TransformerLens guard failed"
    if not compat.blocks_are_plain(model, model.cfg.n_layers - 1):
        return "a hook is attached inside the final block"
    return None


def kv_sites(model: Any) -> frozenset[str]:
    """The final block's key and value hook points: cells that edit only these can still run
    the block at the last position (``last_position``)."""
    last = model.cfg.n_layers - 1
    return frozenset({f"blocks.{last}.attn.hook_k", f"blocks.{last}.attn.hook_v"})


def windowed_cells(model: Any, cells: list[dict[str, list[Any]]]) -> bool:
    """Whether every hook the cells hold inside the final block follows the run context's window
    (``windowed = True`` on each function), and some cell holds one."""
    prefix = f"blocks.{model.cfg.n_layers - 1}."
    inside = [fn for cell in cells for name, fns in cell.items() if name.startswith(prefix) for fn in fns]
    return bool(inside) and all(getattr(fn, "windowed", False) is True for fn in inside)


def last_position(model: Any, resid: Tensor, prefix: tuple[Tensor, Tensor] | None, offset: int) -> Tensor:
    """The final block's output at the last position, ``(rows, 1, d_model)``, from its input
    ``resid`` at positions ``offset..`` (``prefix``: the keys and values of positions ``< offset``).
    Hooks on the block's keys and values fire with the window of positions each step computes."""
    seq = offset + resid.shape[1]
    with running(RunContext(offset=offset)):
        entry = compat.final_block_cache(model, resid, prefix)
    with running(RunContext(offset=seq - 1)):
        return compat.final_block_step(model, resid[:, -1:], entry)
