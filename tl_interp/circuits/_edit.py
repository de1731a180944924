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
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp.circuits._graph import Graph, Receiver
from tl_interp.hooks._select import layout
from tl_interp.intervention import Intervention

__all__ = ["sender_hooks", "add_to_receiver", "edge_edit", "circuit_edit", "window"]


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


def edge_edit(receiver: Receiver, delta: Tensor, label: str) -> Intervention:
    """The cell patching one edge: ``delta = s_other - s_now`` (batch, pos, d_model) added to
    ``receiver``'s input."""
    head = receiver.head

    def _edge_edit(act: Tensor, hook: Any) -> Tensor:
        return add_to_receiver(act, head, window(delta, act, label))

    return Intervention.single(receiver.hook_name, _edge_edit, f"patch edge {label}")


def circuit_edit(g: Graph, keep: Tensor, other: Tensor, clean: Tensor, label: str) -> Intervention:
    """The cell of a circuit: every edge not in ``keep`` carries its sender's ``other`` value.

    Args:
        g: the graph.
        keep: ``(n_edges,)`` bool, the circuit's edges.
        other: ``(batch, pos, n_senders, d_model)`` senders' values in the other run (corrupted,
            mean or zero).
        clean: the same in the run being edited, unedited (the values of senders before the
            first layer a pass runs).
        label: for ``print``.
    """
    excluded = (~keep.bool()).cpu()
    state: dict[int, tuple[int, Tensor]] = {}  # first sender index -> (window offset, its current values)
    starts, at = [], 0
    for _, n in sender_hooks(g):
        starts.append(at)
        at += n

    def current(upto: int, act: Tensor) -> Tensor:
        lay = layout(act.shape[0], act.shape[1], label)
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

        def _capture(act: Tensor, hook: Any, start: int = start) -> None:
            state[start] = (layout(act.shape[0], act.shape[1], label).offset, act)

        hooks.append(Intervention.single(name, _capture, f"read senders for {label}"))
    by_hook: dict[str, list[Receiver]] = {}
    for r in g.receivers:
        if bool(excluded[r.offset:r.offset + r.n_senders].any()):
            by_hook.setdefault(r.hook_name, []).append(r)
    for name, receivers in by_hook.items():
        hooks.append(Intervention.single(name, _receiver_hook(receivers, excluded, other, current, label),
                                         f"corrupt edges outside {label}"))
    return sum(hooks, Intervention.identity())


def _receiver_hook(receivers: Sequence[Receiver], excluded: Tensor, other: Tensor, current: Any, label: str):
    """One input hook point's edit for a circuit: every receiver at it gets the summed
    ``other - current`` of its excluded senders."""
    n = max(r.n_senders for r in receivers)
    heads = [r.head for r in receivers]

    def _corrupt_outside(act: Tensor, hook: Any) -> Tensor:
        diff = window(other[:, :, :n], act, label) - current(n, act)  # (batch, pos, sender, d_model)
        if heads[0] is None:
            (r,) = receivers
            weights = excluded[r.offset:r.offset + r.n_senders].to(diff.dtype).to(diff.device)
            return add_to_receiver(act, None, torch.einsum("bpsd,s->bpd", diff, weights))
        weights = torch.zeros(act.shape[2], n, dtype=diff.dtype)
        mask = torch.zeros(act.shape[2], dtype=torch.bool)
        for r in receivers:
            weights[r.head] = excluded[r.offset:r.offset + r.n_senders].to(diff.dtype)
            mask[r.head] = True
        delta = torch.einsum("bpsd,hs->bphd", diff, weights.to(diff.device))
        return add_to_receiver(act, mask, delta)

    return _corrupt_outside
