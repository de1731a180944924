"""The engine shared by patching sweeps and ablation scans: many edits per forward pass.

Each cell of a layer's grid (a position, a head, a neuron ...) is a row group of one stacked
batch; one boolean mask says which entries each group replaces with the "source" activation
(the other run's, zeros, a mean, a resampled reference). On HookedTransformer the forward
starts from the cached residual stream at the edited layer (``start_at_layer``) -- layers
below it cannot change -- and, when the metric says where it reads, the unembedding runs only
at those positions. Values stay on device until the caller collects them.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp import hooks
from tl_interp.analyses._grid import Grid
from tl_interp.errors import ShapeError
from tl_interp.intervention import Intervention
from tl_interp.metrics import Metric
from tl_interp.sites import site as site_name

__all__ = ["StackedRun", "check_metric", "starts_mid_stack", "metric_name", "d_vocab"]


def starts_mid_stack(model: Any) -> bool:
    """Whether the model's forward can start from a residual at layer L (HookedTransformer)."""
    from transformer_lens import HookedTransformer

    return isinstance(model, HookedTransformer) and model.cfg.positional_embedding_type != "shortformer"


def d_vocab(model: Any) -> int:
    cfg = model.cfg
    out = getattr(cfg, "d_vocab_out", -1)
    return out if isinstance(out, int) and out > 0 else cfg.d_vocab


def metric_name(metric: Callable[[Tensor], Tensor]) -> str:
    return metric.name if isinstance(metric, Metric) else getattr(metric, "__name__", "metric")


def check_metric(metric: Callable[[Tensor], Tensor], shape: tuple[int, int], vocab: int) -> None:
    """Call the metric on dummy logits: a wrong output shape fails before any forward pass."""
    try:
        out = metric(torch.zeros(*shape, vocab))
    except ShapeError:
        raise
    except Exception as err:  # a metric that cannot even take logits of the right shape
        raise ShapeError(f"the metric failed on logits of shape (batch, pos, d_vocab) = {(*shape, vocab)}: "
                         f"{err}") from err
    if not isinstance(out, Tensor) or out.ndim != 0:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(f"the metric must return a scalar (0-dim tensor) for logits (batch, pos, d_vocab), "
                         f"as TransformerLens's patching functions expect; it returned {got}. Reduce over "
                         "the batch (e.g. .mean()) or pass a tl_interp.metrics metric")


class StackedRun:
    """Edits of one base run, evaluated many per forward pass.

    Args:
        model: the model.
        metric: a ``tl_interp.metrics.Metric`` (per-prompt values) or a ``logits -> scalar`` function.
        base_tokens: the run being edited, ``(batch, pos)``.
        attention_mask: its mask, or None.
        layers: the layers that will be edited (their starting residuals are cached).
        memory_mb: budget for one stacked forward pass.
    """

    def __init__(self, model: Any, metric: Callable[[Tensor], Tensor], base_tokens: Tensor,
                 attention_mask: Tensor | None, layers: Sequence[int], memory_mb: float) -> None:
        self.model, self.metric, self.tokens = model, metric, base_tokens
        self.batch, seq = base_tokens.shape
        self.fast = starts_mid_stack(model)
        self.per_prompt = isinstance(metric, Metric)
        self.final_resid = self.fast and self.per_prompt and metric.positions is not None
        kw = {} if attention_mask is None else {"attention_mask": attention_mask}
        starts = [site_name("resid_pre", layer) for layer in layers]
        self.starts = hooks.cache(starts) if self.fast else None
        logits = (self.starts or Intervention.identity()).run(model, base_tokens, **kw)
        self.base_values = self._score_logits(logits, 1)[0]
        if self.fast and attention_mask is None:
            attention_mask = model.input_to_embed(base_tokens)[3]  # what TL's own forward would use
        self.attention_mask = attention_mask
        cfg = model.cfg
        per_pos = 8 * cfg.d_model + 2 * (cfg.d_mlp or 0) + 2 * cfg.n_heads * seq + (0 if self.final_resid else d_vocab(model))
        self.cells_per_forward = max(1, int(memory_mb * 2**20 // (self.batch * 4.0 * seq * per_pos)))
        self._masks: dict[tuple[str, int, int], Tensor] = {}

    def _score_logits(self, logits: Tensor, n: int) -> Tensor:
        """(n, batch) per-prompt values from a Metric, or (n,) from a plain function."""
        if self.per_prompt:
            return self.metric.per_prompt(logits.reshape(n, self.batch, *logits.shape[-2:]))
        return torch.stack([self.metric(logits[v * self.batch:(v + 1) * self.batch]) for v in range(n)])

    def _score_final_resid(self, resid: Tensor, n: int) -> Tensor:
        """Unembed only the positions the metric reads: (n, batch) per-prompt values."""
        read = self.metric.read(resid.view(n, self.batch, *resid.shape[1:]))  # (n, batch, d_model)
        x = read.reshape(n * self.batch, 1, -1)
        if self.model.cfg.normalization_type is not None:
            x = self.model.ln_final(x)
        logits = self.model.unembed(x)
        cap = self.model.cfg.output_logits_soft_cap
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return self.metric.score(logits.view(n, self.batch, -1))

    def evaluate(self, name: str, kind: str, layer: int, source: Tensor, grid: Grid,
                 on_chunk: Callable[[int], None] | None = None) -> Tensor:
        """Metric values with each cell of ``grid`` at ``name`` replaced by ``source``'s entries.

        Returns ``(n_cells, batch)`` per-prompt values for a Metric, else ``(n_cells,)``.
        """
        cells = grid.cells
        out = []
        for lo in range(0, len(cells), self.cells_per_forward):
            chunk = cells[lo:lo + self.cells_per_forward]
            key = (grid.kind + str(grid.over), lo, len(chunk))
            if key not in self._masks:  # the same cells at every layer: build each mask once
                self._masks[key] = grid.mask(chunk, (self.batch, *source.shape[1:])).to(source.device)
            out.append(self._run(name, kind, layer, source, self._masks[key], len(chunk)))
            if on_chunk is not None:
                on_chunk(len(chunk))
        return torch.cat(out)

    def _run(self, name: str, kind: str, layer: int, source: Tensor, mask: Tensor, n: int) -> Tensor:
        if source.shape[0] == self.batch:
            stacked = source.repeat(n, *[1] * (source.ndim - 1))
        else:  # one row broadcast over the batch (e.g. a mean)
            stacked = source.expand(self.batch, *source.shape[1:]).repeat(n, *[1] * (source.ndim - 1))
        rep_mask = None if self.attention_mask is None else self.attention_mask.repeat(n, 1)
        if self.fast:
            start = self.starts[site_name("resid_pre", layer)].repeat(n, 1, 1)
            if kind == "resid_pre":  # the edit is the starting residual itself
                start, iv = torch.where(mask, stacked, start), Intervention.identity()
            else:
                iv = hooks.patch(name, stacked, mask=mask)
            stop = self.model.cfg.n_layers if self.final_resid else None
            out = iv.run(self.model, start, start_at_layer=layer, stop_at_layer=stop, attention_mask=rep_mask)
            return self._score_final_resid(out, n) if self.final_resid else self._score_logits(out, n)
        kw = {} if rep_mask is None else {"attention_mask": rep_mask}
        out = hooks.patch(name, stacked, mask=mask).run(self.model, self.tokens.repeat(n, 1), **kw)
        return self._score_logits(out, n)
