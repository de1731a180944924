"""Edge edits: the one place that changes what a receiver reads from a sender.

Patching the edge ``s -> r`` (Hanna et al. 2024; Wang et al. 2023's path patching to a
receiver input) replaces, in ``r``'s input only, ``s``'s summand of the residual stream by
its value in another run: the receiver input gets ``+ (s_other - s_now)``, every other reader
of the residual stream is untouched. ``add_to_receiver`` is that addition (on the receiver's
own slot of a per-head q/k/v input, or on an MLP / logits input), ``edge_edit`` the cell of
one edge, ``circuit_edit`` the cell of a circuit: every edge outside it carries the other
run's value of its sender, while the senders' current values are read during the same pass
(a sender whose own inputs were edited has moved, exactly as in the reference's
``evaluate_graph``).

Sender outputs: ``hook_embed`` (the input node: the token embeddings; positional embeddings
are no node, as in the reference), ``blocks.L.attn.hook_result`` (per head, before ``b_O``)
and ``blocks.L.hook_mlp_out``. Biases are never edges: they stay at their value.

When a layer normalises its attention output before adding it (Gemma's ``ln1_post``), what a
receiver reads of layer L's heads is ``norm(sum of the heads + b_O)``: a receiver that reads
some of them ablated reads ``norm(A + sum over those heads of (h_other - h_now))`` where ``A``
is the layer's current pre-norm sum, in place of ``norm(A)`` (the reference's
``evaluate_graph``). One edge's difference is then ``norm(A + h_other - h_now) - norm(A)``
(``sender_deltas``).
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp.circuits._graph import Graph, Receiver
from tl_interp.hooks._select import layout
from tl_interp.intervention import Intervention

__all__ = ["sender_hooks", "add_to_receiver", "edge_edit", "circuit_edit", "window", "sender_deltas", "Norms",
           "at_positions"]

Norms = list[tuple[Any, Tensor]] | None  # per layer (attention output norm, b_O), or None: additive


def sender_hooks(g: Graph) -> list[tuple[str, int]]:
    """``(hook name, number of senders it holds)`` in sender order: embeddings, then per layer
    the heads' results and the MLP output."""
    out = [("hook_embed", 1)]
    for layer in range(g.n_layers):
        out.append((f"blocks.{layer}.attn.hook_result", g.n_heads))
        if g.mlp:
            out.append((f"blocks.{layer}.hook_mlp_out", 1))
    return out


def window(t: Tensor, act: Tensor, context: str) -> Tensor:
    """``t`` (batch, all positions, ...) cut to the positions ``act`` covers in this run (a
    pass that starts from a cached prefix runs a window of positions)."""
    lay = layout(act.shape[0], act.shape[1], context)
    return t[:, lay.offset:lay.offset + act.shape[1]].to(act.device)


def add_to_receiver(act: Tensor, head: int | Tensor | None, delta: Tensor) -> Tensor:
    """The receiver input ``act`` with ``delta`` added to what the receiver reads.

    Args:
        act: the input hook's activation, ``(batch, pos, head_index, d_model)`` for q/k/v
            inputs, ``(batch, pos, d_model)`` for an MLP or the logits.
        head: the receiving head (an int), a ``(head_index,)`` bool mask of receiving heads
            with ``delta`` given per head, or None for an MLP / logits input.
        delta: ``(batch, pos, d_model)``, or ``(batch, pos, head_index, d_model)`` with a mask.

    Other heads' slots are returned bit for bit.
    """
    if head is None:
        return act + delta
    if isinstance(head, int):
        mask = torch.zeros(act.shape[2], dtype=torch.bool, device=act.device)
        mask[head] = True
        delta = delta.unsqueeze(2)
    else:
        mask = head.to(act.device)
    return torch.where(mask[:, None], act + delta, act)


def _head_blocks(g: Graph, upto: int) -> list[tuple[int, int]]:
    """``(layer, index of its first head among the senders)`` for the layers whose heads are
    among the first ``upto`` senders."""
    out, at = [], 0
    for name, n in sender_hooks(g):
        if at >= upto:
            break
        if name.endswith("attn.hook_result"):
            out.append((int(name.split(".")[1]), at))
        at += n
    return out


