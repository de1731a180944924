"""Gradient estimates of activation patching: attribution patching and integrated gradients.

Attribution patching (Nanda 2023; Syed et al. 2023, "Attribution Patching Outperforms
Automated Circuit Discovery") estimates the effect of patching an activation a from the
base run to the source run by the first-order Taylor term (a_source - a_base) . dM/da at
a_base: one source forward, one base forward, one backward for every cell of every layer.
Integrated gradients (Sundararajan et al. 2017) averages dM/da along the straight path from
a_base to a_source (midpoint rule, ``steps`` points, stacked along the batch), one layer at
a time; summed over a layer's cells it approximates patching the whole layer.
Values are reported like a sweep's: ``base + estimated change`` per cell.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp import hooks
from tl_interp.engine._grid import SWEEP_SITES
from tl_interp.engine._stacked import metric_name
from tl_interp.patching._result import PatchingResult
from tl_interp.patching._sweep import plan_sweep, sweep
from tl_interp.intervention import Intervention
from tl_interp.metrics import Metric
from tl_interp.sites import site as site_name

__all__ = ["attribution"]

_ACT_AXES = {"pos": "pos", "dest_pos": "dest_pos", "head": "head", "neuron": "d"}


def _to_cells(contrib: Tensor, kind: str, over: tuple[str, ...]) -> Tensor:
    """Sum per-entry contributions (batch, *act) over everything but the grid's axes."""
    act_axes = SWEEP_SITES[kind][0]
    keep = [1 + act_axes.index(_ACT_AXES[a]) for a in over]
    drop = [d for d in range(contrib.ndim) if d not in keep]
    return contrib.sum(drop) if drop else contrib


def _scalar(metric: Callable[[Tensor], Tensor], logits: Tensor, groups: int, batch: int) -> Tensor:
    """Sum over ``groups`` stacked copies of the metric's batch mean (for one backward)."""
    if isinstance(metric, Metric):
        return metric.per_prompt(logits.reshape(groups, batch, *logits.shape[-2:])).mean(-1).sum()
    return sum(metric(logits[g * batch:(g + 1) * batch]) for g in range(groups))


