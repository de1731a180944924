"""Single edges computed at the receiving layer alone.

An edge into head ``h``'s query, key or value input in layer ``L`` changes that head's input
only: the layer's other heads give the base run's outputs, so its attention output is the
base run's plus ``(z_new - z_base) @ W_O[h]``, where ``z`` is head ``h``'s attention computed by
hand from its q/k/v projections (``ln1(resid_pre + delta) @ W[h] + b[h]`` for the patched one,
``_heads.HeadInputs``). An edge into layer ``L``'s MLP changes the MLP's input only:
``resid_post = resid_mid + mlp(ln2(resid_mid + delta))``. Either way the cell needs none of
layer ``L``'s other heads: it writes the new ``blocks.{L+1}.hook_resid_pre`` and the engine
starts its pass there (``mid_stack``; for ``L + 1`` the last layer, the final block at the last
position alone: ``split_final``). In the last layer, when the metric reads one position (the
same in every row), the cell writes the final residual ``blocks.{L}.hook_resid_post`` at that
position alone (the queries, the MLP and the unembedding act position by position), and an
edge into the logits adds its delta there; the engine then runs no block for it. Grouped-query
models need no ungrouped keys/values (each head's projection uses its own copy of the group's
weights here), so their passes keep TL's grouped attention and its key-value cache.

``reason`` says when a head's attention isn't that plain computation (``compat.attention``:
soft-capping, q/k norms, windows, Gemma's extra norms, padding ...); the cells then patch the
head's input on the ordinary forward (``_heads.head_input_edit``).
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp.circuits._graph import Receiver
from tl_interp.circuits._heads import HeadInputs, head_input_reason
from tl_interp.hooks._select import layout
from tl_interp.intervention import Intervention
from tl_interp.models._adapter import Tokenized

__all__ = ["reason", "ReceivingLayers", "receiving_edit"]

Payload = tuple[str | None, int, int, int | None, int]  # (q/k/v, None: the MLP, or "logits"; head, sender, position, n_senders)


def reason(model: Any, batch: Tokenized) -> str | None:
    """Why edges into layers below the last can't be computed at their receiving layer alone, or None."""
    if not compat.is_hooked_transformer(model):
        return f"{type(model).__name__} is not a HookedTransformer"
    why = head_input_reason(model) or compat.attention.head_attention_reason(model)
    if why is not None:
        return why
    if batch.padded:
        return "the batch is padded"
    if not compat.blocks_are_plain(model, 0):
        return "a hook is attached inside the blocks"
    return None


