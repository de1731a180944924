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
Run here with corrupted ablation (``exact_study``), the study's one forward pass is the engine's base
run: it reads the senders and the clean residual streams, the corrupted prompts riding alongside.
"""

import bisect
import contextlib
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import Tensor

from tl_interp import hooks
from tl_interp.circuits._edit import edge_edit, sender_deltas
from tl_interp.circuits._graph import Graph, at_position
from tl_interp.circuits import _receiving as receiving
from tl_interp.circuits._heads import HeadInputs, head_input_edit, head_input_reason
from tl_interp.circuits._runs import (ablated_values, forward_kw, no_head_results, prepare, run_values, sender_names,
                                     sender_values, senders_from)
from tl_interp import compat
from tl_interp.engine.executors import Executor, LocalExecutor, Plan, execute
from tl_interp.engine.paths import read_only
from tl_interp.engine.run import BaseRun, EngineOptions, forward_layout
from tl_interp.intervention import Intervention
from tl_interp.metrics import bind

__all__ = ["exact_effects", "exact_study", "corrupted_deltas", "stream_names"]


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
    values, stats, _ = _effects(model, g, batch, metric, lambda base: (diff, streams, None), memory_mb, executor,
                                progress, aware, only)
    return values, stats


def exact_study(model: Any, g: Graph, clean: Any, corrupted: Any, metric: Any, ablation: str, memory_mb: float,
                executor: Executor | None, progress: bool, aware: bool = False, only: Collection[int] | None = None
                ) -> tuple[Tensor, dict[str, Any], tuple[Tensor, Tensor]]:
    """``attribute(method="exact")`` from the checked batches: ``exact_effects``'s values and
    statistics, and the clean and corrupted runs' per-prompt metric. Run here (``executor=None``)
    with corrupted ablation on batches of one shape and attention mask, the senders and the clean
    residual streams are read in the engine's base run, the corrupted prompts riding alongside
    the clean ones (one forward pass in all); otherwise (``senders_read`` says why) the clean
    and the corrupted forwards read them, and the engine makes its own base run."""
    why = ("an executor makes its own base run" if executor is not None else
           f"ablation={ablation!r}" if ablation != "corrupted" else
           "the corrupted prompts' shape or attention mask differs" if corrupted.shape != clean.shape
           or not torch.equal(corrupted.attention_mask, clean.attention_mask) else None)
    norms = compat.attention_output_norms(model)

    def read(base: BaseRun | None) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor]]:
        names = stream_names(g, model)
        if base is not None:
            clean_s = senders_from(model, g, base.batch_acts, clean)
            other = senders_from(model, g, base.alongside_acts, corrupted)
            runs = (base.values.float(), base.alongside_values.float())  # type: ignore[union-attr]
            return sender_deltas(g, norms, clean_s, other), {n: base.batch_acts[n] for n in names}, runs
        streams: dict[str, Any] = dict.fromkeys(names)
        clean_s, clean_logits = sender_values(model, g, clean, also=streams)
        corrupt_s, corrupt_logits = sender_values(model, g, corrupted) if ablation == "corrupted" else (None, None)
        other = ablated_values(model, g, ablation, clean, corrupted, clean_s, corrupt_s)
        runs = run_values(model, metric, ablation, clean, corrupted, clean_logits, corrupt_logits)
        return sender_deltas(g, norms, clean_s, other), streams, runs

    values, stats, runs = _effects(model, g, clean, metric, read, memory_mb, executor, progress, aware, only,
                                   alongside=corrupted if why is None else None, why_apart=why)
    return values, stats, runs  # type: ignore[return-value]


Reads = Callable[[BaseRun | None], tuple[Tensor, dict[str, Tensor] | None, tuple[Tensor, Tensor] | None]]


def _effects(model: Any, g: Graph, batch: Any, metric: Any, read: Reads, memory_mb: float,
             executor: Executor | None, progress: bool, aware: bool, only: Collection[int] | None,
             alongside: Any = None, why_apart: str | None = None
             ) -> tuple[Tensor, dict[str, Any], tuple[Tensor, Tensor] | None]:
    """``exact_effects``, with ``read(base)`` giving ``diff``, the clean ``streams`` (None: read
    here) and the runs' metric: from the engine's base run (made with ``alongside`` riding in it)
    where it can serve, else ``read(None)`` (``why_apart``: why not)."""
    why = head_input_reason(model)
    why_receiving = receiving.reason(model, batch)
    read_at = getattr(bind(metric, batch), "positions", None)
    rows, pos = batch.shape
    if read_at is not None:
        read_at = torch.as_tensor(read_at).long().expand(rows) % pos
    # the last layer at its receiving layer too when the metric reads one position, the same in every row
    final_read = int(read_at[0]) if read_at is not None and bool((read_at == read_at[0]).all()) else None
    last = g.n_layers - 1
    starts = [r.offset for r in g.receivers]
    chosen: dict[int, list[int]] = {}  # receiver -> the senders of its edges in ``only``
    for i in sorted(only or ()):
        k = bisect.bisect_right(starts, i) - 1
        chosen.setdefault(k, []).append(i - starts[k])
    used = None if only is None else {j for js in chosen.values() for j in js}
    on_receiving = why is None and why_receiving is None
    # where each receiver's cells write, fixed before any forward pass (the engine's base run keeps those sites)
    places = []  # (receiver index, receiver, layer, at its receiving layer, head cell, local, ungrouped)
    sites: dict[bool, dict[str, None]] = {False: {}, True: {}}
    for k, r in enumerate(g.receivers):
        if only is not None and k not in chosen:
            continue
        layer = int(r.hook_name.split(".")[1])
        at_receiver = on_receiving and (layer < last and r.hook_name.endswith(("_input", "mlp_in"))
                                        or final_read is not None)
        head_cell = not at_receiver and why is None and r.head is not None
        # the last layer's queries, MLP and the logits act position by position: only read positions count
        local = layer == last and not r.hook_name.endswith(("k_input", "v_input"))
        ungroup = not at_receiver and r.head is not None
        site = ((f"blocks.{layer}.hook_resid_post" if layer == last else f"blocks.{layer + 1}.hook_resid_pre")
                if at_receiver else  # ReceivingLayers.site
                f"blocks.{layer}.attn.hook_{r.hook_name.split('hook_')[1][0]}" if head_cell else r.hook_name)
        sites[ungroup][site] = None
        places.append((k, r, layer, at_receiver, head_cell, local, ungroup))
    grouped_kv = getattr(model.cfg, "n_key_value_heads", None) is not None
    parts = [flag for flag in (False, True) if any(p[6] == flag for p in places)] if grouped_kv else [True]
    if not grouped_kv:
        sites[True] = {**sites[False], **sites[True]}
    options = EngineOptions(memory_mb=memory_mb)
    unembed = read_only.reason(model, bind(metric, batch)) is not None
    if why_apart is None and alongside is not None and why is not None:
        why_apart = f"TL's per-head inputs ({why})"
    if why_apart is None and alongside is not None and grouped_kv and parts[0]:
        why_apart = "the first passes run grouped keys/values ungrouped"
    share = why_apart is None and alongside is not None
    stats: dict[str, Any] = {}
    given: BaseRun | None = None
    with contextlib.ExitStack() as first:  # the first part's contexts, open from its base run to its passes
        if share:
            first.enter_context(_part(model, parts[0], why, options, unembed))
            given = BaseRun(model, batch, metric, tuple(sites[parts[0]]), options, alongside=alongside,
                            alongside_names=sender_names(g) + stream_names(g, model))
            stats["senders_read"] = "clean and corrupted prompts, in the engine's base run (one forward pass)"
        elif alongside is not None or why_apart is not None:
            stats["senders_read"] = f"clean and corrupted forwards apart ({why_apart})"
        diff, streams, runs = read(given)
        cells, names, n_receiving = _cells(model, g, batch, diff, streams, places, chosen, used, aware, why, final_read, read_at,
                              on_receiving)
        values = torch.zeros(len(names), rows, dtype=diff.dtype, device=diff.device)
        for flag in parts:
            part = cells[flag] if grouped_kv else cells[False] + cells[True]
            shared = given is not None and flag == parts[0]
            with contextlib.nullcontext() if shared else _part(model, flag, why, options, unembed):
                plan = Plan(model, batch, metric, tuple(c for _, c in part), tuple((names[i],) for i, _ in part),
                            tuple(sites[flag]), options, label="exact edge patching",
                            signature={"study": "circuits.exact", "ungrouped": flag})
                outcome = execute(plan, LocalExecutor(given) if shared else executor, progress=progress)
            index = torch.tensor([i for i, _ in part], dtype=torch.long)
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
    return values.T, {"head_cells": head_cells, "receiving_layer": at, "receiving_cells": n_receiving, **stats}, runs


def _part(model: Any, ungroup: bool, why: str | None, options: EngineOptions, unembed: bool
          ) -> contextlib.AbstractContextManager[None]:
    """The hooks and weight layout of one part's base run and passes (grouped keys/values or not);
    the weights re-laid out once for the part, ``W_U`` only if TL's own unembedding runs."""
    stack = contextlib.ExitStack()
    stack.enter_context(compat.receiver_hooks(model, mlp_in=True, ungroup=ungroup, split_qkv=why is not None))
    stack.enter_context(no_head_results(model))
    stack.enter_context(forward_layout(model, options, unembed=unembed))
    return stack


