"""Exact activation patching over layers x positions / heads, many patches per forward pass.

Denoising patches activations of the clean run into the corrupted run; noising patches the
corrupted run's into the clean run (Heimersheim & Nanda 2024). The values equal
TransformerLens's ``get_act_patch_*`` for the same inputs; the speed comes from
DESIGN.md's performance principles:

- every cell of a layer (each position, head, ...) is a row group of one stacked batch,
  chunked to a memory budget, with one boolean mask saying what each group patches;
- a patch at layer L cannot change layers < L, so HookedTransformer runs start from the
  cached residual stream at L (``start_at_layer``), and a ``resid_pre`` patch is applied
  to that starting residual directly;
- when the metric says where it reads (``tl_interp.metrics``), the unembedding runs only at
  those positions; metric values stay on device until the sweep ends;
- when it reads the last position of unpadded prompts, a patch at position p runs only
  positions p.. against the base run's cached keys and values, and the final block runs its
  queries, attention output and MLP at the last position alone;
- a cell whose patch writes exactly the values the base run already has (e.g. positions
  before the first token where clean and corrupted differ) changes nothing: it takes the
  base run's value without a forward pass.

Models that cannot start mid-stack (TransformerBridge, custom modules) take the exact full
forward path, still batched.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp import hooks
from tl_interp.engine._grid import Grid, make_grid
from tl_interp.engine._stacked import StackedRun, check_metric, d_vocab, metric_name
from tl_interp.patching._result import PatchingResult
from tl_interp.errors import ShapeError
from tl_interp.results import Provenance, prompt_hash
from tl_interp.sites import resolve
from tl_interp.sites import site as site_name

__all__ = ["sweep", "prepare_inputs", "plan_sweep", "SweepPlan"]

Direction = Literal["denoise", "noise"]
Prompts = Tensor | str | Sequence[str]


def prepare_inputs(model: Any, clean: Prompts, corrupted: Prompts,
                   attention_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None, list[str]]:
    """Tokens for both runs (tokenising strings with padding), checked to align, + pos labels."""
    from tl_interp.models import adapt

    adapter = adapt(model)
    tokenized = []
    for prompts in (clean, corrupted):
        if isinstance(prompts, Tensor):
            tokenized.append((prompts if prompts.ndim == 2 else prompts[None], None))
        else:
            t = adapter.tokenize(prompts)
            tokenized.append((t.tokens, t.attention_mask))
    (clean_t, clean_mask), (corrupt_t, corrupt_mask) = tokenized
    if clean_t.shape != corrupt_t.shape:
        raise ShapeError(f"clean and corrupted inputs must have the same shape (batch, pos) so positions "
                         f"line up; got clean {tuple(clean_t.shape)} and corrupted {tuple(corrupt_t.shape)}")
    if attention_mask is None and clean_mask is not None:
        if corrupt_mask is not None and not torch.equal(clean_mask, corrupt_mask):
            rows = (clean_mask.sum(1) != corrupt_mask.sum(1)).nonzero().flatten().tolist()
            raise ShapeError(f"clean and corrupted prompts tokenize to different lengths in rows {rows}; "
                             "patching needs prompts of equal token length, row by row")
        attention_mask = clean_mask if bool((clean_mask == 0).any()) else None
    labels = [str(i) for i in range(clean_t.shape[1])]
    if getattr(model, "tokenizer", None) is not None:
        try:
            labels = [f"{s}" for s in model.to_str_tokens(corrupt_t[0])]
        except Exception:  # a tokenizer that cannot render ids still leaves index labels
            pass
    return clean_t, corrupt_t, attention_mask, labels


@dataclass(frozen=True)
class SweepPlan:
    """Everything a patching study fixes before its first forward pass (shared by sweep and
    attribution): the two runs' tokens, which is patched into which, the grid, the layers."""

    clean: Tensor
    corrupted: Tensor
    attention_mask: Tensor | None
    pos_labels: list[str]
    site: str
    direction: str
    grid: Grid
    layers: list[int]
    names: list[str]

    @property
    def base(self) -> Tensor:
        """The run being patched into."""
        return self.corrupted if self.direction == "denoise" else self.clean

    @property
    def source(self) -> Tensor:
        """The run patched from."""
        return self.clean if self.direction == "denoise" else self.corrupted

    @property
    def forward_kw(self) -> dict[str, Any]:
        return {} if self.attention_mask is None else {"attention_mask": self.attention_mask}

    def labels(self) -> dict[str, tuple[str, ...]]:
        labels = {"layer": tuple(f"L{layer}" for layer in self.layers)}
        for axis in ("pos", "dest_pos"):
            if axis in self.grid.over:
                labels[axis] = tuple(self.pos_labels)
        if "head" in self.grid.over:
            labels["head"] = tuple(f"H{h}" for h in range(self.grid.sizes["head"]))
        return labels

    def provenance(self, model: Any, what: str, **settings: Any) -> Provenance:
        from tl_interp.models import adapt

        arrow = "clean -> corrupted" if self.direction == "denoise" else "corrupted -> clean"
        cells = " x ".join(("layer",) + self.grid.over)
        return Provenance.make(
            adapt(model).model_id, interventions=[f"{what} {arrow} at {self.site} per {cells} cell"],
            prompt_hash=prompt_hash(self.clean, self.corrupted),
            settings={"site": self.site, "over": list(self.grid.over), "direction": self.direction,
                      "layers": self.layers, **settings})


