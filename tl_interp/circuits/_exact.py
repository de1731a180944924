"""Exact single-edge patching on the engine: the effect on the metric of patching each edge alone.

One engine cell per edge (per edge and position with ``per_position=True``): an edge into a head
recomputes that head's projection on the ordinary forward (``_heads.head_input_edit``), an edge
into an MLP or the logits adds the sender's difference at ``hook_mlp_in`` / the last
``hook_resid_post`` (``_edit.edge_edit``). Passes start at the receiver's layer (``mid_stack``)
and at the first position the edge changes (``prefix_kv``); in the last layer the queries, the
MLP and the logits act position by position, so edges into them are patched only where the
metric reads (the others change nothing the metric sees, and the engine skips them).
"""

from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor

from tl_interp import hooks
from tl_interp.circuits._edit import edge_edit
from tl_interp.circuits._graph import Graph, at_position
from tl_interp.circuits._heads import HeadInputs, head_input_edit, head_input_reason
from tl_interp.circuits._runs import forward_kw, no_head_results
from tl_interp import compat
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.run import EngineOptions
from tl_interp.metrics import bind

__all__ = ["exact_effects"]


def exact_effects(model: Any, g: Graph, batch: Any, metric: Any, diff: Tensor, memory_mb: float,
           executor: Executor | None, progress: bool, aware: bool = False,
           only: Collection[int] | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Per-prompt exact single-edge effects ``(batch, n_edges)``: one engine cell per edge (per
    edge and position with ``aware``: ``(batch, n_edges * pos)``, positions inner); only the
    edges at the indices ``only`` when given (the benchmark's samples), in graph order.

    An edge into a head's q/k/v input is patched on the ordinary forward pass by recomputing
    that one head's projection (``_edit.head_input_edit``); where that can't be done exactly
    (``head_input_reason``) the cell edits TL's per-head input instead."""
    why = head_input_reason(model)
    diff_last = diff
    read = getattr(bind(metric, batch), "positions", None)
    if read is not None:  # the last block's queries and MLP inputs matter only where the metric reads
        rows, pos = batch.shape
        read = torch.as_tensor(read).long().expand(rows) % pos
        seen = torch.zeros(rows, pos, 1, 1, dtype=diff.dtype, device=diff.device)
        seen[torch.arange(rows), read.to(diff.device)] = 1
        diff_last = diff * seen
    last = g.n_layers - 1
    switches = {"mlp_in": True, "ungroup": True, "split_qkv": why is not None}
    with compat.receiver_hooks(model, **switches), no_head_results(model):
        inputs = None
        if why is None:
            cache = hooks.cache([f"blocks.{layer}.hook_resid_pre" for layer in range(g.n_layers)])
            with torch.no_grad():
                cache.run(model, batch.tokens, stop_at_layer=g.n_layers, **forward_kw(batch))  # no logits needed
            resid = [cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(g.n_layers)]
            used = None if only is None else {i - r.offset for r in g.receivers for i in only
                                              if r.offset <= i < r.offset + r.n_senders}
            inputs = HeadInputs(model, resid, diff, used)
            queries_last = HeadInputs(model, resid, diff_last, used)
        cells, keys, sites = [], [], {}
        for r in g.receivers:
            head_cell = why is None and r.head is not None
            layer = int(r.hook_name.split(".")[1])
            # the last layer's queries, MLP and the logits act position by position: only read positions count
            local = layer == last and not r.hook_name.endswith(("k_input", "v_input"))
            for j in range(r.n_senders):
                if only is not None and r.offset + j not in only:
                    continue
                edge = f"{g.senders[j]}->{r.name}"
                hook = f"blocks.{layer}.attn.hook_{r.hook_name.split('hook_')[1][0]}" if head_cell else r.hook_name
                sites[hook] = None
                for pos in (range(batch.shape[1]) if aware else [None]):
                    name = edge if pos is None else at_position(edge, pos)
                    if head_cell:
                        cells.append(head_input_edit(r, j, queries_last if local else inputs, name, position=pos))
                    else:
                        cells.append(edge_edit(r, (diff_last if local else diff)[:, :, j], name, position=pos))
                    keys.append((name,))
        plan = Plan(model, batch, metric, tuple(cells), tuple(keys), tuple(sites),
                    EngineOptions(memory_mb=memory_mb), label="exact edge patching",
                    signature={"study": "circuits.exact"})
        outcome = execute(plan, executor, progress=progress)
    values, base = outcome.values, outcome.base
    head_cells = "q/k/v projection of the receiving head on the ordinary forward" if why is None else \
        f"TL's per-head inputs ({why})"
    return (values - base[None]).T, {"engine": outcome.paths, "head_cells": head_cells, **outcome.stats}
