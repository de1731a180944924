"""The quality figures of an SAE on held-out text: reconstruction, sparsity, and downstream loss.

- explained variance: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over held-out
  tokens (sae-lens's ``metrics/explained_variance``).
- L0: mean number of non-zero features per token; dead fraction: share of features that
  never fire on any held-out token.
- CE loss: the model's loss clean, with the SAE spliced in (``hooks.sae_splice(sae,
  keep_error=False)``, the model runs on the reconstruction) and with the site zero-ablated
  (``hooks.zero_ablate``), all at the SAE's positions (``splice_positions``: its
  ``cfg.metadata.seqpos_slice``, which skips the attention sink / BOS); also spliced at every
  position. ``ce_loss_recovered`` is ``(zero - spliced) / (zero - clean)``, 1 for a perfect SAE.

Only the layers from the hook's on are recomputed for the edited runs: the clean run caches
the residual at the hook, and the edited runs start there (``start_at_layer``); the hook
fires on that input, so this equals a full edited forward pass.
"""

from collections.abc import Iterator
from typing import Any, Literal

import torch
from beartype import beartype
from jaxtyping import Float, Int, jaxtyped
from torch import Tensor

from tl_interp import hooks, metrics
from tl_interp.compat.sae import sae_hook_name
from tl_interp.intervention import Intervention
from tl_interp.models.saes.specs import SAESpec, splice_positions

__all__ = ["splice_positions", "site_activations", "reconstruction_stats", "splice_losses", "measure"]

_TOKENS_PER_BATCH = 4096
_LOGITS_PER_BATCH = 2**28  # 1 GiB of float32 logits: Gemma's 262k vocabulary caps a batch at 1024 tokens


