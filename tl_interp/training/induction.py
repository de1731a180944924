"""Training of ``induction-2l`` (``python -m tl_interp.models.train induction-2l``), with its card.

The model, its data and its measurements live in ``tl_interp.models.zoo.induction``; this
module holds the training objective and the run that produced the packaged weights.

Choices, and why:

- No normalization (``normalization_type=None``) and no MLPs: the logits are exactly a sum
  of direct, one-head and two-head paths, so QK/OV circuits and composition scores read
  straight off the weights, with no LayerNorm to fold or linearise.
- Standard learned positional embeddings, which the previous-token heads need.
- The half length ``L`` is drawn afresh (8..31) for every micro-batch, so the repeat
  cannot be found by position alone: a layer-1 head that attends to a fixed offset does not
  solve the task, a content-based induction head does. Each step averages four
  micro-batches of 16 sequences with their own ``L``: with one ``L`` per step, the
  gradient at early positions flips between "don't copy" (long ``L``: they are in the first
  copy) and "copy" (short ``L``), and a single induction head never settled at short
  lengths (its repeated-half loss at ``L = 10`` swung between 0.3 and 2.1 nats from one
  checkpoint to the next).
- Three heads of width 32 per layer (not four of 16): a single head must copy all 64
  tokens through its OV circuit, whose rank is at most ``d_head``.
- Head dropout on layer 0 (``LAYER_0_HEAD_DROPOUT``): in training, each layer-0 head's
  output (``hook_z``) is zeroed independently per sequence with probability 0.5 (no
  rescaling), so no single head can be relied on and previous-token information is written
  redundantly by several heads.
- A sparsity penalty on layer 1 (``LAYER_1_SPARSITY_WEIGHT``): the Hoyer ratio
  ``sum(n) / ||n||_2 - 1`` of the heads' mean output norms ``n`` (``|z_h W_O^h|``, averaged
  over batch and positions) is added to the loss, from the first step. It is scale-free and
  zero exactly when one head carries all of layer 1's output. Alternatives that did not
  work in our trial runs: a plain L1 (group lasso) penalty on the norms cannot break the tie
  between heads that write the same thing (layer 1 kept two or three induction heads); a
  concave ``sqrt`` penalty silenced every layer-1 head before induction could form; a Hoyer
  penalty switched on only after induction had formed was gamed by inflating one head's
  norm (three induction heads stayed). Without either regulariser (the earlier recipe, four
  heads of width 16) layer 1 grew four redundant induction heads, and a previous-token
  head, not an induction head, came first in an ablation scan.

``training_loss`` implements both; ``train_induction_2l`` runs them.
"""

import math
import time
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformer_lens.hook_points import HookPoint

from tl_interp._checks import checked
from tl_interp.compat.tl import require_hooked
from tl_interp.errors import OptionError
from tl_interp.models.zoo import induction as ind
from tl_interp.training.common import SCHEDULE, provenance, sig, warmup_cosine

__all__ = [
    "LAYER_0_HEAD_DROPOUT",
    "LAYER_1_SPARSITY_WEIGHT",
    "DEFAULT_STEPS",
    "training_loss",
    "train_induction_2l",
    "evaluate_induction_2l",
]

DEFAULT_STEPS = 4000
LAYER_0_HEAD_DROPOUT = 0.5  # P(a layer-0 head's output is zeroed), per sequence
LAYER_1_SPARSITY_WEIGHT = 0.2  # weight of the Hoyer penalty on layer-1 heads


