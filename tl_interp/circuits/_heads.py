"""Single-edge cells into a head's query, key or value input, on the ordinary forward pass.

A single edge into a head's query, key or value changes that one head's input only, so its cell
need not run TransformerLens's per-head inputs (``use_split_qkv_input``: the norm and the
projections on ``3 x n_heads`` copies of the residual stream in every layer). ``head_input_edit``
runs the ordinary forward and replaces, in ``blocks.L.attn.hook_q`` / ``hook_k`` / ``hook_v``,
that head's projection by ``ln1(resid_pre + delta) @ W[h] + b[h]`` at the positions where
``delta`` is non-zero (elsewhere the input is unchanged and so is the projection, bit for bit).
Rotary embeddings, query/key norms and clipping come after those hook points and run as usual;
a grouped-query model runs with its K/V ungrouped so the key of one query head can differ from
its group's (``compat.receiver_hooks(ungroup=True)``). ``head_input_reason`` says when this
can't be done exactly (the cell then edits the per-head input itself).
"""

from collections.abc import Collection, Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp.circuits._graph import Receiver
from tl_interp.hooks._select import layout
from tl_interp.intervention import Intervention

__all__ = ["head_input_reason", "HeadInputs", "head_input_edit"]


def head_input_reason(model: Any) -> str | None:
    """Why a head's q/k/v can't be recomputed from its input outside TransformerLens's block
    (``head_input_edit``), or None."""
    cfg = model.cfg
    if cfg.positional_embedding_type == "shortformer":
        return "shortformer models add positional embeddings to the normalised query and key inputs"
    for flag in ("use_attn_in", "load_in_4bit"):
        if getattr(cfg, flag, False):
            return f"cfg.{flag} is set"
    return None


