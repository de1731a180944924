"""Direct logit attribution: what each component writes straight into an answer's logit.

The final residual stream at the read position is a sum of what every component wrote,
``r = sum_c x_c`` (embeddings, each layer's attention and MLP outputs). With the final norm's
scale ``s`` frozen at the clean run (``ln_final.hook_scale``), the model's logit of token ``a``
is linear in the ``x_c``:

    logit_a = sum_c  center(x_c) . D / s  +  b . W_U[:, a]  +  b_U[a],     D = w * W_U[:, a]

(``center`` subtracts the mean for LayerNorm and is the identity for RMSNorm or no norm;
``w`` / ``b`` are the final norm's weight and bias, 1 and 0 when folded into ``W_U``). Each
term of the sum is a component's *direct logit attribution*; the last two terms are the
result's ``constant``. With ``against`` it is the same for ``logit_a - logit_b``
(``D = w * (W_U[:, a] - W_U[:, b])``). This is TransformerLens's ``cache.logit_attrs`` of
``decompose_resid`` / ``stack_head_results`` / ``stack_neuron_results`` (which assume the norm's
weight folded into ``W_U`` and leave the biases out). The decomposition is exact, so the
components plus the constant equal the model's own logit to float precision; every call
checks it.

What the frozen scale leaves out: the norm is not linear, so removing a component also changes
``s``. ``extras["renormalised"]`` is each component's effect with the norm recomputed,
``logit(r) - logit(r - x_c)``, using ``s'^2 = s^2 - 2 center(r).x_c / d + |center(x_c)|^2 / d``
(exact, also per neuron without building its vector); ``extras["centring"]`` is how much of
the logit LayerNorm's centring takes out of the uncentred contributions (``sum_c x_c . 1 mean(D) / s``).
"""

from typing import Any, Literal

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp import compat
from tl_interp.engine.collect import collect
from tl_interp.engine.inputs import Inputs, as_batch
from tl_interp.errors import InputError, OptionError, UnsupportedError
from tl_interp.lens._answers import AnswerTokens, answer_ids
from tl_interp.lens._result import DLAResult
from tl_interp.models._adapter import adapt
from tl_interp.positions import Finder, Positions
from tl_interp.results import Provenance, prompt_hash

__all__ = ["direct_logit_attribution"]

By = Literal["layer", "component", "head", "neuron", "position"]


def _check(model: Any, positions: Positions, by: str) -> None:
    one_per_row = (positions == "last" if isinstance(positions, str) else
                   isinstance(positions, Finder) or (isinstance(positions, int) and not isinstance(positions, bool))
                   or (isinstance(positions, Tensor) and positions.ndim == 1 and positions.dtype != torch.bool))
    if not one_per_row:
        raise OptionError(f"direct_logit_attribution: positions={positions!r}; attribution reads one position per "
                          "prompt: 'last', an int, a (batch,) index tensor or a finder such as first(token)")
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    if cap > 0:
        raise UnsupportedError(f"direct_logit_attribution: the model soft-caps its logits (tanh, cap {cap}), so the "
                               "logit is not a sum of component contributions; read logit_lens instead")
    if by in ("head", "neuron", "position"):
        reason = compat.linear_writes_reason(model)
        if reason is not None:
            raise UnsupportedError(f"direct_logit_attribution(by={by!r}): {reason}, so per-{by} contributions would "
                                   "not sum to the block outputs; use by='component' or by='layer'")
    if by == "neuron" and model.cfg.attn_only:
        raise UnsupportedError("direct_logit_attribution(by='neuron'): the model is attention-only (no MLP neurons)")


