"""The engine shared by patching sweeps and ablation scans: many edits per forward pass.

Each cell of a layer's grid (a position, a head, a neuron ...) is a row group of one stacked
batch; one boolean mask says which entries each group replaces with the "source" activation
(the other run's, zeros, a mean, a resampled reference). On HookedTransformer the forward
starts from the cached residual stream at the edited layer (``start_at_layer``) -- layers
below it cannot change -- and, when the metric says where it reads, the unembedding runs only
at those positions. When the metric reads the last position of unpadded prompts (causal
attention), two more exact savings apply: an edit at position p cannot change positions < p,
so position sweeps start at p against the base run's cached keys and values; and only the
last position of the final block's output is read, so that block runs its queries, attention
output and MLP at the last position alone, after computing the keys and values of the
positions before it (its ``ln1`` and key/value projections) -- a one-token step of TL's own
key-value-cache forward. Values stay on device until the caller collects them.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp import hooks
from tl_interp.engine._grid import Grid
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


# The fixed cost of one stacked forward pass, in (row, position) tokens through every block it
# runs: TL re-lays out each block's attention weights on every call (~1 ms a block at d_model
# 256, 1 CPU thread: ~30 tokens' matmuls, and it scales with d_model^2 like the per-token cost),
# plus per-pass work outside the blocks; 64-128 measured best on CPU. Accelerators pay more per
# launch. Position bands are chosen to minimise the estimated total (see _bands).
_FORWARD_COST_TOKENS = {"cpu": 96}
_OTHER_DEVICE_COST_TOKENS = 512
_SKIP_UNCHANGED = True  # cells whose edit writes the values already there take the base run's value
# architectures whose q/k norms TL applies in Attention.forward, outside calculate_qkv_matrices
_QK_NORM_IN_FORWARD = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


def _reads_only_last(metric: Any, seq: int) -> bool:
    positions = metric.positions
    if isinstance(positions, int):
        return positions in (-1, seq - 1)
    return isinstance(positions, Tensor) and bool(((positions == seq - 1) | (positions == -1)).all())


def _causal_kv_model(model: Any) -> bool:
    """Whether a position's output depends only on its own and earlier positions' residuals,
    through keys and values TL's key-value cache holds (plain causal attention)."""
    cfg = model.cfg
    return (getattr(cfg, "attention_dir", "causal") == "causal"
            and cfg.positional_embedding_type in ("standard", "rotary"))


def _final_block_splits(model: Any) -> bool:
    """Whether the final block's keys and values are exactly ``ln1`` + ``calculate_qkv_matrices``
    of its input (so they can be computed apart from its queries), checked from the config and
    the module types rather than assumed."""
    from transformer_lens.components import Attention, GroupedQueryAttention, TransformerBlock

    cfg = model.cfg
    block = model.blocks[cfg.n_layers - 1]
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # an older TransformerLens has no post-norm blocks
        POST_NORM_ARCHITECTURES = ()
    return (type(block) is TransformerBlock and type(block.attn) in (Attention, GroupedQueryAttention)
            and getattr(cfg, "n_devices", 1) == 1
            and not any(getattr(cfg, flag, False) for flag in (
                "use_attn_in", "use_split_qkv_input", "load_in_4bit", "use_logn_attn", "use_dynamic_ntk_rope"))
            and getattr(cfg, "clip_qkv", None) is None
            and cfg.original_architecture not in (*_QK_NORM_IN_FORWARD, *POST_NORM_ARCHITECTURES))


def _plain_hooks(module: Any) -> bool:
    """No hook function attached anywhere in ``module`` and no hook point replaced (e.g. by an SAE)."""
    from transformer_lens.hook_points import HookPoint

    for name, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        if name.rsplit(".", 1)[-1].startswith("hook_") and type(m) is not HookPoint:
            return False
    return True


