"""Hand-hooked references for the circuits tests: single edges and whole circuits patched with
plain TransformerLens hooks (``run_with_hooks``), one forward pass per edge or circuit, edge
names parsed by hand. Independent of ``tl_interp.circuits``' implementation."""

import contextlib
import re

import torch


@contextlib.contextmanager
def flags(model):
    cfg = model.cfg
    names = ["use_split_qkv_input", "use_attn_result"] + ([] if cfg.attn_only else ["use_hook_mlp_in"])
    if cfg.n_key_value_heads is not None:
        names.append("ungroup_grouped_query_attention")
    saved = {n: getattr(cfg, n) for n in names}
    for n in names:
        setattr(cfg, n, True)
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(cfg, n, v)


def sender_out(model, cache, node):
    """A sender's output ``(batch, pos, d_model)`` from a TL cache."""
    if node == "input":
        return cache["hook_embed"]
    layer, head = re.fullmatch(r"a(\d+)\.h(\d+)", node).groups() if node.startswith("a") else (node[1:], None)
    if head is None:
        return cache[f"blocks.{layer}.hook_mlp_out"]
    return cache[f"blocks.{layer}.attn.hook_result"][:, :, int(head)]


def receiver_at(model, receiver):
    """(hook name, head index or None) of a receiver name."""
    if receiver == "logits":
        return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", None
    m = re.fullmatch(r"a(\d+)\.h(\d+)<([qkv])>", receiver)
    if m:
        return f"blocks.{m[1]}.hook_{m[3]}_input", int(m[2])
    return f"blocks.{receiver[1:]}.hook_mlp_in", None


def _kw(mask):
    return {} if mask is None else {"attention_mask": mask}


def _head(node):
    m = re.fullmatch(r"a(\d+)\.h(\d+)", node)
    return (int(m[1]), int(m[2])) if m else None


def _normed(model, cache, layer, replaced):
    """What layer ``layer``'s attention adds to the residual stream with the heads in
    ``replaced`` (head -> value) swapped in: ``ln1_post(sum of heads + b_O)``."""
    result = cache[f"blocks.{layer}.attn.hook_result"].clone()
    for head, value in replaced.items():
        result[:, :, head] = value
    return model.blocks[layer].ln1_post(result.sum(2) + model.blocks[layer].attn.b_O)


def delta_of(model, now_cache, other_value, senders):
    """What a receiver's input gains when ``senders`` carry ``other_value(s)`` instead of their
    values in ``now_cache``: additive, except heads behind Gemma's attention output norm."""
    total, by_layer = 0, {}
    for s in senders:
        h = _head(s)
        if h is not None and model.cfg.use_normalization_before_and_after:
            by_layer.setdefault(h[0], {})[h[1]] = other_value(s)
        else:
            total = total + other_value(s) - sender_out(model, now_cache, s)
    for layer, replaced in by_layer.items():
        total = total + _normed(model, now_cache, layer, replaced) - _normed(model, now_cache, layer, {})
    return total


def adder(delta, head):
    """A TL hook adding ``delta`` (batch, pos, d_model) to an input: to one head's slot, or whole."""
    def add(act, hook):
        return torch.cat([act[:, :, :head], act[:, :, head:head + 1] + delta[:, :, None], act[:, :, head + 1:]], 2) \
            if head is not None else act + delta
    return add


def single_edges(model, clean, corrupted, per_prompt, edges, mask=None):
    """Exact effect of patching each edge alone: (n_prompts, n_edges), one forward per edge."""
    with flags(model), torch.no_grad():
        _, cc = model.run_with_cache(clean, **_kw(mask))
        _, kc = model.run_with_cache(corrupted, **_kw(mask))
        base = per_prompt(model(clean, **_kw(mask)))
        out = []
        for edge in edges:
            sender, receiver = edge.split("->")
            delta = delta_of(model, cc, lambda s: sender_out(model, kc, s), [sender])
            hook, head = receiver_at(model, receiver)

            out.append(per_prompt(model.run_with_hooks(clean, fwd_hooks=[(hook, adder(delta, head))], **_kw(mask)))
                       - base)
    return torch.stack(out, 1)


def circuit_values(model, clean, other_cache, per_prompt, all_edges, circuit, mask=None, other=None):
    """The metric per prompt with every edge outside ``circuit`` carrying ``other`` (a function
    sender -> value, default the other run's cache), senders read live during the pass."""
    circuit = set(circuit)
    current = {}
    hooks = []
    senders = {"hook_embed"} | {f"blocks.{l}.attn.hook_result" for l in range(model.cfg.n_layers)}
    if not model.cfg.attn_only:
        senders |= {f"blocks.{l}.hook_mlp_out" for l in range(model.cfg.n_layers)}

    def record(act, hook):
        current[hook.name] = act

    hooks += [(name, record) for name in senders]
    by_hook = {}
    for edge in all_edges:
        if edge in circuit:
            continue
        sender, receiver = edge.split("->")
        by_hook.setdefault(receiver_at(model, receiver), []).append(sender)
    value = other or (lambda s: sender_out(model, other_cache, s))

    def make(head, senders_):
        def corrupt(act, hook):
            act = act.clone()
            delta = delta_of(model, current, value, senders_)
            if head is None:
                act += delta
            else:
                act[:, :, head] += delta
            return act

        return corrupt

    hooks += [(hook, make(head, ss)) for (hook, head), ss in by_hook.items()]
    with flags(model), torch.no_grad():
        return per_prompt(model.run_with_hooks(clean, fwd_hooks=hooks, **_kw(mask)))
