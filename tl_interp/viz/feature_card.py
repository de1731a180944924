"""SAE feature cards: where a feature fires, what it writes, and what ablating it costs.

A card (after Anthropic's "Towards Monosemanticity" feature browser and sae_vis) holds, for
one feature over a prompt set: its top-activating contexts (tokens colored by the feature's
activation), a histogram of its non-zero activations, the tokens its decoder direction
promotes and suppresses most (``W_dec[feature] @ W_U``, as sae_vis does on a model TransformerLens
processed: ``W_U`` read through ``ti.weights.fold``, ``ln_final``'s gain folded in and centred, so
the card is the same whether the model was loaded processed or not), and
the change in the answer's probability at each prompt's last token when the feature is
ablated through ``hooks.sae_splice`` (error term kept, so only the feature changes), with a
95% bootstrap interval over prompts. Only the positions the SAE reads (its
``seqpos_slice``) and real tokens count. The card is plain HTML (no JavaScript); the page of
top features adds a circuitsvis ``topk`` view.
"""

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp._checks import checked
from tl_interp import hooks, metrics
from tl_interp.engine.inputs import Inputs, as_batch
from tl_interp.errors import InputError, OptionError, SelectionError
from tl_interp.hooks._sae import _sae_hook_name
from tl_interp.models import Tokenized, adapt
from tl_interp.models.saes import splice_positions
from tl_interp.stats import bootstrap_mean_ci
from tl_interp.viz.html import _fmt, colored_spans, svg_bars, table_html
from tl_interp.viz._prompt import token_labels
from tl_interp.viz.report import Card

__all__ = ["FeatureCard", "Context", "feature_card", "feature_page"]


@dataclass(frozen=True)
class Context:
    """One top-activating place: prompt row, position, activation, and the tokens around it."""

    prompt: int
    position: int
    activation: float
    tokens: tuple[str, ...]
    values: tuple[float, ...]
    focus: int  # index of ``position`` within ``tokens``


@dataclass(frozen=True)
class FeatureCard(Card):
    """Everything one card shows; ``html()`` / ``_repr_html_`` render it."""

    feature: int
    hook_name: str
    model_id: str
    contexts: tuple[Context, ...]
    counts: tuple[float, ...]
    edges: tuple[float, ...]
    n_tokens: int
    n_active: int
    top_logits: tuple[tuple[str, float], ...]
    bottom_logits: tuple[tuple[str, float], ...]
    answers: tuple[str, ...]
    p_clean: Tensor
    p_ablated: Tensor
    effect: float
    ci: tuple[float, float] | None
    seed: int

    def __repr__(self) -> str:
        return (f"FeatureCard(feature {self.feature} at {self.hook_name}; active on {self.n_active}/"
                f"{self.n_tokens} tokens; ablation effect {self.effect:+.4g})")

    def html(self) -> str:
        """The card as self-contained HTML (inline styles, an SVG histogram)."""
        top = max((c.activation for c in self.contexts), default=0.0)
        ctx = "".join(f"<div style='margin:2px 0'><span style='color:#666'>#{c.prompt} pos {c.position} "
                      f"({_fmt(c.activation)}):</span> {colored_spans(c.tokens, c.values, scale=top, focus=c.focus)}"
                      "</div>" for c in self.contexts)
        ctx = ctx or "<div>the feature is not active on any token of these prompts</div>"
        logits = table_html(["promotes", "logit", "suppresses", "logit"],
                            [[a, b, c, d] for (a, b), (c, d) in zip(self.top_logits, self.bottom_logits)])
        rate = self.n_active / max(self.n_tokens, 1)
        ci = f" [95% CI {self.ci[0]:+.4g}, {self.ci[1]:+.4g}]" if self.ci else ""
        worst = sorted(range(len(self.answers)), key=lambda i: -abs(float(self.p_ablated[i] - self.p_clean[i])))[:5]
        rows = [[i, self.answers[i], float(self.p_clean[i]), float(self.p_ablated[i])] for i in worst]
        hist = svg_bars(list(self.counts), list(self.edges), x_title="activation (non-zero)") if self.n_active else ""
        return (f"<div class='tl-interp-feature' style='font-family:system-ui,sans-serif;font-size:13px;"
                f"border:1px solid #ddd;padding:8px;margin:8px 0'>"
                f"<div><b>Feature {self.feature}</b> at <code>{html.escape(self.hook_name)}</code> "
                f"({html.escape(self.model_id)}): active on {self.n_active} of {self.n_tokens} tokens "
                f"({rate:.1%})</div><div style='display:flex;gap:16px;flex-wrap:wrap'>"
                f"<div style='flex:2 1 400px'><div><b>Top contexts</b></div>{ctx}</div>"
                f"<div style='flex:1 1 300px'>{hist}{logits}</div></div>"
                f"<div><b>Ablating it</b> changes the answer's probability by {self.effect:+.4g} on average over "
                f"{len(self.answers)} prompts{ci}; largest changes:</div>"
                + table_html(["prompt", "answer", "p", "p ablated"], rows) + "</div>")

    def _repr_html_(self) -> str:
        return self.html()