class ReceivingLayers:
    """The new ``resid_pre`` of layer ``L + 1`` for single edges into layer ``L``, for the cells of
    a pass at once (one ``together`` function per layer, ``engine.stack``); with ``read`` given,
    edges into the last layer and the logits too, as the new final residual at that position.

    Args:
        model: the model.
        heads: the patched heads' projections (``HeadInputs``, every sender's delta).
        mids: per layer, the base run's residual after attention (``hook_resid_mid``; for an
            attention-only model the layer's ``hook_resid_post``).
        read: the one position the metric reads in every row, or None: the last layer's edges
            are not computed here.
    """

    def __init__(self, model: Any, heads: HeadInputs, mids: Sequence[Tensor], read: int | None = None) -> None:
        self.model, self.heads, self.mids, self.read = model, heads, list(mids), read
        self.last = model.cfg.n_layers - 1
        self._base: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        self._together: dict[int, Any] = {}

    def site(self, layer: int) -> str:
        """Where the cells of edges into ``layer`` write: the next layer's input, or the final residual."""
        return f"blocks.{layer}.hook_resid_post" if layer == self.last else f"blocks.{layer + 1}.hook_resid_pre"

    def footprint(self, layer: int, letter: str | None, sender: int, position: int | None) -> int | None:
        """The first position a cell changes, or None. In the last layer a cell writes the read
        position alone: a query, an MLP or the logits read the sender's delta there only; keys
        and values read it wherever it is non-zero."""
        first = self.heads.first_changed(sender, position)
        if layer < self.last:
            return first
        if letter in ("k", "v"):
            return None if first is None else self.read
        return self.heads.first_changed(sender, self.read) if position in (None, self.read) else None

    def base(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The base run's pre-rotary q, k, v of every head ``(batch, pos, head, d_head)`` and its
        ``z`` (``compat.attention.attend``; kept for the last layer asked)."""
        if layer not in self._base:
            attn = self.model.blocks[layer].attn
            with torch.no_grad():
                normed = self.model.blocks[layer].ln1(self.heads.resid[layer])
                q, k, v = (torch.einsum("bpd,hde->bphe", normed, w.detach()) + b.detach()
                           for w, b in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)))
                self._base = {layer: (q, k, v, compat.attention.attend(attn, q, k, v))}
        return self._base[layer]

    def together(self, layer: int, label: str) -> Any:
        """The function writing, at ``site(layer)``, every cell's new residual."""
        if layer not in self._together:
            self._together[layer] = self._make(layer, label)
        return self._together[layer]

    def _moved(self, layer: int, members: list[Payload], changed: Tensor, lo: int, hi: int, batch: int) -> Tensor:
        """What each head cell adds to ``resid_mid`` in the window ``lo:hi``: ``(z_new - z_base) @ W_O[h]``,
        ``(cell, batch, window, d_model)``; zero for an MLP cell."""
        heads, block = self.heads, self.model.blocks[layer]
        mid = self.mids[layer]
        moved = mid.new_zeros(len(members), batch, hi - lo, mid.shape[-1])
        head_cells = [c for c, p in enumerate(members) if p[0] is not None]
        if not head_cells:
            return moved
        q0, k0, v0, z0 = self.base(layer)
        hs = torch.tensor([members[c][1] for c in head_cells], device=mid.device)
        qkv = {"q": q0[:, :, hs], "k": k0[:, :, hs], "v": v0[:, :, hs]}
        groups: dict[tuple[str, int, int], list[int]] = {}  # (letter, head, n_senders) -> slots j
        for j, c in enumerate(head_cells):
            letter, head, _, _, n_senders = members[c]
            groups.setdefault((letter, head, n_senders), []).append(j)  # type: ignore[arg-type]
        for (letter, head, n_senders), slots in groups.items():
            columns = [heads.column.get(members[head_cells[j]][2], members[head_cells[j]][2]) for j in slots]
            new = heads.projected(layer, letter, head, n_senders)[:, :, columns]  # (batch, pos, slot, d_head)
            keep = changed[[head_cells[j] for j in slots]].permute(1, 2, 0)[..., None]
            qkv[letter][:, :, slots] = torch.where(keep, new, qkv[letter][:, :, slots])
        # the queries of the window alone (every key read): the rest of the layer's output is the base run's
        z = compat.attention.attend(block.attn, qkv["q"], qkv["k"], qkv["v"], queries_from=lo)  # (batch, window, cell, d_head)
        update = torch.einsum("bpnd,nde->nbpe", z[:, :hi - lo] - z0[:, lo:hi, hs], block.attn.W_O.detach()[hs])
        if len(head_cells) == len(members):
            return update
        moved[torch.tensor(head_cells, device=mid.device)] = update
        return moved

    def _make(self, layer: int, label: str) -> Any:
        model, heads = self.model, self.heads
        block = model.blocks[layer]
        final = layer == self.last

        def _receiving_layer(act: Tensor, hook: Any, payloads: Sequence[Payload | None], batch: int) -> Tensor:
            lo = layout(act.shape[0], act.shape[1], label).offset
            hi = lo + act.shape[1]
            members = [(i, p) for i, p in enumerate(payloads) if p is not None]
            rows = act.view(len(payloads), batch, *act.shape[1:])[torch.tensor([i for i, _ in members],
                                                                               device=act.device)]
            mid = self.mids[layer]  # (batch, pos, d_model)
            where = torch.arange(mid.shape[1], device=mid.device)
            positions = torch.tensor([-1 if p[3] is None else p[3] for _, p in members], device=mid.device)
            at = (where[None, :] == positions[:, None]) | (positions[:, None] < 0)  # (cell, pos)
            changed = heads.changed[:, :, [p[2] for _, p in members], 0].permute(2, 0, 1) & at[:, None]  # (cell, batch, pos)
            inner = [c for c, (_, p) in enumerate(members) if p[0] != "logits"]
            out = rows.clone()
            if inner:  # heads and the MLP: the layer recomputed from resid_mid
                chosen = [members[c][1] for c in inner]
                new_mid = mid[None, :, lo:hi] + self._moved(layer, chosen, changed[inner], lo, hi, batch)
                new = new_mid
                if not model.cfg.attn_only:
                    mlp_cells = [j for j, p in enumerate(chosen) if p[0] is None]
                    mlp_in = new_mid
                    if mlp_cells:  # an MLP edge changes the MLP's input only
                        index = torch.tensor(mlp_cells, device=mid.device)
                        delta = heads.deltas[:, lo:hi, [chosen[j][2] for j in mlp_cells]].permute(2, 0, 1, 3)
                        mlp_in = new_mid.clone()
                        mlp_in[index] = mlp_in[index] + delta * at[[inner[j] for j in mlp_cells]][:, None, lo:hi, None]
                    new = new_mid + compat.attention.mlp(block, mlp_in.flatten(0, 1)).view_as(new_mid)
                out[torch.tensor(inner, device=act.device)] = new.to(device=act.device, dtype=act.dtype)
            outer = [c for c, (_, p) in enumerate(members) if p[0] == "logits"]
            if outer:  # an edge into the logits adds the sender's delta to the final residual
                index = torch.tensor(outer, device=act.device)
                delta = heads.deltas[:, lo:hi, [members[c][1][2] for c in outer]].permute(2, 0, 1, 3)
                out[index] = rows[index] + (delta * at[outer][:, None, lo:hi, None]).to(device=act.device,
                                                                                        dtype=act.dtype)
            # before a cell's first changed position its input is the base run's, bit for bit (its footprint);
            # in the last layer the read position alone is written
            window = torch.arange(lo, hi, device=act.device)[None, :]
            if final:
                if lo < self.read or hi > self.read + 1:
                    out = torch.where((window == self.read)[:, None, :, None], out, rows)
            else:
                first = changed.any(1).float().argmax(-1).to(act.device)  # (cell,), 0 if nothing changed
                if bool((first > lo).any()):
                    out = torch.where((window >= first[:, None])[:, None, :, None], out, rows)
            if len(members) == len(payloads):
                return out.reshape(act.shape)
            result = act.clone()
            result.view(len(payloads), batch, *act.shape[1:])[torch.tensor([i for i, _ in members],
                                                                            device=act.device)] = out
            return result

        return _receiving_layer


def receiving_edit(receiver: Receiver, sender: int, layers: ReceivingLayers, label: str, *,
                   position: int | None = None) -> Intervention:
    """The cell patching the edge ``sender -> receiver`` (a head's q/k/v input or an MLP in a layer
    below the last; with ``layers.read``, in the last layer or the logits too) as the new
    ``ReceivingLayers.site`` (see the module docstring), at ``position`` only when given; its
    ``footprint`` is the first position it changes."""
    layer = int(receiver.hook_name.split(".")[1])
    if receiver.name == "logits":
        letter: str | None = "logits"
    else:
        letter = receiver.hook_name.split("hook_")[1][0] if receiver.head is not None else None
    edit = _ReceivingEdit(layers.together(layer, label), (letter, receiver.head or 0, sender, position, receiver.n_senders),
                          layers.footprint(layer, letter, sender, position))
    return Intervention.single(layers.site(layer), edit, f"patch edge {label}")


class _ReceivingEdit:
    """One cell's hook: alone it edits its own rows; stacked, ``together`` edits every cell's rows."""

    __name__ = "_receiving_layer"

    def __init__(self, together: Any, payload: Payload, footprint: int | None) -> None:
        self.together, self.payload, self.footprint = together, payload, footprint

    def __call__(self, act: Tensor, hook: Any) -> Tensor:
        return self.together(act, hook, [self.payload], act.shape[0])
