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


_PREFIX_BANDS = 8  # chunks per layer by position band: compute ~ (1 + 1/B) / 2 of full for B bands


def _reads_only_last(metric: Any, seq: int) -> bool:
    positions = metric.positions
    if isinstance(positions, int):
        return positions in (-1, seq - 1)
    return isinstance(positions, Tensor) and bool(((positions == seq - 1) | (positions == -1)).all())


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
        self.attention_mask = attention_mask
        if self.fast and attention_mask is None:
            self.attention_mask = model.input_to_embed(base_tokens)[3]  # what TL's own forward would use
        cfg = model.cfg
        # An edit at position p cannot change positions < p (causal attention), so a chunk of
        # edits at positions >= p0 runs only positions p0.. against the base run's cached keys
        # and values for 0..p0-1. Used when nothing is padded and the metric reads the last position.
        self.reuse_prefix = (self.final_resid and self.attention_mask is None and seq > 1
                             and cfg.positional_embedding_type in ("standard", "rotary")
                             and _reads_only_last(metric, seq))
        starts = [site_name("resid_pre", layer) for layer in layers]
        if self.reuse_prefix:
            first = min(layers) if layers else 0
            starts += [site_name(kv, layer) for layer in range(first, cfg.n_layers) for kv in ("k", "v")]
        self.starts = hooks.cache(starts) if self.fast else None
        logits = (self.starts or Intervention.identity()).run(model, base_tokens, **kw)
        self.base_values = self._score_logits(logits, 1)[0]
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
        if self.reuse_prefix:  # the metric reads the last position, which every suffix ends with
            read = resid[:, -1].view(n, self.batch, -1)
        else:
            read = self.metric.read(resid.view(n, self.batch, *resid.shape[1:]))  # (n, batch, d_model)
        x = read.reshape(n * self.batch, 1, -1)
        if self.model.cfg.normalization_type is not None:
            x = self.model.ln_final(x)
        logits = self.model.unembed(x)
        cap = self.model.cfg.output_logits_soft_cap
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return self.metric.score(logits.view(n, self.batch, -1))

    def _chunks(self, grid: Grid) -> list[tuple[list[tuple[int, ...]], int]]:
        """Cells in forward-pass chunks, each with the first position it must compute."""
        cells = grid.cells
        if not (self.reuse_prefix and grid.over and grid.over[0] == "pos"):
            return [(cells[lo:lo + self.cells_per_forward], 0)
                    for lo in range(0, len(cells), self.cells_per_forward)]
        seq = grid.sizes["pos"]
        band = -(-seq // min(seq, _PREFIX_BANDS))  # positions per band, ceil
        chunks = []
        for lo_pos in range(0, seq, band):
            in_band = [c for c in cells if lo_pos <= c[0] < lo_pos + band]
            chunks += [(in_band[lo:lo + self.cells_per_forward], min(c[0] for c in in_band[lo:lo + self.cells_per_forward]))
                       for lo in range(0, len(in_band), self.cells_per_forward)]
        return chunks

    def evaluate(self, name: str, kind: str, layer: int, source: Tensor, grid: Grid,
                 on_chunk: Callable[[int], None] | None = None) -> Tensor:
        """Metric values with each cell of ``grid`` at ``name`` replaced by ``source``'s entries.

        Returns ``(n_cells, batch)`` per-prompt values for a Metric, else ``(n_cells,)``.
        """
        out = []
        for chunk, first_pos in self._chunks(grid):
            key = (grid.kind + str(grid.over), chunk[0], len(chunk))
            if key not in self._masks:  # the same cells at every layer: build each mask once
                self._masks[key] = grid.mask(chunk, (self.batch, *source.shape[1:])).to(source.device)
            out.append(self._run(name, kind, layer, source, self._masks[key], len(chunk), first_pos))
            if on_chunk is not None:
                on_chunk(len(chunk))
        return torch.cat(out)

    def _kv_prefix(self, layer: int, first_pos: int, n: int) -> Any:
        """A frozen key/value cache of the base run's positions < first_pos, for layers >= layer."""
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        cfg, rows = self.model.cfg, n * self.batch
        entries = []
        for i in range(cfg.n_layers):
            if i < layer:  # never read: the forward starts at `layer`
                entries.append(TransformerLensKeyValueCacheEntry.init_cache_entry(cfg, self.tokens.device, rows))
                continue
            k, v = (self.starts[site_name(kv, i)][:, :first_pos].repeat(n, 1, 1, 1) for kv in ("k", "v"))
            entries.append(TransformerLensKeyValueCacheEntry(past_keys=k, past_values=v, frozen=True))
        mask = torch.ones(rows, first_pos, dtype=torch.long, device=self.tokens.device)
        return TransformerLensKeyValueCache(entries=entries, previous_attention_mask=mask, frozen=True)

    def _run(self, name: str, kind: str, layer: int, source: Tensor, mask: Tensor, n: int, first_pos: int) -> Tensor:
        if source.shape[0] == self.batch:
            stacked = source.repeat(n, *[1] * (source.ndim - 1))
        else:  # one row broadcast over the batch (e.g. a mean)
            stacked = source.expand(self.batch, *source.shape[1:]).repeat(n, *[1] * (source.ndim - 1))
        rep_mask = None if self.attention_mask is None else self.attention_mask.repeat(n, 1)
        if self.fast:
            start = self.starts[site_name("resid_pre", layer)].repeat(n, 1, 1)
            kw: dict[str, Any] = {"attention_mask": rep_mask}
            if first_pos > 0:  # positions < first_pos equal the base run: compute only the rest
                start, stacked, mask = start[:, first_pos:], stacked[:, first_pos:], mask[:, first_pos:]
                kw = {"past_kv_cache": self._kv_prefix(layer, first_pos, n)}
            if kind == "resid_pre":  # the edit is the starting residual itself
                start, iv = torch.where(mask, stacked, start), Intervention.identity()
            else:
                iv = hooks.patch(name, stacked, mask=mask)
            stop = self.model.cfg.n_layers if self.final_resid else None
            out = iv.run(self.model, start, start_at_layer=layer, stop_at_layer=stop, **kw)
            return self._score_final_resid(out, n) if self.final_resid else self._score_logits(out, n)
        kw = {} if rep_mask is None else {"attention_mask": rep_mask}
        out = hooks.patch(name, stacked, mask=mask).run(self.model, self.tokens.repeat(n, 1), **kw)
        return self._score_logits(out, n)
