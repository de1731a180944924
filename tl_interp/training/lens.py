"""Train a bundled tuned lens (Belrose et al. 2023, arXiv:2303.08112) offline, on CPU.

    python -m tl_interp.models.train smollm2-135m-tuned-lens [--steps N] [--seed S] [--out DIR]
                                                             [--n-train N] [--n-heldout N] [--threads T]

writes ``DIR/NAME/`` (``translators.safetensors`` + checksummed ``card.json``; DIR defaults to
the packaged ``tl_interp/models/lenses``). The recipe is the reference implementation's
(``tuned_lens.scripts.train_loop`` with ``--loss kl``), scaled to a CPU:

- translators ``h + W_l h + b_l``, ``W_l = b_l = 0`` at the start (the logit lens);
- loss: for every layer, ``KL(p_final || p_lens)`` at the same position, averaged over tokens,
  summed over layers (each layer's gradient reaches only its own translator);
- SGD with Nesterov momentum 0.9, lr ``lr_scale * (1 - 0.9)``, weight decay 1e-3, gradients
  clipped to norm 1, the LR decayed linearly to 0 with no warm-up (the reference's SGD
  defaults);
- what differs, because a CPU can't afford it: ``tokens_per_step`` tokens per step instead of
  2^18, and the KL is taken over a *sampled vocabulary* -- the union of the final
  distribution's top-``top_k`` tokens over the step's tokens plus ``n_sampled`` tokens drawn
  uniformly from the rest, whose logits are raised by ``log(rest / n_sampled)`` in both
  distributions (sampled softmax: the sample stands in for the tail's partition mass). The
  full unembedding forward and backward for 30 layers would cost ~3.4 GFLOP per token.
  The card's evaluation is exact: full-vocabulary KL, in float32, on held-out text.

Data: ``tl_interp.models.saes.corpus`` (CPython's ``pydoc_data.topics``, the same train /
held-out documents as the SAEs), chunks of ``context_size`` tokens starting with
``<|im_start|>``; the lens trains and is measured at positions ``first_position:`` (position
0 is the attention sink and position 1 often carries a massive activation, as for the SAEs).
The same name, steps, seed and thread count give bit-identical translators.
"""

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp import compat
from tl_interp.lens._translators import LENSES_DIR, Translators
from tl_interp.training.common import provenance, sig

__all__ = ["LensSpec", "SPECS", "train_tuned_lens", "fit_translators", "write_lens", "heldout_kl", "residuals"]


@dataclass(frozen=True)
class LensSpec:
    """One bundled tuned lens's recipe (``SPECS[name]``); see the module docstring."""

    name: str
    model: str
    context_size: int = 128
    first_position: int = 2
    n_train: int = 128
    n_heldout: int = 16
    steps: int = 120
    tokens_per_step: int = 512
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    top_k: int = 8
    n_sampled: int = 1024
    storage: str = "float16"


SPECS: dict[str, LensSpec] = {
    "smollm2-135m-tuned-lens": LensSpec(name="smollm2-135m-tuned-lens", model="smollm2-135m"),
}


def residuals(model: Any, tokens: Tensor, first_position: int, *, dtype: torch.dtype = torch.float32,
              progress: bool = True) -> Tensor:
    """``(n_layers + 1, n_tokens, d_model)``: every layer's ``resid_pre`` and the final
    ``resid_post`` at positions ``first_position:`` of each row (unpadded rows), via ``ti.collect``."""
    from tl_interp.engine.collect import collect

    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
    states = collect(model, tokens, names, positions=slice(first_position, None), dtype=dtype,
                     progress=progress)
    stacked = states.stack()  # (layers + 1, n, k, d)
    return stacked.reshape(stacked.shape[0], -1, stacked.shape[-1])


def _kl(target_logp: Tensor, logits: Tensor) -> Tensor:
    """Mean over tokens of KL(target || softmax(logits)), in nats."""
    logq = logits.float().log_softmax(-1)
    return (target_logp.exp() * (target_logp - logq)).sum(-1).mean()


@torch.no_grad()
def heldout_kl(model: Any, translators: Translators | None, resid: Tensor, *, chunk: int = 256) -> list[float]:
    """Exact per-layer mean KL(final || lens) in nats over full vocabularies, float32.

    ``resid`` is ``residuals(...)``; ``translators=None`` measures the logit lens.
    """
    n_layers = resid.shape[0] - 1
    totals = torch.zeros(n_layers, dtype=torch.float64)
    for lo in range(0, resid.shape[1], chunk):
        final = compat.head(model, resid[-1, lo:lo + chunk].float()).log_softmax(-1)
        for layer in range(n_layers):
            h = resid[layer, lo:lo + chunk].float()
            h = h if translators is None else translators.translate(h, layer)
            totals[layer] += _kl(final, compat.head(model, h)).double() * h.shape[0]
    return (totals / resid.shape[1]).tolist()


