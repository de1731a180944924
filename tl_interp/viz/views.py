"""circuitsvis views of a model and of per-token numbers: attention, tokens, top_activations, predictions.

Each function checks its arguments before any forward pass and returns a ``View``, which
displays itself in Jupyter / VS Code and goes into a ``Report``; ``view.data`` holds the
numbers drawn. The props passed to each circuitsvis component are the ones circuitsvis's own
Python function would pass (``attention_heads``, ``colored_tokens(_multi)``,
``topk_tokens``, ``topk_samples``, ``token_log_probs``), rendered offline (see
``_circuitsvis``).
"""

import html
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from tl_interp._checks import check_count, checked, renamed, retired
from tl_interp import hooks
from tl_interp._types import IndexSelection
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError
from tl_interp.intervention import Intervention
from tl_interp.sites import site
from tl_interp.viz._circuitsvis import Panel, View, Widget
from tl_interp.viz.html import colored_spans, heat_table
from tl_interp.viz._prompt import Prompt, check_heads, check_layer, one_prompt, token_labels

__all__ = ["attention", "tokens", "top_activations", "topk", "predictions"]

PREVIEW_MAX_TOKENS = 40  # a static attention table beyond this would outweigh the widget
Values = Tensor | Sequence[float] | Mapping[str, Tensor | Sequence[float]]


def _patterns(model: Any, ids: Tensor, name: str, heads: list[int], iv: Intervention) -> Tensor:
    store = hooks.cache(name, heads=heads, device="cpu")
    with torch.no_grad():
        (iv + store).run(model, ids)
    return store[name][0].double()  # (head_index, query_pos, key_pos)


def _heads_widget(patterns: Tensor, labels: list[str], names: list[str]) -> Widget:
    preview = ""
    if len(labels) <= PREVIEW_MAX_TOKENS:
        preview = f"<div>{names[0]} (rows: query positions)</div>" + heat_table(patterns[0], labels, labels)
    return Widget("AttentionHeads", {"attention": patterns, "tokens": labels, "attentionHeadNames": names}, preview)


@checked
def attention(model: Any, prompt: Prompt, *, layer: int, heads: IndexSelection = None,
              intervention: Intervention | None = None, row: int = 0,
              attention_mask: Tensor | None = None) -> View:
    """Attention patterns of some heads of one layer on one prompt (circuitsvis ``attention_heads``).

    Args:
        model: a TransformerLens model.
        prompt: text, a list of prompts (with ``row``), a ``Tokenized`` batch, or token ids.
        layer: the layer whose heads to show.
        heads: which heads (an index, list, slice or mask; default every head).
        intervention: also show the patterns under this intervention, side by side.
        row: which prompt of a batch; its padding is removed.
        attention_mask: the mask of padded token ids.

    Returns:
        A View; ``data["patterns"]`` is ``(head, query_pos, key_pos)`` (and
        ``data["patterns_intervened"]`` with an intervention), ``data["tokens"]`` the labels.

    Example:
        >>> import torch, tl_interp as ti
        >>> model = ti.models.load("induction-2l")
        >>> view = ti.viz.attention(model, torch.tensor([5, 6, 7, 5, 6]), layer=1, heads=[2])
        >>> view.data["patterns"].shape
        torch.Size([1, 5, 5])
    """
    ids, labels, adapter = one_prompt(model, prompt, row=row, attention_mask=attention_mask)
    check_layer(adapter, layer)
    chosen = check_heads(adapter, heads)
    name = site("pattern", layer)
    if intervention is not None:
        intervention.validate(model, seq_len=ids.shape[1])
    names = [f"L{layer}H{h}" for h in chosen]
    base = _patterns(model, ids, name, chosen, Intervention.identity())
    data: dict[str, Any] = {"patterns": base, "tokens": labels, "heads": chosen, "layer": layer}
    # the title names the layer; a lone panel needs no caption (it said "layer 3" a second time)
    panels = [Panel("unmodified" if intervention is not None else "", _heads_widget(base, labels, names))]
    if intervention is not None:
        edited = _patterns(model, ids, name, chosen, intervention)
        data["patterns_intervened"] = edited
        panels.append(Panel("under the intervention", _heads_widget(edited, labels, names)))
    note = f"{adapter.model_id}, {len(labels)} tokens"
    if intervention is not None:
        note += "; intervention: " + "; ".join(intervention.descriptions)
    return View(f"Attention patterns, layer {layer}, heads {chosen}", tuple(panels), data, note)