@dataclass(frozen=True)
class _Activations:
    batch: Tokenized
    labels: list[list[str]]
    features: Tensor  # (batch, pos, d_sae), float64, zero where the SAE does not read
    valid: Tensor  # (batch, pos) bool: real tokens the SAE reads
    logits: Tensor  # (batch, pos, d_vocab) of the unmodified model


def _check_feature(sae: Any, feature: int) -> None:
    d_sae = int(sae.cfg.d_sae)
    if not 0 <= feature < d_sae:
        raise SelectionError(f"feature {feature} is out of range: the SAE at {_sae_hook_name(sae)} has "
                             f"d_sae={d_sae} features (0..{d_sae - 1})")


def _activations(sae: Any, model: Any, prompts: Inputs) -> _Activations:
    adapter = adapt(model)
    batch = as_batch(model, prompts)
    name = _sae_hook_name(sae)
    store = hooks.cache(name)
    with torch.no_grad():
        logits = store.run(model, batch.tokens, attention_mask=batch.attention_mask)
        features = sae.encode(store[name]).double().cpu()
    valid = batch.attention_mask.bool().cpu()
    reads = torch.zeros_like(valid)
    reads[:, splice_positions(sae)] = True
    valid &= reads
    labels = [token_labels(adapter, row) for row in batch.tokens.tolist()]
    return _Activations(batch, labels, features * valid[..., None], valid, logits.cpu())


def _answers(model: Any, acts: _Activations, answers: Sequence[str] | Tensor | None) -> tuple[Tensor, list[str]]:
    adapter = adapt(model)
    rows = torch.arange(acts.batch.tokens.shape[0])
    if answers is None:
        ids = acts.logits[rows, acts.batch.last_index.cpu()].argmax(-1)
    elif isinstance(answers, Tensor):
        ids = answers.cpu().long().flatten()
    else:
        ids_list = []
        for a in answers:
            toks = adapter.tokenize(a, prepend_bos=False).tokens[0]
            if toks.numel() != 1:
                raise InputError(f"answer {a!r} is {toks.numel()} tokens for {adapter.model_id}; give "
                                 "single-token answers (or token ids)")
            ids_list.append(int(toks[0]))
        ids = torch.tensor(ids_list)
    if ids.shape != rows.shape:
        raise InputError(f"{ids.numel()} answers for {rows.numel()} prompts; give one answer per prompt")
    return ids, token_labels(adapter, ids.tolist())


def _card(sae: Any, model: Any, acts: _Activations, feature: int, answers: Sequence[str] | Tensor | None,
          k: int, window: int, bins: int, seed: int) -> FeatureCard:
    f = acts.features[..., feature]  # (batch, pos)
    flat = f.flatten()
    order = flat.argsort(descending=True, stable=True)[:k].tolist()
    contexts = []
    for i in order:
        p, pos = divmod(i, f.shape[1])
        if float(flat[i]) <= 0:
            break
        real = acts.batch.attention_mask[p].bool().cpu().nonzero().flatten().tolist()
        lo, hi = max(real[0], pos - window), min(real[-1], pos + 2)
        contexts.append(Context(p, pos, float(flat[i]), tuple(acts.labels[p][lo:hi + 1]),
                                tuple(f[p, lo:hi + 1].tolist()), pos - lo))
    active = flat[acts.valid.flatten() & (flat > 0)]
    if active.numel():
        counts = torch.histc(active, bins=bins, min=0.0, max=float(active.max()))
        edges = torch.linspace(0.0, float(active.max()), bins + 1)
    else:
        counts, edges = torch.zeros(bins), torch.linspace(0.0, 1.0, bins + 1)
    adapter = adapt(model)
    direction = sae.W_dec[feature].detach().double().cpu()
    if direction.shape[0] == model.W_U.shape[0]:
        from transformer_lens import HookedTransformer

        from tl_interp.weights import fold

        # a TransformerBridge has no foldable norms here: its W_U is read as it is
        w_u = fold(model).unembed() if isinstance(model, HookedTransformer) else model.W_U.detach().double()
        logit = direction @ w_u.cpu()
        top, bottom = logit.topk(10), logit.topk(10, largest=False)
        top_logits = tuple(zip(token_labels(adapter, top.indices.tolist()), top.values.tolist()))
        bottom_logits = tuple(zip(token_labels(adapter, bottom.indices.tolist()), bottom.values.tolist()))
    else:  # e.g. an SAE on hook_z: its decoder does not live in the residual stream
        top_logits = bottom_logits = ()
    ids, names = _answers(model, acts, answers)
    metric = metrics.answer_prob(ids.to(acts.batch.tokens.device), positions=acts.batch.last_index)
    splice = hooks.sae_splice(sae, hooks.ablate_features([feature]), positions=splice_positions(sae))
    with torch.no_grad():
        ablated = splice.run(model, acts.batch.tokens, attention_mask=acts.batch.attention_mask)
    p_clean = metric.per_prompt(acts.logits.to(ablated.device)).double().cpu()
    p_ablated = metric.per_prompt(ablated).double().cpu()
    delta = p_ablated - p_clean
    ci = None
    if delta.numel() >= 2:
        low, high = bootstrap_mean_ci(delta, seed=seed)
        ci = (float(low), float(high))
    return FeatureCard(feature, _sae_hook_name(sae), adapter.model_id, tuple(contexts), tuple(counts.tolist()),
                       tuple(edges.tolist()), int(acts.valid.sum()), int(active.numel()), top_logits, bottom_logits,
                       tuple(names), p_clean, p_ablated, float(delta.mean()), ci, seed)


