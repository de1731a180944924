"""Exact single-edge patching on the engine: the effect on the metric of patching each edge alone.

One engine cell per edge (per edge and position with ``per_position=True``), computed at its
receiving layer alone (``_receiving``: one head's attention by hand, the layer's MLP): below
the last layer the cell writes the next layer's input, so the pass starts there, at the first
position the edge changes (``prefix_kv``, from each cell's declared footprint); in the last
layer, and for the logits, it writes the final residual at the one position the metric reads,
and the engine runs no block for it. No cell edits a head's own keys/values, so a grouped-query
model keeps TL's grouped attention and its key-value cache, in one engine run. Where the
receiving layer is off (``_receiving.reason``), an edge into a last-layer head recomputes that
head's projection on the ordinary forward (``_heads.head_input_edit``; on a grouped-query model
those cells run apart, with keys/values ungrouped) and an edge into the last MLP or the logits
adds the sender's difference at ``hook_mlp_in`` / the last ``hook_resid_post`` (``_edit.edge_edit``).
"""

import bisect
from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor

from tl_interp import hooks
from tl_interp.circuits._edit import edge_edit, sender_deltas
from tl_interp.circuits._graph import Graph, at_position
from tl_interp.circuits import _receiving as receiving
from tl_interp.circuits._heads import HeadInputs, head_input_edit, head_input_reason
from tl_interp.circuits._runs import ablated_values, forward_kw, no_head_results, prepare, sender_values
from tl_interp import compat
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.paths import read_only
from tl_interp.engine.run import EngineOptions, forward_layout
from tl_interp.intervention import Intervention
from tl_interp.metrics import bind

__all__ = ["exact_effects", "corrupted_deltas", "stream_names"]


def exact_effects(model: Any, g: Graph, batch: Any, metric: Any, diff: Tensor, memory_mb: float,
           executor: Executor | None, progress: bool, aware: bool = False,
           only: Collection[int] | None = None, streams: dict[str, Tensor] | None = None
           ) -> tuple[Tensor, dict[str, Any]]:
    """Per-prompt exact single-edge effects ``(batch, n_edges)``: one engine cell per edge (per
    edge and position with ``aware``: ``(batch, n_edges * pos)``, positions inner); only the
    edges at the indices ``only`` when given (the benchmark's samples), in graph order.

    An edge into a head or an MLP is computed at its receiving layer alone (``_receiving``; in
    the last layer, and for the logits, at the one position the metric reads); where that can't
    be done exactly (``_receiving.reason``) an edge into a last-layer head's q/k/v input
    recomputes that one head's projection on the ordinary forward (``_heads.head_input_edit``),
    and where neither can (``head_input_reason``) the cell edits TL's per-head input.
    ``streams``: the clean run's ``stream_names`` when its caller read them already (the forward
    that read the senders); else one forward reads them here."""
    why = head_input_reason(model)
    why_receiving = receiving.reason(model, batch)
    diff_last = diff
    read = getattr(bind(metric, batch), "positions", None)
    rows, pos = batch.shape
    if read is not None:  # the last block's queries and MLP inputs matter only where the metric reads
        read = torch.as_tensor(read).long().expand(rows) % pos
        seen = torch.zeros(rows, pos, 1, 1, dtype=diff.dtype, device=diff.device)
        seen[torch.arange(rows), read.to(diff.device)] = 1
        diff_last = diff * seen
    # the last layer at its receiving layer too when the metric reads one position, the same in every row
    final_read = int(read[0]) if read is not None and bool((read == read[0]).all()) else None
    last = g.n_layers - 1
    starts = [r.offset for r in g.receivers]
    chosen: dict[int, list[int]] = {}  # receiver -> the senders of its edges in ``only``
    for i in sorted(only or ()):
        k = bisect.bisect_right(starts, i) - 1
        chosen.setdefault(k, []).append(i - starts[k])
    used = None if only is None else {j for js in chosen.values() for j in js}
    inputs = queries_last = layers = None
    if why is None:
        if streams is None:
            cache = hooks.cache(stream_names(g, model))
            with torch.no_grad(), no_head_results(model):
                cache.run(model, batch.tokens, stop_at_layer=g.n_layers, **forward_kw(batch))  # no logits needed
            streams = {name: cache[name] for name in stream_names(g, model)}
        resid = [streams[f"blocks.{layer}.hook_resid_pre"] for layer in range(g.n_layers)]
        inputs = HeadInputs(model, resid, diff, used)
        if why_receiving is not None or final_read is None:  # last-layer head cells on the ordinary forward
            queries_last = HeadInputs(model, resid, diff_last, used)
        if why_receiving is None:
            mids = ([streams[f"blocks.{layer}.hook_resid_mid"] for layer in range(g.n_layers)] if g.mlp else
                    [*resid[1:], streams[f"blocks.{last}.hook_resid_post"]])
            layers = receiving.ReceivingLayers(model, inputs, mids, final_read)
    # cells that edit a head's own q/k/v at its hook point need grouped keys/values ungrouped
    cells: dict[bool, list[tuple[int, Intervention]]] = {False: [], True: []}
    sites: dict[bool, dict[str, None]] = {False: {}, True: {}}
    names: list[str] = []
    n_receiving = 0
    for k, r in enumerate(g.receivers):
        if only is not None and k not in chosen:
            continue
        layer = int(r.hook_name.split(".")[1])
        at_receiver = layers is not None and (layer < last and r.hook_name.endswith(("_input", "mlp_in"))
                                              or final_read is not None)
        head_cell = not at_receiver and why is None and r.head is not None
        # the last layer's queries, MLP and the logits act position by position: only read positions count
        local = layer == last and not r.hook_name.endswith(("k_input", "v_input"))
        ungroup = not at_receiver and r.head is not None
        site = (layers.site(layer) if at_receiver else  # type: ignore[union-attr]
                f"blocks.{layer}.attn.hook_{r.hook_name.split('hook_')[1][0]}" if head_cell else r.hook_name)
        sites[ungroup][site] = None
        for j in (range(r.n_senders) if only is None else chosen[k]):
            edge = f"{g.senders[j]}->{r.name}"
            for p in (range(pos) if aware else [None]):
                name = edge if p is None else at_position(edge, p)
                if at_receiver:
                    cell = receiving.receiving_edit(r, j, layers, name, position=p)  # type: ignore[arg-type]
                    n_receiving += 1
                elif head_cell:
                    cell = head_input_edit(r, j, queries_last if local else inputs, name, position=p)
                else:
                    cell = edge_edit(r, (diff_last if local else diff)[:, :, j], name, position=p)
                cells[ungroup].append((len(names), cell))
                names.append(name)
    grouped_kv = getattr(model.cfg, "n_key_value_heads", None) is not None
    parts = [flag for flag in (False, True) if cells[flag]] if grouped_kv else [True]
    if not grouped_kv:
        cells[True], sites[True] = cells[False] + cells[True], {**sites[False], **sites[True]}
    values = torch.zeros(len(names), rows, dtype=diff.dtype, device=diff.device)
    stats: dict[str, Any] = {}
    options = EngineOptions(memory_mb=memory_mb)
    # the weights re-laid out once for every part; W_U only if TL's own unembedding runs (no read-only head)
    for flag in parts:
        switches = {"mlp_in": True, "ungroup": flag, "split_qkv": why is not None}
        with compat.receiver_hooks(model, **switches), no_head_results(model), \
                forward_layout(model, options, unembed=read_only.reason(model, bind(metric, batch)) is not None):
            plan = Plan(model, batch, metric, tuple(c for _, c in cells[flag]), tuple((names[i],) for i, _ in cells[flag]),
                        tuple(sites[flag]), options, label="exact edge patching",
                        signature={"study": "circuits.exact", "ungrouped": flag})
            outcome = execute(plan, executor, progress=progress)
        index = torch.tensor([i for i, _ in cells[flag]], dtype=torch.long)
        values[index] = (outcome.values - outcome.base[None]).to(values.device, values.dtype)
        if flag is False and len(parts) > 1:
            stats["engine_grouped"] = outcome.paths  # the passes with grouped keys/values
        stats = _merged(stats, outcome.stats)
        stats["engine"] = outcome.paths
    head_cells = "q/k/v projection of the receiving head on the ordinary forward" if why is None else \
        f"TL's per-head inputs ({why})"
    at = "off: " + why_receiving if why_receiving is not None else \
        "on: edges into heads and MLPs" + (" (the last layer's and the logits' at the read position)"
                                          if final_read is not None else " below the last layer")
    return values.T, {"head_cells": head_cells, "receiving_layer": at, "receiving_cells": n_receiving, **stats}


