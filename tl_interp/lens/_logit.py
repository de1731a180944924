"""The logit lens and the tuned lens: each layer's residual stream read as a next-token distribution.

Logit lens (nostalgebraist 2020): layer ``l``'s residual stream ``h_l`` is read through the
model's own final norm and unembedding, ``p_l = softmax(head(h_l))`` with
``head = soft_cap(unembed(ln_final(.)))`` -- ``compat.head``, the same head the model's
forward ends with, so the final reading *is* the model's distribution. Tuned lens (Belrose
et al. 2023): ``p_l = softmax(head(h_l + W_l h_l + b_l))`` with trained translators
(``Translators``). Per layer and read position: the top ``top_k`` tokens and probabilities,
``KL(p_final || p_l) = sum_v p_final(v) (log p_final(v) - log p_l(v))`` (the tuned lens's
training loss), the entropy ``-sum_v p_l(v) log p_l(v)``, and each answer's probability and
rank (the number of tokens with a strictly larger logit).

Layers are ``0..n_layers``: ``l < n_layers`` reads ``blocks.l.hook_resid_pre`` (layer 0 is the
embedding), ``n_layers`` the final ``resid_post``. States come from ``ti.collect``, so every
position selection works, padding is never read, and a padded batch equals its prompts run
one by one. TransformerLens has no logit lens function; ``cache.accumulated_resid(apply_ln=True)``
applies the final norm with the scale *cached at each layer's own input*, which is the same
reading only for the final layer (here every layer's norm is recomputed, as the model would).
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import check_count, checked
from tl_interp import compat
from tl_interp.engine.collect import collect
from tl_interp.engine.inputs import Inputs, as_batch
from tl_interp.errors import SelectionError, ShapeError
from tl_interp.lens._answers import AnswerTokens, answer_ids, token_strings
from tl_interp.lens._result import LensResult
from tl_interp.lens._translators import Translators, load_translators
from tl_interp.models._adapter import adapt
from tl_interp.positions import Positions
from tl_interp.results import Provenance, prompt_hash

__all__ = ["logit_lens", "tuned_lens"]

_CHUNK = 256  # residual vectors unembedded at once (each is d_vocab floats, several times over)


def _layer_list(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers + 1))
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -(n_layers + 1) <= layer <= n_layers:
            raise SelectionError(f"layers: {layer!r} is not a lens layer; they are 0..{n_layers} (layer l reads "
                                 f"blocks.l.hook_resid_pre, {n_layers} the final resid_post; negative counts from it)")
        out.append(layer % (n_layers + 1))
    if len(set(out)) != len(out) or not out:
        raise SelectionError(f"layers: give distinct layers, got {list(layers)}")
    return out


def _site(layer: int, n_layers: int) -> str:
    return f"blocks.{layer}.hook_resid_pre" if layer < n_layers else f"blocks.{n_layers - 1}.hook_resid_post"


def _as_slots(states: Any, name: str, n: int) -> Tensor:
    """``(n, slots, d_model)`` for every form of selection ``collect`` keeps."""
    t = states[name]
    return t[:, None] if t.ndim == 2 else t


def _positions(states: Any, n: int, width: int) -> tuple[Tensor, Tensor]:
    """``(position, mask)``, each ``(n, slots)``: which absolute position each slot read."""
    if states.mask is not None:
        mask = states.mask.bool()
        return torch.arange(mask.shape[1])[None].expand(n, -1).clone(), mask
    index = states.index
    pos = index[:, None] if index.ndim == 1 and index.shape[0] == n and width == 1 else index[None].expand(n, -1)
    return pos.clone().long(), torch.ones(pos.shape, dtype=torch.bool)


@torch.no_grad()
def _read(model: Any, inputs: Inputs, *, positions: Positions, layers: Sequence[int] | None,
          answers: AnswerTokens | None, top_k: int, translators: Translators | None, attention_mask: Tensor | None,
          batch_size: int, progress: bool, what: str) -> LensResult:
    n_layers = model.cfg.n_layers
    check_count(top_k, "top_k", high=model.cfg.d_vocab_out, what=what)
    if translators is not None and (translators.n_layers, translators.d_model) != (n_layers, model.cfg.d_model):
        raise ShapeError(f"{what}: the translators are for (n_layers, d_model) = ({translators.n_layers}, "
                         f"{translators.d_model}) (model {translators.model!r}); this model has ({n_layers}, "
                         f"{model.cfg.d_model}). Load the lens trained for this model")
    chosen = _layer_list(layers, n_layers)
    batch = as_batch(model, inputs, attention_mask=attention_mask)
    n = len(batch)
    ids, labels = answer_ids(model, answers, n) if answers is not None else (None, ())
    final = _site(n_layers, n_layers)
    names = list(dict.fromkeys([_site(layer, n_layers) for layer in chosen] + [final]))
    states = collect(model, batch, names, positions=positions, batch_size=batch_size, progress=progress)
    width = _as_slots(states, final, n).shape[1]
    position, mask = _positions(states, n, width)
    flat_mask = mask.flatten()
    rows = torch.arange(n)[:, None].expand(n, width).flatten()[flat_mask]
    tokens = batch.tokens.cpu().gather(1, position.clamp(max=batch.tokens.shape[1] - 1))

    L = len(chosen)
    kl = torch.full((L, n * width), float("nan"))
    entropy = torch.full((L, n * width), float("nan"))
    top_tokens = torch.zeros((L, n * width, top_k), dtype=torch.long)
    top_probs = torch.full((L, n * width, top_k), float("nan"))
    a = 0 if ids is None else ids.shape[1]
    answer_prob = torch.full((L, n * width, a), float("nan"))
    answer_rank = torch.zeros((L, n * width, a), dtype=torch.long)
    final_h = _as_slots(states, final, n).reshape(n * width, -1)[flat_mask]
    real = flat_mask.nonzero().flatten()
    device = next(model.parameters()).device
    weight = compat.unembed_weight_of(model) if compat.head_is_plain(model) else None
    for lo in range(0, real.numel(), _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        target = compat.head(model, final_h[sl].to(device), unembed_weight=weight).float().log_softmax(-1)
        for i, layer in enumerate(chosen):
            h = _as_slots(states, _site(layer, n_layers), n).reshape(n * width, -1)[flat_mask][sl].to(device)
            if translators is not None and layer < n_layers:
                h = translators.translate(h, layer)
            logits = compat.head(model, h, unembed_weight=weight).float()
            logp = logits.log_softmax(-1)
            probs = logp.exp()
            at = real[sl]
            kl[i, at] = (target.exp() * (target - logp)).sum(-1).cpu()
            entropy[i, at] = -(probs * logp).sum(-1).cpu()
            top = probs.topk(top_k, -1)
            top_tokens[i, at], top_probs[i, at] = top.indices.cpu(), top.values.cpu()
            if ids is not None:
                want = ids[rows[sl]].to(device)
                picked = logits.gather(-1, want)
                answer_prob[i, at] = probs.gather(-1, want).cpu()
                answer_rank[i, at] = (logits[:, None, :] > picked[..., None]).sum(-1).cpu()

    shape = (L, n, width)
    extras: dict[str, Tensor] = {
        "entropy": entropy.reshape(shape), "top_tokens": top_tokens.reshape(*shape, top_k),
        "top_probs": top_probs.reshape(*shape, top_k), "position": position, "tokens": tokens, "mask": mask,
    }
    if ids is not None:
        extras.update(answer_prob=answer_prob.reshape(*shape, a), answer_rank=answer_rank.reshape(*shape, a),
                      answers=ids)
    shown = sorted(set(top_tokens.flatten().tolist()) | set(tokens.flatten().tolist())
                   | (set(ids.flatten().tolist()) if ids is not None else set()))
    strings = dict(zip(shown, token_strings(model, shown)))
    layer_labels = tuple("final" if layer == n_layers else str(layer) for layer in chosen)
    settings = {"positions": states.positions, "layers": chosen, "top_k": top_k, "n_layers": n_layers,
                "kl": "KL(p_final || p_layer), nats", "reads": "resid_pre of each layer, the final resid_post",
                **({"translators": translators.model, "translators_card": translators.card.get("name", "")}
                   if translators is not None else {})}
    prov = Provenance.make(adapt(model).model_id, prompt_hash=prompt_hash(batch.tokens.cpu(), batch.attention_mask.cpu()),
                           settings=settings)
    return LensResult(kl.reshape(shape), ("layer", "batch", "pos"), f"{what} KL to final", prov,
                      labels={"layer": layer_labels}, extras=extras, strings=strings, answer_labels=labels)


@checked
def logit_lens(model: Any, inputs: Inputs, *, positions: Positions = "last", layers: Sequence[int] | None = None,
               answers: AnswerTokens | None = None, top_k: int = 5, attention_mask: Tensor | None = None,
               batch_size: int = 32, progress: bool = True) -> LensResult:
    """Each layer's residual stream read through the model's own final norm and unembedding.

    Args:
        model: a HookedTransformer (or TransformerBridge) with a tokenizer for string inputs.
        inputs: prompts (strings, token ids with ``attention_mask``, a ``Tokenized`` batch).
        positions: where to read (``"last"`` real token per row by default; ``"all"``,
            ``From(k)``, a finder, ints ...); padding is never read.
        layers: lens layers ``0..n_layers`` (``l`` reads ``blocks.l.hook_resid_pre``,
            ``n_layers`` the final ``resid_post``); default all.
        answers: tokens whose probability and rank to track: a token id or single-token
            string, a list of them, or a ``(batch,)`` / ``(batch, k)`` tensor of ids per prompt.
        top_k: top tokens kept per layer and position.
        attention_mask: with token ids, 1 on real tokens.
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Returns:
        A ``LensResult``: KL to the final distribution ``(layer, batch, pos)`` with entropy,
        top tokens, answer probabilities and ranks as extras.

    Example:
        >>> import tl_interp as ti
        >>> model = ti.models.load("ordinal-4l")
        >>> lens = ti.lens.logit_lens(model, "after june comes", answers=" july", progress=False)
        >>> lens.values.shape, lens.labels["layer"][-1]
        (torch.Size([5, 1, 1]), 'final')
        >>> float(lens.values[-1].abs().max()) < 1e-5  # the final reading is the model's distribution
        True
    """
    return _read(model, inputs, positions=positions, layers=layers, answers=answers, top_k=top_k,
                 translators=None, attention_mask=attention_mask, batch_size=batch_size, progress=progress,
                 what="logit lens")


@checked
def tuned_lens(model: Any, inputs: Inputs, *, translators: Translators | str, positions: Positions = "last",
               layers: Sequence[int] | None = None, answers: AnswerTokens | None = None, top_k: int = 5,
               attention_mask: Tensor | None = None, batch_size: int = 32, progress: bool = True) -> LensResult:
    """The tuned lens: each layer's residual stream through its trained translator, then the head.

    Reads exactly like ``logit_lens`` (same arguments, same result); layer ``l < n_layers`` is
    ``head(h + W_l h + b_l)``, the final layer needs no translator.

    Args:
        translators: ``Translators`` or a bundled lens's name (``"smollm2-135m-tuned-lens"``,
            loaded offline with checksums verified).
        (the rest): as ``logit_lens``.

    Example:
        >>> import tl_interp as ti
        >>> model = ti.models.load("ordinal-4l")
        >>> identity = ti.lens.Translators.identity(model.cfg.n_layers, model.cfg.d_model)
        >>> tuned = ti.lens.tuned_lens(model, "after june comes", translators=identity, progress=False)
        >>> plain = ti.lens.logit_lens(model, "after june comes", progress=False)
        >>> bool((tuned.values - plain.values).abs().max() < 1e-6)  # untrained translators: the logit lens
        True
    """
    if isinstance(translators, str):
        translators = load_translators(translators)
    return _read(model, inputs, positions=positions, layers=layers, answers=answers, top_k=top_k,
                 translators=translators, attention_mask=attention_mask, batch_size=batch_size,
                 progress=progress, what="tuned lens")