def _top_tokens(model: Any, final: Tensor, k: int, chunk: int = 512) -> Tensor:
    with torch.no_grad():
        return torch.cat([compat.head(model, final[lo:lo + chunk].float()).topk(k, -1).indices
                          for lo in range(0, final.shape[0], chunk)])


def _sampled_vocab(top: Tensor, vocab: int, n_sampled: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Columns (the step's top tokens, then a uniform sample of the rest) and their logit offsets."""
    kept = top.flatten().unique()
    rest = torch.ones(vocab, dtype=torch.bool)
    rest[kept] = False
    others = rest.nonzero().flatten()
    n = min(n_sampled, others.numel())
    sample = others[torch.randperm(others.numel(), generator=gen)[:n]]
    offset = torch.cat([torch.zeros(kept.numel()), torch.full((n,), math.log(others.numel() / max(n, 1)))])
    return torch.cat([kept, sample]), offset


def fit_translators(model: Any, resid: Tensor, top: Tensor, spec: LensSpec, *, steps: int, seed: int,
                    progress: bool = True) -> tuple[Tensor, Tensor, list[list[float]]]:
    """The training loop: translators for every layer from residuals ``(n_layers + 1, n_tokens, d_model)``
    (``residuals(...)``) and each token's top-``top_k`` final tokens ``top`` ``(n_tokens, k)``.

    Returns:
        ``(weight, bias, losses)``: ``(n_layers, d, d)``, ``(n_layers, d)`` and each step's
        per-layer training loss (sampled-vocabulary KL, nats).

    Example:
        >>> from tl_interp.models.zoo import load
        >>> from tl_interp.models.saes.corpus import ordinal_sequences
        >>> model = load("ordinal-4l")
        >>> tokens, mask = ordinal_sequences(model.tokenizer, 16, seed=0)
        >>> resid = residuals(model, tokens[:, :5], 1, progress=False)
        >>> spec = LensSpec("toy", "ordinal-4l", tokens_per_step=32, top_k=4, n_sampled=16)
        >>> w, b, losses = fit_translators(model, resid, _top_tokens(model, resid[-1], 4), spec, steps=5, seed=0,
        ...                                progress=False)
        >>> tuple(w.shape), losses[-1][0] < losses[0][0]
        ((4, 128, 128), True)
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # gradients reach only the translators (and never the model's .grad)
        p.requires_grad_(False)
    try:
        return _fit(model, resid, top, spec, steps=steps, seed=seed, progress=progress)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _fit(model: Any, resid: Tensor, top: Tensor, spec: LensSpec, *, steps: int, seed: int,
         progress: bool) -> tuple[Tensor, Tensor, list[list[float]]]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_layers, d = model.cfg.n_layers, model.cfg.d_model
    weight = torch.nn.Parameter(torch.zeros(n_layers, d, d))
    bias = torch.nn.Parameter(torch.zeros(n_layers, d))
    opt = torch.optim.SGD([weight, bias], lr=spec.lr_scale * (1 - spec.momentum), momentum=spec.momentum,
                          nesterov=True, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1 - step / steps))
    n_tokens = resid.shape[1]
    order = torch.randperm(n_tokens, generator=gen)
    cursor, losses = 0, []
    for _ in tqdm(range(steps), desc="tuned lens", disable=not progress):
        if cursor + spec.tokens_per_step > n_tokens:
            order, cursor = torch.randperm(n_tokens, generator=gen), 0
        idx = order[cursor:cursor + spec.tokens_per_step]
        cursor += spec.tokens_per_step
        columns, offset = _sampled_vocab(top[idx], model.cfg.d_vocab_out, spec.n_sampled, gen)
        with torch.no_grad():
            target = (compat.head_columns(model, resid[-1, idx].float(), columns) + offset).log_softmax(-1)
        step_losses = []
        for layer in range(n_layers):
            h = resid[layer, idx].float()
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as the reference: bf16 logits, no grad scaling
                x = h + torch.nn.functional.linear(h, weight[layer], bias[layer])
                logits = compat.head_columns(model, x, columns)
            loss = _kl(target, logits.float() + offset)
            loss.backward()
            step_losses.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_([weight, bias], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        sched.step()
        losses.append(step_losses)
    return weight.detach(), bias.detach(), losses


def train_tuned_lens(name: str, *, seed: int = 0, steps: int | None = None, n_train: int | None = None,
                     n_heldout: int | None = None, model: Any = None, progress: bool = True
                     ) -> tuple[Translators, dict[str, Any]]:
    """Train tuned lens ``name`` (a key of ``SPECS``) and measure it against the logit lens on held-out text.

    Returns:
        ``(translators, card)``; the card's ``evaluation`` holds the exact held-out KL per layer
        of both lenses.
    """
    from tl_interp import models
    from tl_interp.models.saes.corpus import chunk_tokens, pydoc_text

    spec = SPECS[name]
    steps = spec.steps if steps is None else steps
    n_train = spec.n_train if n_train is None else n_train
    n_heldout = spec.n_heldout if n_heldout is None else n_heldout
    start = time.perf_counter()
    model = models.load(spec.model, device="cpu") if model is None else model
    for p in model.parameters():
        p.requires_grad_(False)
    chunks = chunk_tokens(model.tokenizer, pydoc_text("train"), spec.context_size)
    pick = torch.randperm(chunks.shape[0], generator=torch.Generator().manual_seed(seed))[:n_train].sort().values
    resid = residuals(model, chunks[pick], spec.first_position, dtype=torch.float16, progress=progress)
    top = _top_tokens(model, resid[-1], spec.top_k)
    collected = time.perf_counter() - start

    weight, bias, losses = fit_translators(model, resid, top, spec, steps=steps, seed=seed, progress=progress)
    n_tokens = resid.shape[1]
    trained_seconds = time.perf_counter() - start

    # Stored in float16: measure what is stored.
    dtype = getattr(torch, spec.storage)
    translators = Translators(weight.to(dtype).float(), bias.to(dtype).float(), spec.model)
    held = chunk_tokens(model.tokenizer, pydoc_text("heldout"), spec.context_size)[:n_heldout]
    held_resid = residuals(model, held, spec.first_position, progress=progress)
    logit_kl = heldout_kl(model, None, held_resid)
    tuned_kl = heldout_kl(model, translators, held_resid)
    card = _card(spec, steps=steps, seed=seed, n_train=n_train, n_heldout=n_heldout, n_tokens=n_tokens,
                 held_tokens=held_resid.shape[1], logit_kl=logit_kl, tuned_kl=tuned_kl, losses=losses,
                 seconds={"activation_seconds": collected, "training_seconds": trained_seconds - collected,
                          "evaluation_seconds": time.perf_counter() - start - trained_seconds})
    return Translators(translators.weight, translators.bias, spec.model, card), card


def _card(spec: LensSpec, *, steps: int, seed: int, n_train: int, n_heldout: int, n_tokens: int, held_tokens: int,
          logit_kl: list[float], tuned_kl: list[float], losses: list[list[float]],
          seconds: dict[str, float]) -> dict[str, Any]:
    from tl_interp.models._source import weights_source
    from tl_interp.models.saes import corpus

    first, last = losses[0], losses[-1]
    return {
        "name": spec.name,
        "summary": f"Tuned lens (affine translator per layer, Belrose et al. 2023) for {spec.model}, "
                   f"trained to match the final distribution (KL) at positions {spec.first_position}: of "
                   f"{spec.context_size}-token documentation chunks",
        "model": weights_source(spec.model),
        "reads": "layer l: blocks.l.hook_resid_pre, as h + W_l h + b_l, then the model's final norm and unembedding",
        "storage_dtype": spec.storage,
        "spec": asdict(spec),
        "training_data": {
            "source": "CPython pydoc_data.topics, train documents (tl_interp.models.saes.corpus.pydoc_text('train'))",
            "corpus_sha256": corpus.corpus_sha256(),
            "chunks": n_train,
            "tokens": n_tokens,
            "epochs": round(steps * spec.tokens_per_step / n_tokens, 2),
        },
        "trainer": {
            "reference": "tuned_lens.scripts.train_loop (AlignmentResearch/tuned-lens), loss=kl, optimizer=sgd",
            "init": "W_l = 0, b_l = 0 (identity translator: the logit lens)",
            "optimizer": f"SGD nesterov, lr={sig(spec.lr_scale * (1 - spec.momentum))}, momentum={spec.momentum}, "
                         f"weight_decay={spec.weight_decay}, grad-norm clip 1.0, linear decay to 0, no warm-up",
            "loss": f"KL(final || lens) over a sampled vocabulary: the step's top-{spec.top_k} final tokens plus "
                    f"{spec.n_sampled} uniform samples of the rest (logits offset by log(rest / sample)); bf16 autocast",
            "first_step_loss_per_layer": [sig(v, 4) for v in first],
            "last_step_loss_per_layer": [sig(v, 4) for v in last],
        },
        "evaluation": {
            "data": f"the first {n_heldout} held-out chunks (pydoc_text('heldout')), positions "
                    f"{spec.first_position}:, {held_tokens} tokens; exact full-vocabulary KL, float32, nats",
            "logit_lens_kl": [sig(v, 5) for v in logit_kl],
            "tuned_lens_kl": [sig(v, 5) for v in tuned_kl],
            "tuned_below_logit_at_every_layer": all(t < g for t, g in zip(tuned_kl, logit_kl)),
        },
        "provenance": provenance(spec.name, steps=steps, seed=seed, seconds=seconds),
    }


def write_lens(name: str, translators: Translators, card: dict[str, Any], directory: Path | str | None = None) -> Path:
    """Save ``translators`` and ``card`` to ``DIRECTORY/NAME`` (default the packaged ``models/lenses``)."""
    return translators.save(Path(directory or LENSES_DIR) / name, card)
