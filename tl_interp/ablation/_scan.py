"""Ablation scans: knock out every unit of a kind, one at a time, and measure the metric.

Units are the cells of a site kind's grid at each layer (``over``, as in patching sweeps):
attention heads (``site="z"``, ``over="head_index"``), MLP neurons (``"mlp_post"``,
``"d_mlp"``), token positions (``"resid_pre"``, ``"pos"``), or whole sites (``over=()``;
several site kinds give a ``site`` axis, e.g. each layer's attention and MLP output).
Methods: zero ablation; mean ablation (the unit's mean over a reference set, pads excluded;
Wang et al. 2022); resample ablation (each prompt takes the unit's value on another reference
prompt, drawn with a seed; Chan et al. 2022). Every cell is the hook factory's intervention
(``hooks.zero_ablate`` / ``mean_ablate`` / ``resample_ablate`` with that selection), run many
per forward pass by the engine; effects come with bootstrap intervals over prompts when the
metric gives per-prompt values.
"""

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp import hooks
from tl_interp.ablation._result import AblationResult
from tl_interp.engine._grid import check_layers, model_grid, normalize_over
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.inputs import Inputs, as_batch
from tl_interp.engine.run import EngineOptions, check_metric
from tl_interp.errors import InputError, OptionError, ShapeError, TlInterpDeprecationWarning
from tl_interp.intervention import Intervention
from tl_interp.metrics import is_metric
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.patching._sweep import metric_name
from tl_interp.results import Provenance, prompt_hash
from tl_interp.sites import site as site_name
from tl_interp.stats import bootstrap_mean_ci

__all__ = ["scan"]

Method = Literal["zero", "mean", "resample"]
_DEFAULT_SITE = {"head_index": "z", "d_mlp": "mlp_post", "pos": "resid_pre"}
_UNITS = {"heads": ("z", ("head_index",)), "neurons": ("mlp_post", ("d_mlp",)), "positions": ("resid_pre", ("pos",)),
          "layers": (("attn_out", "mlp_out"), ())}


