"""The loops the circuit benchmarks compare against, written as a user would with
``run_with_hooks``.

``edge_forward``: one edge patched, one forward pass: the senders' clean and ablated outputs are
read once, then each edge's pass adds ``ablated - clean`` of its sender to its receiver's input
hook (TransformerLens's per-head ``hook_q_input`` ... only for edges into a head, ``hook_mlp_in``
for an MLP, the last ``hook_resid_post`` for the logits), with no other hook and no per-head
results computed (the reference's ``get_scores_exact`` patches the same input but with every
per-head switch on).

``circuit_forward``: one forward pass per circuit, as the reference EAP-IG code evaluates circuits
(``evaluate_graph``): every sender's output is recorded as the pass runs, and at each receiver
input hook point where some edge is missing, every receiver there gets ``sum over its missing
senders of (ablated - current)`` added, in one einsum per hook point with a (sender, head) mask
as the reference's ``input_construction_hook`` does, on a model set to expose per-head inputs
(grouped-query attention ungrouped, as the reference requires). Heads' outputs are read as ``z @ W_O`` per head from
``hook_z`` (TL's ``use_attn_result`` broadcasts a (batch, pos, head, d_head, d_model) product,
which a user who times it avoids).
"""

from contextlib import contextmanager

import torch


@contextmanager
def per_head_inputs(model, *, split_qkv=True, results=False):
    """Turn on the hook points a loop needs; restore the model's settings afterwards."""
    cfg = model.cfg
    saved = (cfg.use_attn_result, cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.ungroup_grouped_query_attention)
    model.set_use_attn_result(results)
    model.set_use_split_qkv_input(split_qkv)
    if not cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    if cfg.n_key_value_heads is not None:
        cfg.ungroup_grouped_query_attention = True
    try:
        yield model
    finally:
        model.set_use_attn_result(saved[0])
        model.set_use_split_qkv_input(saved[1])
        if not cfg.attn_only:
            model.set_use_hook_mlp_in(saved[2])
        cfg.ungroup_grouped_query_attention = saved[3]


def _sender_hooks(graph, model, store):
    """Hooks writing every sender's output into ``store[:, :, index]`` (batch, pos, sender, d_model);
    a layer's heads as ``z @ W_O`` per head, from ``hook_z``."""
    out, at = [], 0

    def put(start, n, w_o=None):
        def hook(act, hook):
            act_ = act.detach()
            store[:, :, start:start + n] = torch.einsum("bphe,hed->bphd", act_, w_o) if w_o is not None else act_[:, :, None]
            return act
        return hook

    out.append(("hook_embed", put(0, 1)))
    at = 1
    for layer in range(graph.n_layers):
        out.append((f"blocks.{layer}.attn.hook_z", put(at, graph.n_heads, model.blocks[layer].attn.W_O.detach())))
        at += graph.n_heads
        if graph.mlp:
            out.append((f"blocks.{layer}.hook_mlp_out", put(at, 1)))
            at += 1
    return out


def sender_outputs(model, graph, tokens):
    """(batch, pos, n_senders, d_model) outputs of a plain run."""
    store = torch.zeros(tokens.shape[0], tokens.shape[1], len(graph.senders), model.cfg.d_model)
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=_sender_hooks(graph, model, store))
    return store


def edge_forward(model, graph, clean, deltas, index):
    """Logits of one forward on ``clean`` with edge ``index`` (graph order) patched: its
    sender's ``ablated - clean`` (``deltas``: batch, pos, sender, d_model) added to its
    receiver's input hook."""
    r = next(r for r in graph.receivers if r.offset <= index < r.offset + r.n_senders)
    head, delta = r.head, deltas[:, :, index - r.offset]

    def hook(act, hook):
        return _added(act, head, delta)

    model.cfg.use_split_qkv_input = head is not None  # per-head inputs only where an edge needs them
    with torch.no_grad():
        return model.run_with_hooks(clean, fwd_hooks=[(r.hook_name, hook)])


def _added(act, head, delta):
    """``act`` with ``delta`` added to one head's slot (or to the whole input when head is None)."""
    act = act.clone()
    act[(slice(None), slice(None)) + (() if head is None else (head,))] += delta
    return act


def circuit_forward(model, graph, clean, ablated, in_circuit):
    """Logits of one forward on ``clean`` with every edge outside ``in_circuit`` (a bool per
    edge, graph order) carrying ``ablated`` (the senders' ablated outputs)."""
    current = torch.zeros_like(ablated)
    hooks = _sender_hooks(graph, model, current)
    by_point: dict[str, list] = {}
    for r in graph.receivers:
        by_point.setdefault(r.hook_name, []).append(r)

    def receive(n, missing):  # missing: (sender, head) for a per-head input, (sender,) otherwise
        pattern = "bpsd,sh->bphd" if missing.ndim == 2 else "bpsd,s->bpd"

        def hook(act, hook):
            return act + torch.einsum(pattern, ablated[:, :, :n] - current[:, :, :n], missing)
        return hook

    for name, receivers in by_point.items():
        receivers = sorted(receivers, key=lambda r: r.head or 0)  # a per-head input's receivers by head
        n = receivers[0].n_senders
        missing = torch.stack([(~in_circuit[r.offset:r.offset + n]).float() for r in receivers], 1)
        if bool(missing.any()):  # a hook point whose edges are all in the circuit is left alone
            hooks.append((name, receive(n, missing if receivers[0].head is not None else missing[:, 0])))
    with torch.no_grad():
        return model.run_with_hooks(clean, fwd_hooks=hooks)
