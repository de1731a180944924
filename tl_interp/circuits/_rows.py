"""Many circuits per pass, every circuit's rows edited together, on the ordinary forward pass.

``faithfulness`` runs one engine cell per circuit; here every cell's hook at a point is one
call over the rows of all the pass's cells (``engine.stack``'s ``together`` protocol), and no
cell runs TransformerLens's per-head inputs. A receiver (a head's q, k or v input, an MLP's
input, the logits) reads, in circuit ``c``, its current input plus
``sum over excluded senders of (other_s - current_s)``; per circuit it is

- *in* (no excluded sender): the ordinary forward already computes it, nothing to do;
- *out* (every sender excluded): the input is ``base - sum clean_s + sum other_s`` whatever the
  circuit does upstream (the senders' sum is all that moves), a constant computed once per
  study; a head's constant projection ``ln1(A) @ W[h] + b[h]`` replaces its entry at
  ``attn.hook_q`` / ``hook_k`` / ``hook_v``;
- *mixed*: ``ln1(A + sum over its senders s of (current_s - other_s)) @ W[h] + b[h]`` for that
  head alone (an MLP / the logits: ``input + sum over excluded s of (other_s - current_s)``),
  with the current senders read in the same pass (heads as ``z @ W_O[h]``) into one table of
  ``other - current`` per pass; a layer's mixed query inputs (and its mixed key and value
  inputs) are one product with that table over the pass's cells, then one fused norm
  (``compat.fused_norm``) and one batched projection of the mixed pairs alone.

That product is dense (each cell's mixed receivers x every sender, 0 where a sender is not summed)
or sparse (one ``(pair, cell * sender)`` matrix of +-1 entries for the senders each pair sums,
``torch.sparse.mm``), chosen per share of a layer (its q; its k and v; or, where always dense, all three but in the final
block) and per MLP point, per pass:
dense below ``_sums.SPARSE_MIN_WORK`` multiply-adds (small models: the sparse product's fixed cost
dominates), else sparse where it sums fewer entries than ``dense multiply-adds / min(rows per
cell, _sums.DENSE_SPEEDUP)`` (a dense product of several rows per cell does ~4 multiply-adds in the
time a sparse one adds a table entry; of one row it is memory-bound alike). Sparse, each mixed
input sums the fewer of its kept senders (``A + sum over kept s of (current_s - other_s)``: built
from the constant, exact where the input is ~0) and its excluded ones (the current input, read at
``blocks.L.hook_resid_pre`` for a head, plus ``sum over excluded s of (other_s - current_s)``);
the final block's heads always the kept ones (``split_final`` computes its keys and values
without firing its ``hook_resid_pre``), and a head only where a product of its share can be sparse.

Edits are written in place into the tensors TL hands these hooks. The hooks follow the run
context's window of positions (``windowed = True``), so the engine may run the final block at
the last position alone (``engine.paths.split_final``): its keys and values on every position,
then the block's step at the last one, with the hooks of that block firing in both.

Rotary embeddings, q/k norms and soft caps come after those hook points and run as usual;
grouped-query attention runs ungrouped (one key / value per query head), as ``_heads`` does.
``rows_reason`` says when this can't be done exactly; ``faithfulness`` then runs the per-head
cells of ``_edit.circuit_edit``.
"""

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp.circuits._edit import Norms, sender_hooks
from tl_interp.circuits._graph import Graph
from tl_interp.circuits._heads import head_input_reason
from tl_interp.circuits._sums import always_dense, pair_senders, prefix_sums, sparse_pays, sparse_rows
from tl_interp.hooks._select import layout
from tl_interp.intervention import Hook, Intervention

__all__ = ["rows_reason", "CircuitRows"]

_GATHERED_MAX = 2 ** 20  # values of a share's gathered projections kept for the study (above: gathered per pass)


def rows_reason(model: Any, norms: Norms, per_position: bool) -> str | None:
    """Why circuits can't be evaluated by ``CircuitRows`` (on the ordinary forward), or None."""
    why = head_input_reason(model)
    if why is not None:
        return why
    if norms is not None:
        return "attention outputs are normalised before they are added (a head's edge is not a summand)"
    if per_position:
        return "circuits of edges at positions (per_position=True)"
    return None


_STAGES = ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_mlp_in", "hook_mlp_out",
           "hook_resid_post")


_BEGIN = "blocks.0.hook_resid_pre"  # every cell hooks it, so every pass starts there and resets the pass's state


def _forward_order(name: str) -> tuple[int, int]:
    """Where a point of this module fires in a forward pass: (layer, stage)."""
    _, layer, rest = name.split(".", 2)
    return int(layer), _STAGES.index(rest)


