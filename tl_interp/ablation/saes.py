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

The edited runs are cells of one engine plan per batch of rows (``engine.executors.Plan``):
the engine runs the clean batch once, caches the residual at the hook, and starts every edited
pass there (``mid_stack``), which equals a full edited forward pass. Batches of rows and
cells per pass follow ``memory_mb`` (the engine's memory model, ``engine.passes``).
"""

from collections.abc import Iterator
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_interp import hooks, metrics
from tl_interp._checks import check_layer, checked
from tl_interp.compat.sae import sae_hook_name
from tl_interp.engine.collect import collect
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.inputs import as_batch, check_tokens
from tl_interp.engine.passes import floats_per_token
from tl_interp.engine.run import EngineOptions
from tl_interp.intervention import Intervention
from tl_interp.models.saes.specs import SAESpec, splice_positions
from tl_interp.sites import site

__all__ = ["splice_positions", "site_activations", "reconstruction_stats", "splice_losses", "measure"]


def rows_per_pass(model: Any, seq: int, memory_mb: float, *, full_logits: bool) -> int:
    """Rows of ``seq`` tokens one forward pass holds within ``memory_mb`` (the engine's model)."""
    return max(1, int(memory_mb * 2**20 // (4 * seq * floats_per_token(model, seq, full_logits))))


def _batches(tokens: Tensor, mask: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for i in range(0, tokens.shape[0], batch_size):
        yield tokens[i : i + batch_size], mask[i : i + batch_size]


@checked
@torch.no_grad()
def site_activations(
    model: Any, layer: int, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], *,
    first_position: int = 1, memory_mb: float = 1024.0,
) -> Float[Tensor, "n d_model"]:
    """The residual stream at ``blocks.{layer}.hook_resid_pre`` of the real tokens from ``first_position`` on.

    Read with ``ti.collect`` (the forward pass stops at ``layer``); rows must be right-padded.

    Args:
        model: a HookedTransformer.
        layer: the block whose input is read.
        tokens, mask: right-padded sequences and their attention mask.
        first_position: skip the positions before it (``SAESpec.first_position``).
        memory_mb: the budget of one forward pass (rows per pass follow the engine's memory model).

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
    check_layer(layer, model.cfg.n_layers, "site_activations")
    check_tokens(model, tokens, "site_activations")  # the one token check (a negative id reads W_E[-1])
    reads = mask.bool().clone()
    reads[:, :first_position] = False
    name = site("resid_pre", layer)
    states = collect(model, tokens, name, positions=reads, attention_mask=mask, progress=False,
                     batch_size=rows_per_pass(model, tokens.shape[1], memory_mb, full_logits=False))
    return states[name][states.mask]


@checked
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


def _loss_metric(kind: Literal["next_token", "answer"], tokens: Tensor, mask: Tensor) -> tuple[float, Any]:
    """The per-prompt loss as ``sign * metric``: mean next-token loss over real tokens, or the
    negative log-probability of the last real token, predicted one position before it."""
    if kind == "next_token":
        return 1.0, metrics.loss(tokens, mask)
    last = mask.sum(-1) - 1
    return -1.0, metrics.answer_logprob(tokens[torch.arange(tokens.shape[0]), last], positions=last - 1)


@checked
@torch.no_grad()
def splice_losses(
    sae: Any,
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    *,
    loss: Literal["next_token", "answer"] = "next_token",
    positions: slice | None = None,
    memory_mb: float = 1024.0,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """CE loss clean, with the SAE spliced in (error dropped), and with the site zero-ablated.

    Args:
        sae: a sae_lens SAE whose ``cfg.metadata.hook_name`` is ``blocks.L.hook_resid_pre``.
        model: the HookedTransformer it reads.
        tokens, mask: right-padded held-out sequences.
        loss: ``"next_token"`` (mean over real tokens) or ``"answer"`` (the last real token).
        positions: where to splice and ablate (default ``splice_positions(sae)``).
        memory_mb: the budget of one forward pass: rows per engine plan (one edited run of
            them per pass) and cells per pass follow the engine's memory model.
        executor: where each batch's edited runs go (default: this process; ``ti.distributed``).

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
    check_tokens(model, tokens, "splice_losses")  # the one token check, before any forward pass
    hook = sae_hook_name(sae)
    positions = splice_positions(sae) if positions is None else positions
    runs: dict[str, Intervention] = {
        "spliced": hooks.sae_splice(sae, keep_error=False, positions=positions),
        "spliced_all_positions": hooks.sae_splice(sae, keep_error=False),
        "zero_ablated": hooks.zero_ablate(hook, positions=positions),
    }
    options = EngineOptions(memory_mb=memory_mb)
    for iv in runs.values():
        iv.validate(model)
    sums = dict.fromkeys(["clean", *runs], 0.0)
    for t, m in _batches(tokens, mask, rows_per_pass(model, tokens.shape[1], memory_mb, full_logits=True)):
        sign, metric = _loss_metric(loss, t, m)
        plan = Plan(model, as_batch(model, t, attention_mask=m), metric, tuple(runs.values()),
                    tuple((key,) for key in runs), (hook,), options, label="SAE splice losses",
                    signature={"study": "sae_splice_losses", "hook": hook, "loss": loss, "positions": str(positions)})
        outcome = execute(plan, executor, progress=False)
        sums["clean"] += sign * float(outcome.base.sum())
        for k, key in enumerate(runs):
            sums[key] += sign * float(outcome.values[k].sum())
    out: dict[str, Any] = {key: value / tokens.shape[0] for key, value in sums.items()}
    out["ce_loss_increase"] = out["spliced"] - out["clean"]
    out["ce_loss_increase_all_positions"] = out["spliced_all_positions"] - out["clean"]
    out["zero_ablation_increase"] = out["zero_ablated"] - out["clean"]
    out["ce_loss_recovered"] = (out["zero_ablated"] - out["spliced"]) / (out["zero_ablated"] - out["clean"])
    return out


def _sig(x: float, digits: int = 5) -> float:
    return float(f"{x:.{digits}g}")


@checked
def measure(sae: Any, model: Any, spec: SAESpec, tokens: Tensor, mask: Tensor, *, memory_mb: float = 1024.0,
            executor: Executor | None = None) -> dict[str, Any]:
    """Every card figure of ``sae`` on the held-out ``tokens`` (see the module docstring).

    Args:
        sae: the SAE.
        model: its model.
        spec: its spec (layer and loss kind).
        tokens, mask: held-out sequences (``heldout_data``).
        memory_mb, executor: as ``splice_losses``.

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
                                                       first_position=spec.first_position, memory_mb=memory_mb))
    losses = splice_losses(sae, model, tokens, mask, loss=spec.loss, positions=spec.positions, memory_mb=memory_mb,
                           executor=executor)
    out: dict[str, Any] = {"n_sequences": int(tokens.shape[0])}
    out.update({k: (v if isinstance(v, int) else _sig(v)) for k, v in stats.items()})
    out.update({f"loss_{k}" if k in ("clean", "spliced", "spliced_all_positions", "zero_ablated") else k: _sig(v)
                for k, v in losses.items()})
    return out
