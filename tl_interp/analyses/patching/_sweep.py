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
  those positions; metric values stay on device until the sweep ends.

Models that cannot start mid-stack (TransformerBridge, custom modules) take the exact full
forward path, still batched.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp import hooks
from tl_interp.analyses.patching._grid import make_grid
from tl_interp.analyses.patching._result import PatchingResult
from tl_interp.errors import ShapeError
from tl_interp.intervention import Intervention
from tl_interp.metrics import Metric
from tl_interp.results import Provenance, prompt_hash
from tl_interp.sites import resolve
from tl_interp.sites import site as site_name

__all__ = ["sweep", "prepare_inputs", "starts_mid_stack"]

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


def starts_mid_stack(model: Any) -> bool:
    """Whether the model's forward can start from a residual at layer L (HookedTransformer)."""
    from transformer_lens import HookedTransformer

    return isinstance(model, HookedTransformer) and model.cfg.positional_embedding_type != "shortformer"


def _check_metric(metric: Callable[[Tensor], Tensor], shape: tuple[int, int], d_vocab: int) -> None:
    """Call the metric on dummy logits: a wrong output shape fails before any forward pass."""
    try:
        out = metric(torch.zeros(*shape, d_vocab))
    except ShapeError:
        raise
    except Exception as err:  # a metric that cannot even take logits of the right shape
        raise ShapeError(f"the metric failed on logits of shape (batch, pos, d_vocab) = "
                         f"{(*shape, d_vocab)}: {err}") from err
    if not isinstance(out, Tensor) or out.ndim != 0:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(f"the metric must return a scalar (0-dim tensor) for logits (batch, pos, d_vocab), "
                         f"as TransformerLens's patching functions expect; it returned {got}. Reduce over "
                         "the batch (e.g. .mean()) or pass a tl_interp.metrics metric")


def _row_bytes(model: Any, seq: int, full_logits: bool) -> float:
    cfg = model.cfg
    per_pos = 8 * cfg.d_model + 2 * (cfg.d_mlp or 0) + 2 * cfg.n_heads * seq + (cfg.d_vocab if full_logits else 0)
    return 4.0 * seq * per_pos