class _Point:
    """One edited hook point: its receivers' excluded-sender weights per circuit and their kind."""

    def __init__(self, name: str, layer: int, letter: str | None, n_senders: int, weights: Tensor) -> None:
        self.name, self.layer, self.letter, self.n_senders = name, layer, letter, n_senders
        self.weights = weights  # (circuit + 1, receiver, sender); the last circuit: nothing excluded
        self.out = weights.sum(-1) == n_senders  # (circuit + 1, receiver)
        self.mixed = weights.any(-1) & ~self.out
        self.constant: Tensor | None = None  # (batch, pos, head, d_head) or (batch, pos, d_model)
        self.group = f"blocks.{layer}.attn" if letter is not None else name  # points reading the same senders
        self.share = "qkv"  # a head's: which of its layer's receivers are computed together (see CircuitRows)
        self.first = 0  # its first receiver's index in the group


class _RowsHook:
    """A cell's hook at one point: alone it edits its own rows; stacked, ``together`` edits every
    cell's rows in one call (``engine.stack``)."""

    windowed = True  # follows the run context's window of positions (engine.paths.split_final)

    def __init__(self, together: Any, payload: int, name: str) -> None:
        self.together, self.payload, self.__name__ = together, payload, name

    def __call__(self, act: Tensor, hook: Any) -> Tensor | None:
        return self.together(act, hook, [self.payload], act.shape[0])

    def build(self, name: str, info: Any) -> "_RowsHook":
        """The hook function at any point (a ``Hook`` builder)."""
        return self


