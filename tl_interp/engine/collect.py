"""Collecting states: per-site activations for a prompt set, with the attention mask honoured.

``collect(model, inputs, where, positions=...)`` is the one reader of activations for
analyses (geometry, steering vectors, probes). It

- takes every input form ``as_batch`` accepts and every position selection of
  ``tl_interp.positions``: each row's last real token, a literal position, a token finder
  such as ``first(" her", offset=-1)``, a fixed list of positions, or per-row masks
  (``"all"``, ``From(k)``, a ``(batch, pos)`` mask);
- refuses to read padding: a selected position that is a pad token in some row is a
  ``SelectionError`` naming the rows, before any forward pass;
- reduces with ``reduce="mean"`` (the mean over each row's selected real positions), or
  keeps positions: one vector per row for one position per row, ``(n, k, ...)`` for ``k``
  fixed positions, and ``(n, pos, ...)`` zero-padded with ``States.read_mask`` for per-row masks
  (``States.ragged`` gives the per-prompt tensors);
- streams: each forward pass holds as many rows as fit ``memory_mb`` (the engine's memory
  model, ``engine.passes.rows_per_pass``), each pass trimmed of the pad columns after its
  longest row (causal models never let them reach a real token), only the selected positions
  are kept by the caching hook, everything is moved to ``device`` as it arrives, and on a
  HookedTransformer the forward pass stops just after the deepest block read.

Custom ``HookedRootModule``s (toy networks without positions, such as ``s5-mlp``) take their
own input tensor, split into rows, with ``positions=None``.
"""

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp._checks import SIZED_BY_MEMORY, checked, renamed, retired_keywords
from tl_interp._device import check_device
from tl_interp import hooks
from tl_interp._types import NameFilter, Reduce
from tl_interp.compat import is_hooked_transformer
from tl_interp.engine.inputs import Inputs, as_batch
from tl_interp.engine.passes import rows_per_pass
from tl_interp.errors import HookNameError, OptionError, SelectionError, ShapeError, TlInterpDeprecationWarning, UnsupportedError
from tl_interp.hooks._select import position_axis
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.positions import Finder, From, Positions, describe, real_bounds
from tl_interp.sites import resolve, site_info

__all__ = ["collect", "States"]

_AFTER_BLOCKS = ("ln_final.", "unembed.")


@dataclass(frozen=True)
class _Plan:
    """Where to read in every row: one position per row, fixed positions, or a per-row mask."""

    kind: Literal["row", "fixed", "mask", "none"]
    index: Tensor | None = None  # (n,) for "row"
    fixed: tuple[int, ...] = ()  # absolute positions for "fixed"
    mask: Tensor | None = None  # (n, pos) bool for "mask"


def _pad_rows(selected: Tensor, real: Tensor) -> list[int]:
    return (selected & ~real).any(1).nonzero().flatten().tolist()


def _refuse_padding(selected: Tensor, real: Tensor, label: str, hint: str) -> None:
    rows = _pad_rows(selected, real)
    if rows:
        raise SelectionError(f"collect: positions={label} lands on padding in rows {rows[:10]}"
                             f"{' ...' if len(rows) > 10 else ''}; padding is never read. {hint}")