def _where(site: str | Sequence[str] | None,
           over: str | Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    chosen = normalize_over(over)
    if site is None:
        if chosen is None:
            chosen = ("head_index",)
        if len(chosen) != 1 or chosen[0] not in _DEFAULT_SITE:
            raise OptionError(f"over={chosen!r} has no default site; name it with site= (e.g. site='z')")
        site = _DEFAULT_SITE[chosen[0]]
    kinds = (site,) if isinstance(site, str) else tuple(site)
    if not kinds:
        raise OptionError("site is empty; give at least one site kind")
    return kinds, chosen


def _reference_acts(model: Any, reference: Tokenized, names: list[str]) -> dict[str, Tensor]:
    with torch.no_grad():
        store = hooks.cache(names)
        kw = {"attention_mask": reference.attention_mask} if reference.padded else {}
        store.run(model, reference.tokens, **kw)
    return dict(store.store)


def _mean(acts: Tensor, reference: Tokenized, batch: Tokenized, mean_over: str, name: str) -> Tensor:
    """The reference mean of one site's activation, padding excluded (float64 accumulation)."""
    real = reference.attention_mask.to(acts.device).double()
    weight = real.view(*real.shape, *[1] * (acts.ndim - 2))
    x = acts.double()
    if mean_over == "tokens":
        return ((x * weight).sum((0, 1)) / weight.sum((0, 1))).to(acts.dtype)
    if acts.shape[1] != batch.shape[1]:
        raise ShapeError(f"mean ablation at {name} with mean_over='prompts' needs reference prompts of the inputs' "
                         f"token length ({batch.shape[1]}), got {acts.shape[1]}; use mean_over='tokens'")
    count = weight.sum(0)
    uncovered = ((count.flatten(1).amax(1) == 0) & batch.attention_mask.bool().any(0).to(count.device))
    if bool(uncovered.any()):
        raise InputError(f"mean ablation at {name}: positions {uncovered.nonzero().flatten().tolist()} are real tokens "
                         "of the inputs but padding in every reference prompt; use mean_over='tokens'")
    return ((x * weight).sum(0) / count.clamp_min(1)).to(acts.dtype)


def _units_alias(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``units=`` (retired): ``"heads"`` is ``over="head_index"``, ``"layers"`` is the attention and
    MLP outputs whole, ... -- mapped with a warning."""
    import functools

    @functools.wraps(fn)
    def call(*args: Any, units: str | None = None, **kwargs: Any) -> Any:
        if units is not None:
            if units not in _UNITS:
                raise OptionError(f"units must be one of {', '.join(_UNITS)}, not {units!r}")
            if kwargs.get("site") is not None or kwargs.get("over") is not None:
                raise OptionError("scan: give site=/over= (units= is their old form), not both")
            warnings.warn(f"units={units!r} is now site=/over= (units='heads' is over='head_index')",
                          TlInterpDeprecationWarning, stacklevel=2)
            kwargs["site"], kwargs["over"] = _UNITS[units]
        return fn(*args, **kwargs)

    return call


@_units_alias
@renamed(reference_mask="reference_attention_mask")
@checked
def scan(model: Any, inputs: Inputs, metric: Callable[..., Any], *, over: str | Sequence[str] | None = None,
         site: str | Sequence[str] | None = None, method: Method = "zero", reference: Inputs | None = None,
         reference_attention_mask: Tensor | None = None, mean_over: Literal["tokens", "prompts"] = "tokens",
         seed: int = 0,
         attention_mask: Tensor | None = None, layers: Sequence[int] | None = None, n_boot: int = 2000,
         memory_mb: float = 1024.0, fast_paths: bool = True, skip_unchanged: bool = True,
         executor: Executor | None = None, progress: bool = True) -> AblationResult:
    """Ablate each unit of a kind, one at a time; rank units by the metric's change.

    Args:
        model: HookedTransformer / HookedSAETransformer (fast paths) or TransformerBridge.
        inputs: prompts (strings, token tensor with ``attention_mask``, or Tokenized).
        metric: a ``tl_interp.metrics`` metric (per-prompt values give bootstrap intervals) or
            any ``logits -> scalar`` function (effects only).
        over: the unit axis after ``layer``: ``"head_index"`` (default), ``"d_mlp"``, ``"pos"``,
            or ``()`` (each site whole).
        site: the site kind(s) (default by ``over``: z, mlp_post, resid_pre). Several kinds
            (e.g. ``("attn_out", "mlp_out")``) add a ``site`` axis.
        method: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference: reference prompts for mean/resample ablation (default: the inputs).
        reference_attention_mask: attention mask of a reference token tensor.
        mean_over: ``"tokens"`` (mean over every real reference token, per feature) or
            ``"prompts"`` (per position, over reference prompts of the inputs' length).
        seed: seed of resample draws and of the bootstrap (recorded in provenance). With the
            inputs as their own reference, a prompt never draws itself.
        attention_mask: mask of a padded token tensor.
        layers: which layers (default all).
        n_boot: bootstrap resamples for the 95% intervals.
        memory_mb, fast_paths, skip_unchanged, executor: engine options (as ``sweep``).
        progress: show a progress bar.

    Returns:
        An AblationResult: ``values`` ``(layer, *over)`` (or ``(layer, site, *over)``) of the mean
        metric change, ``ci_low``/``ci_high`` with a per-prompt metric; ``top(k)`` ranks units.

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
    kinds, over_axes = _where(site, over)
    if isinstance(n_boot, bool) or n_boot < 1:
        raise OptionError(f"n_boot must be at least 1, got {n_boot}")
    if method == "zero" and (reference is not None or reference_attention_mask is not None):
        raise InputError("zero ablation uses no reference; drop reference= (or use method='mean' / 'resample')")
    if reference is None and reference_attention_mask is not None:
        raise InputError("reference_attention_mask was given without reference=; pass the reference tokens it masks")
    batch = as_batch(model, inputs, attention_mask=attention_mask)
    per_prompt = is_metric(metric)
    if per_prompt and len(batch) < 2:
        raise InputError("an ablation scan with a per-prompt metric needs at least 2 prompts for its bootstrap "
                         "intervals")
    check_metric(model, metric, batch)
    layer_list = check_layers(model, layers)
    grids = [model_grid(model, kind, over_axes, batch.shape[1]) for kind in kinds]
    if len({g.over for g in grids}) != 1:
        raise OptionError(f"the site kinds {kinds} have different unit grids; scan one kind at a time")
    grid_over = grids[0].over
    names = {(kind, layer): site_name(kind, layer) for kind in kinds for layer in layer_list}
    hooks.cache(list(names.values())).validate(model)
    ref_batch = None
    if method != "zero":
        ref_batch = batch if reference is None else as_batch(model, reference, attention_mask=reference_attention_mask,
                                                              role="reference")
        per_position = method == "resample" or mean_over == "prompts"
        if per_position and ref_batch.shape[1] != batch.shape[1]:
            how = "resample ablation takes each unit's value at the same positions" if method == "resample" else \
                "mean_over='prompts' averages each position over the reference prompts"
            raise ShapeError(f"{how}, so the reference needs the inputs' token length ({batch.shape[1]} positions), "
                             f"got {ref_batch.shape[1]}; use reference prompts of that length"
                             + ("" if method == "resample" else " or mean_over='tokens'"))
    cells, keys = _cells(model, batch, ref_batch, reference is None, method, mean_over, seed, layer_list, kinds, grids,
                         names)
    options = EngineOptions(memory_mb=memory_mb, fast_paths=fast_paths, skip_unchanged=skip_unchanged)
    work = Plan(model, batch, metric, tuple(cells), tuple(keys), tuple(names.values()), options,
                label=f"ablating {'/'.join(kinds)} ({method})",
                signature={"study": "ablation", "site": list(kinds), "over": list(grid_over), "method": method,
                           "mean_over": mean_over, "seed": seed,
                           "reference": None if ref_batch is None else prompt_hash(ref_batch.tokens)})
    outcome = execute(work, executor, progress=progress)
    return _result(model, batch, ref_batch, metric, outcome, layer_list, kinds, grids[0], method, mean_over, seed,
                   n_boot, per_prompt)


def _cells(model: Any, batch: Tokenized, ref_batch: Tokenized | None, self_reference: bool, method: str,
           mean_over: str, seed: int, layers: list[int], kinds: tuple[str, ...], grids: list[Any],
           names: dict[tuple[str, int], str]) -> tuple[list[Intervention], list[tuple[Any, ...]]]:
    """One hook-factory intervention per unit, in (layer, site, unit) order."""
    acts = _reference_acts(model, ref_batch, list(names.values())) if ref_batch is not None else {}
    cells, keys = [], []
    for layer in layers:
        for k, (kind, grid) in enumerate(zip(kinds, grids)):
            name = names[(kind, layer)]
            if method == "mean":
                mean = _mean(acts[name], ref_batch, batch, mean_over, name)  # type: ignore[arg-type]
            for cell in grid.cells:
                sel = grid.selection(cell)
                if method == "zero":
                    iv = hooks.zero_ablate(name, **sel)
                elif method == "mean":
                    iv = hooks.mean_ablate(name, mean, **sel)
                else:
                    iv = hooks.resample_ablate(name, acts[name], seed=seed, exclude_self=self_reference, **sel)
                cells.append(iv)
                keys.append((layer, *((k,) if len(kinds) > 1 else ()), *cell))
    return cells, keys


def _result(model: Any, batch: Tokenized, ref_batch: Tokenized | None, metric: Any, outcome: Any, layers: list[int],
            kinds: tuple[str, ...], grid: Any, method: str, mean_over: str, seed: int, n_boot: int,
            per_prompt: bool) -> AblationResult:
    shape = (len(layers), *((len(kinds),) if len(kinds) > 1 else ()), *grid.shape)
    axes = ("layer", *(("site",) if len(kinds) > 1 else ()), *grid.over)
    ablated = outcome.values.double()
    base = outcome.base.double()
    effect = ablated - base  # (cell, batch) per prompt, or (cell,)
    extras: dict[str, Tensor] = {}
    if per_prompt:
        low, high = bootstrap_mean_ci(effect, n_boot=n_boot, seed=seed)
        extras = {"ci_low": low.float().reshape(shape), "ci_high": high.float().reshape(shape)}
        effect_mean, ablated_mean, base_mean = effect.mean(-1), ablated.mean(-1), base.mean()
    else:
        effect_mean, ablated_mean, base_mean = effect, ablated, base
    extras.update({"ablated": ablated_mean.float().reshape(shape), "base": base_mean.float()})
    labels: dict[str, tuple[str, ...]] = {"layer": tuple(f"L{layer}" for layer in layers)}
    if len(kinds) > 1:
        labels["site"] = kinds
    if "head_index" in grid.over:
        labels["head_index"] = tuple(f"H{h}" for h in range(grid.sizes["head_index"]))
    if "pos" in grid.over:
        labels["pos"] = tuple(batch.str_tokens[0])
    provenance = Provenance.make(
        adapt(model).model_id,
        interventions=[f"{method}-ablate one unit at a time at {', '.join(kinds)} (over {list(grid.over)})"],
        prompt_hash=prompt_hash(batch.tokens, ref_batch.tokens if ref_batch is not None else torch.empty(0)),
        seed=seed,
        settings={"site": list(kinds), "over": list(grid.over), "method": method, "mean_over": mean_over,
                  "layers": layers, "n_boot": n_boot,
                  "higher_is_better": bool(getattr(metric, "higher_is_better", True)),
                  "reference": "inputs" if ref_batch is batch else ("given" if ref_batch is not None else None),
                  "engine": outcome.paths, **outcome.stats})
    return AblationResult(values=effect_mean.float().reshape(shape), axes=axes, metric=metric_name(metric),
                          provenance=provenance, labels=labels, extras=extras)