class CircuitRows:
    """The cells of circuits ``keeps`` on ``model`` (see the module docstring).

    Args:
        model: the model (run with ``compat.receiver_hooks(mlp_in=True, ungroup=True)``).
        g: the graph.
        keeps: ``(circuit, n_edges)`` bool.
        other: ``(batch, pos, n_senders, d_model)`` senders' ablated values.
        embed: ``(batch, pos, d_model)`` the clean run's token embeddings (the input node, which
            never moves).
        base: a run's activations at ``blocks.L.hook_resid_pre``, ``blocks.L.hook_mlp_in``, the last
            ``hook_resid_post`` and ``hook_pos_embed`` (``base_names``): the clean run's, or another
            run's on the same positions (the same attention mask: the same positional embeddings).
        senders: that run's senders' values, shaped as ``other``.
        real: ``(batch, pos)`` bool, the positions that are not padding (None: all). Padding is
            zero in ``senders``, so the check that the residual stream holds only senders,
            positional embeddings and ``b_O`` skips it; what the rows compute there is read by no
            real position (masked keys) and no metric.
    """

    def __init__(self, model: Any, g: Graph, keeps: Tensor, other: Tensor, embed: Tensor,
                 base: dict[str, Tensor], senders: Tensor, real: Tensor | None = None) -> None:
        self.model, self.g, self.other, self.embed = model, g, other, embed
        self._real = None if real is None else real.bool()[:, :, None].to(other.device)
        self.n_circuits = keeps.shape[0]
        excluded = torch.cat([~keeps.bool(), torch.zeros(1, keeps.shape[1], dtype=torch.bool)]).float()
        self.starts, at = [], 0
        for _, n in sender_hooks(g):
            self.starts.append(at)
            at += n
        by_point: dict[str, tuple[int, str | None, int, list[int]]] = {}  # (layer, letter, senders, offsets)
        for r in g.receivers:
            layer = int(r.hook_name.split(".")[1])
            if r.head is not None:
                letter = r.hook_name.split("hook_")[1][0]
                name = f"blocks.{layer}.attn.hook_{letter}"
            else:
                letter, name = None, r.hook_name
            by_point.setdefault(name, (layer, letter, r.n_senders, []))[3].append(r.offset)
        self.points: dict[str, _Point] = {}
        for name, (layer, letter, n, offsets) in by_point.items():
            lo, count = offsets[0], len(offsets)
            if offsets == list(range(lo, lo + n * count, n)):  # side by side in the graph's edge order: one view
                weights = excluded[:, lo:lo + n * count].reshape(-1, count, n)
            else:
                weights = torch.stack([excluded[:, at:at + n] for at in offsets], 1)
            self.points[name] = _Point(name, layer, letter, n, weights)
        # (weights, mixed) of every group's receivers; the weights a table of a pass is multiplied by:
        # a head's input is rebuilt from A (its kept senders), an MLP's / the logits' edited (its excluded ones)
        members: dict[str, list[_Point]] = {}
        for p in self.points.values():
            members.setdefault(p.group, []).append(p)
        self.groups: dict[str, tuple[Tensor, Tensor]] = {}
        # per group, per circuit: does it edit the group at all, has it a mixed receiver there
        self._edits: dict[str, tuple[list[bool], list[bool]]] = {}
        # which receivers of a layer's group are computed together: its q receivers; its k and v receivers
        # (the final block's queries run at the last position alone under split_final); a small model's
        # q, k and v (they fire on the same positions) where their product is always dense (one table read)
        shares: dict[tuple[str, str], list[int]] = {}
        n_values = other.shape[0] * other.shape[1] * other.shape[3]
        for group, points in members.items():
            at = 0
            for p in points:
                p.first, at = at, at + p.weights.shape[1]
                if p.letter is not None:
                    merged = (p.layer < g.n_layers - 1
                              and always_dense(self.n_circuits * 3 * p.weights.shape[1] * p.n_senders * n_values))
                    p.share = "qkv" if merged else "q" if p.letter == "q" else "kv"
                    shares.setdefault((group, p.share), []).extend(range(p.first, at))
            raw = points[0].weights if len(points) == 1 else torch.cat([p.weights for p in points], 1)
            mixed = points[0].mixed if len(points) == 1 else torch.cat([p.mixed for p in points], 1)
            self.groups[group] = (raw if points[0].letter is None else -(1 - raw), mixed)
            self._edits[group] = (raw.any(2).any(1).tolist(), mixed.any(1).tolist())
        self._shares = {key: torch.tensor(share_of, dtype=torch.long) for key, share_of in shares.items()}
        # per share, per circuit: its receivers' weights, how many are mixed, and those first (ascending)
        self._share_rows: dict[tuple[str, str], tuple[Tensor, Tensor, Tensor]] = {}
        for (group, share), share_of in self._shares.items():
            weights, mixed = self.groups[group]
            here = mixed[:, share_of]
            self._share_rows[(group, share)] = (weights[:, share_of], here.sum(1),
                                                torch.sort((~here).to(torch.uint8), dim=1, stable=True).indices)
        # per layer: q, k, v weights of every receiver of its group (query heads; grouped K/V repeated)
        self.qkv = {layer: self._projection(layer) for layer in range(g.n_layers)}
        self.moved: dict[int, Tensor] = {}  # per layer: a head's input with every sender excluded
        self._projected: dict[int, Tensor] = {}  # and its q, k, v projections
        with torch.no_grad():
            # (batch, pos, sender, d_model): the sum of the first s + 1 senders' moves, added to the base input
            # in float64: with every sender excluded the input can be ~0 in exact arithmetic (zero ablation,
            # no biases), where float32 cancellation would leave noise that a norm then scales up
            base = {k: v.double() for k, v in base.items()}
            b_o = torch.stack([block.attn.b_O.detach().double() for block in model.blocks])
            self._biases = torch.cat([torch.zeros_like(b_o[:1]), b_o.cumsum(0)])  # b_O of the first l layers
            ends = sorted({p.n_senders for p in self.points.values()})
            others = prefix_sums(other, ends)
            cleans = others if senders is other else prefix_sums(senders, ends)  # the corrupted run's own senders
            self.reason: str | None = None  # why the constants can't be trusted (faithfulness then runs per-head cells)
            rests: dict[str, Tensor] = {}
            for p in self.points.values():  # a layer's q, k and v points read one input
                key = p.group if p.letter is not None else p.name
                rest = rests[key] = rests[key] if key in rests else self._rest(p, base, cleans[p.n_senders])
                needed = p.letter is None or p.layer not in self.moved  # a layer's heads: projected once
                p.constant = self._constant(p, rest + others[p.n_senders] if needed else rest).to(other.dtype)
        self.w_o = [block.attn.W_O.detach() for block in model.blocks]
        # per share of heads / MLP point, the sparse products' parts (built when first chosen)
        self._parts: dict[Any, list[tuple[Tensor, Tensor, Tensor, Tensor]]] = {}
        # per share of heads, per (circuit, receiver): is a mixed input rebuilt from the constant in a sparse
        # product (else edited: its fewer excluded senders summed, on the current input read at
        # hook_resid_pre); per layer, per circuit: does it read that input (only where a product may be sparse)
        self._rebuilt: dict[tuple[str, str], Tensor] = {}
        self._resid: dict[int, Tensor] = {}
        for key, (weights, counts, _) in self._share_rows.items():
            kept = (weights != 0).sum(-1)
            rebuilt = kept <= weights.shape[-1] - kept
            layer = int(key[0].split(".")[1])
            if (always_dense((len(weights) - 1) * int(counts.max()) * weights.shape[-1] * n_values)
                    or layer == g.n_layers - 1):  # always dense; split_final's cache of the final block's keys
                rebuilt[:] = True  # and values does not fire its hook_resid_pre
            self._rebuilt[key] = rebuilt
            edited = (self.groups[key[0]][1][:, self._shares[key]] & ~rebuilt).any(1)
            self._resid[layer] = self._resid.get(layer, torch.zeros_like(edited)) | edited
        self._resid_names = {f"blocks.{layer}.hook_resid_pre": layer for layer, e in self._resid.items()
                             if layer > 0 and bool(e.any())}  # layer 0's heads read the embeddings alone
        self.other_t = other.permute(2, 0, 1, 3).contiguous()  # (sender, batch, pos, d_model)
        self._capture_index = {name.replace("hook_result", "hook_z"): i for i, (name, _) in enumerate(sender_hooks(g))}
        self._state: dict[str, Any] = {}  # the pass's
        self._memo: dict[Any, Any] = {}  # the study's: what depends only on a point / share and a pass's composition
        self._last: tuple[tuple[int, int], tuple[int, int]] = ((-1, -1), (-1, 0))
        captured = self.capture_names()
        self._together = {name: self._make(name) for name in [_BEGIN, *captured, *self._resid_names, *self.points]}
        self._captured = list(zip(captured, self.starts[1:]))  # (hook name, its first sender)
        self._order = {name: _forward_order(name) for name in [*captured, *self._resid_names, *self.points]}

    @staticmethod
    def base_names(model: Any, g: Graph) -> list[str]:
        """The clean-run activations ``base`` holds."""
        names = [f"blocks.{layer}.hook_resid_pre" for layer in range(g.n_layers)]
        if model.cfg.positional_embedding_type == "standard":
            names.append("hook_pos_embed")
        if g.mlp:
            names += [f"blocks.{layer}.hook_mlp_in" for layer in range(g.n_layers)]
        return names + [f"blocks.{g.n_layers - 1}.hook_resid_post"]

    def capture_names(self) -> list[str]:
        """Where the current senders are read (all but the embeddings, which never move)."""
        return [name.replace("hook_result", "hook_z") for name, _ in sender_hooks(self.g)[1:]]

    def _rest(self, p: _Point, base: dict[str, Tensor], senders: Tensor) -> Tensor:
        """What a receiver's input holds besides its senders: the positional embeddings and ``b_O`` of
        the attention layers before it (float64, from the parameters: as ``base - sum of the run's
        senders`` it would carry float32 rounding, which a norm scales up where the input is ~0).
        Checked against ``base - senders``; a mismatch sets ``reason``."""
        layers = p.layer + (1 if p.name.endswith("hook_mlp_in") and not self.g.parallel else 0)
        if p.name.endswith("hook_resid_post"):
            layers = self.g.n_layers
        pos = base.get("hook_pos_embed")
        rest = self._biases[layers] if pos is None else pos + self._biases[layers]
        source = base[p.name if p.letter is None else f"blocks.{p.layer}.hook_resid_pre"]
        off = (source - senders - rest).abs()
        off = float((off if self._real is None else off * self._real).max())
        if self.reason is None and off > 1e-4 * (1 + float(source.abs().max())):
            self.reason = (f"the residual stream at {p.name} holds more than its senders, positional embeddings "
                           f"and b_O (off by {off:.2g})")
        return rest

    def _constant(self, p: _Point, moved: Tensor) -> Tensor:
        """What a receiver at ``p`` reads with every sender excluded (``moved``: its non-sender part
        plus its senders' ``other`` values); a head: its projection of that input."""
        if p.letter is None:
            return moved
        if p.layer not in self.moved:
            moved = moved.to(self.other.dtype)
            self.moved[p.layer] = moved
            w, b = self.qkv[p.layer]  # every receiver's projection at once: (batch, pos, 3 * head, d_head)
            normed = self.model.blocks[p.layer].ln1(moved)  # one product: (batch * pos, d_model) @ (d_model, 3 * head * d_head)
            flat = normed.reshape(-1, normed.shape[-1]) @ w.permute(1, 0, 2).reshape(w.shape[1], -1)
            self._projected[p.layer] = flat.view(*normed.shape[:2], *w.shape[::2]) + b
        return self._projected[p.layer][:, :, p.first:p.first + p.weights.shape[1]].contiguous()  # a view per window

    def cell(self, index: int, label: str) -> Intervention:
        """Circuit ``index``'s cell: hooks where it reads something other than the ordinary
        forward, and the captures of the current senders its mixed receivers read."""
        hooks, need = [], 0  # need: how many senders its mixed receivers read
        for name, p in self.points.items():
            edits, mixed = self._edits[p.group]  # a hook at every point of a group it edits
            if edits[index]:
                hooks.append(name)
                if mixed[index]:
                    need = max(need, p.n_senders)
        captures = [name for name, start in self._captured if start < need]
        captures += [name for name, layer in self._resid_names.items() if bool(self._resid[layer][index])]
        names = [_BEGIN, *sorted(dict.fromkeys(captures + hooks), key=self._order.__getitem__)]  # passes start at layer 0
        return Intervention(tuple(Hook(n, _RowsHook(self._together[n], index, "circuit_rows").build, f"{label}: edges at {n}")
                                  for n in names))  # what Intervention.single builds, without a sum of 26 of them

    # -- the hooks ----------------------------------------------------------------------------
    def _make(self, name: str) -> Any:
        point, order, none = self.points.get(name), _forward_order(name), self.n_circuits

        def together(act: Tensor, hook: Any, payloads: Sequence[int | None], batch: int) -> Tensor | None:
            lay = layout(act.shape[0], act.shape[1], "circuit rows")
            window = (lay.offset, act.shape[1])
            if name == _BEGIN:  # a pass begins: what the last one read is gone
                self._state, self._last = {}, (window, order)
                return None
            # in a window of positions, points fire in forward order (the final block may run again on
            # other windows: split_final's cache, then its step at the last position)
            if window == self._last[0] and order <= self._last[1]:
                raise RuntimeError(f"circuit rows: {name} fired out of order (a pass that did not start at {_BEGIN})")
            self._last = (window, order)
            known = self._state.setdefault("cells", [None] * len(payloads))
            for at, c in enumerate(payloads):  # the circuit of each cell of the pass, one throughout
                if c is not None and known[at] not in (None, c):
                    raise RuntimeError(f"circuit rows at {name}: the pass's cells changed mid-pass")
                known[at] = known[at] if c is None else c
            if point is not None:
                key = ("index", tuple(payloads))  # one per pass composition (the points of a pass share it)
                found = self._state.get(key)
                if found is None:  # no hook here: nothing excluded
                    comp = tuple(none if c is None else c for c in payloads)
                    found = self._state[key] = (comp, torch.tensor(comp))
                return self._edit(point, act, found[1], found[0], lay.offset, batch)
            if name in self._resid_names:  # the current input of the layer's heads, at this window (the last read)
                self._state["resid"] = (order[0], window, act)
            else:
                self._capture(name, act, lay.offset, batch)
            return None

        return together

    def _capture(self, name: str, act: Tensor, lo: int, batch: int) -> None:
        """Write ``other - current`` of the senders at ``name`` into the pass's ``(cell, sender,
        batch * pos * d_model)`` table (allocated at the first capture, the embeddings' entry
        filled: they never move)."""
        cells, n = act.shape[0] // batch, act.shape[1]
        other = self.other_t[:, :, lo:lo + n].to(act.device, act.dtype)  # (sender, batch, pos, d_model)
        table = self._state.get("diff")
        if table is None:  # every position of the sequence: a pass's windows lie within it
            table = act.new_empty(cells, other.shape[0], batch, self.other_t.shape[2], other.shape[-1])  # filled as read
            table[:, 0] = (self.other_t[0] - self.embed).to(act.device, act.dtype)
            self._state["diff"] = table
        start = self.starts[self._capture_index[name]]
        self._state.setdefault("read", {0}).add(start)
        whole = lo == 0 and n == table.shape[3]
        if name.endswith("hook_z"):  # a head's output is z @ W_O[h]: (cell, head, batch * pos, d_model)
            w_o = self.w_o[int(name.split(".")[1])].to(act.dtype)
            n_heads, d_model = w_o.shape[0], w_o.shape[-1]
            z = act.reshape(-1, n_heads, w_o.shape[1]).transpose(0, 1)  # one product per head over every cell's rows
            current = torch.bmm(z, w_o).view(n_heads, cells, batch * n, d_model).transpose(0, 1)
            heads = slice(start, start + n_heads)
            if whole:
                torch.sub(other[heads].reshape(n_heads, -1, d_model), current,
                          out=table[:, heads].view(cells, n_heads, -1, d_model))
            else:
                moved = other[heads].reshape(n_heads, -1, d_model) - current
                table[:, heads, :, lo:lo + n] = moved.view(cells, n_heads, batch, n, -1)
        else:
            table[:, start, :, lo:lo + n] = other[start] - act.reshape(cells, batch, *act.shape[1:])

    def _read(self, group: str) -> Tensor:
        """The pass's ``(cell, sender, batch, pos, d_model)`` table of ``other - current`` (an error if
        the pass did not read every sender ``group`` reads)."""
        table, n = self._state.get("diff"), self.groups[group][0].shape[-1]
        if table is None or any(start not in self._state["read"] for start in self.starts if start < n):
            raise RuntimeError(f"circuit rows: {group} reads senders this pass did not read")
        return table

    def _table(self, group: str, lo: int, n_pos: int) -> Tensor:
        """The ``(cell, sender, batch * pos * d_model)`` table of the senders ``group`` reads, at
        positions ``lo .. lo + n_pos``."""
        table, n = self._read(group), self.groups[group][0].shape[-1]
        return table[:, :n, :, lo:lo + n_pos].reshape(table.shape[0], n, -1)

    def _sparse(self, key: Any, index: Tensor, rows: int, n_senders: int, n_values: int) -> Any:
        """The parts of the sparse product of ``key`` (a share of heads or an MLP point) for the pass's
        cells (circuits ``index``), or None where the dense one (``rows`` receivers per cell x
        ``n_senders``, ``n_values`` values per sender) is faster: the rule of the module docstring."""
        work = len(index) * rows * n_senders
        if always_dense(work * n_values):
            return None
        parts = self._parts.get(key)
        if parts is None:
            if isinstance(key, tuple):  # heads
                mixed = self.groups[key[0]][1][:, self._shares[key]]
                parts = pair_senders(self._share_rows[key][0] != 0, mixed, self._rebuilt[key])
            else:  # an MLP / the logits: the fewer of the kept and the excluded senders
                p = self.points[key]
                kept = ~p.weights[:, 0].bool()
                parts = pair_senders(kept[:, None], p.mixed, (kept.sum(1) < p.n_senders - kept.sum(1))[:, None])
            self._parts[key] = parts
        entries = sum(len(parts[c][2]) for c in index.tolist())
        return parts if sparse_pays(work, entries, rows) else None

    def _sparse_sum(self, group: str, m: Tensor, lo: int, n_pos: int) -> Tensor:
        """``(row, batch * n_pos * d_model)``: the sparse ``(row, cell * sender)`` matrix ``m`` times
        the pass's table at positions ``lo .. lo + n_pos``."""
        table = self._read(group)
        cells, senders, batch, pos, d_model = table.shape
        if lo == 0 and n_pos == pos:
            return torch.sparse.mm(m, table.view(cells * senders, -1))
        flat = table.view(cells * senders, batch, pos * d_model)  # a window: one product per prompt
        window = slice(lo * d_model, (lo + n_pos) * d_model)
        return torch.stack([torch.sparse.mm(m, flat[:, b, window]) for b in range(batch)], 1).view(m.shape[0], -1)

    def _updates(self, p: _Point, index: Tensor, comp: tuple[int, ...], lo: int, act: Tensor, shaped: Tensor,
                 constant: Tensor) -> None:
        """Write the MLP's / the logits' input of the pass's cells where it is mixed (one receiver at
        ``p``): the current input plus ``sum over excluded s of (other_s - current_s)``, or (sparse,
        where the kept senders are fewer) the constant minus ``sum over kept s of (other_s - current_s)``."""
        parts = self._sparse(p.name, index, 1, p.n_senders, shaped[0].numel())
        if parts is None:
            key = ("updates", p.name, comp, act.device, act.dtype)
            w = self._memo.get(key)
            if w is None:  # (cell, 1, sender): a cell that is not mixed here adds 0 x its (finite) table rows
                w = p.weights[index, 0] * p.mixed[index, 0, None]
                w = self._memo[key] = w[:, None].to(act.device, act.dtype)
            # the sum first, then added (as the reference does: baddbmm_ rounds otherwise, which a norm can scale up)
            shaped.view(len(index), 1, -1).add_(torch.bmm(w, self._table(p.group, lo, act.shape[1])))
            return
        cells, _, signs, m, _ = self._sparse_matrix(p.name, parts, index, comp, act)
        sums = self._sparse_sum(p.group, m, lo, act.shape[1]).view(len(cells), *shaped.shape[1:])
        kept = signs < 0
        shaped[cells[kept]] = constant + sums[kept]
        shaped.index_add_(0, cells[~kept], sums[~kept])

    def _sparse_matrix(self, key: Any, parts: Any, index: Tensor, comp: tuple[int, ...], act: Tensor,
                       receiver_major: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """``_sums.sparse_rows`` of ``key``'s parts for the pass's cells, on ``act``'s device (once per study
        and composition), and None; ``receiver_major``: its pairs ordered by receiver, then cell, and the
        order that takes the product's rows there."""
        memo_key = ("sparse", key, comp, receiver_major, act.device, act.dtype)
        found = self._memo.get(memo_key)
        if found is None:
            cells, receivers, signs, m = sparse_rows(parts, index, self.other_t.shape[0], act.dtype, torch.device("cpu"))
            order = None
            if receiver_major:  # the product's rows reordered (the matrix stays cell-major: consecutive rows
                order = torch.argsort(receivers * len(index) + cells)  # read one cell's table, a cache-friendly order)
                cells, receivers, signs = cells[order], receivers[order], signs[order]
                order = order.to(act.device)
            found = self._memo[memo_key] = (cells.to(act.device), receivers, signs.to(act.device), m.to(act.device),
                                            order)
        return found

    def _edit(self, p: _Point, act: Tensor, index: Tensor, comp: tuple[int, ...], lo: int, batch: int) -> Tensor:
        """The rows of every cell at ``p``, edited in place: *out* receivers take their constant,
        *mixed* ones their recomputed input (TL hands hooks fresh tensors here: the projections'
        outputs, a clone for ``hook_mlp_in``, the block's output for ``hook_resid_post``)."""
        if act.shape[1] == 0:
            return act
        key = ("point", p.name, comp, act.device)
        found = self._memo.get(key)
        if found is None:  # once per study and composition: the out mask / cells, and whether any pair is mixed
            out, mixed = p.out[index], bool(p.mixed[index].any())
            if not bool(out.any()):
                found = (None, mixed)
            elif p.letter is not None:  # (cell, 1, 1, head * d_head): one masked write (no gather of the constant
                # per pair; a mask as wide as the rows: ~1.5x faster than one broadcast over d_head)
                found = (out.to(act.device).repeat_interleave(act.shape[-1], 1)[:, None, None], mixed)
            else:
                found = (out[:, 0].nonzero()[:, 0].to(act.device), mixed)
            self._memo[key] = found
        out, mixed = found
        if out is None and not mixed:
            return act
        act = act if act.is_contiguous() else act.contiguous()
        shaped = act.view(act.shape[0] // batch, batch, *act.shape[1:])
        constant = p.constant[:, lo:lo + act.shape[1]].to(act.device, act.dtype)  # type: ignore[index]
        if p.letter is not None:  # (cell, batch, pos, head, d_head)
            if out is not None:
                rows = shaped.view(*shaped.shape[:3], -1)
                torch.where(out, constant.view(*constant.shape[:2], -1), rows, out=rows)
            if mixed:
                c, r, new = self._heads(p, index, comp, lo, batch, act)
                shaped[c, :, :, r] = new
            return act
        if out is not None:
            shaped[out] = constant
        if mixed:
            self._updates(p, index, comp, lo, act, shaped, constant)
        return act

    def _sparse_inputs(self, p: _Point, parts: Any, index: Tensor, comp: tuple[int, ...], lo: int, n_pos: int,
                       moved: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(cell, receiver in the share, input (pair, batch * n_pos * d_model))`` of the mixed pairs at
        ``p``'s share, receiver-major (to be projected per receiver), by the sparse product: each pair's
        kept senders on ``moved`` (``A``), or its excluded ones on the current input where fewer."""
        share = p.share
        cells, local, signs, m, order = self._sparse_matrix((p.group, share), parts, index, comp, moved,
                                                            receiver_major=True)
        x = self._sparse_sum(p.group, m, lo, n_pos).index_select(0, order)
        key = ("bases", p.group, share, comp, moved.device)
        pick = self._memo.get(key)
        if pick is None:  # None: every pair rebuilt from A; else each pair's base: row 0 A, row 1 + c cell c's input
            edited = signs > 0
            pick = self._memo[key] = torch.where(edited, cells + 1, 0) if bool(edited.any()) else None
        if pick is None:
            return cells, local, x.add_(moved)
        layer, window, resid = self._state.get("resid", (None, None, None))
        if (layer, window) != (p.layer, (lo, n_pos)):
            raise RuntimeError(f"circuit rows: {p.name} reads blocks.{p.layer}.hook_resid_pre at positions "
                               f"{lo}..{lo + n_pos}, which this pass did not read")
        bases = torch.cat([moved, resid.reshape(len(index), -1)])  # row 0: A; row 1 + c: cell c's current input
        return cells, local, x.add_(bases[pick])

    def _heads(self, p: _Point, index: Tensor, comp: tuple[int, ...], lo: int, batch: int,
               act: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(cell, head, projection (pair, batch, pos, d_head))`` of the mixed receivers at ``p``:
        ``ln1(A + sum over kept s of (current_s - other_s)) @ W[h] + b[h]`` (or, sparse, the current
        input plus its excluded senders' ``other_s - current_s`` where they are fewer), normed and
        projected for the mixed pairs only; a share's receivers in one call at the first of them to fire (its k and
        v; a small model's q, k and v: they fire on the same positions, but the final block's queries run at the
        last position alone under split_final). The pairs are receiver-major: a point's are one slice (a view)."""
        n_pos, share = act.shape[1], p.share
        key = ("heads", p.group, share, lo, n_pos)
        memo = self._state.get(key)
        if memo is None:
            memo = self._state[key] = self._share_inputs(p, share, index, comp, lo, batch, act)
        new, mine = memo
        c, r, at, end = mine[p.first]
        return c, r, new[at:end]

    def _share_inputs(self, p: _Point, share: str, index: Tensor, comp: tuple[int, ...], lo: int, batch: int,
                      act: Tensor) -> tuple[Tensor, dict[int, tuple[Tensor, Tensor, int, int]]]:
        """``_heads``'s projections of a share's mixed pairs at a window, and per point of the group (by its
        first receiver) its pairs' cells, heads and slice."""
        n_pos, d_model = act.shape[1], self.moved[p.layer].shape[-1]
        plan_key = ("heads", p.group, share, comp, batch * n_pos * d_model, act.device, act.dtype)
        plan = self._memo.get(plan_key)
        if plan is None:
            plan = self._memo[plan_key] = self._heads_plan(p, share, index, comp, batch * n_pos * d_model, act)
        parts, chosen, flat, gathered, receivers, mine = plan
        moved = self.moved[p.layer][:, lo:lo + n_pos].to(act.device, act.dtype).reshape(1, -1)
        if parts is not None:
            x = self._sparse_inputs(p, parts, index, comp, lo, n_pos, moved)[2]
        else:  # one product over the pass's cells with each cell's mixed receivers first (padded to the most
            # any cell has: in a large model the senders' table is large and most pairs are in or out)
            table = self._table(p.group, lo, n_pos)
            x = torch.bmm(chosen, table).view(-1, table.shape[-1]).index_select(0, flat).add_(moved)
        normed = compat.fused_norm(self.model.blocks[p.layer].ln1)(x.view(-1, d_model)).to(act.dtype)
        w, b = self.qkv[p.layer]
        if parts is None:  # one batched projection (each pair's receiver's weights gathered)
            bias, weights = gathered if gathered is not None else self._gathered(p.layer, receivers, act)
            new = torch.baddbmm(bias, normed.view(len(receivers), -1, d_model), weights)
        else:  # one product per receiver over its pairs (no gathered weights)
            new = normed.new_empty(len(receivers), batch * n_pos, w.shape[-1])
            for k, (at, end) in mine["runs"]:
                torch.addmm(b[k].to(act.dtype), normed[at * batch * n_pos:end * batch * n_pos],
                            w[k].to(act.dtype), out=new[at:end].view(-1, w.shape[-1]))
        return new.view(len(receivers), batch, n_pos, -1), mine

    def _heads_plan(self, p: _Point, share: str, index: Tensor, comp: tuple[int, ...], n_values: int,
                    act: Tensor) -> tuple[Any, ...]:
        """What a share's mixed pairs of the pass's cells need, once per study and composition: the sparse
        parts (or None), the dense product's padded rows ``chosen`` and the valid ones ``flat``
        (receiver-major), the pairs' cells and receivers, and per point its pairs (see ``_heads``)."""
        share_of = self._shares[(p.group, share)]  # the receivers computed together
        kept, counts, order = self._share_rows[(p.group, share)]  # kept: (circuit, receiver, sender), -1 where kept
        counts = counts[index]
        most = int(counts.max())
        parts = self._sparse((p.group, share), index, most, kept.shape[-1], n_values) if most else None
        chosen = flat = None
        if parts is not None:
            cells, local = self._sparse_matrix((p.group, share), parts, index, comp, act, receiver_major=True)[:2]
            cells, receivers = cells.cpu(), share_of[local]
        else:
            first = order[index, :most]  # (cell, most mixed): receivers numbered in the share, ascending
            chosen = kept[index[:, None], first].to(act.device, act.dtype)  # (cell, most mixed, sender)
            cells, slot = (torch.arange(most)[None] < counts[:, None]).nonzero().unbind(1)
            receivers = share_of[first[cells, slot]]
            perm = torch.argsort(receivers * len(index) + cells)  # receiver-major
            cells, receivers = cells[perm], receivers[perm]
            flat = (cells * most + slot[perm]).to(act.device)
        listed = receivers.tolist()
        mine: dict[Any, Any] = {"runs": []}
        at = 0
        for k, n in zip(*(t.tolist() for t in torch.unique_consecutive(receivers, return_counts=True))):
            mine["runs"].append((k, (at, at + n)))
            at += n
        for q in self.points.values():
            if q.group == p.group and q.letter is not None:
                at, end = bisect_left(listed, q.first), bisect_left(listed, q.first + q.weights.shape[1])
                mine[q.first] = (cells[at:end].to(act.device), (receivers[at:end] - q.first).to(act.device), at, end)
        gathered = None
        if parts is None and len(receivers) * self.qkv[p.layer][0][0].numel() <= _GATHERED_MAX:
            gathered = self._gathered(p.layer, receivers, act)
        return parts, chosen, flat, gathered, receivers, mine

    def _gathered(self, layer: int, receivers: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        """``(b (pair, 1, d_head), W (pair, d_model, d_head))``: each pair's receiver's projection."""
        w, b = self.qkv[layer]
        r = receivers.to(w.device)
        return b[r, None].to(act.device, act.dtype), w[r].to(act.device, act.dtype)

    def _projection(self, layer: int) -> tuple[Tensor, Tensor]:
        """``(W (3 * head, d_model, d_head), b (3 * head, d_head))``: a layer's q, k and v projections
        in the group's receiver order, one per query head (grouped K/V repeated)."""
        attn = self.model.blocks[layer].attn
        return (torch.cat([attn.W_Q, attn.W_K, attn.W_V]).detach(), torch.cat([attn.b_Q, attn.b_K, attn.b_V]).detach())
