"""Ablation scans: knock out every unit of a kind, one at a time, and measure the metric.

Units: attention heads (``hook_z`` per head), MLP neurons (``mlp.hook_post`` per neuron),
whole layers (each layer's attention output and MLP output), and token positions (the
residual stream entering a layer, per position). Methods: zero ablation; mean ablation
(the unit's mean over a reference set, pads excluded; Wang et al. 2022); resample ablation
(each prompt gets the unit's value on a reference prompt drawn with a seed; Chan et al.
2022). Ablations of one layer run many per forward pass through the same engine as patching
sweeps; effects come with bootstrap intervals over prompts.
"""

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp import hooks
from tl_interp.engine._grid import make_grid
from tl_interp.engine._stacked import StackedRun, check_metric, d_vocab, metric_name
from tl_interp.ablation._result import AblationResult
from tl_interp.errors import ShapeError
from tl_interp.metrics import Metric
from tl_interp.results import Provenance, prompt_hash
from tl_interp.sites import site as site_name
from tl_interp.stats import bootstrap_mean_ci

__all__ = ["scan"]

Units = Literal["heads", "neurons", "layers", "positions"]
Method = Literal["zero", "mean", "resample"]
# unit kind -> [(site kind, granularity, label of the component)]
_UNITS: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "heads": [("z", ("head",), "")],
    "neurons": [("mlp_post", ("neuron",), "")],
    "layers": [("attn_out", (), "attn"), ("mlp_out", (), "mlp")],
    "positions": [("resid_pre", ("pos",), "")],
}


def _source(method: str, act: Tensor, reference: Tensor | None, ref_mask: Tensor | None, seed: int,
            batch: int, context: str) -> Tensor:
    """What replaces the unit: zeros, the reference mean, or resampled reference rows."""
    if method == "zero":
        return torch.zeros_like(act[:1])
    assert reference is not None  # set by scan()
    if method == "mean":
        if ref_mask is None:
            return reference.mean((0, 1), keepdim=True).expand(1, act.shape[1], *act.shape[2:])
        w = ref_mask.to(reference.dtype).view(*ref_mask.shape, *[1] * (reference.ndim - 2))
        mean = (reference * w).sum((0, 1), keepdim=True) / w.sum((0, 1), keepdim=True)
        return mean.expand(1, act.shape[1], *act.shape[2:])
    if reference.shape[1:] != act.shape[1:]:
        raise ShapeError(f"{context}: resample ablation needs reference prompts of the same token length "
                         f"({act.shape[1]}), got {reference.shape[1]}")
    draw = torch.randint(reference.shape[0], (batch,), generator=torch.Generator().manual_seed(seed))
    return reference[draw]


