"""SAE feature cards: where a feature fires, what it writes, and what ablating it costs.

A card (after Anthropic's "Towards Monosemanticity" feature browser and sae_vis) shows, for
one feature over a prompt set: its top-activating contexts (tokens colored by the feature's
activation), a histogram of its non-zero activations, the tokens its decoder direction
promotes and suppresses most, and the change in the answer's probability at each prompt's
last token when the feature is ablated, with a 95% bootstrap interval over prompts. Only the
positions the SAE reads (its ``seqpos_slice``) and real tokens count. The numbers come from
``tl_interp.ablation._features`` (activations, decoder logits, and the ablation cells, run on
the engine); this module picks what a card shows and renders it as plain HTML (no
JavaScript); the page of top features adds a circuitsvis ``top_activations`` view.
"""

import html
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp._checks import check_count, checked, renamed, reordered
from tl_interp.ablation._features import (FeatureActivations, check_feature, decoder_logits,
                                          feature_ablation_with_answers, feature_activations, prompt_answers)
from tl_interp.engine.executors import Executor
from tl_interp.engine.inputs import Inputs
from tl_interp.engine.run import EngineOptions
from tl_interp.compat.sae import sae_site
from tl_interp.errors import OptionError, TlInterpDeprecationWarning
from tl_interp.hooks._sae import sae_first
from tl_interp.models import adapt
from tl_interp.viz.html import _fmt, colored_spans, svg_bars, table_html, visible
from tl_interp.viz._prompt import token_labels
from tl_interp.viz.report import Card

__all__ = ["FeatureCard", "Context", "feature_card", "feature_page", "DENSE_RATE"]

# A feature active on at least this share of the tokens it reads is flagged: it is more likely a
# bias- or position-like direction than a specific feature (its top contexts say little).
DENSE_RATE = 0.5