def _plan(model: Any, positions: Positions, batch: Tokenized) -> _Plan:
    real = batch.attention_mask.bool().cpu()
    n, width = real.shape
    label = describe(positions) if not isinstance(positions, Finder) else repr(positions)
    literal_hint = "Use positions='last' for each prompt's last real token, or 'all' / From(k) for real tokens"
    if positions is None:
        raise OptionError("collect: positions=None would read padding too; use 'all' (every real token), "
                          "'last', From(k) or explicit positions")
    if isinstance(positions, str):
        if positions == "last":
            return _Plan("row", index=batch.last_index.cpu().long())
        if positions == "all":
            return _Plan("mask", mask=real)
        raise OptionError(f"collect: positions={positions!r}; the named selections are 'last' and 'all'")
    if isinstance(positions, From):
        first, last = real_bounds(real)
        start = first + positions.index
        short = (start > last).nonzero().flatten().tolist()
        if short:
            raise SelectionError(f"collect: positions={positions!r} selects nothing in rows {short}, which have "
                                 f"fewer than {positions.index + 1} real tokens")
        return _Plan("mask", mask=real & (torch.arange(width)[None, :] >= start[:, None]))
    if isinstance(positions, Finder):
        return _Plan("row", index=positions.resolve(model, batch.tokens.cpu(), real).cpu().long())
    if isinstance(positions, bool):
        raise SelectionError(f"collect: positions={positions!r} is a bool; give an index, slice, list or mask")
    if isinstance(positions, int):
        if not -width <= positions < width:
            raise SelectionError(f"collect: position {positions} is out of range for {width} positions")
        index = torch.full((n,), positions % width, dtype=torch.long)
        _refuse_padding(torch.zeros_like(real).index_fill_(1, index[:1], True), real, label, literal_hint)
        return _Plan("row", index=index)
    if isinstance(positions, Tensor) and positions.dtype == torch.bool and positions.ndim == 2:
        if tuple(positions.shape) != (n, width):
            raise SelectionError(f"collect: the position mask has shape {tuple(positions.shape)}; the batch is "
                                 f"(batch, pos) = ({n}, {width})")
        mask = positions.cpu()
        _refuse_padding(mask, real, label, "Select real tokens only (AND the mask with the attention mask)")
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        if empty:
            raise SelectionError(f"collect: the position mask selects nothing in rows {empty}")
        return _Plan("mask", mask=mask)
    if isinstance(positions, Tensor) and positions.dtype != torch.bool:
        if positions.dtype.is_floating_point or tuple(positions.shape) != (n,):
            raise SelectionError(f"collect: a position tensor is a per-row index, integer with shape ({n},) "
                                 f"(one per prompt); got {positions.dtype} {tuple(positions.shape)}")
        index = positions.cpu().long()
        if bool(((index < -width) | (index >= width)).any()):
            raise SelectionError(f"collect: per-row positions {index.tolist()} are out of range for {width} positions")
        index = index % width
        _refuse_padding(torch.zeros_like(real).scatter_(1, index[:, None], True), real, label, literal_hint)
        return _Plan("row", index=index)
    if isinstance(positions, Tensor):  # (pos,) boolean mask: the same positions in every row
        if tuple(positions.shape) != (width,):
            raise SelectionError(f"collect: the position mask has shape {tuple(positions.shape)}; the batch has "
                                 f"{width} positions")
        fixed = tuple(positions.cpu().nonzero().flatten().tolist())
    elif isinstance(positions, slice):
        fixed = tuple(range(width)[positions])
    elif isinstance(positions, Sequence):
        items = list(positions)
        if any(isinstance(i, bool) or not isinstance(i, int) for i in items):
            raise SelectionError(f"collect: position lists hold ints; got {items!r}")
        bad = [i for i in items if not -width <= i < width]
        if bad:
            raise SelectionError(f"collect: positions {bad} are out of range for {width} positions")
        fixed = tuple(i % width for i in items)
    else:
        raise SelectionError(f"collect: positions={positions!r} is not a position selection")
    if not fixed:
        raise SelectionError(f"collect: positions={label} selects no position of {width}")
    chosen = torch.zeros_like(real)
    chosen[:, list(fixed)] = True
    _refuse_padding(chosen, real, label, literal_hint)
    return _Plan("fixed", fixed=fixed)


def _stop_layer(model: Any, names: tuple[str, ...]) -> int | None:
    """One past the deepest block read, when the model can stop there (HookedTransformer)."""
    if not is_hooked_transformer(model) or any(n.startswith(_AFTER_BLOCKS) for n in names):
        return None
    layers = [site_info(model, n).layer for n in names]
    return max((layer for layer in layers if layer is not None), default=-1) + 1