def sender_deltas(g: Graph, norms: Norms, now: Tensor, other: Tensor) -> Tensor:
    """What patching each edge alone adds to its receiver's input, per sender:
    ``other - now``, or for a head of a normalised attention output
    ``norm(A + other_h - now_h) - norm(A)``. Shapes ``(batch, pos, n_senders, d_model)``."""
    delta = other - now
    if norms is None:
        return delta
    delta = delta.clone()
    for layer, at in _head_blocks(g, now.shape[2]):
        norm, bias = norms[layer]
        heads = slice(at, at + g.n_heads)
        total = now[:, :, heads].sum(2) + bias  # the layer's pre-norm attention output
        delta[:, :, heads] = norm(total[:, :, None] + delta[:, :, heads]) - norm(total)[:, :, None]
    return delta


def at_positions(t: Tensor, act: Tensor, position: int | None, label: str) -> Tensor:
    """``t`` (batch, all positions, ...) cut to ``act``'s window, zero outside ``position`` (when given)."""
    t = window(t, act, label)
    if position is None:
        return t
    lay = layout(act.shape[0], act.shape[1], label)
    keep = (torch.arange(lay.offset, lay.offset + act.shape[1], device=t.device) == position).view(
        1, -1, *([1] * (t.ndim - 2)))
    return t & keep if t.dtype == torch.bool else t * keep.to(t.dtype)


def edge_edit(receiver: Receiver, delta: Tensor, label: str, *, position: int | None = None) -> Intervention:
    """The cell patching one edge: ``delta = s_other - s_now`` (batch, pos, d_model) added to
    ``receiver``'s input (at ``position`` only, when given)."""
    head = receiver.head

    def _edge_edit(act: Tensor, hook: Any) -> Tensor:
        return add_to_receiver(act, head, at_positions(delta, act, position, label))

    return Intervention.single(receiver.hook_name, _edge_edit, f"patch edge {label}")


def circuit_edit(g: Graph, keep: Tensor, other: Tensor, clean: Tensor, label: str, norms: Norms = None,
                 w_o: Sequence[Tensor] | None = None) -> Intervention:
    """The cell of a circuit: every edge not in ``keep`` carries its sender's ``other`` value.

    Args:
        g: the graph.
        keep: ``(n_edges,)`` bool, the circuit's edges, or ``(n_edges, pos)``: the circuit's
            edges at each position (``per_position=True``).
        other: ``(batch, pos, n_senders, d_model)`` senders' values in the other run (corrupted,
            mean or zero).
        clean: the same in the run being edited, unedited (the values of senders before the
            first layer a pass runs).
        label: for ``print``.
        norms: ``compat.attention_output_norms`` (None when attention outputs add as they are).
        w_o: per layer ``W_O`` ``(n_heads, d_head, d_model)``: read the heads' current outputs as
            ``z @ W_O[h]`` from ``attn.hook_z``, so the pass need not compute TL's per-head
            results (``use_attn_result`` materialises a (batch, pos, head, d_head, d_model)
            product in every layer). None: read ``attn.hook_result``.
    """
    excluded = (~keep.bool()).cpu()
    state: dict[int, tuple[int, Tensor]] = {}  # first sender index -> (window offset, its current values)
    starts, at = [], 0
    for _, n in sender_hooks(g):
        starts.append(at)
        at += n

    memo: dict[tuple[int, int, int], tuple[Tensor, Tensor]] = {}  # cleared whenever a sender is read

    def current(upto: int, act: Tensor) -> tuple[Tensor, Tensor]:
        """The first ``upto`` senders' current values and ``other - current``, in ``act``'s window
        (the q, k and v inputs of a layer ask for the same ones: computed once)."""
        lay = layout(act.shape[0], act.shape[1], label)
        key = (upto, lay.offset, act.shape[1])
        if key not in memo:
            now = _current(upto, act, lay)
            memo[key] = (now, window(other[:, :, :upto], act, label) - now)
        return memo[key]

    def _current(upto: int, act: Tensor, lay: Any) -> Tensor:
        pieces = []
        for start, (_, n) in zip(starts, sender_hooks(g)):
            if start >= upto:
                break
            seen = state.get(start)
            if seen is not None and seen[0] <= lay.offset and seen[0] + seen[1].shape[1] >= lay.offset + act.shape[1]:
                lo = lay.offset - seen[0]
                pieces.append(seen[1][:, lo:lo + act.shape[1]].reshape(act.shape[0], act.shape[1], n, -1))
            else:
                pieces.append(window(clean[:, :, start:start + n], act, label))
        return torch.cat(pieces, 2)

    hooks: list[Intervention] = []
    for (name, n), start in zip(sender_hooks(g), starts):
        if start == 0:
            continue  # the embeddings never move: nothing upstream of them
        w = None
        if w_o is not None and name.endswith("attn.hook_result"):
            w, name = w_o[int(name.split(".")[1])], name.replace("hook_result", "hook_z")

        def _capture(act: Tensor, hook: Any, start: int = start, w: Tensor | None = w) -> None:
            value = act if w is None else torch.einsum("bphe,hed->bphd", act, w.to(act.dtype))
            state[start] = (layout(act.shape[0], act.shape[1], label).offset, value)
            memo.clear()

        hooks.append(Intervention.single(name, _capture, f"read senders for {label}"))
    by_hook: dict[str, list[Receiver]] = {}
    for r in g.receivers:
        if bool(excluded[r.offset:r.offset + r.n_senders].any()):
            by_hook.setdefault(r.hook_name, []).append(r)
    for name, receivers in by_hook.items():
        hooks.append(Intervention.single(name, _receiver_hook(g, receivers, excluded, other, current, label, norms),
                                         f"corrupt edges outside {label}"))
    return sum(hooks, Intervention.identity())