def _value_columns(values: Values, labels: Sequence[str] | None) -> tuple[Tensor, list[str] | None]:
    if isinstance(values, Mapping):
        if not values:
            raise InputError("tokens: values is an empty mapping; give at least one quantity")
        if labels is not None:
            raise OptionError("tokens: a mapping names its own quantities; drop labels=")
        columns = [torch.as_tensor(v.detach().cpu() if isinstance(v, Tensor) else v, dtype=torch.float64).flatten()
                   for v in values.values()]
        lengths = {len(c) for c in columns}
        if len(lengths) > 1:
            raise ShapeError(f"tokens: the quantities have different lengths {dict(zip(values, map(len, columns)))}")
        return torch.stack(columns, -1), [str(k) for k in values]
    table = torch.as_tensor(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=torch.float64)
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2:
        raise ShapeError(f"tokens: values must be (pos,) or (pos, quantity), got shape {tuple(table.shape)}")
    if labels is not None and len(labels) != table.shape[1]:
        raise ShapeError(f"tokens: {len(labels)} labels for {table.shape[1]} quantities")
    return table, None if labels is None else list(labels)


@checked
def tokens(tokens: Sequence[str], values: Values, *, labels: Sequence[str] | None = None,
           title: str = "Values per token") -> View:
    """Tokens colored by one or several per-token quantities (circuitsvis ``colored_tokens(_multi)``).

    Args:
        tokens: one string per position (e.g. ``result.labels["pos"]``).
        values: ``(pos,)`` values, ``(pos, quantity)`` columns, or ``{name: (pos,) values}``
            (several quantities are switchable in the view).
        labels: names of the columns of a ``(pos, quantity)`` table.
        title: what the values are.

    Returns:
        A View; ``data["values"]`` is the ``(pos, quantity)`` float64 table drawn.

    Example:
        >>> view = tokens(["The", " cat", " sat"], [0.1, -0.5, 2.0])
        >>> view.data["values"][:, 0].tolist()
        [0.1, -0.5, 2.0]
    """
    table, names = _value_columns(values, labels)
    if len(tokens) != table.shape[0]:
        raise ShapeError(f"tokens: {len(tokens)} tokens but {table.shape[0]} values per quantity; give one "
                         "value per token (e.g. result.values[layer] for a (layer, pos) result)")
    if not bool(torch.isfinite(table).all()):
        raise InputError("tokens: values contain NaN or inf; replace them first (e.g. values.nan_to_num())")
    toks = [str(t) for t in tokens]
    preview = colored_spans(toks, table[:, 0].tolist())
    if table.shape[1] == 1 and names is None:
        widget = Widget("ColoredTokens", {"tokens": toks, "values": table[:, 0]}, preview)
    else:
        names = names or [f"value {j}" for j in range(table.shape[1])]
        widget = Widget("ColoredTokensMulti", {"tokens": toks, "values": table, "labels": names},
                        f"<div>{html.escape(names[0])}:</div>{preview}")
    return View(title, (Panel("", widget),), {"tokens": toks, "values": table, "labels": names})


def _per_prompt(tokens: Sequence[Sequence[str]], activations: Tensor | Sequence[Tensor],
                attention_mask: Tensor | None) -> tuple[list[list[str]], list[Tensor]]:
    n_prompts = activations.shape[0] if isinstance(activations, Tensor) else len(activations)
    if len(tokens) != n_prompts or n_prompts == 0:
        raise ShapeError(f"top_activations: {len(tokens)} token lists for {n_prompts} prompts of activations; give one "
                         "token list per prompt (at least one)")
    if isinstance(activations, Tensor):
        if activations.ndim != 3:
            raise ShapeError(f"top_activations: activations must be (batch, pos, unit), got {tuple(activations.shape)}")
        mask = torch.ones(activations.shape[:2], dtype=torch.bool) if attention_mask is None \
            else attention_mask.bool().cpu()
        if mask.shape != activations.shape[:2]:
            raise ShapeError(f"top_activations: attention_mask {tuple(mask.shape)} does not match activations "
                             f"{tuple(activations.shape[:2])}")
        rows = [activations[i].detach().cpu()[mask[i]] for i in range(activations.shape[0])]
        # token lists of the padded width lose their pads too; unpadded ones are taken as they are
        toks = [[t for t, m in zip(tokens[i], mask[i]) if m] if len(tokens[i]) == mask.shape[1] else list(tokens[i])
                for i in range(n_prompts)]
    else:
        rows, toks = [a.detach().cpu() for a in activations], [list(t) for t in tokens]
    widths = {r.shape[-1] for r in rows}
    for i, (t, r) in enumerate(zip(toks, rows)):
        if r.ndim != 2 or len(t) != r.shape[0]:
            raise ShapeError(f"top_activations: prompt {i} has {len(t)} tokens but activations of shape {tuple(r.shape)}; "
                             "give (pos, unit) activations per prompt, one row per token")
    if len(widths) != 1:
        raise ShapeError(f"top_activations: prompts have different numbers of units {sorted(widths)}")
    return [[str(x) for x in t] for t in toks], [r.double() for r in rows]