def scan(model: Any, tokens: Tensor, metric: Metric, *, units: Units = "heads", method: Method = "zero",
         reference: Tensor | None = None, reference_mask: Tensor | None = None, seed: int = 0,
         attention_mask: Tensor | None = None, layers: Sequence[int] | None = None, n_boot: int = 2000,
         memory_mb: float = 1024.0, progress: bool = True) -> AblationResult:
    """Ablate each unit of a kind, one at a time; rank units by the metric's change.

    Args:
        model: HookedTransformer / HookedSAETransformer (fast path) or TransformerBridge.
        tokens: prompts ``(batch, pos)``.
        metric: a ``tl_interp.metrics`` metric (per-prompt values give the intervals).
        units: ``"heads"``, ``"neurons"``, ``"layers"`` (attention and MLP output of each layer)
            or ``"positions"`` (the residual stream entering each layer, per position).
        method: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference: reference token ids for mean/resample ablation (default: ``tokens``).
        reference_mask: attention mask of the reference prompts (pads excluded from means).
        seed: seed of resample draws and of the bootstrap (recorded in provenance).
        attention_mask: mask of ``tokens`` when padded.
        layers: which layers (default all).
        n_boot: bootstrap resamples for the 95% intervals.
        memory_mb: budget for one stacked forward pass.
        progress: show a progress bar.

    Returns:
        An AblationResult: ``values`` (layer, head) / (layer, neuron) / (layer, component) /
        (layer, pos) of mean metric change, with ``ci_low``/``ci_high``; ``ranking()``.

    Example:
        >>> import torch, tl_interp as ti
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8,
        ...                               d_vocab=10, act_fn="relu", d_mlp=32, seed=0)
        >>> tokens = torch.randint(0, 10, (4, 5), generator=torch.Generator().manual_seed(0))
        >>> res = ti.ablation.scan(HookedTransformer(cfg), tokens, ti.metrics.loss(tokens), progress=False)
        >>> res.values.shape
        torch.Size([2, 2])
    """
    if units not in _UNITS:
        raise ValueError(f"units must be one of {', '.join(_UNITS)}, not {units!r}")
    if method not in ("zero", "mean", "resample"):
        raise ValueError(f"method must be 'zero', 'mean' or 'resample', not {method!r}")
    if not isinstance(metric, Metric):
        raise TypeError("ablation scans need a tl_interp.metrics metric (per-prompt values give the intervals)")
    batch, seq = tokens.shape
    if batch < 2:
        raise ShapeError("an ablation scan needs at least 2 prompts for its bootstrap intervals")
    cfg = model.cfg
    check_metric(metric, (batch, seq), d_vocab(model))
    layer_list = list(range(cfg.n_layers)) if layers is None else list(layers)
    parts = _UNITS[units]
    grids = [make_grid(kind, over, seq_len=seq, n_heads=cfg.n_heads, n_kv_heads=cfg.n_heads, batch=batch,
                       d_mlp=getattr(cfg, "d_mlp", None)) for kind, over, _ in parts]
    names = {(kind, layer): site_name(kind, layer) for kind, _, _ in parts for layer in layer_list}
    if method != "zero" and reference is None:
        reference, reference_mask = tokens, attention_mask
    kw = {} if attention_mask is None else {"attention_mask": attention_mask}

    with torch.inference_mode():
        acts = hooks.cache(list(names.values()))
        acts.run(model, tokens, **kw)
        refs = None
        if reference is not None:
            refs = hooks.cache(list(names.values()))
            refs.run(model, reference, **({} if reference_mask is None else {"attention_mask": reference_mask}))
        run = StackedRun(model, metric, tokens, attention_mask, layer_list, memory_mb, sites=list(names.values()))
        total = len(layer_list) * sum(len(g.cells) for g in grids)
        bar = tqdm(total=total, desc=f"ablating {units} ({method})", disable=not progress)
        per_layer = []
        for layer in layer_list:
            columns = []
            for (kind, _, _), grid in zip(parts, grids):
                name = names[(kind, layer)]
                source = _source(method, acts[name], None if refs is None else refs[name], reference_mask, seed,
                                 batch, f"ablation scan at {name}")
                columns.append(run.evaluate(name, kind, layer, source, grid, bar.update))  # (cells, batch)
            per_layer.append(torch.cat(columns))
        bar.close()
    ablated = torch.stack(per_layer).double()  # (layer, unit, batch)
    effect = ablated - run.base_values.double()
    low, high = bootstrap_mean_ci(effect, n_boot=n_boot, seed=seed)
    axis = {"heads": "head", "neurons": "neuron", "layers": "component", "positions": "pos"}[units]
    labels: dict[str, tuple[str, ...]] = {"layer": tuple(f"L{layer}" for layer in layer_list)}
    if units == "heads":
        labels["head"] = tuple(f"H{h}" for h in range(cfg.n_heads))
    elif units == "layers":
        labels["component"] = tuple(label for _, _, label in parts)
    elif units == "positions" and getattr(model, "tokenizer", None) is not None:
        labels["pos"] = tuple(model.to_str_tokens(tokens[0]))
    provenance = Provenance.make(
        getattr(cfg, "model_name", type(model).__name__),
        interventions=[f"{method}-ablate one {units[:-1]} at a time at {', '.join(k for k, _, _ in parts)}"],
        prompt_hash=prompt_hash(tokens, reference if reference is not None else torch.empty(0)), seed=seed,
        settings={"units": units, "method": method, "layers": layer_list, "n_boot": n_boot,
                  "higher_is_better": metric.higher_is_better, "reference": "tokens" if reference is tokens else "given",
                  "fast_path": run.fast, "cells_per_forward": run.cells_per_forward})
    return AblationResult(values=effect.mean(-1).float(), axes=("layer", axis), metric=metric_name(metric),
                          provenance=provenance, labels=labels,
                          extras={"ci_low": low.float(), "ci_high": high.float(),
                                  "ablated": ablated.mean(-1).float(), "base": run.base_values.mean().float()})