@checked
def training_loss(
    model: nn.Module,
    tokens: Int[Tensor, "batch pos"],
    *,
    generator: torch.Generator,
    head_dropout: float = LAYER_0_HEAD_DROPOUT,
    sparsity_weight: float = LAYER_1_SPARSITY_WEIGHT,
) -> tuple[Float[Tensor, ""], Float[Tensor, ""], Float[Tensor, ""]]:
    """The training objective of ``induction-2l``: next-token loss with its two regularisers.

    Layer-0 head dropout: each layer-0 head's ``hook_z`` is zeroed, independently for every
    sequence, with probability ``head_dropout`` (no rescaling of the survivors), so that
    previous-token information has to be written by more than one head. Layer-1 sparsity:
    with ``n_h`` the mean over batch and positions of ``|z_h W_O^h|`` (head ``h``'s output
    norm), the Hoyer ratio ``sum(n) / ||n||_2 - 1`` (0 when one head does all the writing,
    ``sqrt(n_heads) - 1`` when all write equally) times ``sparsity_weight`` is added, so that
    one head does the induction.

    Args:
        model: the model being trained (any HookedTransformer with at least 2 layers).
        tokens: a batch of ``BOS + r + r`` sequences.
        generator: draws the dropout mask (the training data stream's generator, so a seed
            fixes the masks too).
        head_dropout: probability of dropping each layer-0 head for a sequence.
        sparsity_weight: weight of the layer-1 Hoyer penalty.

    Returns:
        ``(total, next_token_loss, layer_1_sparsity)``; backpropagate ``total``.

    Example:
        >>> from transformer_lens import HookedTransformer
        >>> from tl_interp.models.zoo.induction import induction_config, repeated_tokens
        >>> _ = torch.manual_seed(0)
        >>> model = HookedTransformer(induction_config(init_weights=True))
        >>> g = torch.Generator().manual_seed(0)
        >>> tokens = repeated_tokens(4, 8, generator=g)
        >>> total, lm, sparsity = training_loss(model, tokens, generator=g)
        >>> bool(total >= lm), 0 <= float(sparsity.detach()) <= 3**0.5 - 1 + 1e-6
        (True, True)
    """
    n_heads = model.cfg.n_heads
    keep = (torch.rand(tokens.shape[0], 1, n_heads, 1, generator=generator) >= head_dropout)
    keep = keep.to(model.cfg.dtype)
    captured: dict[str, Tensor] = {}

    def _drop_heads(z: Float[Tensor, "batch pos head_index d_head"], hook: HookPoint) -> Tensor:
        return z * keep

    def _capture(z: Float[Tensor, "batch pos head_index d_head"], hook: HookPoint) -> Tensor:
        captured["z"] = z
        return z

    hooks = [("blocks.0.attn.hook_z", _drop_heads), ("blocks.1.attn.hook_z", _capture)]
    with model.hooks(fwd_hooks=hooks):  # removed on exit, always
        lm_loss = model(tokens, return_type="loss")
    out = torch.einsum("bphd,hdm->bphm", captured["z"], model.W_O[1])
    norms = out.norm(dim=-1).mean(dim=(0, 1))  # (n_heads,)
    sparsity = norms.sum() / (norms.pow(2).sum() + 1e-8).sqrt() - 1
    return lm_loss + sparsity_weight * sparsity, lm_loss, sparsity


