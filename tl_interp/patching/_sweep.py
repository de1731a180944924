"""Exact activation patching over layers x positions / heads / neurons, on the one engine.

Denoising patches activations of the clean run into the corrupted run; noising patches the
corrupted run's into the clean run (Heimersheim & Nanda 2024). Every cell is the hook
``hooks.patch(site, source_activation, positions=p | heads=h | neurons=n)``, so a cell's
value is, by construction, what that patch gives applied by hand; the engine
(``tl_interp.engine``) runs many cells per forward pass from the cheapest exact starting
point. The values equal TransformerLens's ``get_act_patch_*`` for the same inputs.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp import hooks
from tl_interp.engine._grid import Grid, check_layers, model_grid
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.inputs import Inputs, paired_batches
from tl_interp.engine.run import EngineOptions, check_metric, forward_layout
from tl_interp.errors import InputError, OptionError
from tl_interp.metrics import bind, is_metric
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.patching._result import PatchingResult
from tl_interp.results import Provenance, prompt_hash
from tl_interp.sites import resolve
from tl_interp.sites import site as site_name

__all__ = ["sweep", "plan_sweep", "SweepPlan", "metric_name"]

Direction = Literal["denoise", "noise"]


def metric_name(metric: Callable[..., Any]) -> str:
    """A label for a metric (its ``name``, else the function's name)."""
    return str(getattr(metric, "name", None) or getattr(metric, "__name__", "metric"))


@dataclass(frozen=True)
class SweepPlan:
    """Everything a patching study fixes before its first forward pass (shared by sweep and
    attribution): both runs, which is patched into which, the grid, the layers."""

    clean: Tokenized
    corrupted: Tokenized
    site: str
    direction: str
    grid: Grid
    layers: list[int]
    names: list[str]

    @property
    def base(self) -> Tokenized:
        """The run being patched into."""
        return self.corrupted if self.direction == "denoise" else self.clean

    @property
    def source(self) -> Tokenized:
        """The run patched from."""
        return self.clean if self.direction == "denoise" else self.corrupted

    def labels(self) -> dict[str, tuple[str, ...]]:
        labels = {"layer": tuple(f"L{layer}" for layer in self.layers)}
        tokens = tuple(self.base.str_tokens[0])
        for axis in ("pos", "dest_pos"):
            if axis in self.grid.over:
                labels[axis] = tokens
        if "head_index" in self.grid.over:
            labels["head_index"] = tuple(f"H{h}" for h in range(self.grid.sizes["head_index"]))
        return labels

    def provenance(self, model: Any, what: str, **settings: Any) -> Provenance:
        arrow = "clean -> corrupted" if self.direction == "denoise" else "corrupted -> clean"
        cells = " x ".join(("layer",) + self.grid.over)
        return Provenance.make(
            adapt(model).model_id, interventions=[f"{what} {arrow} at {self.site} per {cells} cell"],
            prompt_hash=prompt_hash(self.clean.tokens, self.corrupted.tokens),
            settings={"site": self.site, "over": list(self.grid.over), "direction": self.direction,
                      "layers": self.layers, **settings})


def plan_sweep(model: Any, clean: Inputs, corrupted: Inputs, metric: Callable[..., Any], *, site: str,
               over: str | Sequence[str] | None, direction: str, layers: Sequence[int] | None,
               attention_mask: Tensor | None) -> SweepPlan:
    """Check every input of a patching study and fix its plan: no forward pass runs here."""
    if direction not in ("denoise", "noise"):
        raise OptionError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    clean_b, corrupt_b = paired_batches(model, clean, corrupted, attention_mask)
    check_metric(model, metric, clean_b)
    grid = model_grid(model, site, over, clean_b.shape[1])
    layer_list = check_layers(model, layers)
    names = [site_name(site, layer) for layer in layer_list]
    hooks.cache(names).validate(model)  # names exist and fire on this model
    resolve(model, names, context=f"patching {site}")
    return SweepPlan(clean_b, corrupt_b, site, direction, grid, layer_list, names)


@checked
def sweep(model: Any, clean: Inputs, corrupted: Inputs, metric: Callable[..., Any], *,
          site: str = "resid_pre", over: str | Sequence[str] | None = None, direction: Direction = "denoise",
          layers: Sequence[int] | None = None, attention_mask: Tensor | None = None, memory_mb: float = 1024.0,
          fast_paths: bool = True, skip_unchanged: bool = True, executor: Executor | None = None,
          progress: bool = True) -> PatchingResult:
    """Exact activation patching of one site kind over layers and positions / heads / neurons.

    Args:
        model: HookedTransformer / HookedSAETransformer (fast paths), or TransformerBridge.
        clean, corrupted: inputs of equal token shape (strings, token tensors, or Tokenized);
            padded rows must be padded alike.
        metric: a ``tl_interp.metrics`` metric (it reads each prompt's last real token) or any
            ``logits (batch, pos, d_vocab) -> scalar`` function, exactly as TransformerLens's
            patching functions take it (plain functions refuse padded inputs).
        site: the site kind patched at every layer: ``resid_pre``/``resid_mid``/``resid_post``/
            ``attn_out``/``mlp_out``, ``mlp_pre``/``mlp_post``, ``z``/``q``/``k``/``v``/``result``
            (heads; k/v count key-value heads), ``pattern``.
        over: the result axes after ``layer``: ``"pos"`` (default for residual-like sites) or
            ``()``; ``"head_index"`` (default for heads) or ``("pos", "head_index")``;
            ``"d_mlp"`` (default for MLP activations), ``"pos"`` or ``()``; for patterns
            ``"head_index"`` or ``("head_index", "dest_pos")``. Same layouts as TransformerLens.
        direction: ``"denoise"`` (clean into corrupted) or ``"noise"`` (corrupted into clean).
        layers: which layers (default all).
        attention_mask: for padded token tensors (strings and Tokenized bring their own).
        memory_mb: the budget for one stacked forward pass.
        fast_paths, skip_unchanged: engine options (results are exact either way).
        executor: where the cells run (default: this process; ``ti.distributed``).
        progress: show a progress bar.

    Returns:
        A PatchingResult with ``values`` of shape ``(layer, *over)``, the two baselines and
        ``normalized`` (fraction of the way from the base run to the source run).

    Example:
        >>> import torch, tl_interp as ti
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8,
        ...                               d_vocab=10, act_fn="relu", d_mlp=32, seed=0)
        >>> model = HookedTransformer(cfg)
        >>> clean, corrupt = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 5, 4]])
        >>> res = ti.patching.sweep(model, clean, corrupt, ti.metrics.logit_diff(3, 5), progress=False)
        >>> res.values.shape
        torch.Size([2, 4])
    """
    plan = plan_sweep(model, clean, corrupted, metric, site=site, over=over, direction=direction, layers=layers,
                      attention_mask=attention_mask)
    options = EngineOptions(memory_mb=memory_mb, fast_paths=fast_paths, skip_unchanged=skip_unchanged)
    grid = plan.grid
    with forward_layout(model, options):  # TL's weights re-laid out once for the source run and the engine's
        with torch.no_grad():
            source_cache = hooks.cache(plan.names)
            kw = {"attention_mask": plan.source.attention_mask} if plan.source.padded else {}
            source_logits = source_cache.run(model, plan.source.tokens, **kw)
        source_value = bind(metric, plan.source)(source_logits).float()
        cells, keys = [], []
        for layer, name in zip(plan.layers, plan.names):
            for cell in grid.cells:
                cells.append(hooks.patch(name, source_cache[name], **grid.selection(cell)))
                keys.append((layer, *cell))
        work = Plan(model, plan.base, metric, tuple(cells), tuple(keys), tuple(plan.names), options,
                    label=f"patching {site}",
                    signature={"study": "patching", "site": site, "over": list(grid.over), "direction": direction,
                               "source": prompt_hash(plan.source.tokens)})
        outcome = execute(work, executor, progress=progress)
    values, base_value = outcome.values, outcome.base
    if isinstance(values, dict):
        raise InputError("patching sweeps take one metric, not a MetricSet")
    if is_metric(metric):  # (cell, batch) per-prompt values -> the metric's mean over prompts
        values, base_value = values.float().mean(-1), base_value.float().mean(-1)
    provenance = plan.provenance(model, "patch", engine=outcome.paths, **outcome.stats)
    extras = {"base": base_value.float().cpu(), "source": source_value.detach().cpu()}
    return PatchingResult(values=values.float().reshape(len(plan.layers), *grid.shape).cpu(),
                          axes=("layer", *grid.over), metric=metric_name(metric), provenance=provenance,
                          labels=plan.labels(), extras=extras)