@dataclass(frozen=True)
class Context:
    """One top-activating place: prompt row, position, activation, and the tokens around it."""

    prompt: int
    pos: int
    activation: float
    tokens: tuple[str, ...]
    values: tuple[float, ...]
    focus: int  # index of ``pos`` within ``tokens``

    @property
    def position(self) -> int:
        """The old name of ``pos``."""
        warnings.warn("Context.position is now Context.pos", TlInterpDeprecationWarning, stacklevel=2)
        return self.pos


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

    @property
    def dense(self) -> bool:
        """Active on at least ``DENSE_RATE`` of the tokens it reads (the card flags it)."""
        return self.n_tokens > 0 and self.n_active / self.n_tokens >= DENSE_RATE

    def __repr__(self) -> str:
        return (f"FeatureCard(feature {self.feature} at {self.hook_name}; active on {self.n_active}/"
                f"{self.n_tokens} tokens{' (dense)' if self.dense else ''}; ablation effect {self.effect:+.4g})")

    def html(self) -> str:
        """The card as self-contained HTML (inline styles, an SVG histogram)."""
        top = max((c.activation for c in self.contexts), default=0.0)
        ctx = "".join(f"<div style='margin:2px 0'><span style='color:#666'>#{c.prompt} pos {c.pos} "
                      f"({_fmt(c.activation)}):</span> "
                      f"{colored_spans(c.tokens, c.values, color_max=top, focus=c.focus)}"
                      "</div>" for c in self.contexts)
        ctx = ctx or "<div>the feature is not active on any token of these prompts</div>"
        logits = table_html(["promotes", "logit", "suppresses", "logit"],
                            [[visible(a), b, visible(c), d] for (a, b), (c, d) in zip(self.top_logits, self.bottom_logits)])
        rate = self.n_active / max(self.n_tokens, 1)
        dense = (f"<span class='tl-dense' title='active on at least {DENSE_RATE:.0%} of the tokens it reads: more "
                 "likely a bias- or position-like direction than a specific feature' style='background:#fff3cd;"
                 "color:#664d03;border:1px solid #e0b000;border-radius:4px;padding:0 6px;margin-left:6px'>"
                 f"&#9888; dense: active on {self.n_active} of {self.n_tokens} tokens</span>") if self.dense else ""
        ci = f" [95% CI {self.ci[0]:+.4g}, {self.ci[1]:+.4g}]" if self.ci else ""
        worst = sorted(range(len(self.answers)), key=lambda i: -abs(float(self.p_ablated[i] - self.p_clean[i])))[:5]
        rows = [[i, visible(self.answers[i]), float(self.p_clean[i]), float(self.p_ablated[i])] for i in worst]
        hist = svg_bars(list(self.counts), list(self.edges), x_title="activation (non-zero)") if self.n_active else ""
        return (f"<div class='tl-interp-feature' style='font-family:system-ui,sans-serif;font-size:13px;"
                f"border:1px solid #ddd;padding:8px;margin:8px 0'>"
                f"<div><b>Feature {self.feature}</b> at <code>{html.escape(self.hook_name)}</code> "
                f"({html.escape(self.model_id)}): active on {self.n_active} of {self.n_tokens} tokens "
                f"({rate:.1%}){dense}</div><div style='display:flex;gap:16px;flex-wrap:wrap'>"
                f"<div style='flex:2 1 400px'><div><b>Top contexts</b></div>{ctx}</div>"
                f"<div style='flex:1 1 300px'>{hist}{logits}</div></div>"
                f"<div><b>Ablating it</b> changes the answer's probability by {self.effect:+.4g} on average over "
                f"{len(self.answers)} prompts{ci}; largest changes:</div>"
                + table_html(["prompt", "answer", "p", "p ablated"], rows) + "</div>")

    def _repr_html_(self) -> str:
        return self.html()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the card as ``.html`` (self-contained), or ``.png`` / ``.pdf`` drawn by a local
        headless Chromium (``tl_interp.viz._save.save_view``); the suffix picks the format."""
        from tl_interp.viz._save import save_view

        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Feature {self.feature}</title></head>"
                f"<body style='margin:16px'>{self.html()}</body></html>")
        return save_view(page, path, height=700)


def _card(sae: Any, model: Any, acts: FeatureActivations, labels: list[list[str]], feature: int, ablation: Any, column: int,
          k: int, window: int, bins: int, seed: int) -> FeatureCard:
    """The card of one feature: its contexts and histogram from ``acts``, its decoder logits,
    and column ``column`` of ``ablation`` (``ti.ablation.feature_ablation``'s result)."""
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
        contexts.append(Context(p, pos, float(flat[i]), tuple(labels[p][lo:hi + 1]),
                                tuple(f[p, lo:hi + 1].tolist()), pos - lo))
    active = flat[acts.valid.flatten() & (flat > 0)]
    if active.numel():
        counts = torch.histc(active, bins=bins, min=0.0, max=float(active.max()))
        edges = torch.linspace(0.0, float(active.max()), bins + 1)
    else:
        counts, edges = torch.zeros(bins), torch.linspace(0.0, 1.0, bins + 1)
    adapter = adapt(model)
    top_logits: tuple[tuple[str, float], ...] = ()
    bottom_logits: tuple[tuple[str, float], ...] = ()
    written = decoder_logits(sae, model, feature)
    if written is not None:  # e.g. an SAE on hook_z: its decoder does not live in the residual stream
        top, bottom = written
        top_logits = tuple(zip(token_labels(adapter, top.indices.tolist()), top.values.tolist()))
        bottom_logits = tuple(zip(token_labels(adapter, bottom.indices.tolist()), bottom.values.tolist()))
    ids = ablation.extras["answers"]
    p_clean, p_ablated = ablation.extras["p_clean"], ablation.extras["p_ablated"][column]
    ci = None
    if "ci_low" in ablation.extras:
        ci = (float(ablation.extras["ci_low"][column]), float(ablation.extras["ci_high"][column]))
    return FeatureCard(feature, acts.hook_name, adapter.model_id, tuple(contexts), tuple(counts.tolist()),
                       tuple(edges.tolist()), int(acts.valid.sum()), int(active.numel()), top_logits, bottom_logits,
                       tuple(token_labels(adapter, ids.tolist())), p_clean, p_ablated,
                       float(ablation.values[column]), ci, seed)


def _check_options(k: int, window: int, bins: int) -> None:
    check_count(k, "k", what="feature_card")
    if bins < 1:
        raise OptionError(f"feature_card: bins must be >= 1, got {bins}")
    if window < 0:
        raise OptionError(f"feature_card: window must be >= 0, got {window}")


@reordered(("sae", "model"), sae_first)
@checked
def feature_card(model: Any, sae: Any, inputs: Inputs, feature: int, *,
                 answers: Sequence[str] | Tensor | None = None, k: int = 10, window: int = 8, bins: int = 30,
                 seed: int = 0, memory_mb: float = 1024.0, executor: Executor | None = None) -> FeatureCard:
    """A card for one SAE feature over a prompt set.

    Args:
        model: the model the SAE reads.
        sae: a sae_lens SAE (``ti.models.load_sae(...)``) on ``model``'s residual stream; the
            old order ``(sae, model, ...)`` warns.
        inputs: the prompt set (text, several texts, token ids or a ``Tokenized`` batch).
        feature: the feature index, ``0 <= feature < d_sae``.
        answers: one answer per prompt (single-token strings or ids) for the ablation effect;
            default the model's own top prediction at each prompt's last token.
        k: at most how many top contexts to show: only contexts where the feature is active
            count, and how many those are is known only after the run, so a card may show fewer.
        window: tokens of context shown before the top token (two after).
        bins: histogram bins.
        seed: seed of the bootstrap interval (recorded on the card).
        memory_mb, executor: where and within what budget the ablation runs (as
            ``ti.ablation.feature_ablation``).

    Returns:
        A FeatureCard (displays itself in notebooks; ``Report.card`` adds it to a page).

    Example:
        >>> import tl_interp as ti
        >>> model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
        >>> card = ti.viz.feature_card(model, sae, ["one, two, three,", "january, february,"], 5)
        >>> card.n_tokens  # real tokens after BOS, the positions the SAE reads
        10
    """
    compat.require_sae("viz.feature_card")  # sae-lens requires TransformerLens < 4
    check_feature(sae, feature)
    _check_options(k, window, bins)
    return _cards(sae, model, inputs, [feature], answers, k, window, bins, seed, memory_mb, executor)[2][0]


@renamed(n="n_features")
@reordered(("sae", "model"), sae_first)
@checked
def feature_page(model: Any, sae: Any, inputs: Inputs, *, n_features: int = 8,
                 answers: Sequence[str] | Tensor | None = None, k: int = 10, title: str | None = None,
                 seed: int = 0, memory_mb: float = 1024.0, executor: Executor | None = None) -> Any:
    """A Report of the ``n_features`` features with the highest maximum activation over the prompts.

    It opens with a circuitsvis ``top_activations`` view of those features (their top prompts) and then
    has one card per feature (their ablations are cells of one engine plan).

    Args:
        n_features: how many features the page shows, ``1 <= n_features <= d_sae`` (the old name
            ``n=`` warns); features that are active nowhere in the prompts are left out, so the
            page may show fewer (it says how many).
        k: at most how many top contexts each card shows, as for ``feature_card``; the page's
            view shows each feature's top ``k`` prompts (at most every prompt).
        model, sae, inputs, answers, seed, memory_mb, executor: as for ``feature_card``.
        title: the page's title (default: the SAE's hook point).

    Returns:
        A ``ti.viz.Report`` (``.write(path)`` for an offline page).

    Example:
        >>> import tl_interp as ti
        >>> model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
        >>> ti.viz.feature_page(model, sae, ["one, two, three,", "january, february,"], n_features=2)
        Report('Top features of the SAE at blocks.2.hook_resid_pre', 4 blocks)
    """
    compat.require_sae("viz.feature_page")  # sae-lens requires TransformerLens < 4
    from tl_interp.viz.report import Report
    from tl_interp.viz.views import top_activations

    check_count(n_features, "n_features", high=int(sae.cfg.d_sae), what="feature_page", items="features (d_sae)")
    _check_options(k, 8, 30)
    acts, labels, cards = _cards(sae, model, inputs, None, answers, k, 8, 30, seed, memory_mb, executor,
                                 n_features=n_features)
    report = Report(title or f"Top features of the SAE at {sae_site(sae)}")
    report.text(f"{len(cards)} features with the highest maximum activation over {len(acts.batch)} prompts "
                f"(of d_sae={int(sae.cfg.d_sae)}).")
    if cards:
        rows = [acts.features[i][acts.valid[i]] for i in range(len(labels))]
        toks = [[t for t, v in zip(labels[i], acts.valid[i]) if v] for i in range(len(labels))]
        report.view(top_activations(toks, rows, k=min(k, len(rows)), neurons=[c.feature for c in cards], unit_name="feature"))
    for card in cards:
        report.card(card)
    return report


def _labels(model: Any, acts: FeatureActivations) -> list[list[str]]:
    adapter = adapt(model)
    return [token_labels(adapter, row) for row in acts.batch.tokens.tolist()]


def _cards(sae: Any, model: Any, inputs: Inputs, features: list[int] | None, answers: Sequence[str] | Tensor | None,
           k: int, window: int, bins: int, seed: int, memory_mb: float, executor: Executor | None,
           n_features: int = 0) -> tuple[FeatureActivations, list[list[str]], list[FeatureCard]]:
    """Cards of ``features`` (default: the ``n_features`` active ones with the highest peak activation), their
    ablations one engine plan; with the activations and each prompt's token labels."""
    options = EngineOptions(memory_mb=memory_mb)  # the budget checked before any pass
    acts = feature_activations(sae, model, inputs)
    if features is None:
        peaks = acts.features.amax((0, 1))
        features = [int(i) for i in peaks.argsort(descending=True, stable=True)[:n_features] if float(peaks[i]) > 0]
    ids = prompt_answers(model, answers, len(acts.batch), acts.top_tokens)
    labels = _labels(model, acts)
    if not features:
        return acts, labels, []
    ablation = feature_ablation_with_answers(sae, model, acts.batch, features, ids, seed, 2000, options, executor,
                                             progress=False)
    return acts, labels, [_card(sae, model, acts, labels, f, ablation, i, k, window, bins, seed) for i, f in enumerate(features)]