class _Evaluator:
    """Turns one stacked forward's output into one metric value per variant."""

    def __init__(self, model: Any, metric: Callable[[Tensor], Tensor], batch: int, fast: bool) -> None:
        self.model, self.metric, self.batch = model, metric, batch
        self.reads_positions = isinstance(metric, Metric) and metric.positions is not None
        self.final_resid = fast and self.reads_positions  # stop before ln_final; unembed only where read

    def finish(self, out: Tensor, n_variants: int) -> Tensor:
        if self.final_resid:
            read = self.metric.read(out.view(n_variants, self.batch, *out.shape[1:]))  # (V, B, d_model)
            x = read.reshape(n_variants * self.batch, 1, -1)
            if self.model.cfg.normalization_type is not None:
                x = self.model.ln_final(x)
            logits = self.model.unembed(x)
            cap = self.model.cfg.output_logits_soft_cap
            if cap > 0:
                logits = cap * torch.tanh(logits / cap)
            return self.metric.score(logits.view(n_variants, self.batch, -1)).mean(-1)
        if isinstance(self.metric, Metric):
            return self.metric.per_prompt(out.view(n_variants, self.batch, *out.shape[1:])).mean(-1)
        return torch.stack([self.metric(out[v * self.batch:(v + 1) * self.batch]) for v in range(n_variants)])


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
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    clean_t, corrupt_t, attn_mask, pos_labels = prepare_inputs(model, clean, corrupted, attention_mask)
    base_t, source_t = (corrupt_t, clean_t) if direction == "denoise" else (clean_t, corrupt_t)
    batch, seq = base_t.shape
    cfg = model.cfg
    _check_metric(metric, (batch, seq), cfg.d_vocab_out if getattr(cfg, "d_vocab_out", -1) > 0 else cfg.d_vocab)
    layer_list = list(range(cfg.n_layers)) if layers is None else list(layers)
    names = [site_name(site, layer) for layer in layer_list] if layer_list else []
    resolve(model, names, context=f"patching sweep of {site}")
    grid = make_grid(site, None if over is None else tuple(over), seq_len=seq, n_heads=cfg.n_heads,
                     n_kv_heads=getattr(cfg, "n_key_value_heads", None) or cfg.n_heads, batch=batch)
    fast = starts_mid_stack(model)
    evaluator = _Evaluator(model, metric, batch, fast)
    forward_kw: dict[str, Any] = {} if attn_mask is None else {"attention_mask": attn_mask}

    with torch.inference_mode():
        source_cache = hooks.cache(names)
        source_value = _baseline(metric, source_cache.run(model, source_t, **forward_kw))
        starts = hooks.cache([site_name("resid_pre", layer) for layer in layer_list]) if fast else Intervention.identity()
        base_value = _baseline(metric, starts.run(model, base_t, **forward_kw))
        if fast and attn_mask is None:
            attn_mask = model.input_to_embed(base_t)[3]  # what TL's own forward would use, e.g. left padding
        per_chunk = max(1, int(memory_mb * 2**20 // (batch * _row_bytes(model, seq, not evaluator.final_resid))))
        cells = grid.cells
        values = torch.empty(len(layer_list), len(cells), device=base_t.device)
        masks: dict[tuple[int, int], Tensor] = {}
        bar = tqdm(total=len(layer_list) * len(cells), desc=f"patching {site}", disable=not progress)
        for li, (layer, name) in enumerate(zip(layer_list, names)):
            source_act = source_cache[name]
            for lo in range(0, len(cells), per_chunk):
                chunk = cells[lo:lo + per_chunk]
                key = (lo, len(chunk))
                if key not in masks:  # the same cells at every layer: build each mask once
                    masks[key] = grid.mask(chunk, tuple(source_act.shape)).to(source_act.device)
                values[li, lo:lo + len(chunk)] = _run_chunk(
                    model, evaluator, name, site, layer, source_act, masks[key], len(chunk),
                    starts, base_t, attn_mask, fast)
                bar.update(len(chunk))
        bar.close()

    labels = {"layer": tuple(f"L{layer}" for layer in layer_list)}
    if "pos" in grid.over or "dest_pos" in grid.over:
        labels["pos" if "pos" in grid.over else "dest_pos"] = tuple(pos_labels)
    if "head" in grid.over:
        labels["head"] = tuple(f"H{h}" for h in range(grid.sizes["head"]))
    metric_name = metric.name if isinstance(metric, Metric) else getattr(metric, "__name__", "metric")
    arrow = "clean -> corrupted" if direction == "denoise" else "corrupted -> clean"
    provenance = Provenance.make(
        _model_id(model),
        interventions=[f"patch {arrow} at {site_name(site, layer_list[0]) if layer_list else site} ... per "
                       f"{' x '.join(('layer',) + grid.over)} cell"],
        prompt_hash=prompt_hash(clean_t, corrupt_t),
        settings={"site": site, "over": list(grid.over), "direction": direction, "layers": layer_list,
                  "fast_path": fast, "cells_per_forward": per_chunk})
    return PatchingResult(values=values.view(len(layer_list), *grid.shape).cpu(), axes=("layer", *grid.over),
                          metric=metric_name, provenance=provenance, labels=labels,
                          extras={"base": base_value.cpu(), "source": source_value.cpu()})


def _baseline(metric: Callable[[Tensor], Tensor], logits: Tensor) -> Tensor:
    return metric(logits).detach().float()


def _run_chunk(model: Any, evaluator: _Evaluator, name: str, kind: str, layer: int, source_act: Tensor,
               mask: Tensor, n_variants: int, starts: Any, base_t: Tensor, attn_mask: Tensor | None,
               fast: bool) -> Tensor:
    stacked = source_act.repeat(n_variants, *[1] * (source_act.ndim - 1))
    rep_mask = None if attn_mask is None else attn_mask.repeat(n_variants, 1)
    if fast:
        start = starts[site_name("resid_pre", layer)].repeat(n_variants, 1, 1)
        if kind == "resid_pre":  # the patch is the starting residual itself
            start, iv = torch.where(mask, stacked, start), Intervention.identity()
        else:
            iv = hooks.patch(name, stacked, mask=mask)
        stop = model.cfg.n_layers if evaluator.final_resid else None
        out = iv.run(model, start, start_at_layer=layer, stop_at_layer=stop, attention_mask=rep_mask)
    else:
        kw = {} if rep_mask is None else {"attention_mask": rep_mask}
        out = hooks.patch(name, stacked, mask=mask).run(model, base_t.repeat(n_variants, 1), **kw)
    return evaluator.finish(out, n_variants)


def _model_id(model: Any) -> str:
    from tl_interp.models import adapt

    return adapt(model).model_id

