"""Training of ``s5-mlp`` (``python -m tl_interp.models.train s5-mlp``), with its card.

Full-batch AdamW with large weight decay (as in grokking set-ups) on a seeded 60% of all
14400 pairs of S5 elements; the rest is held out. The model and its data live in
``tl_interp.models.zoo.s5_mlp``.
"""

import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tl_interp.models.zoo import s5_mlp as s5
from tl_interp.training.common import SCHEDULE, provenance, sig, warmup_cosine

__all__ = ["DEFAULT_STEPS", "train_s5_mlp"]

DEFAULT_STEPS = 2500


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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
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
            "schedule": SCHEDULE,
        },
        "evaluation": {
            "split_seed": seed,
            "n_train": len(train_idx),
            "n_test": len(test_idx),
            "train_accuracy": sig(train_acc),
            "train_loss": sig(train_loss),
            "test_accuracy": sig(test_acc),
            "test_loss": sig(test_loss),
        },
        "quality_thresholds": s5.QUALITY_THRESHOLDS,
        "provenance": provenance("s5-mlp", steps=steps, seed=seed, seconds={"training_seconds": seconds}),
    }
    return model, card