def _cells(model: Any, g: Graph, batch: Any, diff: Tensor, streams: dict[str, Tensor] | None, places: list[Any],
           chosen: dict[int, list[int]], used: set[int] | None, aware: bool, why: str | None,
           final_read: int | None, read_at: Tensor | None, on_receiving: bool
           ) -> tuple[dict[bool, list[tuple[int, Intervention]]], list[str], int]:
    """Every cell, by part (``cells[ungrouped]``: (index in ``names``, cell)), their names, and how
    many are computed at their receiving layer."""
    rows, pos = batch.shape
    diff_last = diff
    if read_at is not None:  # the last block's queries and MLP inputs matter only where the metric reads
        seen = torch.zeros(rows, pos, 1, 1, dtype=diff.dtype, device=diff.device)
        seen[torch.arange(rows), read_at.to(diff.device)] = 1
        diff_last = diff * seen
    inputs = queries_last = layers = None
    if why is None:
        if streams is None:
            cache = hooks.cache(stream_names(g, model))
            with torch.no_grad(), no_head_results(model):
                cache.run(model, batch.tokens, stop_at_layer=g.n_layers, **forward_kw(batch))  # no logits needed
            streams = {name: cache[name] for name in stream_names(g, model)}
        resid = [streams[f"blocks.{layer}.hook_resid_pre"] for layer in range(g.n_layers)]
        inputs = HeadInputs(model, resid, diff, used)
        if not on_receiving or final_read is None:  # last-layer head cells on the ordinary forward
            queries_last = HeadInputs(model, resid, diff_last, used)
        if on_receiving:
            last = g.n_layers - 1
            mids = ([streams[f"blocks.{layer}.hook_resid_mid"] for layer in range(g.n_layers)] if g.mlp else
                    [*resid[1:], streams[f"blocks.{last}.hook_resid_post"]])
            layers = receiving.ReceivingLayers(model, inputs, mids, final_read)
    cells: dict[bool, list[tuple[int, Intervention]]] = {False: [], True: []}
    names: list[str] = []
    n_receiving = 0
    for k, r, _, at_receiver, head_cell, local, ungroup in places:
        for j in (range(r.n_senders) if k not in chosen else chosen[k]):
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
    return cells, names, n_receiving


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