class States(Mapping[str, Tensor]):
    """Collected activations by hook name (in ``where`` order), with the batch they came from.

    Attributes:
        names: the hook names, in the order ``where`` gave them.
        batch: the checked ``Tokenized`` prompts (``None`` for a custom module's inputs).
        read_mask: ``(n, pos)`` bool, which positions of each row were read, for per-row selections
            kept unreduced (``positions="all"``/``From``/a ``(batch, pos)`` mask with
            ``reduce=None``); otherwise ``None``.
        positions_label: a label of the selection; ``reduce``: ``None`` or ``"mean"``.
        model_id: the model's id, for provenance.
        index: the absolute positions read: ``(n,)`` for one position per row, ``(k,)`` for
            ``k`` fixed positions; ``None`` for per-row masks (``read_mask`` says which).
    """

    @renamed(mask="read_mask", positions="positions_label")
    def __init__(self, tensors: dict[str, Tensor], *, batch: Tokenized | None, read_mask: Tensor | None,
                 positions_label: str, reduce: Reduce, model_id: str, index: Tensor | None = None) -> None:
        self._tensors = tensors
        self.index = index
        self.names = tuple(tensors)
        self.batch = batch
        self.read_mask = read_mask
        self.positions_label = positions_label
        self.reduce = reduce
        self.model_id = model_id

    @property
    def positions(self) -> str:
        """The old name of ``positions_label``."""
        warnings.warn("States.positions is now States.positions_label", TlInterpDeprecationWarning, stacklevel=2)
        return self.positions_label

    @property
    def mask(self) -> Tensor | None:
        """The old name of ``read_mask``."""
        warnings.warn("States.mask is now States.read_mask", TlInterpDeprecationWarning, stacklevel=2)
        return self.read_mask

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise HookNameError(f"no states for {name!r}; collected {', '.join(self.names)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        first = self._tensors[self.names[0]]
        return (f"States({len(self.names)} sites x {tuple(first.shape)}, positions={self.positions_label}, "
                f"reduce={self.reduce}, model={self.model_id})")

    def stack(self) -> Tensor:
        """``(layers, n, ...)``: every site's states stacked in ``where`` order."""
        shapes = {n: tuple(t.shape) for n, t in self._tensors.items()}
        if len(set(shapes.values())) > 1:
            raise ShapeError(f"States.stack: the sites have different shapes {shapes}; stack sites of one kind")
        return torch.stack([self._tensors[n] for n in self.names])

    def ragged(self, name: str) -> list[Tensor]:
        """Per-prompt tensors ``(n_selected_i, ...)`` of one site: its read positions only."""
        if self.read_mask is None:
            raise OptionError(f"States.ragged: positions={self.positions_label}, reduce={self.reduce} gives the same "
                              "shape for every prompt; index the tensor directly")
        values = self[name]
        return [values[i][self.read_mask[i]] for i in range(values.shape[0])]


def _forward_kwargs(batch: Tokenized, lo: int, hi: int, stop: int | None) -> tuple[Tensor, dict[str, Any], int]:
    width = int(batch.last_index[lo:hi].max()) + 1  # trailing pad columns never reach a real token
    kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask[lo:hi, :width]}
    if stop is not None:
        kwargs["stop_at_layer"] = stop
    return batch.tokens[lo:hi, :width], kwargs, width


@retired_keywords(batch_size=SIZED_BY_MEMORY)
@checked
def collect(model: Any, inputs: Inputs, where: NameFilter, *, positions: Positions = "last",
            reduce: Reduce = None, attention_mask: Tensor | None = None, memory_mb: float = 1024.0,
            device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
            progress: bool = True) -> States:
    """Activations at ``where`` for every prompt, read at ``positions`` and optionally averaged.

    Args:
        model: a HookedTransformer, HookedSAETransformer, TransformerBridge, or a custom
            HookedRootModule (then ``inputs`` is its input tensor and ``positions=None``).
        inputs: prompts in any form ``as_batch`` accepts (strings, token ids + ``attention_mask``,
            a ``Tokenized`` batch).
        where: a hook name, names, or a predicate over names; any site with a position axis
            (residual, MLP, head sites ``(batch, pos, head_index, d_head)``, ...).
        positions: ``"last"`` (default), ``"all"``, ``From(k)``, ``first(token, offset=)``, an
            int (negative from the end of the padded sequence), a slice or list of ints, a
            ``(pos,)`` or ``(batch, pos)`` bool mask, or a ``(batch,)`` per-row index tensor.
        reduce: ``None`` or ``"mean"``: the mean over each row's selected positions.
        attention_mask: with token ids: 1 on real tokens, 0 on padding.
        memory_mb: memory of one forward pass, in megabytes: rows per pass follow from it
            (for a custom module, from the size of one row's read activations).
        device, dtype: where and how the states are stored.
        progress: show a progress bar over batches.

    Returns:
        ``States``: ``(n, ...)`` per site for one position per row or ``reduce="mean"``;
        ``(n, k, ...)`` for ``k`` fixed positions; ``(n, pos, ...)`` zero-padded with
        ``.read_mask`` for per-row masks.

    Example:
        >>> import torch
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, n_ctx=8,
        ...                               d_vocab=10, act_fn="relu", d_mlp=16)
        >>> tokens, mask = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
        >>> states = collect(HookedTransformer(cfg), tokens, lambda n: n.endswith("resid_post"),
        ...                  attention_mask=mask, progress=False)
        >>> tuple(states.stack().shape)
        (2, 2, 8)
        >>> collect(HookedTransformer(cfg), tokens, "blocks.0.hook_resid_post", attention_mask=mask,
        ...         positions=-1, progress=False)
        Traceback (most recent call last):
        ...
        tl_interp.errors.SelectionError: collect: positions=-1 lands on padding in rows [1]; padding is never read. Use positions='last' for each prompt's last real token, or 'all' / From(k) for real tokens
    """
    check_device(device, "collect")  # before any forward pass: a CUDA-less torch fails at the first copy
    names = resolve(model, where, context="collect")
    if not memory_mb > 0:
        raise OptionError(f"collect: memory_mb must be > 0, got {memory_mb}")
    family = adapt(model).family
    if family == "custom":
        return _collect_custom(model, inputs, names, positions, reduce, memory_mb, device, dtype, progress)
    batch = as_batch(model, inputs, attention_mask=attention_mask)
    plan = _plan(model, positions, batch)
    for name in names:
        axes = site_info(model, name).axes
        if axes is not None and position_axis(axes) is None:
            raise SelectionError(f"collect: {name} has axes {axes}, no position axis to read positions from")
    stop = _stop_layer(model, names)
    n, full = batch.shape
    keep_mask = plan.kind == "mask" and reduce is None
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    rows = rows_per_pass(model, full, memory_mb, full_logits=stop is None)
    starts = range(0, n, rows)
    for lo in tqdm(starts, desc="collecting states", disable=not progress or len(starts) < 2):
        hi = min(lo + rows, n)
        tokens, kwargs, width = _forward_kwargs(batch, lo, hi, stop)
        chosen = {"row": None if plan.index is None else plan.index[lo:hi], "fixed": list(plan.fixed),
                  "mask": None}[plan.kind]
        store = hooks.cache(names, positions=chosen, device=device).collect(model, tokens, **kwargs)
        for name in names:
            act = store[name]
            if plan.kind != "row":
                pos_axis = position_axis(site_info(model, name).axes_for(act.ndim))
                act = act.movedim(pos_axis, 1)
            if plan.kind == "mask":
                act = _masked(act, plan.mask[lo:hi, :width].to(act.device), reduce, full)
            elif plan.kind == "fixed" and reduce == "mean":
                act = act.double().mean(1)
            parts[name].append(act.to(dtype))
    tensors = {name: torch.cat(chunks) for name, chunks in parts.items()}
    label = repr(positions) if isinstance(positions, Finder) else describe(positions)
    index = plan.index if plan.kind == "row" else torch.tensor(plan.fixed) if plan.kind == "fixed" else None
    return States(tensors, batch=batch, read_mask=plan.mask if keep_mask else None, positions_label=label,
                  reduce=reduce,
                  model_id=adapt(model).model_id, index=index)