@checked
def top_activations(tokens: Sequence[Sequence[str]], activations: Tensor | Sequence[Tensor], *, k: int | None = None,
                    neurons: IndexSelection = None, unit_name: str = "neuron",
                    layout: Literal["samples", "tokens"] = "samples", attention_mask: Tensor | None = None) -> View:
    """The most-activating prompts or tokens of neurons / SAE features over a prompt set.

    Args:
        tokens: the tokens of each prompt.
        activations: ``(pos, unit)`` per prompt, or one ``(batch, pos, unit)`` tensor (with
            ``attention_mask`` when padded; padding is removed).
        k: how many prompts (``layout="samples"``: at most as many as there are) or tokens per
            prompt (``"tokens"``: up to k of each prompt, since prompts differ in length; a k
            longer than every prompt is refused); default up to 10 (a view: the default never
            exceeds a small prompt set).
        neurons: which units -- neurons or SAE features -- (default all, up to 100); each is
            labelled with its true index.
        unit_name: what a unit is called ("neuron", "feature").
        layout: ``"samples"``: for each unit its k prompts with the highest maximum activation,
            in that order (circuitsvis ``topk_samples``); ``"tokens"``: for each unit and
            prompt its k highest and lowest tokens (circuitsvis ``topk_tokens``).

    Returns:
        A View; ``data["order"][u]`` lists unit ``neurons[u]``'s prompts by maximum activation.

    Example:
        >>> import torch
        >>> acts = [torch.tensor([[0.0, 1.0], [3.0, 0.0]]), torch.tensor([[5.0, 0.0]])]
        >>> top_activations([["a", "b"], ["c"]], acts, k=2).data["order"]
        [[1, 0], [0, 1]]
    """
    if k is not None:
        check_count(k, "k", what="top_activations")  # the count's type before the activations' shapes
    toks, rows = _per_prompt(tokens, activations, attention_mask)
    n, items = (len(rows), "prompts") if layout == "samples" else (max(r.shape[0] for r in rows),
                                                                  "tokens in the longest prompt")
    k = min(10, n) if k is None else check_count(k, "k", high=n, what="top_activations", items=items)
    width = rows[0].shape[-1]
    if neurons is None and width > 100:
        raise OptionError(f"top_activations: {width} {unit_name}s are too many to draw; pass neurons=[...] (e.g. the top "
                          "features by maximum activation)")
    if neurons is None or isinstance(neurons, (Sequence, tuple)):
        chosen = list(range(width)) if neurons is None else [int(u) for u in neurons]
    else:
        from tl_interp.hooks._select import index_mask

        chosen = index_mask(neurons, width, unit_name, "top_activations").nonzero().flatten().tolist()
    bad = [u for u in chosen if not 0 <= u < width]
    if bad or not chosen:
        raise SelectionError(f"top_activations: {unit_name} index {bad[0] if bad else '(none)'} is out of range for "
                         f"{width} {unit_name}s")
    peaks = torch.stack([r[:, chosen].amax(0) for r in rows])  # (prompt, unit)
    order = [peaks[:, u].argsort(descending=True, stable=True)[:k].tolist() for u in range(len(chosen))]
    names = [f"{unit_name} {u}" for u in chosen]
    best = order[0][0]
    preview = (f"<div>{html.escape(names[0])}, its top prompt:</div>"
               + colored_spans(toks[best], rows[best][:, chosen[0]].tolist()))
    if layout == "samples":
        widget = Widget("TopkSamples", {
            "tokens": [[[toks[p] for p in order[u]] for u in range(len(chosen))]],
            "activations": [[[rows[p][:, c] for p in order[u]] for u, c in enumerate(chosen)]],
            "zerothDimensionName": "Prompts", "firstDimensionName": unit_name.capitalize(),
            "zerothDimensionLabels": [f"all {len(rows)}"], "firstDimensionLabels": names}, preview)
    else:
        # units on the (labelled) first dimension: circuitsvis cannot label its third one
        top, bottom = [], []
        for r in rows:
            acts = r[:, chosen].T[:, :, None]  # (unit, pos, 1)
            kk = min(acts.shape[1], k)
            top.append(acts.topk(kk, dim=1))
            bottom.append(acts.topk(kk, dim=1, largest=False))
        widget = Widget("TopkTokens", {
            "tokens": toks, "topkVals": [t.values for t in top], "topkIdxs": [t.indices for t in top],
            "bottomkVals": [b.values.flip(1) for b in bottom], "bottomkIdxs": [b.indices.flip(1) for b in bottom],
            "firstDimensionName": unit_name.capitalize(), "thirdDimensionName": "activation",
            "firstDimensionLabels": names}, preview)
    data = {"units": chosen, "order": order, "peaks": peaks, "tokens": toks}
    return View(f"Top {k} {'prompts' if layout == 'samples' else 'tokens'} per {unit_name}",
                (Panel("", widget),), data, f"{len(rows)} prompts")