def _receiver_hook(g: Graph, receivers: Sequence[Receiver], excluded: Tensor, other: Tensor, current: Any,
                   label: str, norms: Norms):
    """One input hook point's edit for a circuit: every receiver at it reads its excluded
    senders' ``other`` values in place of their current ones."""
    n = max(r.n_senders for r in receivers)
    slots = [r.head for r in receivers]  # the receiving heads, or [None] for an MLP / logits input
    weights = torch.zeros(len(receivers), n, *excluded.shape[1:])  # (receiver, sender[, position])
    for i, r in enumerate(receivers):
        weights[i, :r.n_senders] = excluded[r.offset:r.offset + r.n_senders].float()
    blocks = _head_blocks(g, n) if norms is not None else []
    additive = torch.ones(n, *([1] * (excluded.ndim - 1)))
    for _, at in blocks:
        additive[at:at + g.n_heads] = 0.0

    head_index = torch.tensor([h for h in slots if h is not None], dtype=torch.long)

    def mix(w: Tensor, x: Tensor) -> Tensor:
        """``(batch, pos, receiver, d_model)``: each receiver's weighted sum of ``x`` over senders."""
        return torch.matmul(w, x) if w.ndim == 2 else torch.einsum("rsp,bpsd->bprd", w, x)

    def _corrupt_outside(act: Tensor, hook: Any) -> Tensor:
        now, diff = current(n, act)  # (batch, pos, sender, d_model) each
        w = weights.to(diff.dtype).to(diff.device)
        if w.ndim == 3:  # per position: the pass's window of positions
            offset = layout(act.shape[0], act.shape[1], label).offset
            w = w[:, :, offset:offset + act.shape[1]]
        update = mix(w * additive.to(w), diff)  # (batch, pos, receiver, d_model)
        for layer, at in blocks:
            heads = slice(at, at + g.n_heads)
            if not bool(w[:, heads].any()):
                continue
            norm, bias = norms[layer]  # type: ignore[index]
            total = now[:, :, heads].sum(2) + bias
            moved = total[:, :, None] + mix(w[:, heads], diff[:, :, heads])
            update = update + norm(moved) - norm(total)[:, :, None]
        if slots[0] is None:
            return add_to_receiver(act, None, update[:, :, 0])
        index = head_index.to(act.device)
        mask = torch.zeros(act.shape[2], dtype=torch.bool, device=act.device)
        mask[index] = True
        delta = update.new_zeros(*update.shape[:2], act.shape[2], update.shape[-1])
        delta[:, :, index] = update
        return add_to_receiver(act, mask, delta)

    return _corrupt_outside
