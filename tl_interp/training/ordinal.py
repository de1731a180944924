"""Training of ``ordinal-4l`` (``python -m tl_interp.models.train ordinal-4l``), with its card.

The model, its data and its evaluation live in ``tl_interp.models.zoo.ordinal``.

Choices, and why:

- Loss only on the answer token. The held-out list prompts are prefixes of longer training
  lists, so a loss on every position would train on them; the template words are fixed,
  so predicting them spends capacity on nothing the studies read.
- Batches draw a task uniformly, then a prompt of that task, so weekdays (35 lists) weigh
  as much as numbers (80 lists).
- Half the training prompts are preceded by another solved training example and ``"."``
  (``"after one comes two . the day after monday is"``). Without it every item sits at a
  few fixed positions (list items only at odd positions, template items at positions
  1..5), and a held-out template that puts its item at a new position failed (seed 0:
  ``"el siguiente numero despues de {x} es"``, item at position 6, 26% correct); with it,
  items are seen at many positions and the model must find the current sentence.
  Evaluation prompts never carry such context.
"""

import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tl_interp.compat.tl import require_hooked
from tl_interp.models.zoo import ordinal_data as data
from tl_interp.models.zoo.ordinal import NAME, answer_logits, evaluate_ordinal_4l, ordinal_config
from tl_interp.training.common import SCHEDULE, provenance, warmup_cosine

__all__ = ["DEFAULT_STEPS", "train_ordinal_4l"]

DEFAULT_STEPS = 800


def train_ordinal_4l(
    *,
    steps: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    context_prob: float = 0.5,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``ordinal-4l`` on the train split with answer-token loss; measure every split.

    Args:
        steps: optimiser steps.
        seed: seeds the initial weights and the batch sampling (the splits are fixed).
        batch_size: prompts per step.
        lr: AdamW peak learning rate (5% linear warm-up, cosine decay to 10%).
        weight_decay: AdamW weight decay.
        context_prob: probability that a solved training example and "." precede a prompt.

    Returns:
        ``(model, card)``; the model has no tokenizer attached (``load_ordinal_4l`` attaches
        the saved one); the card holds everything but the weight file's size and hash.

    Example:
        >>> model, card = train_ordinal_4l(steps=2, seed=0)
        >>> sorted(card["evaluation"])
        ['heldout', 'heldout_accuracy_by_template', 'test', 'train']
    """
    HookedTransformer = require_hooked("training ordinal-4l")
    start_time = time.perf_counter()
    tok = data.build_tokenizer()
    torch.manual_seed(seed)
    model = HookedTransformer(ordinal_config(init_weights=True))
    train = [data.ordinal_tasks("train")[task] for task in data.TASKS]
    ids = [tok.convert_tokens_to_ids(p.split()) for pairs in train for p, _ in pairs]
    answers_all = tok.convert_tokens_to_ids([a for pairs in train for _, a in pairs])
    offsets = torch.tensor([0] + [len(pairs) for pairs in train]).cumsum(0)
    bos, sep = tok.bos_token_id, tok.convert_tokens_to_ids(data.SEPARATOR)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    final_losses: list[float] = []
    model.train()
    for step in tqdm(range(steps), desc=NAME, mininterval=5, disable=steps < 50):
        # a task uniformly, then a prompt of that task uniformly; with probability
        # context_prob a solved training example (any task) and "." go before it
        task = torch.randint(len(train), (batch_size,), generator=gen)
        size = offsets[task + 1] - offsets[task]
        rows = (offsets[task] + (torch.rand(batch_size, generator=gen) * size).long()).tolist()
        context = (torch.rand(batch_size, generator=gen) < context_prob).tolist()
        other = torch.randint(len(ids), (batch_size,), generator=gen).tolist()
        seqs = [
            [bos] + ([*ids[o], answers_all[o], sep] if c else []) + ids[r]
            for r, c, o in zip(rows, context, other)
        ]
        last = torch.tensor([len(s) - 1 for s in seqs])
        tokens = torch.full((batch_size, int(last.max()) + 1), tok.pad_token_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = torch.tensor(s)
        answers = torch.tensor([answers_all[r] for r in rows])
        loss = nn.functional.cross_entropy(answer_logits(model, tokens, last), answers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step >= steps - 50:
            final_losses.append(float(loss.detach()))
    model.eval()
    seconds = time.perf_counter() - start_time
    hyper = {
        "optimizer": "AdamW", "lr": lr, "betas": [0.9, 0.98], "weight_decay": weight_decay,
        "batch_size": batch_size, "grad_clip_norm": 1.0, "schedule": SCHEDULE,
        "context_prob": context_prob, "loss": "cross-entropy on the answer token only",
    }
    card = _card(model, tok, hyper, evaluate_ordinal_4l(model, tokenizer=tok))
    card["training_loss_last_50_steps"] = round(sum(final_losses) / max(1, len(final_losses)), 5)
    card["provenance"] = provenance(NAME, steps=steps, seed=seed, seconds={"training_seconds": seconds},
                                    libraries=("transformers", "tokenizers"))
    return model, card


def _card(
    model: nn.Module, tok: Any, hyper: dict[str, Any], evaluation: dict[str, Any]
) -> dict[str, Any]:
    cfg = model.cfg
    counts = {split: len(data.ordinal_examples(split)) for split in ("train", "test", "heldout")}
    return {
        "name": NAME,
        "summary": (
            "4-layer transformer with a word-level Hugging Face tokenizer that continues "
            "ordered sequences (english number words one..twenty, months, weekdays, spanish "
            "number words uno..veinte) given as comma lists or sentence templates; the "
            "evaluation battery is tl_interp.models.zoo.ordinal_tasks(split)."
        ),
        "architecture": {
            "class": "transformer_lens.HookedTransformer",
            "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
            "d_head": cfg.d_head, "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx,
            "act_fn": cfg.act_fn, "normalization_type": cfg.normalization_type,
            "positional_embedding_type": cfg.positional_embedding_type,
            "default_prepend_bos": cfg.default_prepend_bos,
            "n_parameters": sum(p.numel() for p in model.parameters()),
        },
        "tokenizer": {
            "dir": f"tokenizers/{NAME}",
            "type": "PreTrainedTokenizerFast (tokenizers WordLevel + Whitespace pre-tokenizer)",
            "vocab_size": len(tok), "add_bos_token": True,
            "special_tokens": data.SPECIAL_TOKENS,
        },
        "training_data": (
            "successor prompts in 4 domains, 2 forms: comma lists of 2..6 consecutive items "
            "(months and weekdays wrap around, numbers do not) and sentence templates "
            f"(ordinal_data.TEMPLATES); fixed splits by rule: {counts}. Held out: list "
            "prompts with (start + 2 * length) % 5 == 0 and every prompt of "
            "ordinal_data.HELDOUT_TEMPLATES; test: ~15% of the rest by prompt hash. Batches: "
            "a task uniformly, then a prompt; half of them preceded by a solved training "
            "example and '.'"
        ),
        "hyperparameters": hyper,
        "evaluation": evaluation,
    }