def _check_options(k: int, window: int, bins: int) -> None:
    for name, value in (("k", k), ("bins", bins)):
        if value < 1:
            raise OptionError(f"feature_card: {name} must be >= 1, got {value}")
    if window < 0:
        raise OptionError(f"feature_card: window must be >= 0, got {window}")


@checked
def feature_card(sae: Any, model: Any, inputs: Inputs, feature: int, *,
                 answers: Sequence[str] | Tensor | None = None, k: int = 10, window: int = 8, bins: int = 30,
                 seed: int = 0) -> FeatureCard:
    """A card for one SAE feature over a prompt set.

    Args:
        sae: a sae_lens SAE (``ti.models.load_sae(...)``) on ``model``'s residual stream.
        model: the model the SAE reads.
        inputs: the prompt set (text, several texts, token ids or a ``Tokenized`` batch).
        feature: the feature index, ``0 <= feature < d_sae``.
        answers: one answer per prompt (single-token strings or ids) for the ablation effect;
            default the model's own top prediction at each prompt's last token.
        k: how many top contexts to show (only contexts where the feature is active).
        window: tokens of context shown before the top token (two after).
        bins: histogram bins.
        seed: seed of the bootstrap interval (recorded on the card).

    Returns:
        A FeatureCard (displays itself in notebooks; ``Report.card`` adds it to a page).

    Example:
        >>> import tl_interp as ti
        >>> model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
        >>> card = ti.viz.feature_card(sae, model, ["one, two, three,", "january, february,"], 5)
        >>> card.n_tokens  # real tokens after BOS, the positions the SAE reads
        10
    """
    compat.require_sae("viz.feature_card")  # sae-lens requires TransformerLens < 4
    _check_feature(sae, feature)
    _check_options(k, window, bins)
    return _card(sae, model, _activations(sae, model, inputs), feature, answers, k, window, bins, seed)


@checked
def feature_page(sae: Any, model: Any, inputs: Inputs, *, n: int = 8,
                 answers: Sequence[str] | Tensor | None = None, k: int = 10, title: str | None = None,
                 seed: int = 0) -> Any:
    """A Report of the ``n`` features with the highest maximum activation over the prompts.

    It opens with a circuitsvis ``topk`` view of those features (their top prompts) and then
    has one card per feature. Arguments as for ``feature_card``.

    Returns:
        A ``ti.viz.Report`` (``.write(path)`` for an offline page).

    Example:
        >>> import tl_interp as ti
        >>> model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
        >>> ti.viz.feature_page(sae, model, ["one, two, three,", "january, february,"], n=2)
        Report('Top features of the SAE at blocks.2.hook_resid_pre', 4 blocks)
    """
    compat.require_sae("viz.feature_page")  # sae-lens requires TransformerLens < 4
    from tl_interp.viz.report import Report
    from tl_interp.viz.views import topk

    if n < 1:
        raise OptionError(f"feature_page: n must be >= 1, got {n}")
    _check_options(k, 8, 30)
    acts = _activations(sae, model, inputs)
    peaks = acts.features.amax((0, 1))
    chosen = [int(i) for i in peaks.argsort(descending=True, stable=True)[:n] if float(peaks[i]) > 0]
    report = Report(title or f"Top features of the SAE at {_sae_hook_name(sae)}")
    report.text(f"{len(chosen)} features with the highest maximum activation over {len(acts.labels)} prompts "
                f"(of d_sae={int(sae.cfg.d_sae)}).")
    if chosen:
        rows = [acts.features[i][acts.valid[i]] for i in range(len(acts.labels))]
        toks = [[t for t, v in zip(acts.labels[i], acts.valid[i]) if v] for i in range(len(acts.labels))]
        report.view(topk(toks, rows, k=min(k, len(rows)), neurons=chosen, unit_name="feature"))
    for feature in chosen:
        report.card(_card(sae, model, acts, feature, answers, k, 8, 30, seed))
    return report