def _rows(tokens: Tensor, d_vocab: int = 0) -> int:
    per_batch = min(_TOKENS_PER_BATCH, _LOGITS_PER_BATCH // d_vocab) if d_vocab else _TOKENS_PER_BATCH
    return max(1, per_batch // tokens.shape[1])


def _batches(tokens: Tensor, mask: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for i in range(0, tokens.shape[0], batch_size):
        yield tokens[i : i + batch_size], mask[i : i + batch_size]


@jaxtyped(typechecker=beartype)
@torch.no_grad()
def site_activations(
    model: Any, layer: int, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], *,
    first_position: int = 1, batch_size: int | None = None,
) -> Float[Tensor, "n d_model"]:
    """The residual stream at ``blocks.{layer}.hook_resid_pre`` of the real tokens from ``first_position`` on.

    Runs only the first ``layer`` blocks (``stop_at_layer``); rows must be right-padded.

    Args:
        model: a HookedTransformer.
        layer: the block whose input is read.
        tokens, mask: right-padded sequences and their attention mask.
        first_position: skip the positions before it (``SAESpec.first_position``).
        batch_size: rows per forward pass (default: ~4096 tokens' worth).

    Returns:
        ``(n, d_model)``: the activations where ``mask`` is 1, row by row.

    Example:
        >>> from tl_interp.models.zoo import load
        >>> from tl_interp.models.saes.corpus import ordinal_heldout
        >>> model = load("ordinal-4l")
        >>> tokens, mask = ordinal_heldout(model.tokenizer)
        >>> site_activations(model, 2, tokens, mask).shape[0] == int(mask[:, 1:].sum())
        True
    """
    from tl_interp.engine.inputs import check_tokens

    check_tokens(model, tokens, "site_activations")  # the one token check (a negative id reads W_E[-1])
    out = []
    for t, m in _batches(tokens, mask, batch_size or _rows(tokens)):
        resid = model(t, stop_at_layer=layer)
        out.append(resid[:, first_position:][m[:, first_position:].bool()].float())
    return torch.cat(out)


@jaxtyped(typechecker=beartype)
@torch.no_grad()
def reconstruction_stats(sae: Any, acts: Float[Tensor, "n d_in"], *, batch_size: int = 4096) -> dict[str, float]:
    """Explained variance, L0 and dead-feature fraction of ``sae`` on activations ``acts``.

    Args:
        sae: a sae_lens SAE.
        acts: held-out activations, one row per token.
        batch_size: rows encoded at once.

    Returns:
        ``{"explained_variance", "l0", "dead_fraction", "mse", "n_tokens"}``.

    Example:
        >>> from sae_lens import TopKSAE, TopKSAEConfig
        >>> stats = reconstruction_stats(TopKSAE(TopKSAEConfig(d_in=8, d_sae=32, k=4)), torch.randn(100, 8))
        >>> stats["l0"] <= 4
        True
    """
    sq_err, fired, active = 0.0, torch.zeros(sae.cfg.d_sae, dtype=torch.long), 0
    for chunk in acts.split(batch_size):
        features = sae.encode(chunk)
        recon = sae.decode(features)
        sq_err += float((recon.double() - chunk.double()).pow(2).sum())
        nonzero = features != 0
        fired += nonzero.sum(0)
        active += int(nonzero.sum())
    total_var = float((acts.double() - acts.double().mean(0)).pow(2).sum())
    n = acts.shape[0]
    return {
        "explained_variance": 1.0 - sq_err / total_var,
        "l0": active / n,
        "dead_fraction": float((fired == 0).float().mean()),
        "mse": sq_err / (n * acts.shape[1]),
        "n_tokens": n,
    }


def _per_prompt_loss(kind: Literal["next_token", "answer"], logits: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
    if kind == "next_token":
        return metrics.loss(tokens, mask).per_prompt(logits)
    last = mask.sum(-1) - 1  # the answer is the last real token, predicted one position before
    answers = tokens[torch.arange(tokens.shape[0]), last]
    return -metrics.answer_logprob(answers, positions=last - 1).per_prompt(logits)


@jaxtyped(typechecker=beartype)
@torch.no_grad()
def splice_losses(
    sae: Any,
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    *,
    loss: Literal["next_token", "answer"] = "next_token",
    positions: slice | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """CE loss clean, with the SAE spliced in (error dropped), and with the site zero-ablated.

    Args:
        sae: a sae_lens SAE whose ``cfg.metadata.hook_name`` is ``blocks.L.hook_resid_pre``.
        model: the HookedTransformer it reads.
        tokens, mask: right-padded held-out sequences.
        loss: ``"next_token"`` (mean over real tokens) or ``"answer"`` (the last real token).
        positions: where to splice and ablate (default ``splice_positions(sae)``).
        batch_size: rows per forward pass (default: ~4096 tokens' worth, fewer for a large
            vocabulary so the logits stay under 1 GiB).

    Returns:
        ``{"clean", "spliced", "spliced_all_positions", "zero_ablated"}`` mean losses (nats)
        and the derived ``ce_loss_increase``, ``ce_loss_increase_all_positions``,
        ``zero_ablation_increase``, ``ce_loss_recovered``.

    Example:
        >>> from tl_interp.models.saes import load_sae
        >>> from tl_interp.models.zoo import load
        >>> from tl_interp.models.saes.corpus import ordinal_heldout
        >>> model = load("ordinal-4l")
        >>> out = splice_losses(load_sae("ordinal-4l-res-l2"), model, *ordinal_heldout(model.tokenizer, 200), loss="answer")
        >>> out["clean"] <= out["spliced"] < out["zero_ablated"]
        True
    """
    from tl_interp.engine.inputs import check_tokens

    check_tokens(model, tokens, "splice_losses")  # the one token check, before any forward pass
    hook = sae_hook_name(sae)
    layer = int(hook.split(".")[1])
    positions = splice_positions(sae) if positions is None else positions
    runs: dict[str, Intervention] = {
        "spliced": hooks.sae_splice(sae, keep_error=False, positions=positions),
        "spliced_all_positions": hooks.sae_splice(sae, keep_error=False),
        "zero_ablated": hooks.zero_ablate(hook, positions=positions),
    }
    sums = dict.fromkeys(["clean", *runs], 0.0)
    for t, m in _batches(tokens, mask, batch_size or _rows(tokens, model.cfg.d_vocab)):
        capture = hooks.cache(hook)
        sums["clean"] += float(_per_prompt_loss(loss, capture.run(model, t), t, m).sum())
        resid = capture[hook]
        for key, iv in runs.items():
            logits = iv.run(model, resid, start_at_layer=layer)
            sums[key] += float(_per_prompt_loss(loss, logits, t, m).sum())
    out: dict[str, Any] = {key: value / tokens.shape[0] for key, value in sums.items()}
    out["ce_loss_increase"] = out["spliced"] - out["clean"]
    out["ce_loss_increase_all_positions"] = out["spliced_all_positions"] - out["clean"]
    out["zero_ablation_increase"] = out["zero_ablated"] - out["clean"]
    out["ce_loss_recovered"] = (out["zero_ablated"] - out["spliced"]) / (out["zero_ablated"] - out["clean"])
    return out


def _sig(x: float, digits: int = 5) -> float:
    return float(f"{x:.{digits}g}")


@beartype
def measure(sae: Any, model: Any, spec: SAESpec, tokens: Tensor, mask: Tensor) -> dict[str, Any]:
    """Every card figure of ``sae`` on the held-out ``tokens`` (see the module docstring).

    Args:
        sae: the SAE.
        model: its model.
        spec: its spec (layer and loss kind).
        tokens, mask: held-out sequences (``heldout_data``).

    Returns:
        The figures, rounded to 5 significant digits, with ``n_sequences`` and ``n_tokens``.

    Example:
        >>> from tl_interp.models.saes import load_sae, SPECS
        >>> from tl_interp.models.saes.corpus import heldout_data
        >>> from tl_interp.models.zoo import load
        >>> model = load("ordinal-4l")
        >>> spec = SPECS["ordinal-4l-res-l2"]
        >>> figures = measure(load_sae(spec.name), model, spec, *heldout_data(spec, model, n=200))
        >>> figures["explained_variance"] > 0.9
        True
    """
    stats = reconstruction_stats(sae, site_activations(model, spec.layer, tokens, mask,
                                                       first_position=spec.first_position))
    losses = splice_losses(sae, model, tokens, mask, loss=spec.loss, positions=spec.positions)
    out: dict[str, Any] = {"n_sequences": int(tokens.shape[0])}
    out.update({k: (v if isinstance(v, int) else _sig(v)) for k, v in stats.items()})
    out.update({f"loss_{k}" if k in ("clean", "spliced", "spliced_all_positions", "zero_ablated") else k: _sig(v)
                for k, v in losses.items()})
    return out
