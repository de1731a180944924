"""Train the bundled zoo models from scratch, deterministically, on CPU.

    python -m tl_interp.models.train NAME [--steps N] [--seed S] [--out DIR]

(a bundled SAE's name, ``tl_interp.models.saes.SAE_NAMES``, is handed to
``tl_interp.models.saes.train``, which has its own options and output layout)

writes ``DIR/weights/NAME.safetensors`` and ``DIR/cards/NAME.json`` (DIR defaults to the
packaged zoo, ``tl_interp/models/zoo``). The same name, steps and seed give bit-identical
weights: all randomness comes from seeded generators, and the run uses one CPU thread.
The card records the data, hyperparameters, seed, wall time and held-out measurements
that ``tests/test_zoo_*.py`` re-check against the packaged weights.
"""

import argparse
import hashlib
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from tl_interp.models.saes import SAE_NAMES
from tl_interp.models.zoo import _store, ordinal, ordinal_train
from tl_interp.models.zoo import induction as ind
from tl_interp.models.zoo import s5_mlp as s5

__all__ = ["train_induction_2l", "train_s5_mlp", "TRAINERS", "DEFAULT_STEPS", "main"]

DEFAULT_STEPS = {"induction-2l": 4000, "s5-mlp": 2500, "ordinal-4l": ordinal_train.DEFAULT_STEPS}
DEFAULT_SEED = 0
_SCHEDULE = "linear warm-up over 5% of steps, then cosine decay to 10% of lr"


def _sig(x: float, digits: int = 6) -> float:
    """``x`` to ``digits`` significant digits (card numbers stay readable and exact enough)."""
    return float(f"{x:.{digits}g}")


