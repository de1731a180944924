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

from tl_interp._checks import checked
from tl_interp import hooks
from tl_interp.engine.executors import Executor, LocalExecutor, Plan, execute
from tl_interp.engine.inputs import Inputs
from tl_interp.engine.run import EngineOptions
from tl_interp.errors import InputError, OptionError, UnsupportedError
from tl_interp.metrics import bind, is_metric
from tl_interp.patching._result import PatchingResult
from tl_interp.patching._sweep import metric_name, plan_sweep, sweep
from tl_interp.sites import d_vocab_out

__all__ = ["attribution"]

def _scalar(metric: Callable[..., Any], logits: Tensor) -> Tensor:
    """The metric's batch mean (what a sweep reports), differentiable."""
    return metric.per_prompt(logits).mean(-1) if is_metric(metric) else metric(logits)


@checked
def attribution(model: Any, clean: Inputs, corrupted: Inputs, metric: Callable[..., Any], *,
                site: str = "resid_pre", over: str | Sequence[str] | None = None,
                direction: Literal["denoise", "noise"] = "denoise", method: Literal["atp", "ig"] = "atp",
                steps: int = 16, layers: Sequence[int] | None = None, attention_mask: Tensor | None = None,
                compare_exact: bool = False, memory_mb: float = 1024.0, executor: Executor | None = None,
                progress: bool = True) -> PatchingResult:
    """Gradient-based estimate of a patching sweep (same sites, granularities and layout).

    Args:
        model, clean, corrupted, metric, site, over, direction, layers, attention_mask: as in
            ``ti.patching.sweep``.
        method: ``"atp"`` (attribution patching: one backward) or ``"ig"`` (integrated
            gradients along the base -> source path, per layer).
        steps: integration points for ``"ig"``.
        compare_exact: also run the exact sweep; its values go to ``extras["exact"]`` and the
            Pearson correlation and max abs error to ``provenance.settings``.
        memory_mb: the budget for one stacked forward pass (of ``"ig"``'s integration points and
            of ``compare_exact``'s sweep; ``"atp"`` is one forward and one backward pass).
        executor: where ``compare_exact``'s sweep and ``"ig"``'s cells run (default: this
            process). Integrated gradients keep the autograd graph through their passes, which
            can't leave this process: another executor is refused for ``"ig"`` before any pass.
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
        raise OptionError(f"method must be 'atp' or 'ig', not {method!r}")
    if isinstance(steps, bool) or steps < 1:
        raise OptionError(f"steps must be at least 1, got {steps}")
    if method == "ig" and executor is not None and not isinstance(executor, LocalExecutor):
        raise UnsupportedError(f"attribution(method='ig'): {type(executor).__name__} can't run integrated gradients: "
                               "their passes keep the autograd graph, which can't cross process boundaries; run them "
                               "here (executor=None), or use method='atp' / ti.patching.sweep(executor=...)")
    options = EngineOptions(memory_mb=memory_mb, grad=True)  # checks memory_mb before any pass
    plan = plan_sweep(model, clean, corrupted, metric, site=site, over=over, direction=direction, layers=layers,
                      attention_mask=attention_mask)
    grid, names = plan.grid, plan.names
    base_metric_fn, source_metric_fn = bind(metric, plan.base), bind(metric, plan.source)
    _check_differentiable(model, base_metric_fn, plan)

    def forward_kw(batch: Any) -> dict[str, Tensor]:
        return {"attention_mask": batch.attention_mask} if batch.padded else {}

    with torch.no_grad():
        source = hooks.cache(names)
        source_value = source_metric_fn(source.run(model, plan.source.tokens, **forward_kw(plan.source))).float()
    base = hooks.cache(names, detach=False)
    with torch.enable_grad():
        base_metric = _scalar(base_metric_fn, base.run(model, plan.base.tokens, **forward_kw(plan.base)))
        grads = torch.autograd.grad(base_metric, [base[n] for n in names]) if method == "atp" else None
    estimates = []
    for i, name in enumerate(tqdm(names, desc=f"{method} {site}", disable=not progress)):
        delta = (source[name] - base[name]).detach()
        if grads is not None:
            grad = grads[i]
        else:
            grad = _ig_grad(model, plan.base, metric, name, base[name].detach(), delta, steps, options, executor)
        estimates.append(grid.sum_to_cells(delta * grad))
    base_value = base_metric.detach().float()
    values = (base_value + torch.stack(estimates)).float().detach().cpu()

    extras = {"base": base_value.cpu(), "source": source_value.cpu()}
    settings: dict[str, Any] = {"method": method, "steps": steps if method == "ig" else 1}
    if compare_exact:
        exact = sweep(model, plan.clean, plan.corrupted, metric, site=site, over=grid.over, direction=direction,
                      layers=plan.layers, memory_mb=memory_mb, executor=executor, progress=progress)
        extras["exact"] = exact.values
        a, b = values.flatten().double(), exact.values.flatten().double()
        settings["pearson_r"] = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if a.numel() > 1 else float("nan")
        settings["max_abs_error"] = float((a - b).abs().max())
    provenance = plan.provenance(model, f"{method} estimate of patching", **settings)
    return PatchingResult(values=values.view(len(plan.layers), *grid.shape), axes=("layer", *grid.over),
                          metric=metric_name(metric), provenance=provenance, labels=plan.labels(), extras=extras)


def _check_differentiable(model: Any, metric: Callable[..., Any], plan: Any) -> None:
    """Gradient methods need a metric autograd can differentiate: check on dummy logits."""
    dummy = torch.randn(*plan.base.shape, d_vocab_out(model), requires_grad=True)
    with torch.enable_grad():
        out = _scalar(metric, dummy)
    if not isinstance(out, Tensor) or not out.requires_grad:
        raise InputError("attribution needs a metric autograd can differentiate (e.g. logit_diff, answer_logprob); "
                         "this one returns a value without a gradient (accuracy and argmax-based metrics are "
                         "piecewise constant): use ti.patching.sweep for exact patching instead")


def _ig_grad(model: Any, batch: Any, metric: Callable[..., Any], name: str, base_act: Tensor, delta: Tensor,
             steps: int, options: EngineOptions, executor: Executor | None) -> Tensor:
    """Mean gradient of the metric along base -> base + delta at one site (midpoint rule): each
    integration point is a cell patching the site with that point, one plan for the engine."""
    alphas = (torch.arange(steps, dtype=base_act.dtype, device=base_act.device) + 0.5) / steps
    path = (base_act.unsqueeze(0) + alphas.view(steps, *[1] * base_act.ndim) * delta.unsqueeze(0))
    path = path.detach().requires_grad_(True)
    cells = tuple(hooks.patch(name, path[s]) for s in range(steps))
    work = Plan(model, batch, metric, cells, tuple((s,) for s in range(steps)), (name,), options,
                label=f"integrated gradients at {name}", signature={"study": "ig", "site": name, "steps": steps})
    values = execute(work, executor, progress=False).values  # (steps, batch) per prompt, or (steps,)
    total = values.mean(-1).sum() if values.ndim == 2 else values.sum()
    (grad,) = torch.autograd.grad(total, [path])
    return grad.mean(0)