class HeadInputs:
    """What single edges into heads' q/k/v inputs make of those heads' projections:
    ``ln1(resid_pre + delta_s) @ W[h] + b[h]`` for every sender ``s`` of a receiver, computed for
    all its senders in one call on first use; kept for the receivers of the last two layers
    used (cells run layer by layer).

    Args:
        model: the model.
        resid: per layer, the unedited run's ``blocks.L.hook_resid_pre`` ``(batch, pos, d_model)``.
        deltas: ``(batch, pos, n_senders, d_model)``, what each sender's edge adds.
        senders: the senders any cell reads (None: all); the others are not computed.
    """

    def __init__(self, model: Any, resid: Sequence[Tensor], deltas: Tensor,
                 senders: Collection[int] | None = None) -> None:
        self.norms = [block.ln1 for block in model.blocks]
        self.resid, self.deltas = list(resid), deltas
        self.used = None if senders is None else torch.tensor(sorted(senders), dtype=torch.long)
        self.column = {} if senders is None else {s: i for i, s in enumerate(sorted(senders))}
        self.changed = (deltas != 0).any(-1, keepdim=True)  # (batch, pos, sender, 1)
        self.blocks = model.blocks
        self._weights: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}  # read on first use (GQA ungroups per read)
        self._normed: dict[int, Tensor] = {}
        self._projected: dict[tuple[int, str, int], Tensor] = {}
        self._together: dict[tuple[int, str], Any] = {}
        self._first: list[int] | None = None
        self._at: list[list[bool]] = []

    def first_changed(self, sender: int, position: int | None) -> int | None:
        """The first position where ``sender``'s delta is non-zero in some row (at ``position``
        only, when given), or None: elsewhere a cell returns the projection it is given, bit for bit."""
        if self._first is None:
            rows = self.changed[..., 0].any(0)  # (pos, sender)
            first = torch.where(rows.any(0), rows.float().argmax(0), torch.full_like(rows[0], -1, dtype=torch.long))
            self._first, self._at = first.tolist(), rows.T.tolist()
        if position is not None:
            return position if self._at[sender][position] else None
        found = self._first[sender]
        return None if found < 0 else found

    def together(self, layer: int, letter: str, n_senders: int, label: str) -> Any:
        """The function editing, at ``blocks.{layer}.attn.hook_{letter}``, the rows of every cell
        of a stacked pass (payloads ``(head, column, sender, position)``, None for a cell without
        a hook there); one per hook point, shared by its cells."""
        key = (layer, letter)
        if key not in self._together:
            self._together[key] = self._make_together(layer, letter, n_senders, label)
        return self._together[key]

    def _make_together(self, layer: int, letter: str, n_senders: int, label: str) -> Any:
        def _head_input_edit(act: Tensor, hook: Any, payloads: Sequence[tuple[int, int, int, int | None] | None],
                             batch: int) -> Tensor:
            lo = layout(act.shape[0], act.shape[1], label).offset
            hi = lo + act.shape[1]
            out = act.clone()
            cells = out.view(len(payloads), batch, *act.shape[1:])  # (cell, batch, window, head, d_head)
            by_head: dict[int, list[tuple[int, tuple[int, int, int, int | None]]]] = {}
            for i, p in enumerate(payloads):
                if p is not None:
                    by_head.setdefault(p[0], []).append((i, p))
            for head, members in by_head.items():
                index = torch.tensor([i for i, _ in members], device=act.device)
                columns = [p[1] for _, p in members]
                senders = [p[2] for _, p in members]
                new = self.projected(layer, letter, head, n_senders)[:, lo:hi, columns]  # (batch, window, cell, d_head)
                changed = self.changed[:, lo:hi, senders]  # (batch, window, cell, 1)
                if any(p[3] is not None for _, p in members):  # per position: only its own position
                    where = torch.arange(lo, hi, device=changed.device)[:, None]
                    wanted = torch.tensor([-1 if p[3] is None else p[3] for _, p in members], device=changed.device)
                    changed = changed & ((where == wanted) | (wanted < 0))[None, :, :, None]
                new = new.permute(2, 0, 1, 3).to(device=act.device, dtype=act.dtype)
                changed = changed.permute(2, 0, 1, 3).to(act.device)
                cells[index, :, :, head] = torch.where(changed, new, cells[index, :, :, head])
            return out

        return _head_input_edit

    def weights(self, layer: int, letter: str) -> tuple[Tensor, Tensor]:
        """``(W (n_heads, d_model, d_head) ungrouped, b)`` of the ``letter`` projection in ``layer``."""
        if (layer, letter) not in self._weights:
            attn = self.blocks[layer].attn
            w, b = {"q": (attn.W_Q, attn.b_Q), "k": (attn.W_K, attn.b_K), "v": (attn.W_V, attn.b_V)}[letter]
            self._weights[layer, letter] = (w.detach(), b.detach())
        return self._weights[layer, letter]

    def projected(self, layer: int, letter: str, head: int, n_senders: int) -> Tensor:
        """``(batch, pos, n_senders, d_head)``: the head's projection of its input plus each of its
        first ``n_senders`` senders' delta."""
        key = (layer, letter, head)
        out = self._projected.get(key)
        if out is None or (self.used is None and out.shape[2] < n_senders):
            normed = self._normed.get(layer)
            if normed is None or (self.used is None and normed.shape[2] < n_senders):
                chosen = self.deltas[:, :, :n_senders] if self.used is None else self.deltas[:, :, self.used]
                with torch.no_grad():
                    normed = self.norms[layer](self.resid[layer][:, :, None] + chosen)
                if len(self._normed) >= 2:  # drop the oldest layer with its projections
                    old = next(iter(self._normed))
                    del self._normed[old]
                    self._projected = {k: v for k, v in self._projected.items() if k[0] != old}
                self._normed[layer] = normed
            w, b = self.weights(layer, letter)
            out = torch.nn.functional.linear(normed, w[head].T, b[head])
            self._projected[key] = out
        return out


def head_input_edit(receiver: Receiver, sender: int, inputs: HeadInputs, label: str, *,
                    position: int | None = None) -> Intervention:
    """The cell patching the edge ``sender -> receiver`` into a head's q/k/v input on the
    ordinary forward pass: the head's projection recomputed from ``resid_pre + delta`` where
    ``delta`` is non-zero (see the module docstring; ``inputs`` holds both), at ``position``
    only when given. Stacked with other such cells at its hook point, one call edits every
    cell's rows (``engine.stack``'s ``together``); its ``footprint`` tells the engine the first
    position it changes without running it (``engine.paths.skip_unchanged``)."""
    layer, head = int(receiver.hook_name.split(".")[1]), receiver.head
    letter = receiver.hook_name.split("hook_")[1][0]  # blocks.L.hook_q_input -> q
    edit = _HeadEdit(inputs.together(layer, letter, receiver.n_senders, label),
                     (head, inputs.column.get(sender, sender), sender, position),
                     inputs.first_changed(sender, position))
    return Intervention.single(f"blocks.{layer}.attn.hook_{letter}", edit, f"patch edge {label}")


class _HeadEdit:
    """One cell's hook at ``blocks.L.attn.hook_{q,k,v}``: alone it edits its own rows; stacked,
    ``together`` edits every cell's rows in one call (``engine.stack``)."""

    __name__ = "_head_input_edit"

    def __init__(self, together: Any, payload: tuple[int, int, int, int | None], footprint: int | None) -> None:
        self.together, self.payload, self.footprint = together, payload, footprint

    def __call__(self, act: Tensor, hook: Any) -> Tensor:
        return self.together(act, hook, [self.payload], act.shape[0])