def _provenance(name: str, steps: int, seed: int, seconds: float) -> dict[str, Any]:
    return {
        "command": f"python -m tl_interp.models.train {name} --steps {steps} --seed {seed}",
        "steps": steps,
        "seed": seed,
        "training_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformer_lens": metadata.version("transformer-lens"),
        "python": platform.python_version(),
    }


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over 5% of steps, then cosine decay to 10%."""
    warmup = max(1, steps // 20)

    def _warmup_cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return _warmup_cosine


def train_induction_2l(
    *,
    steps: int,
    seed: int,
    batch_size: int = 64,
    lengths_per_step: int = 4,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    head_dropout: float = ind.LAYER_0_HEAD_DROPOUT,
    sparsity_weight: float = ind.LAYER_1_SPARSITY_WEIGHT,
) -> tuple[HookedTransformer, dict[str, Any]]:
    """Train ``induction-2l`` on ``BOS + r + r`` and measure it on held-out sequences.

    The objective is ``tl_interp.models.zoo.induction.training_loss``: next-token loss, with
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
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = HookedTransformer(ind.induction_config(init_weights=True))
    data = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(steps))
    model.train()
    if batch_size % lengths_per_step:
        raise ValueError(f"batch_size={batch_size} must be a multiple of {lengths_per_step=}")
    for _ in tqdm(range(steps), desc="induction-2l", mininterval=5, disable=steps < 50):
        opt.zero_grad(set_to_none=True)
        for _ in range(lengths_per_step):
            half_len = int(
                torch.randint(ind.MIN_HALF_LEN, ind.MAX_HALF_LEN + 1, (), generator=data)
            )
            tokens = ind.repeated_tokens(batch_size // lengths_per_step, half_len, generator=data)
            loss, _, _ = ind.training_loss(
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
            "grad_clip_norm": 1.0, "schedule": _SCHEDULE,
            "layer_0_head_dropout": head_dropout,
            "layer_1_sparsity_weight": sparsity_weight,
        },
        "regularisers": (
            "training only (tl_interp.models.zoo.induction.training_loss). Layer-0 head "
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
        "provenance": _provenance("induction-2l", steps, seed, seconds),
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


def _ablation_scan(model: HookedTransformer, tokens: torch.Tensor) -> dict[str, Any]:
    """``ti.ablation.scan`` of heads (zero ablation), metric: loss on the repeated half."""
    # imported here, not at the top: only this model's evaluation needs them
    from tl_interp import metrics
    from tl_interp import ablation

    half_len = (tokens.shape[1] - 1) // 2
    mask = torch.zeros_like(tokens)
    mask[:, half_len + 2 :] = 1  # targets r[1:] of the second copy, as in half_losses
    res = ablation.scan(model, tokens, metrics.loss(tokens, mask), units="heads", progress=False)
    return {
        "method": "zero",
        "units": "heads",
        "metric": "mean next-token loss on the repeated half (targets r[1:] of the 2nd copy)",
        "n_boot": 2000,
        "seed": 0,
        # effect = ablated minus clean loss (nats); 95% bootstrap interval over sequences
        "ranking": [
            {
                "unit": r["unit"],
                "index": list(r["index"]),
                "effect": _sig(r["effect"], 4),
                "ci_low": _sig(r["ci_low"], 4),
                "ci_high": _sig(r["ci_high"], 4),
            }
            for r in res.ranking()
        ],
    }


def evaluate_induction_2l(model: HookedTransformer, n_seqs: int = 256) -> dict[str, Any]:
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
            _sig(ind.half_losses(model, tokens, zero_ablate=[(layer, head)])[1], 4)
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
        "first_half_loss": _sig(first),
        "repeated_half_loss": _sig(repeated),
        "uniform_loss": _sig(math.log(ind.N_RANDOM_TOKENS)),
        "previous_token_head": list(prev_head),
        "induction_head": list(ind_head),
        # every head above the quality threshold, [layer, head], best first
        "previous_token_heads": prev_heads,
        "induction_heads": _heads_above(induct, q["min_induction_score"]),
        "previous_token_scores": [[round(float(v), 4) for v in row] for row in prev],
        "induction_scores": [[round(float(v), 4) for v in row] for row in induct],
        # repeated-half loss with hook_z of one head (or a group) set to zero
        "repeated_half_loss_zero_ablating_each_head": ablated,
        "repeated_half_loss_zero_ablating_previous_token_heads": _sig(
            ind.half_losses(model, tokens, zero_ablate=[tuple(h) for h in prev_heads])[1], 4
        ),
        "repeated_half_loss_zero_ablating_layer_1": _sig(
            ind.half_losses(model, tokens, zero_ablate=[(1, h) for h in range(cfg.n_heads)])[1], 4
        ),
        # mean |z_h W_O^h| per layer-1 head: what the sparsity penalty acts on
        "layer_1_head_output_norms": [_sig(float(v), 4) for v in layer_1_norms],
        "ablation_scan": _ablation_scan(model, tokens),
    }


def _heads_above(scores: torch.Tensor, threshold: float) -> list[list[int]]:
    order = scores.flatten().argsort(descending=True)
    n_heads = scores.shape[1]
    return [list(divmod(int(i), n_heads)) for i in order if scores.flatten()[i] > threshold]


def train_s5_mlp(
    *,
    steps: int,
    seed: int,
    train_fraction: float = 0.6,
    lr: float = 1e-2,
    weight_decay: float = 1.0,
) -> tuple[s5.S5MLP, dict[str, Any]]:
    """Train ``s5-mlp`` full-batch on a seeded split of all S5 pairs; measure held-out pairs.

    Args:
        steps: full-batch AdamW steps.
        seed: seeds the initial weights and the train/test split.
        train_fraction: share of the 14400 pairs trained on; the rest is held out.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (large, as in grokking setups).

    Returns:
        ``(model, card)``.

    Example:
        >>> model, card = train_s5_mlp(steps=2, seed=0)
        >>> card["evaluation"]["n_test"]
        5760
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    cfg = s5.S5MLPConfig()
    model = s5.S5MLP(cfg)
    pairs, labels = s5.all_pairs()
    train_idx, test_idx = s5.train_test_split(seed, train_fraction)
    x_train, y_train = pairs[train_idx], labels[train_idx]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(steps))
    model.train()
    for _ in tqdm(range(steps), desc="s5-mlp", mininterval=5, disable=steps < 50):
        loss = nn.functional.cross_entropy(model(x_train), y_train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    seconds = time.perf_counter() - start

    train_acc, train_loss = s5.accuracy_and_loss(model, x_train, y_train)
    test_acc, test_loss = s5.accuracy_and_loss(model, pairs[test_idx], labels[test_idx])
    card = {
        "name": "s5-mlp",
        "summary": (
            "One-hidden-layer ReLU network on S5 composition (x, y) -> x*y, after Chughtai "
            "et al. 2023; hooks hook_embed_x, hook_embed_y, hook_pre, hook_hidden, hook_logits."
        ),
        "architecture": {"class": "tl_interp.models.zoo.S5MLP", **cfg.to_dict(), "bias": False},
        "group_convention": (
            "elements are permutation tuples of (0..4) in lexicographic order (index 0 = "
            "identity); (x*y)(i) = x(y(i)); input row (x, y), label = index of x*y "
            "(tl_interp.models.zoo.groups.multiplication_table()[x, y])"
        ),
        "training_data": (
            f"seeded split of all 14400 pairs: {len(train_idx)} train, {len(test_idx)} "
            f"held out (train_test_split(seed={seed}, train_fraction={train_fraction})); "
            "full-batch cross-entropy"
        ),
        "hyperparameters": {
            "optimizer": "AdamW", "lr": lr, "betas": [0.9, 0.98],
            "weight_decay": weight_decay, "train_fraction": train_fraction, "batch": "full",
            "schedule": _SCHEDULE,
        },
        "evaluation": {
            "split_seed": seed,
            "n_train": len(train_idx),
            "n_test": len(test_idx),
            "train_accuracy": _sig(train_acc),
            "train_loss": _sig(train_loss),
            "test_accuracy": _sig(test_acc),
            "test_loss": _sig(test_loss),
        },
        "quality_thresholds": s5.QUALITY_THRESHOLDS,
        "provenance": _provenance("s5-mlp", steps, seed, seconds),
    }
    return model, card


TRAINERS: dict[str, Callable[..., tuple[nn.Module, dict[str, Any]]]] = {
    "induction-2l": train_induction_2l,
    "s5-mlp": train_s5_mlp,
    "ordinal-4l": ordinal_train.train_ordinal_4l,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SAE_NAMES:  # a bundled SAE: sae-lens's trainer, own options
        from tl_interp.models.saes.train import main as train_sae_main

        return train_sae_main(argv)
    parser = argparse.ArgumentParser(
        prog="python -m tl_interp.models.train", description="Train a bundled zoo model."
    )
    parser.add_argument("name", choices=sorted(TRAINERS))
    parser.add_argument("--steps", type=int, default=None, help="default: per model")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=None, help="default: the packaged zoo")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.name]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # determinism, and a fair share of a shared machine
    try:
        model, card = TRAINERS[args.name](steps=steps, seed=args.seed)
    finally:
        torch.set_num_threads(threads)
    path = _store.write_weights(args.name, model, args.out)
    if args.name == ordinal.NAME:  # the one zoo model that ships its own tokenizer
        ordinal.write_tokenizer(args.out)
    card["weights"] = {
        "file": f"weights/{path.name}",
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    card_file = _store.write_card(args.name, card, args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes) and {card_file}")
    print({k: v for k, v in card["evaluation"].items() if not k.endswith("_scores")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