def plan_sweep(model: Any, clean: Prompts, corrupted: Prompts, metric: Callable[[Tensor], Tensor], *, site: str,
               over: Sequence[str] | None, direction: str, layers: Sequence[int] | None,
               attention_mask: Tensor | None) -> SweepPlan:
    """Check every input of a patching study and fix its plan: no forward pass runs here."""
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    clean_t, corrupt_t, attn_mask, pos_labels = prepare_inputs(model, clean, corrupted, attention_mask)
    batch, seq = clean_t.shape
    cfg = model.cfg
    check_metric(metric, (batch, seq), d_vocab(model))
    grid = make_grid(site, None if over is None else tuple(over), seq_len=seq, n_heads=cfg.n_heads,
                     n_kv_heads=getattr(cfg, "n_key_value_heads", None) or cfg.n_heads, batch=batch,
                     d_mlp=getattr(cfg, "d_mlp", None))
    layer_list = list(range(cfg.n_layers)) if layers is None else list(layers)
    names = [site_name(site, layer) for layer in layer_list]
    resolve(model, names, context=f"patching {site}")
    return SweepPlan(clean_t, corrupt_t, attn_mask, pos_labels, site, direction, grid, layer_list, names)


def sweep(model: Any, clean: Prompts, corrupted: Prompts, metric: Callable[[Tensor], Tensor], *,
          site: str = "resid_pre", over: Sequence[str] | None = None, direction: Direction = "denoise",
          layers: Sequence[int] | None = None, attention_mask: Tensor | None = None,
          memory_mb: float = 1024.0, progress: bool = True) -> PatchingResult:
    """Exact activation patching of one site kind over layers and positions / heads.

    Args:
        model: HookedTransformer / HookedSAETransformer (fast path), or TransformerBridge.
        clean, corrupted: token tensors ``(batch, pos)`` of equal shape, or prompts to tokenise
            (rows must tokenise to equal lengths pairwise; padding gets an attention mask).
        metric: a ``tl_interp.metrics`` metric, or any ``logits (batch, pos, d_vocab) -> scalar``
            function, exactly as TransformerLens's patching functions take it.
        site: ``resid_pre``/``resid_mid``/``resid_post``/``attn_out``/``mlp_out``,
            ``z``/``q``/``k``/``v``/``result`` (heads; k/v count key-value heads), ``pattern``.
        over: the axes after ``layer``: ``("pos",)`` (default for residual-like sites) or
            ``()``; ``("head",)`` (default for heads) or ``("pos", "head")``; for patterns
            ``("head",)`` or ``("head", "dest_pos")``. Same layouts as TransformerLens.
        direction: ``"denoise"`` (clean into corrupted) or ``"noise"`` (corrupted into clean).
        layers: which layers (default all).
        attention_mask: for padded token tensors (tokenised prompts bring their own).
        memory_mb: the budget for one stacked forward pass.
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
    grid = plan.grid
    with torch.inference_mode():
        source_cache = hooks.cache(plan.names)
        source_value = metric(source_cache.run(model, plan.source, **plan.forward_kw)).float()
        run = StackedRun(model, metric, plan.base, plan.attention_mask, plan.layers, memory_mb, sites=plan.names)
        bar = tqdm(total=len(plan.layers) * len(grid.cells), desc=f"patching {site}", disable=not progress)
        values = torch.stack([run.evaluate(name, site, layer, source_cache[name], grid, bar.update)
                              for layer, name in zip(plan.layers, plan.names)]).float()
        bar.close()
        base_value = run.base_values.float()
        if run.per_prompt:  # (layer, cell, batch) per-prompt values -> the metric's mean over prompts
            values, base_value = values.mean(-1), base_value.mean(-1)

    provenance = plan.provenance(model, "patch", fast_path=run.fast, cells_per_forward=run.cells_per_forward,
                                 prefix_reuse=run.reuse_prefix, final_block_split=run.final_block_runs > 0,
                                 cells_skipped=run.cells_skipped)
    return PatchingResult(values=values.view(len(plan.layers), *grid.shape).cpu(), axes=("layer", *grid.over),
                          metric=metric_name(metric), provenance=provenance, labels=plan.labels(),
                          extras={"base": base_value.cpu(), "source": source_value.cpu()})