def attribution(model: Any, clean: Tensor | Sequence[str], corrupted: Tensor | Sequence[str],
                metric: Callable[[Tensor], Tensor], *, site: str = "resid_pre", over: Sequence[str] | None = None,
                direction: Literal["denoise", "noise"] = "denoise", method: Literal["atp", "ig"] = "atp",
                steps: int = 16, layers: Sequence[int] | None = None, attention_mask: Tensor | None = None,
                compare_exact: bool = False, progress: bool = True) -> PatchingResult:
    """Gradient-based estimate of a patching sweep (same sites, granularities and layout).

    Args:
        model, clean, corrupted, metric, site, over, direction, layers, attention_mask: as in
            ``ti.patching.sweep``.
        method: ``"atp"`` (attribution patching: one backward) or ``"ig"`` (integrated
            gradients along the base -> source path, per layer).
        steps: integration points for ``"ig"``.
        compare_exact: also run the exact sweep; its values go to ``extras["exact"]`` and the
            Pearson correlation and max abs error to ``provenance.settings``.
        progress: show a progress bar.

    Returns:
        A PatchingResult whose values are ``base + estimated change`` per cell.

    Example:
        >>> import torch, tl_interp as ti
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8,
        ...                               d_vocab=10, act_fn="relu", d_mlp=32, seed=0)
        >>> model = HookedTransformer(cfg)
        >>> clean, corrupt = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 5, 4]])
        >>> est = ti.patching.attribution(model, clean, corrupt, ti.metrics.logit_diff(3, 5), progress=False)
        >>> est.values.shape
        torch.Size([2, 4])
    """
    if method not in ("atp", "ig"):
        raise ValueError(f"method must be 'atp' or 'ig', not {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    plan = plan_sweep(model, clean, corrupted, metric, site=site, over=over, direction=direction, layers=layers,
                      attention_mask=attention_mask)
    grid, names, kw, base_t, attn_mask = plan.grid, plan.names, plan.forward_kw, plan.base, plan.attention_mask

    with torch.no_grad():
        source = hooks.cache(names)
        source_value = metric(source.run(model, plan.source, **kw)).float()
    base = hooks.cache(names, detach=False)
    with torch.enable_grad():
        base_metric = metric(base.run(model, base_t, **kw))
        if method == "atp":
            grads = torch.autograd.grad(base_metric, [base[n] for n in names])
    estimates = []
    bar = tqdm(total=len(names), desc=f"{method} {site}", disable=not progress)
    for i, name in enumerate(names):
        delta = (source[name] - base[name]).detach()
        grad = grads[i] if method == "atp" else _ig_grad(model, metric, name, site, plan.layers[i], base[name].detach(),
                                                        delta, steps, base_t, attn_mask)
        estimates.append(_to_cells(delta * grad, site, grid.over))
        bar.update(1)
    bar.close()
    base_value = base_metric.detach().float()
    values = (base_value + torch.stack(estimates)).float().detach().cpu()

    extras = {"base": base_value.cpu(), "source": source_value.cpu()}
    settings: dict[str, Any] = {"method": method, "steps": steps if method == "ig" else 1}
    if compare_exact:
        exact = sweep(model, plan.clean, plan.corrupted, metric, site=site, over=grid.over, direction=direction,
                      layers=plan.layers, attention_mask=attn_mask, progress=progress)
        extras["exact"] = exact.values
        a, b = values.flatten().double(), exact.values.flatten().double()
        settings["pearson_r"] = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if a.numel() > 1 else float("nan")
        settings["max_abs_error"] = float((a - b).abs().max())
    provenance = plan.provenance(model, f"{method} estimate of patching", **settings)
    return PatchingResult(values=values.view(len(plan.layers), *grid.shape), axes=("layer", *grid.over),
                          metric=metric_name(metric), provenance=provenance, labels=plan.labels(), extras=extras)


def _ig_grad(model: Any, metric: Callable[[Tensor], Tensor], name: str, kind: str, layer: int, base_act: Tensor,
             delta: Tensor, steps: int, base_t: Tensor, attn_mask: Tensor | None) -> Tensor:
    """Mean gradient along base -> base + delta at one site (midpoint rule), steps stacked."""
    from tl_interp.engine._stacked import starts_mid_stack

    batch = base_t.shape[0]
    alphas = (torch.arange(steps, dtype=base_act.dtype, device=base_act.device) + 0.5) / steps
    shape = (steps, *[1] * base_act.ndim)
    path = (base_act.unsqueeze(0) + alphas.view(shape) * delta.unsqueeze(0)).reshape(steps * batch, *base_act.shape[1:])
    path = path.detach().requires_grad_(True)
    rep_mask = None if attn_mask is None else attn_mask.repeat(steps, 1)
    with torch.enable_grad():
        if starts_mid_stack(model):
            if kind == "resid_pre":
                start, iv = path, Intervention.identity()
            else:
                with torch.no_grad():
                    start = hooks.cache(site_name("resid_pre", layer)).collect(
                        model, base_t, **({} if attn_mask is None else {"attention_mask": attn_mask})
                    )[site_name("resid_pre", layer)].repeat(steps, 1, 1)
                iv = hooks.patch(name, path)
            if attn_mask is None:
                rep_mask = model.input_to_embed(base_t)[3]
                rep_mask = None if rep_mask is None else rep_mask.repeat(steps, 1)
            logits = iv.run(model, start, start_at_layer=layer, attention_mask=rep_mask)
        else:
            kw = {} if rep_mask is None else {"attention_mask": rep_mask}
            logits = hooks.patch(name, path).run(model, base_t.repeat(steps, 1), **kw)
        total = _scalar(metric, logits, steps, batch)
        (grad,) = torch.autograd.grad(total, [path])
    return grad.view(steps, batch, *base_act.shape[1:]).mean(0)
