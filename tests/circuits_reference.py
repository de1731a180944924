"""Independent references for the circuit tests: MIB's edge names and brute-force faithfulness.

Written from the definitions (EAP-IG's ``Graph.from_model`` and ``evaluate_graph``), not from
``tl_interp.circuits``: the graph's names are enumerated as MIB enumerates them, and a
circuit is evaluated with one forward pass of its own, every edge outside it patched by hand
with TransformerLens hooks on a copy of the model that exposes per-head inputs.
"""

import copy
from collections.abc import Callable, Collection

import torch
from torch import Tensor


def mib_names(n_layers: int, n_heads: int, *, mlp: bool = True) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(nodes, edges) in MIB's order: each attention layer's heads read q, k, v from every
    earlier node, each MLP from every earlier node and its own layer's heads, logits from all."""
    nodes, edges, upstream = ["input"], [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        nodes += heads
        edges += [f"{s}->{h}<{x}>" for s in upstream for h in heads for x in "qkv"]
        upstream = upstream + heads
        if mlp:
            nodes.append(f"m{layer}")
            edges += [f"{s}->m{layer}" for s in upstream]
            upstream = upstream + [f"m{layer}"]
    nodes.append("logits")
    edges += [f"{s}->logits" for s in upstream]
    return tuple(nodes), tuple(edges)


def _per_head_copy(model):
    """A copy whose hooks expose each head's output and q/k/v inputs (GQA ungrouped)."""
    twin = copy.deepcopy(model)
    twin.set_use_attn_result(True)
    twin.set_use_split_qkv_input(True)
    if not twin.cfg.attn_only:
        twin.set_use_hook_mlp_in(True)
    if twin.cfg.n_key_value_heads is not None:
        twin.cfg.ungroup_grouped_query_attention = True  # one key/value input per query head
    return twin


def brute_force_faithfulness(model, clean: Tensor, corrupted: Tensor, circuits: list[Collection[str]],
                             score: Callable[[Tensor], Tensor], *, ablation: str = "corrupted") -> Tensor:
    """Per-prompt ``score(logits)`` of each circuit, ``(n_circuits, batch)``: one forward per circuit.

    Every receiver input (a head's q/k/v input, an MLP's input, the logits' input) is the
    current residual stream plus, for each sender whose edge is not in the circuit, its
    ablated output minus its output in this run (EAP-IG's ``evaluate_graph``); ``ablation``
    is ``"corrupted"`` (the corrupted run's outputs) or ``"zero"``.
    """
    twin = _per_head_copy(model)
    cfg = twin.cfg
    n_layers, n_heads = cfg.n_layers, cfg.n_heads
    sender_hooks = {"input": "hook_embed"}
    for layer in range(n_layers):
        for h in range(n_heads):
            sender_hooks[f"a{layer}.h{h}"] = (f"blocks.{layer}.attn.hook_result", h)
        if not cfg.attn_only:
            sender_hooks[f"m{layer}"] = f"blocks.{layer}.hook_mlp_out"

    def sender_value(cache: dict[str, Tensor], node: str) -> Tensor:
        where = sender_hooks[node]
        if isinstance(where, tuple):
            return cache[where[0]][:, :, where[1]]
        return cache[where]

    _, corrupted_cache = twin.run_with_cache(corrupted)
    corr = {node: sender_value(corrupted_cache, node) for node in sender_hooks}
    if ablation == "zero":
        corr = {node: torch.zeros_like(v) for node, v in corr.items()}

    def upstream(receiver: str) -> list[str]:
        if receiver == "logits":
            return list(sender_hooks)
        kind, layer = receiver[0], int(receiver[1:].split(".")[0])
        out = ["input"]
        for prev in range(layer + (1 if kind == "m" else 0)):
            out += [f"a{prev}.h{h}" for h in range(n_heads)]
            if not cfg.attn_only and prev < layer:
                out.append(f"m{prev}")
        return out

    values = []
    for circuit in circuits:
        chosen = set(circuit)
        current: dict[str, Tensor] = {}

        def record(act, hook):
            current[hook.name] = act.detach().clone()
            return act

        def missing(receiver_edge: str, receiver: str) -> Tensor:
            delta = 0.0
            for sender in upstream(receiver):
                if f"{sender}->{receiver_edge}" not in chosen:
                    delta = delta + corr[sender] - sender_value(current, sender)
            return delta

        def patch_heads(letter: str, layer: int):
            def hook(act, hook):
                act = act.clone()
                for h in range(n_heads):
                    act[:, :, h] = act[:, :, h] + missing(f"a{layer}.h{h}<{letter}>", f"a{layer}.h{h}")
                return act
            return hook

        def patch_whole(receiver: str):
            def hook(act, hook):
                return act + missing(receiver, receiver)
            return hook

        hooks = [("hook_embed", record)]
        for layer in range(n_layers):
            hooks += [(f"blocks.{layer}.hook_{x}_input", patch_heads(x, layer)) for x in "qkv"]
            hooks.append((f"blocks.{layer}.attn.hook_result", record))
            if not cfg.attn_only:
                hooks.append((f"blocks.{layer}.hook_mlp_in", patch_whole(f"m{layer}")))
                hooks.append((f"blocks.{layer}.hook_mlp_out", record))
        hooks.append((f"blocks.{n_layers - 1}.hook_resid_post", patch_whole("logits")))
        with torch.no_grad():
            logits = twin.run_with_hooks(clean, fwd_hooks=hooks)
        values.append(score(logits))
    return torch.stack(values)
