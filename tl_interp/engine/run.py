"""The engine: a base run and the stacked passes of its cells, read by one metric.

Every batched study is the same loop -- plan cells, group them into stacked passes, run each
pass from the cheapest exact starting point, read only what the metric reads, reduce -- and
this module is that loop. A *cell* is an ``Intervention`` applied to a copy of the base batch
(a patch at one position, a head ablated, a steering vector at one scale, a point on an
integrated-gradients path). ``BaseRun`` runs the batch once, unedited, keeping what passes
reuse: the residual stream where they start, the activations at the sites cells edit (to skip
cells that change nothing), the keys and values (to start at the first edited position), and
the metric's base value. ``BaseRun.evaluate(cells)`` returns every cell's value.

The fast paths live in ``engine.paths``; each says why it is off (``BaseRun.paths``), and the
exact full forward pass of the model runs instead. Values equal, cell by cell, the metric of
``cell.run(model, batch)`` (up to float rounding of batched arithmetic).
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import renamed
from tl_interp import hooks
from tl_interp._context import RunContext, running
from tl_interp import compat
from tl_interp.engine import reads
from tl_interp.engine.options import EngineOptions, Staged, Values, check_metric, forward_layout, scalar
from tl_interp.engine.passes import cells_per_pass, chunks, merge_layers
from tl_interp.engine.paths import head_columns, mid_stack, prefix_kv, read_only, skip_unchanged, split_final
from tl_interp.engine.stack import bound_cells, stack
from tl_interp.errors import InputError
from tl_interp.intervention import Intervention
from tl_interp.metrics import bind, is_metric
from tl_interp.models._adapter import Tokenized
from tl_interp.sites import d_vocab_out
from tl_interp.sites import site as site_name

__all__ = ["EngineOptions", "BaseRun", "Values", "check_metric", "Staged", "forward_layout"]


def _score(metric: Any, logits: Tensor, n: int, batch: int, read: bool) -> Values:
    """Values of ``n`` cells from their logits: per prompt ``(n, batch)`` for tl_interp metrics
    (logits at the read positions when ``read``), one scalar per cell for plain functions."""
    if is_metric(metric):
        shaped = logits.reshape(n, batch, *logits.shape[1:])
        return metric.score(shaped) if read else metric.per_prompt(shaped)
    return torch.stack([scalar(metric(logits[i * batch:(i + 1) * batch])) for i in range(n)])


def _only(values: Values) -> Values:
    """The values of the single 'cell' of a base run."""
    return {k: v[0] for k, v in values.items()} if isinstance(values, dict) else values[0]


class BaseRun:
    """One batch run once, unedited, with what the passes of its cells reuse.

    Args:
        model: the model.
        batch: the checked inputs (``engine.inputs.as_batch``).
        metric: a ``tl_interp.metrics`` metric / ``MetricSet`` (per-prompt values) or any
            ``logits -> scalar`` function; bound to the batch here.
        sites: hook names the cells will edit (their base activations are kept for
            ``skip_unchanged``, and the residual stream entering their layers for ``mid_stack``).
        options: ``EngineOptions``.
        alongside: another batch of the same shape and attention mask, run in the same forward
            pass (its rows after the base rows; rows never mix, so the base run's values equal
            its own up to float rounding of batched arithmetic): its activations at
            ``alongside_names`` are in ``alongside_acts``, the metric (bound to ``batch``) on its
            logits in ``alongside_values``. A study that needs another run of prompts of the
            same shape (the corrupted prompts) saves a forward pass.
        alongside_names: hook names read on ``alongside`` (and on ``batch``'s rows, in ``batch_acts``:
            a study reading the same names on both batches reads them in this one pass).
    """

    def __init__(self, model: Any, batch: Tokenized, metric: Any, sites: Sequence[str] = (),
                 options: EngineOptions = EngineOptions(), alongside: Tokenized | None = None,
                 alongside_names: Sequence[str] = ()) -> None:
        if alongside is not None and (alongside.shape != batch.shape
                                      or not torch.equal(alongside.attention_mask, batch.attention_mask)):
            raise InputError(f"alongside: a batch run in the base run's pass needs its shape {batch.shape} and "
                             f"attention mask (got {alongside.shape}); run it separately")
        self.model, self.batch, self.options = model, batch, options
        self.sites, self.given_metric = tuple(sites), metric
        self._staged = metric if isinstance(metric, Staged) else None
        self.metric = bind(metric.first if isinstance(metric, Staged) else metric, batch)
        self.rows, self.seq = batch.shape
        fast = options.fast_paths
        off = "fast paths disabled (fast_paths=False)"
        self.mid_reason = mid_stack.reason(model) if fast else off
        # a plain function is traced on the base run's logits (engine.reads); until then its
        # read-only head is pending, and the base run computes the full logits
        self.plain = not is_metric(self.metric)
        traceable = self._staged is None and not options.grad
        self.read_reason = read_only.reason(model, self.metric, traceable=traceable) if fast else off
        self.read_note: str | None = None
        self.read_positions: Tensor | None = None
        if self.read_reason is None and not self.plain:
            self.read_positions = self.metric.positions.long()  # type: ignore[union-attr]
        self.columns: Tensor | None = None  # the vocabulary entries the read-only head computes (None: all)
        self.columns_reason = self._narrow()
        self._decide_paths()
        # what TL's own forward uses as the mask: the batch's when padded, else its default
        self.forward_mask = batch.attention_mask if batch.padded else compat.tl_default_mask(model, batch.tokens)
        self.context = RunContext(real=batch.attention_mask.bool() if batch.padded else None)
        self.stats = {"passes": 0, "cells_skipped": 0, "final_block_split": 0, "prefix_passes": 0,
                      "final_kv_split": 0}
        if self.plain:
            self.stats["plain_recomputed"] = 0  # cells whose plain metric read outside the traced position
            self.stats["plain_calls_repeated"] = 0  # calls made again on fresh logits (reads.HiddenLogits.clean)
        self._unembed_weight: Tensor | None = None
        self.alongside_acts: dict[str, Tensor] = {}
        self.batch_acts: dict[str, Tensor] = {}
        self._alongside: Tensor | None = None  # its rows at the read positions (read-only head), else its logits
        self._run_base(list(dict.fromkeys(sites)), alongside, list(dict.fromkeys(alongside_names)))

    def _narrow(self) -> str | None:
        """Unembed only the vocabulary entries a ``ti.metrics`` metric reads (``paths.head_columns``),
        scoring with the same metric on those columns; or why every entry is computed."""
        why = head_columns.reason(self.read_reason, self._staged is not None)
        if why is not None:
            return why
        narrowed = head_columns.narrowed(self.metric)
        if narrowed is None:
            return "pending the plain metric's trace" if self.plain else "the metric may read any vocabulary entry"
        columns, metric = narrowed
        self.columns, self.metric = columns.to(self.batch.tokens.device), metric
        return None

    def _decide_paths(self) -> None:
        """``prefix_kv`` and ``split_final``, which follow from the read-only head's decision."""
        model, batch, fast = self.model, self.batch, self.options.fast_paths
        off = "fast paths disabled (fast_paths=False)"
        head_reason = None if self.read_reason is None or self._full_logits_reason() is None else self.read_reason
        self.prefix_reason = (prefix_kv.reason(model, batch, self.metric, head_reason) if fast else off)
        if self.mid_reason is not None and self.prefix_reason is None:
            self.prefix_reason = f"needs mid-stack starts ({self.mid_reason})"
        pending = self.plain and self.read_reason is None and self.read_positions is None
        self.split_reason = ("pending the plain metric's trace" if pending else
                             split_final.reason(model, batch, self.read_positions, self.read_reason) if fast else off)
        if self.mid_reason is not None and self.split_reason is None:
            self.split_reason = f"needs mid-stack starts ({self.mid_reason})"

    def _full_logits_reason(self) -> str | None:
        """Why a pass that starts at position p can't give full logits (positions < p taken from
        the base run's logits, which they equal under causal attention), or None."""
        if self.options.grad:
            return "gradients kept"
        if self._staged is not None:
            return "a staged metric"
        if not compat.head_is_plain(self.model):
            return "a hook is attached to ln_final or unembed"
        return None

    def _trace_plain(self, logits: Tensor) -> None:
        """Which position the plain metric reads, traced on the base run's logits (``engine.reads``):
        one position turns on the read-only head there; anything else turns it off, saying why."""
        found = reads.probe(self.metric, logits, self._values)  # type: ignore[arg-type]
        self.read_note = found.describe()
        if found.read_position is None:
            self.read_reason = self.read_note
        else:
            self.read_positions = torch.full((self.rows,), found.read_position, dtype=torch.long,
                                             device=self.batch.tokens.device)
            if found.columns is not None:  # the vocabulary entries it reads: only they are unembedded
                self.columns, self.columns_reason = found.columns.to(self.batch.tokens.device), None
            else:
                self.columns_reason = "the plain metric reads every vocabulary entry (an index or a softmax)"
        self._decide_paths()

    # -- the base run ---------------------------------------------------------------------
    def _run_base(self, sites: list[str], alongside: Tokenized | None, keep: list[str]) -> None:
        model, rows = self.model, self.rows
        layers = sorted({layer for layer in (mid_stack.start_layer(model, [s]) for s in sites) if layer is not None})
        starts = [site_name("resid_pre", layer) for layer in layers] if self.mid_reason is None else []
        names = list(dict.fromkeys([*starts, *(sites if not self.options.grad else [])]))
        cache = hooks.cache(list(dict.fromkeys(names + keep))) if names or keep else None
        tokens, mask = self.batch.tokens, self.forward_mask
        if alongside is not None:  # the same attention mask (checked), so TL's own mask is the same too
            tokens = torch.cat([tokens, alongside.tokens])
            mask = None if mask is None else torch.cat([mask, alongside.attention_mask if alongside.padded
                                                        else compat.tl_default_mask(model, alongside.tokens)])
        kw: dict[str, Any] = {} if mask is None else {"attention_mask": mask}
        kv = None
        if self.prefix_reason is None:
            kv = compat.new_kv_cache(model, len(tokens))
            kw = {"past_kv_cache": kv, "attention_mask": torch.ones_like(tokens)}
        if self.read_reason is None and not self.plain:
            kw["stop_at_layer"] = model.cfg.n_layers
        iv = cache or Intervention.identity()
        with torch.no_grad():
            out = iv.run(model, tokens, **kw)
            self.acts = {name: cache[name][:rows] for name in names} if cache is not None else {}
            self.alongside_acts = {name: cache[name][rows:] for name in keep} if cache is not None else {}
            self.batch_acts = {name: cache[name][:rows] for name in keep} if cache is not None else {}
            self.kv = [(k[:rows], v[:rows]) for k, v in compat.kv_entries(kv)] if kv is not None else []
        out, self._alongside = out[:rows], (out[rows:] if alongside is not None else None)
        self._values: Values | None = None
        if self.read_reason is None and not self.plain:  # unembedded later, with the cells' rows, in one call
            self._base_rows: Tensor | None = read_only.take(out, self.read_positions, 0)
            if self._alongside is not None:
                self._alongside = read_only.take(self._alongside, self.read_positions, 0)
        else:
            self._base_rows = None
            self._finish_base(out)
            if self.plain and self.read_reason is None:
                self._trace_plain(out)

    def _finish_base(self, logits: Tensor) -> None:
        """The base run's values from its logits (at the read positions, or all of them)."""
        self.base_logits = logits
        with torch.no_grad():
            self._values = _only(_score(self.metric, logits, 1, self.rows, read=self.read_reason is None))
        if self._staged is not None:
            self._rebind(self._staged.then(self._values))

    @property
    def values(self) -> Values:
        """The metric on the base run: ``(batch,)`` per prompt, a dict for a MetricSet, a scalar
        for a plain function."""
        if self._values is None:
            with torch.no_grad():
                self._finish_base(self._head(self._base_rows))
        return self._values  # type: ignore[return-value]

    @property
    def alongside_values(self) -> Values:
        """The metric on the ``alongside`` batch's logits, as ``values`` for the base run."""
        if self._alongside is None:
            raise InputError("this base run ran no alongside batch")
        read = self.read_reason is None
        with torch.no_grad():
            logits = self._head(self._alongside) if read and not self.plain else self._alongside
            return _only(_score(self.metric, logits, 1, self.rows, read=read))

    def _rebind(self, metric: Any) -> None:
        """Score with another metric reading the same positions, from the base run's logits."""
        bound = bind(metric, self.batch)
        if self.read_reason is None and not (is_metric(bound) and bound.positions is not None
                                             and torch.equal(bound.positions.long(), self.read_positions)):
            raise InputError("a staged metric must read the same positions as its first stage")
        self.metric = bound
        self._values = _only(_score(bound, self.base_logits, 1, self.rows, read=self.read_reason is None))

    @property
    def paths(self) -> dict[str, str]:
        """Each fast path: ``"on"`` or why it is off (for provenance)."""
        reasons = {"mid_stack": self.mid_reason, "read_only": self.read_reason,
                   "prefix_kv": self.prefix_reason,
                   "split_final": self.split_reason,
                   "skip_unchanged": None if self.options.skip_unchanged and not self.options.grad
                   else "skip_unchanged=False or gradients kept"}
        paths = {k: "on" if v is None else f"off: {v}" for k, v in reasons.items()}
        paths["head_columns"] = (f"on: {len(self.columns)} of {d_vocab_out(self.model)} vocabulary entries"
                                 if self.columns is not None else f"off: {self.columns_reason}")
        if self.plain:  # where a plain function read, and how that was decided
            paths["plain_metric"] = self.read_note or f"reads the full logits: {self.read_reason}"
        return paths

    # -- the passes ----------------------------------------------------------------------
    @renamed(progress="on_cells")
    def evaluate(self, cells: Sequence[Intervention], on_cells: Callable[[int], None] | None = None) -> Values:
        """Every cell's value: ``(n_cells, batch)`` per prompt for tl_interp metrics (a dict of
        them for a MetricSet), ``(n_cells,)`` for plain functions. All checks run first;
        ``on_cells(k)`` is called as each pass finishes its ``k`` cells (a progress bar's update)."""
        bound = bound_cells(self.model, cells)  # every name, index and width checked here
        n = len(bound)
        if n == 0:
            return self.values[None][:0] if isinstance(self.values, Tensor) else \
                {k: v[None][:0] for k, v in self.values.items()}
        skip = self.options.skip_unchanged and not self.options.grad
        unchanged = skip_unchanged.UNCHANGED
        first = (skip_unchanged.footprints(self.model, bound, self.acts, self.context)
                 if not self.options.grad and all(name in self.acts for cell in bound for name in cell) else [0] * n)
        start = int(self.read_positions.min()) if self.read_positions is not None else 0
        if not skip:  # computed anyway: from the first position read (all before it are the base run's)
            first = [start if f == unchanged else f for f in first]
        if self.read_positions is not None:  # a pass must compute what the metric reads, even before the edits
            first = [f if f == unchanged else min(f, start) for f in first]
        if self.prefix_reason is not None:
            first = [unchanged if f == unchanged else 0 for f in first]
        live = [i for i in range(n) if first[i] != unchanged]
        self.stats["cells_skipped"] += n - len(live)
        if on_cells is not None and n > len(live):
            on_cells(n - len(live))
        outputs: list[tuple[list[int], Tensor]] = []  # (cells, their read rows or logits) per pass
        by_layer: dict[int | None, list[int]] = {}
        start_of: dict[frozenset[str], int | None] = {}  # cells often hook the same points: looked up once
        for i in live:
            names = frozenset(bound[i])
            if names not in start_of:
                start_of[names] = mid_stack.start_layer(self.model, names) if self.mid_reason is None else None
            by_layer.setdefault(start_of[names], []).append(i)
        full = self.read_reason is not None
        per_pass = cells_per_pass(self.model, self.rows, self.seq, self.options.memory_mb, full)
        grad = torch.enable_grad() if self.options.grad else torch.inference_mode()
        groups = merge_layers(by_layer, first, n_layers=self.model.cfg.n_layers, seq=self.seq, n_rows=self.rows,
                              per_pass=per_pass, cost=self.options.cost)
        with forward_layout(self.model, self.options), grad:
            for layer, members in groups:
                blocks_plain = layer is not None and compat.blocks_are_plain(self.model, layer)
                starts = [first[i] if blocks_plain else 0 for i in members]
                device = self.batch.tokens.device.type
                for chunk, first_pos in chunks(starts, per_pass, self.seq, self.rows, self.options.cost, device):
                    idx = [members[k] for k in chunk]
                    outputs.append((idx, self._pass(layer, [bound[i] for i in idx], first_pos)))
                    if on_cells is not None:
                        on_cells(len(idx))
            results = self._score_passes(outputs, bound)
        base = self.values
        rows = [results.get(i, base) for i in range(n)]
        if isinstance(base, dict):
            return {k: torch.stack([r[k] for r in rows]) for k in base}  # type: ignore[index]
        return torch.stack(rows)  # type: ignore[arg-type]

    def _pass(self, layer: int | None, cells: list[dict[str, list[Any]]], first_pos: int,
              full_logits: bool = False) -> Tensor:
        """One stacked forward pass over ``cells``, starting at ``layer`` and position ``first_pos``
        (``full_logits``: the model's own full forward, whatever the fast paths)."""
        model, n, rows = self.model, len(cells), self.rows
        stacked = stack(cells, rows)
        self.stats["passes"] += 1
        mask = None if self.forward_mask is None else self.forward_mask.repeat(n, 1)
        if layer is None:  # from the tokens (an edit outside the blocks, or no mid-stack starts)
            kw: dict[str, Any] = {} if mask is None else {"attention_mask": mask}
            if self.read_reason is None and not full_logits:
                kw["stop_at_layer"] = model.cfg.n_layers
            out = stacked.run(model, self.batch.tokens.repeat(n, 1), **kw)
            return out if full_logits else self._read(out, n, 0)
        n_layers = model.cfg.n_layers
        final_input = site_name("resid_pre", n_layers - 1)
        # the final block runs at the last position alone when no cell edits inside it; cells that
        # edit only its input (resid_pre) are applied to that input here, before the block runs
        edits_input_only = layer == n_layers - 1 and all(set(c) == {final_input} for c in cells)
        # cells that edit only the final block's keys/values: their hooks fire inside split_final's two steps
        kv_only = [layer == n_layers - 1 and set(c) <= split_final.kv_sites(model) for c in cells]
        if self.split_reason is None and not full_logits and 0 < sum(kv_only) < n:  # two passes, so those split
            parts = [[i for i in range(n) if kv_only[i] is flag] for flag in (True, False)]
            outs = [self._pass(layer, [cells[i] for i in part], first_pos) for part in parts]
            order = torch.tensor([i for part in parts for i in part]).argsort()
            return torch.cat(outs).reshape(n, rows, -1)[order].reshape(n * rows, -1)
        edits_kv_only = all(kv_only)
        final_output = site_name("resid_post", n_layers - 1)
        if (self.split_reason is None and not full_logits and layer == n_layers - 1 and final_output in self.acts
                and all(set(c) == {final_output} for c in cells)):  # nothing before the edit moved: no block runs
            (name, edit), = stacked.bind(model)
            with running(RunContext(offset=first_pos)):
                out = edit(self.acts[final_output][:, first_pos:].repeat(n, 1, 1), hook=model.hook_dict[name])
            return self._read(out, n, first_pos)
        # cells whose hooks in the final block follow the window of positions run there in split_final's two steps
        windowed = layer < n_layers - 1 and split_final.windowed_cells(model, cells)
        split = self.split_reason is None and (edits_input_only or edits_kv_only or windowed or (
            layer < n_layers - 1 and all(mid_stack.start_layer(model, [name]) < n_layers - 1
                                         for name in {name for c in cells for name in c})))  # cells share names
        stop = n_layers - 1 if split else n_layers
        start = self.acts[site_name("resid_pre", layer)].repeat(n, 1, 1)
        kw = {"attention_mask": mask}
        prefix = None
        if first_pos > 0:  # positions < first_pos equal the base run's: run the rest only
            start = start[:, first_pos:]
            kw = {"past_kv_cache": compat.frozen_prefix_cache(model, self.kv, first_pos, n, range(layer, stop))}
            last_k, last_v = self.kv[n_layers - 1]
            prefix = (last_k[:, :first_pos].repeat(n, 1, 1, 1), last_v[:, :first_pos].repeat(n, 1, 1, 1))
            self.stats["prefix_passes"] += 1
        if self.read_reason is None:
            kw["stop_at_layer"] = stop
        if split and edits_input_only:
            (name, edit), = stacked.bind(model)  # the cells' hooks, in the pass's window of positions
            with running(RunContext(offset=first_pos)):
                out = edit(start, hook=model.hook_dict[name])
        elif split and edits_kv_only:
            out = start  # the final block's input is the base run's; the cells edit its keys/values
        elif split and windowed:  # the cells' hooks run in the blocks below and in both steps of the final block
            with stacked.applied(model):
                out = model(start, start_at_layer=layer, **kw)
                last = split_final.last_position(model, out, prefix, first_pos)
        else:
            with stacked.applied(model):
                out = model(start, start_at_layer=layer, **kw)
        if split:  # the final block runs at the last position alone
            self.stats["final_block_split"] += 1
            if edits_kv_only:
                self.stats["final_kv_split"] += 1
                with stacked.applied(model):
                    last = split_final.last_position(model, out, prefix, first_pos)
            elif not windowed:
                last = split_final.last_position(model, out, prefix, first_pos)
            return self._read(last, n, self.seq - 1)
        return self._read(out, n, first_pos)

    def _read(self, out: Tensor, n: int, offset: int) -> Tensor:
        """What a pass gives: its final residuals at the read positions (read-only head), else
        its full logits (those before its window from the base run)."""
        if self.read_reason is None:
            return read_only.take(out, self.read_positions.repeat(n), offset)
        if offset > 0:  # full logits: the positions before the pass's window are the base run's
            return torch.cat([self.base_logits[:, :offset].repeat(n, 1, 1), out], 1)
        return out

    def _score_passes(self, outputs: list[tuple[list[int], Tensor]], bound: list[dict[str, list[Any]]]
                      ) -> dict[int, Values]:
        """Every computed cell's values. With the read-only head, the rows of every pass are
        unembedded together, in as few calls as the memory budget allows, so the unembedding
        matrix is read once, not once per pass. (The base run's own rows are unembedded alone,
        so its values never depend on which cells ran with it.)"""
        if self.read_reason is not None:
            scored = [(idx, _score(self.metric, out, len(idx), self.rows, read=False)) for idx, out in outputs]
        else:
            self.values  # noqa: B018 - the base run's values first, from its own rows (never batched with cells')
            logits = self._head(torch.cat([rows for _, rows in outputs])) if outputs else None
            scored, at = [], 0
            hidden = (reads.HiddenLogits((self.rows, self.seq, d_vocab_out(self.model)), self.read_positions,
                                         self.columns, logits) if self.plain and logits is not None else None)
            for idx, rows in outputs:
                n = len(idx)
                part = logits[at:at + n * self.rows]
                scored.append((idx, self._score_plain(part, [bound[i] for i in idx], hidden) if hidden is not None
                               else _score(self.metric, part, n, self.rows, read=True)))
                at += n * self.rows
        results: dict[int, Values] = {}
        for idx, values in scored:
            for j, i in enumerate(idx):
                results[i] = {k: v[j] for k, v in values.items()} if isinstance(values, dict) else values[j]
        return results

    def _score_plain(self, logits: Tensor, cells: list[dict[str, list[Any]]], hidden: reads.HiddenLogits) -> Tensor:
        """A plain metric's value per cell from its rows of logits at the traced position: the
        metric sees logits that are NaN everywhere else (``hidden``: one buffer reused across
        calls), and its reads are traced again (``engine.reads``); a cell whose call reads
        elsewhere is run again on its full logits."""
        allowed = frozenset(self.read_positions.unique().tolist())  # type: ignore[union-attr]
        columns = None if self.columns is None else frozenset(self.columns.tolist())
        parts = [logits[j * self.rows:(j + 1) * self.rows] for j in range(len(cells))]
        got = [hidden.traced(self.metric, part, allowed, columns) for part in parts]  # type: ignore[arg-type]
        if not hidden.clean():  # a call wrote into the buffer where no counter saw it: every call again, fresh
            hidden.renew()
            self.stats["plain_calls_repeated"] += len(cells)
            got = [reads.traced(self.metric, hidden.fresh(part), allowed, columns) for part in parts]  # type: ignore[arg-type]
        values = []
        for cell, (value, _) in zip(cells, got):
            if value is None:
                self.stats["plain_recomputed"] += 1
                value = self.metric(self._pass(None, [cell], 0, full_logits=True))
            values.append(scalar(value))
        return torch.stack(values)

    def _head(self, rows: Tensor) -> Tensor:
        """``compat.head`` of many rows, in chunks whose logits fit the memory budget."""
        if self.columns is not None:  # the few entries the metric reads: no full unembedding
            return compat.head_columns(self.model, rows, self.columns)
        per_chunk = max(1, int(self.options.memory_mb * 2**20 // (4 * 3 * d_vocab_out(self.model))))
        if self._unembed_weight is None:  # TL's layout of W_U, copied once per base run (or per study)
            self._unembed_weight = compat.unembed_weight_of(self.model)
        weight = self._unembed_weight
        return torch.cat([compat.head(self.model, rows[lo:lo + per_chunk], unembed_weight=weight)
                          for lo in range(0, len(rows), per_chunk)])
