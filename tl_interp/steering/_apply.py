"""Applying steering vectors to many prompts, vectors and multipliers at once.

Every (vector, multiplier) pair is a *variant*; variants of one site are stacked along the
batch axis, each row group adding its own ``multiplier * vector`` at the positions its rule
picks, so a whole battery is a few forward passes. On HookedTransformer the stacked passes
start from the unsteered residual stream at the steered layer (layers below it cannot
change) and unembed only each prompt's last real token. A multiplier of 0 is the unsteered
model exactly and costs no forward pass.

Generation (``generate``) runs ``model.generate`` under the same per-row hooks; the position
rule picks prompt positions, and every generated token is steered (each is the last token
when it is produced).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from beartype import beartype
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp import hooks
from tl_interp._types import PositionSelection
from tl_interp.engine._stacked import d_vocab, starts_mid_stack
from tl_interp.steering._vector import PositionRule, SteeringVector, rule_label, steer_positions
from tl_interp.errors import ShapeError
from tl_interp.intervention import Intervention
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.sites import site as site_name
from tl_interp.sites import site_info

__all__ = ["next_token_logits", "generate", "check_vectors", "steered_last_logits", "Variant"]


@dataclass(frozen=True)
class Variant:
    """One steered condition: a vector and its multiplier."""

    vector: SteeringVector
    multiplier: float

    @property
    def is_identity(self) -> bool:
        """Whether this variant leaves the model exactly unchanged (no forward pass needed)."""
        return self.multiplier == 0.0 and (self.vector.space == "residual" or self.vector.keep_error)


def check_vectors(model: Any, vectors: Sequence[SteeringVector], context: str) -> None:
    """Every check a run would make (site exists, width fits, SAE present), before any forward pass."""
    if not vectors:
        raise ShapeError(f"{context}: no steering vectors given")
    for v in vectors:
        v.intervention(1.0).validate(model)
        if v.space == "sae":
            if int(v.sae.cfg.d_sae) != v.vector.shape[0]:
                raise ShapeError(f"{context}: feature-space vector {v.name!r} has {v.vector.shape[0]} entries, its "
                                 f"SAE has d_sae={int(v.sae.cfg.d_sae)}")


def _group_key(v: SteeringVector) -> tuple[Any, ...]:
    return (v.site, v.space, id(v.sae), v.keep_error)


def _row_edit(vector: SteeringVector, rows: Tensor) -> Callable[[Tensor], Tensor]:
    """``act -> steered act`` for per-row vectors ``rows`` (``(n_rows, d)``, multiplier applied)."""
    if vector.space == "residual":
        return lambda act: act + rows[:, None, :].to(act.device, act.dtype)
    sae, keep_error = vector.sae, vector.keep_error

    def edit(act: Tensor) -> Tensor:
        features = sae.encode(act)
        edited = features + rows[:, None, :].to(features.device, features.dtype)
        if keep_error:
            return act + (sae.decode(edited) - sae.decode(features)).to(act.dtype)
        return sae.decode(edited).to(act.dtype)

    return edit


def _row_intervention(vector: SteeringVector, rows: Tensor, mask_for: Callable[[Tensor], Tensor],
                      label: str) -> Intervention:
    edit = _row_edit(vector, rows)

    def steer(act: Tensor, hook: Any) -> Tensor:
        if act.ndim != 3 or act.shape[0] != rows.shape[0]:
            raise ShapeError(f"steer at {vector.site}: expected (batch={rows.shape[0]}, pos, d) activations, got "
                             f"{tuple(act.shape)}")
        mask = mask_for(act)
        return torch.where(mask[..., None], edit(act), act)

    return Intervention.single(vector.site, steer, label)


def _static_mask(selection: PositionSelection, batch: int, seq: int, device: torch.device) -> Tensor:
    """(batch, pos) boolean mask of a position selection."""
    if selection is None:
        return torch.ones(batch, seq, dtype=torch.bool, device=device)
    if isinstance(selection, Tensor) and selection.dtype == torch.bool and selection.ndim == 2:
        return selection.to(device)
    if isinstance(selection, Tensor) and selection.ndim == 1 and selection.dtype != torch.bool:
        mask = torch.zeros(batch, seq, dtype=torch.bool, device=device)
        mask[torch.arange(batch, device=device), selection.to(device).long() % seq] = True
        return mask
    vec = torch.zeros(seq, dtype=torch.bool)
    vec[selection if not isinstance(selection, Tensor) else selection.cpu()] = True
    return vec.to(device).expand(batch, seq)


def _unembed_rows(model: Any, resid: Tensor) -> Tensor:
    """Final LayerNorm and unembedding of ``(n, d_model)`` residual vectors -> ``(n, d_vocab)``."""
    x = resid[:, None, :]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = model.unembed(x)[:, 0]
    cap = getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def steered_last_logits(model: Any, batch: Tokenized, variants: Sequence[Variant], reduce: Callable[[Tensor], dict[str, Tensor]],
                        *, positions: PositionRule = "all", memory_mb: float = 1024.0,
                        progress: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Reduced last-token logits of the unsteered run and of every variant.

    Args:
        model: the model.
        batch: right- or left-padded prompts with their attention mask.
        variants: (vector, multiplier) pairs.
        reduce: ``(n, batch, d_vocab) logits -> {name: (n, batch, ...)}``; applied per chunk so
            full-vocabulary logits never pile up.
        positions: the position rule of every variant.
        memory_mb: budget for one stacked forward pass.

    Returns:
        ``(base, steered)``: ``reduce`` of the unsteered logits with ``n=1`` squeezed, and of
        the variants concatenated in the order given (``n = len(variants)``).
    """
    n_prompts, seq = batch.tokens.shape
    fast = starts_mid_stack(model)
    cfg = model.cfg
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, var in enumerate(variants):
        if not var.is_identity:
            groups.setdefault(_group_key(var.vector), []).append(i)
    layers = {k: site_info(model, variants[idx[0]].vector.site).layer for k, idx in groups.items()}
    start_layers = sorted({layer for layer in layers.values() if layer is not None}) if fast else []
    starts = hooks.cache([site_name("resid_pre", layer) for layer in start_layers]) if start_layers else None
    kw = {"attention_mask": batch.attention_mask}
    rows = torch.arange(n_prompts, device=batch.tokens.device)
    with torch.no_grad():
        if fast:
            resid = (starts or Intervention.identity()).run(model, batch.tokens, stop_at_layer=cfg.n_layers, **kw)
            base_logits = _unembed_rows(model, resid[rows, batch.last_index])
        else:
            base_logits = model(batch.tokens, **kw)[rows, batch.last_index]
    base = {k: v[0] for k, v in reduce(base_logits[None]).items()}

    per_row = 8 * cfg.d_model + 2 * (getattr(cfg, "d_mlp", None) or 0) + 2 * cfg.n_heads * seq
    rows_per_pass = max(n_prompts, int(memory_mb * 2**20 // (4.0 * seq * per_row)))
    results: dict[int, dict[str, Tensor]] = {}
    selection = steer_positions(positions, batch)
    prompt_mask = _static_mask(selection, n_prompts, seq, batch.tokens.device)
    total = sum(len(idx) for idx in groups.values())
    bar = tqdm(total=total, desc="steering", unit="variant", disable=not progress)
    for key, idx in groups.items():
        layer = layers[key]
        per_chunk = max(1, rows_per_pass // n_prompts)
        for lo in range(0, len(idx), per_chunk):
            chunk = idx[lo:lo + per_chunk]
            n = len(chunk)
            vec_rows = torch.stack([variants[i].multiplier * variants[i].vector.vector for i in chunk])
            vec_rows = vec_rows.repeat_interleave(n_prompts, 0)
            mask = prompt_mask.repeat(n, 1)
            iv = _row_intervention(variants[chunk[0]].vector, vec_rows, lambda act, m=mask: m,
                                   f"steer {n} variants ({rule_label(positions)})")
            rep_kw = {"attention_mask": batch.attention_mask.repeat(n, 1)}
            last = batch.last_index.repeat(n)
            all_rows = torch.arange(n * n_prompts, device=batch.tokens.device)
            with torch.no_grad():
                if fast and layer is not None:
                    start = starts[site_name("resid_pre", layer)].repeat(n, 1, 1)
                    out = iv.run(model, start, start_at_layer=layer, stop_at_layer=cfg.n_layers, **rep_kw)
                    logits = _unembed_rows(model, out[all_rows, last])
                elif fast:
                    out = iv.run(model, batch.tokens.repeat(n, 1), stop_at_layer=cfg.n_layers, **rep_kw)
                    logits = _unembed_rows(model, out[all_rows, last])
                else:
                    logits = iv.run(model, batch.tokens.repeat(n, 1), **rep_kw)[all_rows, last]
            reduced = reduce(logits.view(n, n_prompts, -1))
            for j, i in enumerate(chunk):
                results[i] = {k: v[j] for k, v in reduced.items()}
            bar.update(n)
    bar.close()
    steered = {k: torch.stack([results.get(i, base)[k] for i in range(len(variants))]) for k in base} if variants \
        else {k: v[None][:0] for k, v in base.items()}
    return base, steered


def _variants(vectors: Sequence[SteeringVector] | SteeringVector, multipliers: Sequence[float] | float) -> list[Variant]:
    vs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    ms = [float(multipliers)] if isinstance(multipliers, (int, float)) else [float(m) for m in multipliers]
    if not ms:
        raise ShapeError("no multipliers given")
    return [Variant(v, m) for v in vs for m in ms]


@beartype
def next_token_logits(model: Any, prompts: Sequence[str], vectors: Sequence[SteeringVector] | SteeringVector,
                      multipliers: Sequence[float] | float, *, positions: PositionRule = "all",
                      memory_mb: float = 1024.0, progress: bool = False) -> Tensor:
    """Next-token logits of every prompt under every (vector, multiplier), batched.

    Returns:
        ``(vector, multiplier, prompt, d_vocab)`` logits at each prompt's last real token.

    Example:
        >>> import torch
        >>> from tl_interp.models import load
        >>> model = load("ordinal-4l")
        >>> v = SteeringVector(torch.randn(128), "blocks.2.hook_resid_pre")
        >>> next_token_logits(model, ["one , two ,", "after may comes"], v, [0.0, 4.0]).shape
        torch.Size([1, 2, 2, 89])
    """
    if isinstance(prompts, str) or not prompts:
        raise ShapeError("next_token_logits: give a non-empty list of prompts")
    variants = _variants(vectors, multipliers)
    check_vectors(model, [v.vector for v in variants], "next_token_logits")
    batch = adapt(model).tokenize(list(prompts))
    _, out = steered_last_logits(model, batch, variants, lambda logits: {"logits": logits}, positions=positions,
                                 memory_mb=memory_mb, progress=progress)
    n_v = 1 if isinstance(vectors, SteeringVector) else len(vectors)
    return out["logits"].view(n_v, -1, len(prompts), d_vocab(model))


@beartype
def generate(model: Any, prompts: Sequence[str] | str, vectors: Sequence[SteeringVector] | SteeringVector,
             multipliers: Sequence[float] | float, *, positions: PositionRule = "all", max_new_tokens: int = 20,
             **generate_kwargs: Any) -> list[dict[str, Any]]:
    """Greedy (by default) generation under ``multiplier * vector`` for every vector, multiplier and prompt.

    For each vector, prompts of the same token length are generated together, one row per
    (multiplier, prompt); the rule picks prompt positions, and every generated token is
    steered.

    Returns:
        One dict per (vector, multiplier, prompt): ``vector`` (its name), ``prompt``,
        ``multiplier``, ``completion`` (the generated text only).

    Example:
        >>> import torch
        >>> from tl_interp.models import load
        >>> model = load("ordinal-4l")
        >>> v = SteeringVector(torch.zeros(128), "blocks.2.hook_resid_pre")
        >>> [r["completion"].split()[0] for r in generate(model, "one , two ,", v, [0.0], max_new_tokens=3)]
        ['three']
    """
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise ShapeError("generate: give at least one prompt")
    vs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    mults = [float(multipliers)] if isinstance(multipliers, (int, float)) else [float(m) for m in multipliers]
    if not mults:
        raise ShapeError("generate: no multipliers given")
    check_vectors(model, vs, "generate")
    generate_kwargs.setdefault("do_sample", False)
    generate_kwargs.setdefault("verbose", False)
    ad = adapt(model)
    encoded = [ad.tokenize(t) for t in texts]
    rows: list[dict[str, Any]] = []
    for vector in vs:
        done = _generate_one(model, encoded, vector, mults, positions, max_new_tokens, generate_kwargs)
        rows += [{"vector": vector.name, "prompt": texts[p], "multiplier": mults[m], "completion": done[(m, p)]}
                 for m in range(len(mults)) for p in range(len(texts))]
    return rows


def _generate_one(model: Any, encoded: list[Tokenized], vector: SteeringVector, mults: list[float],
                  positions: PositionRule, max_new_tokens: int, generate_kwargs: dict[str, Any]) -> dict[tuple[int, int], str]:
    """Completions ``{(multiplier index, prompt index): text}`` for one vector."""
    by_len: dict[int, list[int]] = {}
    for i, tok in enumerate(encoded):
        by_len.setdefault(tok.tokens.shape[1], []).append(i)
    out: dict[tuple[int, int], str] = {}
    for length, idx in by_len.items():
        tokens = torch.cat([encoded[i].tokens for i in idx])
        batch = Tokenized(tokens, torch.ones_like(tokens), torch.full((len(idx),), length - 1, device=tokens.device),
                          [s for i in idx for s in encoded[i].str_tokens])
        rule_mask = _static_mask(steer_positions(positions, batch), len(idx), length, tokens.device).repeat(len(mults), 1)
        vec_rows = torch.stack([m * vector.vector for m in mults]).repeat_interleave(len(idx), 0)
        calls = {"n": 0}

        def mask_for(act: Tensor, rule_mask: Tensor = rule_mask, length: int = length) -> Tensor:
            pos = act.shape[1]
            full = length + calls["n"]
            calls["n"] += 1
            if pos == full:  # the whole sequence so far: the rule on the prompt, every generated token
                return torch.cat([rule_mask, torch.ones(rule_mask.shape[0], pos - length, dtype=torch.bool,
                                                        device=rule_mask.device)], 1)
            return torch.ones(act.shape[0], pos, dtype=torch.bool, device=act.device)  # cached step: new tokens

        iv = _row_intervention(vector, vec_rows, mask_for, f"steer ({rule_label(positions)}) while generating")
        with iv.applied(model):
            gen = model.generate(tokens.repeat(len(mults), 1), max_new_tokens=max_new_tokens, **generate_kwargs)
        for r in range(gen.shape[0]):
            m, p = divmod(r, len(idx))
            out[(m, idx[p])] = model.to_string(gen[r, length:])
    return out