def _sites(model: Any, by: str) -> list[str]:
    cfg = model.cfg
    names = ["hook_embed", f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    if cfg.positional_embedding_type == "standard":
        names.append("hook_pos_embed")
    if cfg.normalization_type is not None:
        names.append("ln_final.hook_scale")
    for layer in range(cfg.n_layers):
        names.append(f"blocks.{layer}.hook_attn_out")
        if not cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_out")
        names += {"head": [f"blocks.{layer}.attn.hook_z"], "neuron": [f"blocks.{layer}.mlp.hook_post"],
                  "position": [f"blocks.{layer}.attn.hook_pattern"]}.get(by, [])
    return names


class _Stats:
    """Per component and prompt: ``center(x).D`` (the frozen contribution times ``s``),
    ``center(r).x`` and ``|center(x)|^2`` -- all the renormalised effect needs."""

    def __init__(self, resid: Tensor, d: Tensor, centre: bool) -> None:
        self.centre = centre
        self.r = self._c(resid.double())
        self.d = self._c(d.double())
        self.labels: list[str] = []
        self.num: list[Tensor] = []
        self.rx: list[Tensor] = []
        self.xx: list[Tensor] = []

    def _c(self, x: Tensor) -> Tensor:
        return x - x.mean(-1, keepdim=True) if self.centre else x

    def add(self, label: str, x: Tensor) -> None:
        """One component written as vectors ``(n, d_model)``."""
        cx = self._c(x.double())
        self.labels.append(label)
        self.num.append((cx * self.d).sum(-1))
        self.rx.append((cx * self.r).sum(-1))
        self.xx.append((cx * cx).sum(-1))

    def add_scaled(self, labels: list[str], a: Tensor, rows: Tensor) -> None:
        """Components ``x_k = a[:, k] * rows[k]`` (neurons: activation times ``W_out`` row) without
        building the vectors: ``a`` ``(n, k)``, ``rows`` ``(k, d_model)``."""
        a, crows = a.double(), self._c(rows.double())
        self.labels += labels
        self.num += list((a * (self.d @ crows.T)).T)
        self.rx += list((a * (self.r @ crows.T)).T)
        self.xx += list((a * a * (crows * crows).sum(-1)[None]).T)


def _fill(model: Any, by: str, st: Any, stats: _Stats, n: int, v_all: dict[str, Tensor] | None) -> None:
    cfg = model.cfg
    embed = st["hook_embed"].float()
    pos_embed = st["hook_pos_embed"].float() if "hook_pos_embed" in st else None
    attn = [st[f"blocks.{layer}.hook_attn_out"].float() for layer in range(cfg.n_layers)]
    mlp = [None if cfg.attn_only else st[f"blocks.{layer}.hook_mlp_out"].float() for layer in range(cfg.n_layers)]
    b_o = [model.b_O[layer].detach().float().expand(n, -1) for layer in range(cfg.n_layers)]
    if by == "head":
        for layer in range(cfg.n_layers):
            z = st[f"blocks.{layer}.attn.hook_z"].float()
            for h in range(cfg.n_heads):
                stats.add(f"L{layer}H{h}", z[:, h] @ model.W_O[layer, h].detach().float())
    if by == "neuron":
        for layer in range(cfg.n_layers):
            post = st[f"blocks.{layer}.mlp.hook_post"].float()
            stats.add_scaled([f"L{layer}N{i}" for i in range(post.shape[-1])], post, model.W_out[layer].detach().float())
    if by == "position":
        width = next(iter(v_all.values())).shape[1]  # type: ignore[union-attr]
        by_source = torch.zeros(n, width, cfg.d_model, dtype=torch.float64)
        for layer in range(cfg.n_layers):
            v = v_all[f"blocks.{layer}.attn.hook_v"].double()  # type: ignore[index]
            if v.shape[2] != cfg.n_heads:  # grouped-query attention: each key/value head serves a group
                v = v.repeat_interleave(cfg.n_heads // v.shape[2], dim=2)
            pattern = st[f"blocks.{layer}.attn.hook_pattern"].double()[..., :width]  # (n, head, src)
            by_source += torch.einsum("nhs,nshd,hdm->nsm", pattern, v, model.W_O[layer].detach().double())
        for j in range(width):
            stats.add(f"pos {j}", by_source[:, j])
    if by == "layer":
        stats.add("embed", embed if pos_embed is None else embed + pos_embed)
        for layer in range(cfg.n_layers):
            stats.add(str(layer), attn[layer] if mlp[layer] is None else attn[layer] + mlp[layer])
        return
    stats.add("embed", embed)
    if pos_embed is not None:
        stats.add("pos_embed", pos_embed)
    if by == "position":
        stats.add("attn_bias", torch.stack(b_o).sum(0))
        if not cfg.attn_only:
            stats.add("mlp_out", torch.stack(mlp).sum(0))  # type: ignore[arg-type]
        return
    for layer in range(cfg.n_layers):
        if by in ("component", "neuron"):
            stats.add(f"{layer}_attn_out", attn[layer])
        else:
            stats.add(f"{layer}_attn_bias", b_o[layer])
        if mlp[layer] is not None:
            if by == "neuron":
                stats.add(f"{layer}_mlp_bias", model.b_out[layer].detach().float().expand(n, -1))
            else:
                stats.add(f"{layer}_mlp_out", mlp[layer])  # type: ignore[arg-type]


@checked
@torch.no_grad()
def direct_logit_attribution(model: Any, inputs: Inputs, answers: AnswerTokens, *, against: AnswerTokens | None = None,
                             by: By = "layer", positions: Positions = "last", attention_mask: Tensor | None = None,
                             batch_size: int = 32, progress: bool = True) -> DLAResult:
    """Each component's direct contribution to ``answers``' logit (or the difference to ``against``).

    Args:
        model: a HookedTransformer.
        inputs: prompts (strings, token ids with ``attention_mask``, a ``Tokenized`` batch).
        answers: the token whose logit is attributed: a token id or single-token string (every
            prompt) or a ``(batch,)`` tensor of ids (one per prompt).
        against: the same form: attribute ``logit(answers) - logit(against)``.
        by: ``"layer"`` (embeddings, then each block's attention + MLP output), ``"component"``
            (TransformerLens's ``decompose_resid``: embed, pos_embed, each attn_out and
            mlp_out), ``"head"`` (each head's ``z @ W_O``, as ``stack_head_results``; plus
            embeddings, each layer's ``b_O`` and MLP output), ``"neuron"`` (each neuron's
            ``post * W_out``, as ``stack_neuron_results``; plus embeddings, attention outputs and
            each ``b_out``) or ``"position"`` (the attention output split by the source position
            it was read from, summed over heads and layers; plus embeddings, ``b_O`` and MLP
            outputs, summed over layers; two forward passes).
        positions: the one position per prompt read (``"last"``, an int, a ``(batch,)`` tensor,
            a finder).
        attention_mask: with token ids, 1 on real tokens.
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Returns:
        A ``DLAResult`` ``(component, batch)``; ``extras``: ``constant``, ``logit`` (the model's
        own), ``renormalised``, ``centring``, ``position``.

    Raises:
        UnsupportedError: soft-capped logits; ``by="head"`` / ``"neuron"`` / ``"position"`` on a
            model whose heads or neurons do not write straight into the residual stream
            (post-norms); a sum that does not reproduce the model's logit.

    Example:
        >>> import torch, tl_interp as ti
        >>> model = ti.models.load("induction-2l")
        >>> seq = torch.randint(2, 60, (1, 10), generator=torch.Generator().manual_seed(0))
        >>> tokens = torch.cat([seq, seq], 1)  # the second half repeats the first
        >>> dla = ti.lens.direct_logit_attribution(model, tokens, tokens[:, 15], by="head", positions=14,
        ...                                        progress=False)
        >>> dla.ranking(1)[0][0]
        'L1H2'
    """
    _check(model, positions, by)
    cfg = model.cfg
    batch = as_batch(model, inputs, attention_mask=attention_mask)
    n = len(batch)
    ids, labels = answer_ids(model, answers, n, "answers")
    other, other_labels = answer_ids(model, against, n, "against") if against is not None else (None, ())
    if ids.shape[1] != 1 or (other is not None and other.shape[1] != 1):
        raise InputError("direct_logit_attribution: one answer (and one 'against' token) per prompt; for several, "
                         "call it once per answer")
    st = collect(model, batch, _sites(model, by), positions=positions, batch_size=batch_size, progress=progress)
    v_all = None
    if by == "position":
        v_states = collect(model, batch, [f"blocks.{layer}.attn.hook_v" for layer in range(cfg.n_layers)],
                           positions="all", batch_size=batch_size, progress=progress)
        v_all = dict(v_states.items())
    index = st.index.long()
    resid = st[f"blocks.{cfg.n_layers - 1}.hook_resid_post"].float()
    scale = st["ln_final.hook_scale"].double().reshape(n) if "ln_final.hook_scale" in st else torch.ones(n).double()

    w_u, b_u = model.W_U.detach().double().cpu(), model.b_U.detach().double().cpu()
    d = w_u[:, ids[:, 0]].T
    constant = b_u[ids[:, 0]]
    if other is not None:
        d = d - w_u[:, other[:, 0]].T
        constant = constant - b_u[other[:, 0]]
    ln = getattr(model, "ln_final", None)
    if ln is not None and isinstance(getattr(ln, "b", None), Tensor):
        constant = constant + d @ ln.b.detach().double().cpu()
    if ln is not None and isinstance(getattr(ln, "w", None), Tensor):
        d = d * ln.w.detach().double().cpu()
    centre = cfg.normalization_type in ("LN", "LNPre")
    stats = _Stats(resid, d, centre)
    _fill(model, by, st, stats, n, v_all)

    num = torch.stack(stats.num)  # (component, n)
    values = num / scale
    full_num = (stats.r * stats.d).sum(-1)  # center(r).D
    own = compat.head(model, resid.to(next(model.parameters()).device)).double().cpu()
    rows = torch.arange(n)
    logit = own[rows, ids[:, 0]] - (own[rows, other[:, 0]] if other is not None else 0.0)
    total = values.sum(0) + constant
    tol = 1e-3 * logit.abs().clamp(min=1.0)
    if bool(((total - logit).abs() > tol).any()):
        worst = float((total - logit).abs().max())
        raise UnsupportedError(f"direct_logit_attribution(by={by!r}): the components sum to a logit {worst:.3g} away "
                               f"from the model's own on {adapt(model).model_id}; its blocks do not write the hooked "
                               "outputs straight into the residual stream. Use by='component'")
    d_model = cfg.d_model
    new_scale = (scale[None] ** 2 - 2 * torch.stack(stats.rx) / d_model + torch.stack(stats.xx) / d_model).clamp(min=1e-12).sqrt()
    if cfg.normalization_type is None:
        new_scale = torch.ones_like(new_scale)
    renormalised = full_num / scale - (full_num[None] - num) / new_scale
    # what centring removes: the uncentred reading minus the centred one (0 without LayerNorm)
    centring = (resid.double().sum(-1) * d.mean(-1) / scale if centre else torch.zeros(n, dtype=torch.float64))

    target = labels[0] if against is None else f"{labels[0]} - {other_labels[0]}"
    extras = {"constant": constant.float(), "logit": logit.float(), "renormalised": renormalised.float(),
              "centring": centring.float(), "position": index, "scale": scale.float(), "answers": ids[:, 0]}
    if other is not None:
        extras["against"] = other[:, 0]
    settings = {"by": by, "positions": st.positions, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                "target": target, "norm": cfg.normalization_type or "none",
                "reads": "components . (w * W_U direction) / frozen ln_final scale (TransformerLens logit_attrs)"}
    prov = Provenance.make(adapt(model).model_id, prompt_hash=prompt_hash(batch.tokens.cpu(), batch.attention_mask.cpu()),
                           settings=settings)
    metric = f"logit({target})" if against is None else f"logit diff ({target})"
    return DLAResult(values.float(), ("component", "batch"), metric, prov, labels={"component": tuple(stats.labels)},
                     extras=extras)