@retired("top_activations (a view is named for what it draws; a result's top-k is result.top(k))")
@checked
def topk(tokens: Sequence[Sequence[str]], activations: Tensor | Sequence[Tensor], *, k: int | None = None,
         neurons: IndexSelection = None, unit_name: str = "neuron",
         layout: Literal["samples", "tokens"] = "samples", attention_mask: Tensor | None = None) -> View:
    """The old name of ``top_activations`` (same arguments, same view)."""
    return top_activations(tokens, activations, k=k, neurons=neurons, unit_name=unit_name, layout=layout,
                           attention_mask=attention_mask)


def _log_prob_props(ids: Tensor, log_probs: Tensor, k: int, to_string: Any) -> dict[str, Any]:
    """circuitsvis ``token_log_probs``'s props: top-k next tokens and the true next token's rank."""
    lp = log_probs[:-1]
    order = lp.argsort(dim=-1, descending=True, stable=True)
    top_lp, top_ids = lp.topk(k, dim=-1)
    target = ids[1:, None]
    return {"prompt": [to_string(int(i)) for i in ids],
            "topKLogProbs": top_lp, "topKTokens": [[to_string(int(t)) for t in row] for row in top_ids.tolist()],
            "correctTokenRank": (order == target).nonzero()[:, 1],
            "correctTokenLogProb": lp.gather(-1, target)[:, 0]}


@renamed(k="top_k")
@checked
def predictions(model: Any, prompt: Prompt, *, intervention: Intervention | None = None, top_k: int = 10,
                row: int = 0, attention_mask: Tensor | None = None) -> View:
    """Next-token log-probs at every position, with the top_k tokens of each (circuitsvis ``token_log_probs``).

    Args:
        model: a TransformerLens model.
        prompt: as for ``attention``.
        intervention: also show the predictions under it (steered / ablated), side by side.
        top_k: how many top next tokens each position lists on hover, ``1 <= top_k <= d_vocab``
            (the lenses' name for top tokens per reading; the old name ``k=`` warns).
        row, attention_mask: as for ``attention``.

    Returns:
        A View; ``data["log_probs"]`` is ``(pos, d_vocab)`` (``data["log_probs_intervened"]``).

    Example:
        >>> import torch, tl_interp as ti
        >>> model = ti.models.load("induction-2l")
        >>> view = ti.viz.predictions(model, torch.tensor([5, 6, 7, 5, 6]), top_k=3)
        >>> view.data["log_probs"].shape
        torch.Size([5, 65])
    """
    ids, labels, adapter = one_prompt(model, prompt, row=row, attention_mask=attention_mask)
    vocab = adapter.d_vocab or 0
    check_count(top_k, "top_k", high=vocab, what="predictions", items="tokens (d_vocab)")
    if ids.shape[1] < 2:
        raise InputError(f"predictions: the prompt has {ids.shape[1]} token; it needs at least 2 (the first "
                         "token is context, each later one is predicted)")
    if intervention is not None:
        intervention.validate(model, seq_len=ids.shape[1])
    runs = [("unmodified" if intervention is not None else "", Intervention.identity(), "log_probs")]
    if intervention is not None:
        runs.append(("under the intervention", intervention, "log_probs_intervened"))
    to_string = lambda i: token_labels(adapter, [i])[0]  # noqa: E731
    panels, data = [], {"tokens": labels}
    for caption, iv, key in runs:
        with torch.no_grad():
            log_probs = iv.run(model, ids)[0].double().log_softmax(-1).cpu()
        data[key] = log_probs
        props = _log_prob_props(ids[0].cpu(), log_probs, top_k, to_string)
        preview = ("<div>log-prob of each token given the ones before:</div>"
                   + colored_spans(props["prompt"][1:], props["correctTokenLogProb"].tolist()))
        panels.append(Panel(caption, Widget("TokenLogProbs", props, preview)))
    note = f"{adapter.model_id}; hover a token for the top {top_k} predictions at the position before it"
    if intervention is not None:
        note += "; intervention: " + "; ".join(intervention.descriptions)
    return View("Next-token predictions", tuple(panels), data, note)