def _masked(act: Tensor, mask: Tensor, reduce: str | None, full: int) -> Tensor:
    """``act`` (b, width, ...) with unselected positions zeroed, padded to ``full``; or the masked mean."""
    weights = mask.reshape(*mask.shape, *([1] * (act.ndim - 2))).to(torch.float64)
    if reduce == "mean":
        return (act.double() * weights).sum(1) / weights.sum(1)
    kept = torch.where(weights.bool(), act, torch.zeros((), dtype=act.dtype, device=act.device))
    pad = full - act.shape[1]
    return torch.cat([kept, kept.new_zeros(kept.shape[0], pad, *kept.shape[2:])], 1) if pad else kept


def _collect_custom(model: Any, inputs: Any, names: tuple[str, ...], positions: Positions, reduce: Reduce,
                    memory_mb: float, device: str | torch.device, dtype: torch.dtype, progress: bool) -> States:
    if positions is not None or reduce is not None:
        raise UnsupportedError(f"collect: {type(model).__name__} is a custom HookedRootModule whose inputs are not "
                               "token sequences; pass positions=None (and no reduce) to read its sites per input row")
    if not isinstance(inputs, Tensor) or inputs.ndim == 0 or inputs.shape[0] == 0:
        raise UnsupportedError(f"collect: a custom module takes its own input tensor with rows on axis 0; got "
                               f"{type(inputs).__name__}")
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    lo, rows = 0, 1  # the first pass reads one row: its activations' size sets the rows of the others
    with tqdm(total=inputs.shape[0], desc="collecting states", disable=not progress) as bar:
        while lo < inputs.shape[0]:
            store = hooks.cache(names, device=device, dtype=dtype).collect(model, inputs[lo:lo + rows])
            for name in names:
                parts[name].append(store[name])
            bar.update(min(rows, inputs.shape[0] - lo))
            if lo == 0:
                per_row = sum(store[name].numel() * store[name].element_size() for name in names)
                lo, rows = 1, max(1, int(memory_mb * 2**20 // max(per_row, 1)))
            else:
                lo += rows
    tensors = {name: torch.cat(chunks) for name, chunks in parts.items()}
    return States(tensors, batch=None, read_mask=None, positions_label="None", reduce=None,
                  model_id=adapt(model).model_id)