class StackedRun:
    """Edits of one base run, evaluated many per forward pass.

    Args:
        model: the model.
        metric: a ``tl_interp.metrics.Metric`` (per-prompt values) or a ``logits -> scalar`` function.
        base_tokens: the run being edited, ``(batch, pos)``.
        attention_mask: its mask, or None.
        layers: the layers that will be edited (their starting residuals are cached).
        memory_mb: budget for one stacked forward pass.
        sites: hook names that will be edited: the base run's activations there are cached, so
            cells whose edit writes exactly the values already there (e.g. positions before the
            first token where two runs differ) skip their forward pass and take the base value.
    """

    def __init__(self, model: Any, metric: Callable[[Tensor], Tensor], base_tokens: Tensor,
                 attention_mask: Tensor | None, layers: Sequence[int], memory_mb: float,
                 sites: Sequence[str] = ()) -> None:
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
        reads_last = (self.final_resid and self.attention_mask is None and _reads_only_last(metric, seq)
                      and _causal_kv_model(model))
        # An edit at position p cannot change positions < p (causal attention), so a chunk of
        # edits at positions >= p0 runs only positions p0.. against the base run's cached keys
        # and values for 0..p0-1. Used when nothing is padded and the metric reads the last position.
        self.reuse_prefix = reads_last and seq > 1
        # Only the last position of the final block's output is read: that block runs its
        # queries, attention output and MLP there alone (see _final_block).
        self.split_final = reads_last and _final_block_splits(model)
        starts = [site_name("resid_pre", layer) for layer in layers] if self.fast else []
        starts = list(dict.fromkeys([*starts, *sites]))
        self.starts = hooks.cache(starts) if starts else None
        self._base_kv: list[tuple[Tensor, Tensor]] = []
        if self.reuse_prefix:
            # The keys and values exactly as TL's own key-value cache stores them (after any
            # q/k norms, before rotary): fill one during the base run. An all-ones mask is what
            # TL's forward uses with a cache, and equals no mask for unpadded prompts.
            from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

            kv_cache = TransformerLensKeyValueCache.init_cache(cfg, base_tokens.device, self.batch)
            kw = {"past_kv_cache": kv_cache, "attention_mask": torch.ones_like(base_tokens)}
        logits = (self.starts or Intervention.identity()).run(model, base_tokens, **kw)
        if self.reuse_prefix:
            self._base_kv = [(e.past_keys, e.past_values) for e in kv_cache.entries]
        self.base_values = self._score_logits(logits, 1)[0]
        per_pos = 8 * cfg.d_model + 2 * (cfg.d_mlp or 0) + 2 * cfg.n_heads * seq + (0 if self.final_resid else d_vocab(model))
        self.cells_per_forward = max(1, int(memory_mb * 2**20 // (self.batch * 4.0 * seq * per_pos)))
        self._masks: dict[tuple[Any, ...], Tensor] = {}
        self._mask_bytes = 0
        self._mask_budget = memory_mb * 2**20 / 4
        self._forward_cost = _FORWARD_COST_TOKENS.get(base_tokens.device.type, _OTHER_DEVICE_COST_TOKENS)
        self._band_plans: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
        self.final_block_runs = 0  # forward passes that took the split final block (for tests)
        self.cells_skipped = 0  # cells whose edit changed nothing (for tests and provenance)

    def _score_logits(self, logits: Tensor, n: int) -> Tensor:
        """(n, batch) per-prompt values from a Metric, or (n,) from a plain function."""
        if self.per_prompt:
            return self.metric.per_prompt(logits.reshape(n, self.batch, *logits.shape[-2:]))
        return torch.stack([self.metric(logits[v * self.batch:(v + 1) * self.batch]) for v in range(n)])

    def _read_final_resid(self, resid: Tensor, n: int) -> Tensor:
        """The final residual at the positions the metric reads: ``(n * batch, d_model)``."""
        if self.reuse_prefix:  # the metric reads the last position, which every suffix ends with
            return resid[:, -1]
        return self.metric.read(resid.view(n, self.batch, *resid.shape[1:])).reshape(n * self.batch, -1)

    def _score_final_resid(self, read: Tensor, n: int) -> Tensor:
        """Unembed only the read positions ``(n * batch, d_model)``: (n, batch) per-prompt values.
        One call for all of a layer's cells, so the unembedding weights are read once."""
        x = read.reshape(n * self.batch, 1, -1)
        if self.model.cfg.normalization_type is not None:
            x = self.model.ln_final(x)
        logits = self.model.unembed(x)
        cap = self.model.cfg.output_logits_soft_cap
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return self.metric.score(logits.view(n, self.batch, -1))

    def _bands(self, positions: list[int], counts: list[int], seq: int) -> list[tuple[int, int]]:
        """Contiguous groups ``[i, j)`` of the (sorted) positions, one forward pass each (split
        further by the memory budget), with the least estimated cost: a group starting at p
        computes positions p.. for every row of its cells, plus a fixed cost per pass."""
        key = (tuple(positions), tuple(counts), seq)
        if key in self._band_plans:  # layers usually share one set of cells
            return self._band_plans[key]
        n, rows = len(positions), self.batch
        best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
        for j in range(1, n + 1):
            cells = 0
            for i in range(j - 1, max(-1, j - 65), -1):  # wide bands never pay: their cost is quadratic
                cells += counts[i]
                passes = -(-cells // self.cells_per_forward)
                cost = best[i] + passes * self._forward_cost + rows * cells * (seq - positions[i])
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        groups, j = [], n
        while j > 0:
            groups.append((cut[j], j))
            j = cut[j]
        self._band_plans[key] = groups[::-1]
        return self._band_plans[key]

    def _chunks(self, grid: Grid, cells: list[tuple[int, ...]],
                reuse_prefix: bool) -> list[tuple[list[tuple[int, ...]], int]]:
        """Cells in forward-pass chunks, each with the first position it must compute."""
        step = self.cells_per_forward
        if not (reuse_prefix and grid.over and grid.over[0] == "pos"):
            return [(cells[lo:lo + step], 0) for lo in range(0, len(cells), step)]
        by_pos: dict[int, list[tuple[int, ...]]] = {}
        for c in cells:  # grid order: position-major
            by_pos.setdefault(c[0], []).append(c)
        positions = sorted(by_pos)
        chunks = []
        for i, j in self._bands(positions, [len(by_pos[p]) for p in positions], grid.sizes["pos"]):
            group = [c for p in positions[i:j] for c in by_pos[p]]
            chunks += [(group[lo:lo + step], group[lo][0]) for lo in range(0, len(group), step)]
        return chunks

    def _mask(self, grid: Grid, chunk: list[tuple[int, ...]], source: Tensor) -> Tensor:
        key = (grid.kind, grid.over, tuple(chunk))
        if key not in self._masks:  # often the same cells at every layer: build each mask once
            mask = grid.mask(chunk, (self.batch, *source.shape[1:])).to(source.device)
            if self._mask_bytes + mask.numel() > self._mask_budget:
                self._masks, self._mask_bytes = {}, 0
            self._masks[key] = mask
            self._mask_bytes += mask.numel()
        return self._masks[key]

    def evaluate(self, name: str, kind: str, layer: int, source: Tensor, grid: Grid,
                 on_chunk: Callable[[int], None] | None = None) -> Tensor:
        """Metric values with each cell of ``grid`` at ``name`` replaced by ``source``'s entries.

        Returns ``(n_cells, batch)`` per-prompt values for a Metric, else ``(n_cells,)``.
        A cell whose edit writes, in every row, exactly the values the base run has there
        leaves the forward pass the base run's: it takes the base value without one.
        """
        cells = grid.cells
        live = None
        if _SKIP_UNCHANGED and self.starts is not None and name in self.starts.store:
            live = grid.changes(source, self.starts[name]).any(1).tolist()
            if all(live):
                live = None
        todo = cells if live is None else [c for c, keep in zip(cells, live) if keep]
        # Blocks that run on position slices must not carry hooks of their own (a user's
        # hook may index positions; an SAE spliced in replaces a hook point): else full passes.
        plain = [_plain_hooks(block) for block in self.model.blocks] if self.fast else []
        reuse_prefix = self.reuse_prefix and all(plain[layer:])
        split = (self.split_final and plain[-1]
                 and (kind == "resid_pre" or layer < self.model.cfg.n_layers - 1))  # no edit inside the final block
        out = []
        for chunk, first_pos in self._chunks(grid, todo, reuse_prefix):
            out.append(self._run(name, kind, layer, source, self._mask(grid, chunk, source), len(chunk), first_pos,
                                 split))
            if on_chunk is not None:
                on_chunk(len(chunk))
        if out and self.final_resid:  # final residuals at the read positions -> values
            out = [self._score_final_resid(torch.cat(out), len(todo))]
        if live is None:
            return torch.cat(out)
        self.cells_skipped += len(cells) - len(todo)
        if on_chunk is not None:
            on_chunk(len(cells) - len(todo))
        values = self.base_values.expand(len(cells), *self.base_values.shape).clone()
        if out:
            values[torch.tensor(live, device=values.device)] = torch.cat(out).to(values.dtype)
        return values

    def _prefix(self, layer: int, first_pos: int, n: int) -> tuple[Tensor, Tensor]:
        """The base run's keys and values at ``layer``, positions < first_pos, repeated for n cells."""
        k, v = self._base_kv[layer]
        return k[:, :first_pos].repeat(n, 1, 1, 1), v[:, :first_pos].repeat(n, 1, 1, 1)

    def _kv_prefix(self, layer: int, stop: int, first_pos: int, n: int) -> Any:
        """A frozen key/value cache of the base run's positions < first_pos, for layers layer..stop-1."""
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        cfg, rows = self.model.cfg, n * self.batch
        entries = []
        for i in range(cfg.n_layers):
            if not layer <= i < stop:  # never read: the forward runs blocks layer..stop-1
                entries.append(TransformerLensKeyValueCacheEntry.init_cache_entry(cfg, self.tokens.device, rows))
            else:
                k, v = self._prefix(i, first_pos, n)
                entries.append(TransformerLensKeyValueCacheEntry(past_keys=k, past_values=v, frozen=True))
        mask = torch.ones(rows, first_pos, dtype=torch.long, device=self.tokens.device)
        return TransformerLensKeyValueCache(entries=entries, previous_attention_mask=mask, frozen=True)

    def _final_block(self, resid: Tensor, first_pos: int, n: int) -> Tensor:
        """The final block's output at the last position, from its input at positions first_pos..

        Its keys and values at the positions before the last are what TL's attention computes
        and appends to a key-value cache (``ln1`` then ``calculate_qkv_matrices``; rotary comes
        after, on the whole key sequence); with the base run's for positions < first_pos, they
        are the cache of a one-token forward of the block at the last position -- TL's own
        generation step, so queries, attention output and MLP run at that position only.
        """
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        model = self.model
        last = model.cfg.n_layers - 1
        block = model.blocks[last]
        entry = TransformerLensKeyValueCacheEntry.init_cache_entry(model.cfg, resid.device, resid.shape[0])
        keys, values = [entry.past_keys], [entry.past_values]
        if first_pos > 0:
            k, v = self._prefix(last, first_pos, n)
            keys.append(k)
            values.append(v)
        if resid.shape[1] > 1:
            x = block.ln1(resid[:, :-1])
            _, k, v = block.attn.calculate_qkv_matrices(x[:, :0], x, x)  # no query positions
            keys.append(k)
            values.append(v)
        entry = TransformerLensKeyValueCacheEntry(past_keys=torch.cat(keys, 1), past_values=torch.cat(values, 1),
                                                  frozen=True)
        self.final_block_runs += 1
        return block(resid[:, -1:], past_kv_cache_entry=entry)

    def _run(self, name: str, kind: str, layer: int, source: Tensor, mask: Tensor, n: int, first_pos: int,
             split: bool) -> Tensor:
        """One forward pass over n cells: their values, or (``final_resid``) their final
        residuals at the read positions, ``(n * batch, d_model)``, unembedded by the caller."""
        if source.shape[0] == self.batch:
            stacked = source.repeat(n, *[1] * (source.ndim - 1))
        else:  # one row broadcast over the batch (e.g. a mean)
            stacked = source.expand(self.batch, *source.shape[1:]).repeat(n, *[1] * (source.ndim - 1))
        rep_mask = None if self.attention_mask is None else self.attention_mask.repeat(n, 1)
        if self.fast:
            last = self.model.cfg.n_layers - 1
            stop = last if split else self.model.cfg.n_layers
            start = self.starts[site_name("resid_pre", layer)].repeat(n, 1, 1)
            kw: dict[str, Any] = {"attention_mask": rep_mask}
            if first_pos > 0:  # positions < first_pos equal the base run: compute only the rest
                start, stacked, mask = start[:, first_pos:], stacked[:, first_pos:], mask[:, first_pos:]
                kw = {"past_kv_cache": self._kv_prefix(layer, stop, first_pos, n)}
            if kind == "resid_pre":  # the edit is the starting residual itself
                start, iv = torch.where(mask, stacked, start), Intervention.identity()
            else:
                iv = hooks.patch(name, stacked, mask=mask)
            if split:
                resid = start if layer == last else iv.run(self.model, start, start_at_layer=layer,
                                                           stop_at_layer=last, **kw)
                return self._read_final_resid(self._final_block(resid, first_pos, n), n)
            out = iv.run(self.model, start, start_at_layer=layer, stop_at_layer=stop if self.final_resid else None,
                         **kw)
            return self._read_final_resid(out, n) if self.final_resid else self._score_logits(out, n)
        kw = {} if rep_mask is None else {"attention_mask": rep_mask}
        out = hooks.patch(name, stacked, mask=mask).run(self.model, self.tokens.repeat(n, 1), **kw)
        return self._score_logits(out, n)