def stream_names(g: Graph, model: Any) -> list[str]:
    """The clean run's residual streams ``exact_effects`` reads: every layer's input and what its
    attention leaves (``hook_resid_mid``, where blocks have one; for an attention-only model the
    last ``hook_resid_post``)."""
    if head_input_reason(model) is not None:
        return []
    pre = [f"blocks.{layer}.hook_resid_pre" for layer in range(g.n_layers)]
    if not g.mlp:
        return [*pre, f"blocks.{g.n_layers - 1}.hook_resid_post"]
    return pre + [name for name in (f"blocks.{layer}.hook_resid_mid" for layer in range(g.n_layers))
                  if name in model.hook_dict]  # parallel attention/MLP blocks have none


def corrupted_deltas(model: Any, clean: Any, corrupted: Any, metric: Any
                     ) -> tuple[Graph, Any, Tensor, dict[str, Tensor]]:
    """The graph, the checked clean batch, what each edge's patch adds to its receiver's input
    under corrupted ablation (``exact_effects``'s ``diff``) and the clean residual streams read
    in the same forward (its ``streams``), as ``attribute`` computes them: for exact studies of a
    sample of edges (``exact_effects(only=...)``: the benchmark, the real-model tests)."""
    g, clean_b, corrupt_b = prepare(model, clean, corrupted, metric, "corrupted", differentiable=False)
    streams: dict[str, Any] = dict.fromkeys(stream_names(g, model))
    with compat.edge_hooks_on(model):
        clean_s, _ = sender_values(model, g, clean_b, also=streams)
        diff = sender_deltas(g, compat.attention_output_norms(model), clean_s,
                             ablated_values(model, g, "corrupted", clean_b, corrupt_b, clean_s))
    return g, clean_b, diff, streams


def _merged(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two executions' statistics: counts added, anything else from the last that has it."""
    out = {**a, **b}
    for k, v in a.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(b.get(k), (int, float)):
            out[k] = v + b[k]
    return out