def train_induction_2l(
    *,
    steps: int,
    seed: int,
    batch_size: int = 64,
    lengths_per_step: int = 4,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    head_dropout: float = LAYER_0_HEAD_DROPOUT,
    sparsity_weight: float = LAYER_1_SPARSITY_WEIGHT,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``induction-2l`` on ``BOS + r + r`` and measure it on held-out sequences.

    The objective is ``training_loss``: next-token loss, with
    layer-0 head dropout and a Hoyer sparsity penalty over layer-1 heads' output norms, so
    that previous-token heads are redundant and one head does induction.

    Args:
        steps: optimiser steps (one batch of fresh random sequences each).
        seed: seeds the initial weights, the training data stream and the dropout masks.
        batch_size: sequences per step.
        lengths_per_step: the batch is split into this many micro-batches, each with its
            own half length ``L``; their gradients are averaged into one step.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        head_dropout: probability of zeroing each layer-0 head's output, per sequence.
        sparsity_weight: weight of the layer-1 Hoyer penalty.

    Returns:
        ``(model, card)``; the card holds everything but the weight file's size and hash.

    Example:
        >>> model, card = train_induction_2l(steps=2, seed=0)
        >>> card["evaluation"]["eval_half_len"], len(card["evaluation"]["ablation_scan"]["ranking"])
        (31, 6)
    """
    HookedTransformer = require_hooked("training induction-2l")
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = HookedTransformer(ind.induction_config(init_weights=True))
    data = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    model.train()
    if batch_size % lengths_per_step:
        raise OptionError(f"batch_size={batch_size} must be a multiple of lengths_per_step={lengths_per_step}")
    for _ in tqdm(range(steps), desc="induction-2l", mininterval=5, disable=steps < 50):
        opt.zero_grad(set_to_none=True)
        for _ in range(lengths_per_step):
            half_len = int(
                torch.randint(ind.MIN_HALF_LEN, ind.MAX_HALF_LEN + 1, (), generator=data)
            )
            tokens = ind.repeated_tokens(batch_size // lengths_per_step, half_len, generator=data)
            loss, _, _ = training_loss(
                model, tokens, generator=data, head_dropout=head_dropout,
                sparsity_weight=sparsity_weight,
            )
            (loss / lengths_per_step).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    seconds = time.perf_counter() - start

    evaluation = evaluate_induction_2l(model)
    cfg = model.cfg
    prev_heads = [f"L{la} H{h}" for la, h in evaluation["previous_token_heads"]]
    ind_heads = [f"L{la} H{h}" for la, h in evaluation["induction_heads"]]
    effects = {tuple(r["index"]): r["effect"] for r in evaluation["ablation_scan"]["ranking"]}
    top_of_scan = evaluation["ablation_scan"]["ranking"][0]["index"]
    redundant = len(prev_heads) > 1 and all(
        effects[tuple(h)] <= ind.QUALITY_THRESHOLDS["max_other_head_ablation_effect"]
        for h in evaluation["previous_token_heads"]
    )
    single = evaluation["induction_heads"] == [top_of_scan]
    card = {
        "name": "induction-2l",
        "summary": (
            "2-layer attention-only transformer (no LayerNorm, no MLP) trained on random "
            "token sequences repeated twice, with layer-0 head dropout and a layer-1 head "
            f"sparsity penalty; previous-token heads: {', '.join(prev_heads) or 'none'}"
            f"{' (redundant: cutting any one barely matters)' if redundant else ''}; "
            f"induction heads: {', '.join(ind_heads) or 'none'}"
            f"{' (the only one, and first in the ablation scan of heads)' if single else ''}."
        ),
        "architecture": {
            "class": "transformer_lens.HookedTransformer",
            "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
            "d_head": cfg.d_head, "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx, "attn_only": True,
            "normalization_type": None, "positional_embedding_type": "standard",
        },
        "training_data": (
            f"BOS ({ind.BOS_TOKEN}) + r + r, r uniform i.i.d. over tokens "
            f"1..{ind.N_RANDOM_TOKENS}; half length L drawn uniformly from "
            f"{ind.MIN_HALF_LEN}..{ind.MAX_HALF_LEN} per micro-batch (so the repeat cannot be "
            f"located by position), {lengths_per_step} micro-batches of "
            f"{batch_size // lengths_per_step} sequences per step, gradients averaged; fresh "
            "sequences every step; next-token loss on all positions"
        ),
        "hyperparameters": {
            "optimizer": "AdamW", "lr": lr, "betas": [0.9, 0.98], "weight_decay": weight_decay,
            "batch_size": batch_size, "lengths_per_step": lengths_per_step,
            "grad_clip_norm": 1.0, "schedule": SCHEDULE,
            "layer_0_head_dropout": head_dropout,
            "layer_1_sparsity_weight": sparsity_weight,
        },
        "regularisers": (
            "training only (tl_interp.training.induction.training_loss). Layer-0 head "
            f"dropout: each layer-0 head's hook_z is zeroed with probability {head_dropout}, "
            "independently per sequence, survivors not rescaled, so no one head can carry "
            "the previous token alone. Layer-1 sparsity: with n_h the mean output norm "
            "|z_h W_O^h| of layer-1 head h over the batch, the Hoyer ratio "
            f"sum(n)/||n||_2 - 1 (0 iff one head writes) is added with weight "
            f"{sparsity_weight}, so a single head does induction."
        ),
        "evaluation": evaluation,
        "notes": _induction_notes(evaluation),
        "quality_thresholds": ind.QUALITY_THRESHOLDS,
        "provenance": provenance("induction-2l", steps=steps, seed=seed, seconds={"training_seconds": seconds}),
    }
    return model, card


def _induction_notes(ev: dict[str, Any]) -> str:
    """The card's reading of its own measurements (which heads matter, how much)."""
    ranking = ev["ablation_scan"]["ranking"]
    top, rest = ranking[0], ranking[1:]
    worst_other = max(rest, key=lambda r: r["effect"]) if rest else None
    prev = [tuple(h) for h in ev["previous_token_heads"]]
    prev_effects = [r["effect"] for r in ranking if tuple(r["index"]) in prev]
    silent = [
        f"L1 H{h}" for h, norm in enumerate(ev["layer_1_head_output_norms"])
        if norm < 0.01 * max(ev["layer_1_head_output_norms"])
    ]
    parts = [
        (
            "Zero-ablating one head at a time (ablation_scan, repeated-half loss): "
            f"{top['unit']} costs {top['effect']:.2f} nats (95% CI {top['ci_low']:.2f}.."
            f"{top['ci_high']:.2f}), the most of any head"
        )
    ]
    if worst_other is not None:
        parts.append(
            f"; the next largest is {worst_other['effect']:+.3f} ({worst_other['unit']})"
        )
    if prev_effects:
        parts.append(
            f". Cutting any one of the {len(prev)} previous-token heads changes the loss by "
            f"{min(prev_effects):+.3f}..{max(prev_effects):+.3f} nats; cutting all of them "
            f"raises it from {ev['repeated_half_loss']:.2f} to "
            f"{ev['repeated_half_loss_zero_ablating_previous_token_heads']:.2f}"
        )
    if silent:
        parts.append(
            f". The sparsity penalty silenced {', '.join(silent)} (output norm ~0), so layer 1 "
            "does induction with one head"
        )
    parts.append(
        ". The first-half loss exceeds ln 64 because r repeats tokens by chance and the "
        f"model copies those too. Trained on half lengths {ind.MIN_HALF_LEN}..{ind.MAX_HALF_LEN} "
        "only; shorter repeats are out of distribution."
    )
    return "".join(parts)


def _ablation_scan(model: nn.Module, tokens: torch.Tensor) -> dict[str, Any]:
    """``ti.ablation.scan`` of heads (zero ablation), metric: loss on the repeated half."""
    # imported here, not at the top: only this model's evaluation needs them
    from tl_interp import metrics
    from tl_interp import ablation

    half_len = (tokens.shape[1] - 1) // 2
    mask = torch.zeros_like(tokens)
    mask[:, half_len + 2 :] = 1  # targets r[1:] of the second copy, as in half_losses
    res = ablation.scan(model, tokens, metrics.loss(tokens, mask), site="z", over="head_index",
                        progress=False)
    # every head, most damaging first
    top, columns = res.top(res.values.numel(), absolute=False, largest=not res.higher_is_better), ("index", "ci_low", "ci_high")
    return {
        "method": "zero",
        "units": "heads",
        "metric": "mean next-token loss on the repeated half (targets r[1:] of the 2nd copy)",
        "n_boot": 2000,
        "seed": 0,
        # effect = ablated minus clean loss (nats); 95% bootstrap interval over sequences
        "ranking": [
            {"unit": unit, "index": list(index), "effect": sig(effect, 4), "ci_low": sig(lo, 4), "ci_high": sig(hi, 4)}
            for unit, effect, index, lo, hi in zip(top.labels, top.values, *(top.columns[c] for c in columns))
        ],
    }


def evaluate_induction_2l(model: nn.Module, n_seqs: int = 256) -> dict[str, Any]:
    """Held-out losses per half, head scores and an ablation scan (what the card records)."""
    tokens = ind.repeated_tokens(
        n_seqs, ind.EVAL_HALF_LEN, generator=torch.Generator().manual_seed(ind.EVAL_SEED)
    )
    first, repeated = ind.half_losses(model, tokens)
    prev, induct = ind.head_scores(model, tokens)
    q = ind.QUALITY_THRESHOLDS
    prev_head = divmod(int(prev.argmax()), prev.shape[1])
    ind_head = divmod(int(induct.argmax()), induct.shape[1])
    cfg = model.cfg
    ablated = [
        [
            sig(ind.half_losses(model, tokens, zero_ablate=[(layer, head)])[1], 4)
            for head in range(cfg.n_heads)
        ]
        for layer in range(cfg.n_layers)
    ]
    prev_heads = _heads_above(prev, q["min_previous_token_score"])
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")
        out = torch.einsum("bphd,hdm->bphm", cache["blocks.1.attn.hook_z"], model.W_O[1])
        layer_1_norms = out.norm(dim=-1).mean(dim=(0, 1))
    return {
        "eval_seed": ind.EVAL_SEED,
        "eval_half_len": ind.EVAL_HALF_LEN,
        "n_sequences": n_seqs,
        "first_half_loss": sig(first),
        "repeated_half_loss": sig(repeated),
        "uniform_loss": sig(math.log(ind.N_RANDOM_TOKENS)),
        "previous_token_head": list(prev_head),
        "induction_head": list(ind_head),
        # every head above the quality threshold, [layer, head], best first
        "previous_token_heads": prev_heads,
        "induction_heads": _heads_above(induct, q["min_induction_score"]),
        "previous_token_scores": [[round(float(v), 4) for v in row] for row in prev],
        "induction_scores": [[round(float(v), 4) for v in row] for row in induct],
        # repeated-half loss with hook_z of one head (or a group) set to zero
        "repeated_half_loss_zero_ablating_each_head": ablated,
        "repeated_half_loss_zero_ablating_previous_token_heads": sig(
            ind.half_losses(model, tokens, zero_ablate=[tuple(h) for h in prev_heads])[1], 4
        ),
        "repeated_half_loss_zero_ablating_layer_1": sig(
            ind.half_losses(model, tokens, zero_ablate=[(1, h) for h in range(cfg.n_heads)])[1], 4
        ),
        # mean |z_h W_O^h| per layer-1 head: what the sparsity penalty acts on
        "layer_1_head_output_norms": [sig(float(v), 4) for v in layer_1_norms],
        "ablation_scan": _ablation_scan(model, tokens),
    }


def _heads_above(scores: torch.Tensor, threshold: float) -> list[list[int]]:
    order = scores.flatten().argsort(descending=True)
    n_heads = scores.shape[1]
    return [list(divmod(int(i), n_heads)) for i in order if scores.flatten()[i] > threshold]
