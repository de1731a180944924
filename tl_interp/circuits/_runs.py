"""What every edge study fixes before its first forward pass, and the senders' values it reads.

``prepare`` checks everything (the architecture, both batches, the metric, the ablation) and
returns the graph; ``sender_values`` reads every sender's output on a batch as one
``(batch, pos, n_senders, d_model)`` tensor; ``ablated_values`` gives the values edges carry
when ablated: the corrupted run's, their mean over the corrupted prompts (each prompt's mean
over its real tokens, then the mean over prompts, as the reference's
``compute_mean_activations``), or zero.
"""

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from tl_interp import hooks
from tl_interp.circuits._edit import sender_hooks
from tl_interp.circuits._graph import Graph, graph
from tl_interp.engine.inputs import Inputs, paired_batches
from tl_interp.engine.run import check_metric
from tl_interp.errors import InputError, OptionError
from tl_interp.metrics import bind, is_metric
from tl_interp.models._adapter import Tokenized
from tl_interp.sites import d_vocab_out

__all__ = ["ABLATIONS", "prepare", "sender_values", "sender_names", "senders_from", "ablated_values", "forward_kw",
           "no_head_results", "run_values"]

ABLATIONS = ("corrupted", "mean", "zero")


def prepare(model: Any, clean: Inputs, corrupted: Inputs, metric: Callable[..., Any], ablation: str,
            *, differentiable: bool) -> tuple[Graph, Tokenized, Tokenized]:
    """Every check of an edge study, before any forward pass: (graph, clean batch, corrupted batch)."""
    if ablation not in ABLATIONS:
        raise OptionError(f"ablation must be one of {ABLATIONS}, not {ablation!r}")
    g = graph(model)
    if ablation == "mean":  # the mean is over the corrupted prompts, which need not align with the clean ones
        from tl_interp.engine.inputs import as_batch

        clean_b = as_batch(model, clean, role="clean")
        corrupt_b = as_batch(model, corrupted, role="corrupted")
    else:
        clean_b, corrupt_b = paired_batches(model, clean, corrupted)
    if not is_metric(metric) or isinstance(metric, dict):
        raise InputError("edge studies need a tl_interp.metrics metric (per-prompt values, e.g. "
                         "ti.metrics.logit_diff(correct, incorrect)); a plain logits -> scalar function gives no "
                         "per-prompt values for intervals")
    bound = check_metric(model, metric, clean_b)
    if type(bound).__name__ == "MetricSet":
        raise InputError("edge studies take one metric, not a MetricSet")
    if differentiable:
        dummy = torch.randn(*clean_b.shape, d_vocab_out(model), requires_grad=True)
        with torch.enable_grad():
            out = bound.per_prompt(dummy)
        if not out.requires_grad:
            raise InputError(f"gradient methods need a metric autograd can differentiate; {bound.name!r} is "
                             "piecewise constant (accuracy, argmax): use method='exact' or a logit / probability "
                             "metric")
    return g, clean_b, corrupt_b


def forward_kw(batch: Tokenized) -> dict[str, Tensor]:
    return {"attention_mask": batch.attention_mask} if batch.padded else {}


def sender_values(model: Any, g: Graph, batch: Tokenized, also: dict[str, Tensor] | None = None
                  ) -> tuple[Tensor, Tensor]:
    """Every sender's output on ``batch`` (``(batch, pos, n_senders, d_model)``, zero on padding)
    and the run's logits, from a plain forward pass: a head's output is read as ``z @ W_O[h]``
    from ``attn.hook_z`` (TL's per-head results, ``use_attn_result``, materialise a (batch, pos,
    head, d_head, d_model) product in every layer). ``also``: hook names whose activations the
    same pass fills in."""
    cache = hooks.cache(list(dict.fromkeys(sender_names(g) + list(also or {}))))
    with torch.no_grad(), no_head_results(model):
        logits = cache.run(model, batch.tokens, **forward_kw(batch))
    for name in also or {}:
        also[name] = cache[name]  # type: ignore[index]
    return senders_from(model, g, cache, batch), logits


def sender_names(g: Graph) -> list[str]:
    """The hook names ``senders_from`` reads (heads at ``attn.hook_z``)."""
    return [name.replace("hook_result", "hook_z") for name, _ in sender_hooks(g)]


def senders_from(model: Any, g: Graph, acts: Mapping[str, Tensor], batch: Tokenized) -> Tensor:
    """``sender_values`` from a run's activations at ``sender_names(g)`` on ``batch``."""
    rows, pos = batch.shape
    parts = []
    for name, n in sender_hooks(g):
        if name.endswith("attn.hook_result"):
            w_o = model.blocks[int(name.split(".")[1])].attn.W_O.detach()
            z = acts[name.replace("hook_result", "hook_z")]
            parts.append(torch.einsum("bphe,hed->bphd", z, w_o.to(z.dtype)))
        else:
            parts.append(acts[name].reshape(rows, pos, n, -1))
    real = batch.attention_mask.to(parts[0].device).bool()[:, :, None, None]
    return torch.cat(parts, 2) * real


def ablated_values(model: Any, g: Graph, ablation: str, clean: Tokenized, corrupted: Tokenized,
                   clean_values: Tensor, corrupted_values: Tensor | None = None) -> Tensor:
    """The values ablated edges carry, shaped like ``clean_values`` (zero on padding);
    ``corrupted_values``: ``sender_values`` of the corrupted batch, when already read."""
    real = clean.attention_mask.to(clean_values.device).bool()[:, :, None, None]
    if ablation == "zero":
        return torch.zeros_like(clean_values)
    values = sender_values(model, g, corrupted)[0] if corrupted_values is None else corrupted_values
    if ablation == "corrupted":
        return values
    mask = corrupted.attention_mask.to(values.device)[:, :, None, None].to(values.dtype)
    per_prompt = (values * mask).sum(1) / mask.sum(1)  # (prompt, sender, d_model)
    return per_prompt.mean(0)[None, None].expand_as(clean_values) * real


def run_values(model: Any, metric: Any, ablation: str, clean: Tokenized, corrupted: Tokenized, clean_logits: Tensor,
               corrupted_logits: Tensor | None) -> tuple[Tensor, Tensor]:
    """The clean and corrupted runs' per-prompt metric (the corrupted run made here for zero
    ablation, which read no corrupted senders; NaN for mean ablation, whose prompts need not align)."""
    with torch.no_grad(), no_head_results(model):
        clean_value = bind(metric, clean).per_prompt(clean_logits).float()
        if corrupted_logits is None and ablation == "zero":
            corrupted_logits = model(corrupted.tokens, **forward_kw(corrupted))
        corrupt_value = (bind(metric, corrupted).per_prompt(corrupted_logits).float() if corrupted_logits is not None
                         else torch.full_like(clean_value, float("nan")))
    return clean_value, corrupt_value


@contextlib.contextmanager
def no_head_results(model: Any) -> Iterator[None]:
    """TL's per-head results off while a study's passes run (restored after): its cells read heads
    from ``hook_z`` or not at all, and ``use_attn_result`` would materialise a (batch, pos, head,
    d_head, d_model) product in every layer of every pass."""
    saved = model.cfg.use_attn_result
    model.cfg.use_attn_result = False
    try:
        yield
    finally:
        model.cfg.use_attn_result = saved
