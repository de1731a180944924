"""Where a plain ``logits -> scalar`` metric reads: its position indexing, traced on every call.

A TransformerLens-style metric (``lambda logits: (logits[:, -1, a] - logits[:, -1, b]).mean()``)
says nothing about where it reads, so the engine would have to compute every position's
logits for it. Here the metric gets its logits wrapped in ``Watched``, a tensor subclass whose
``__torch_function__`` sees every operation on them:

- indexing (``logits[...]``) is allowed, and the positions its index selects along the
  position axis (an int, a slice, an integer or boolean tensor, a list) are recorded, and the
  vocabulary entries along the last axis (``EVERY`` when it leaves that axis whole); its result
  is an ordinary tensor holding only those positions' values;
- shape-preserving operations that act on each ``(row, position)`` vector alone (dtype and
  device casts, ``detach``/``clone``/``contiguous``, ``softmax``/``log_softmax`` over the
  vocabulary, which reads ``EVERY`` entry) keep the result watched;
- metadata (``shape``, ``ndim``, ``dtype``, ``device``, ``len`` ...) reads no values;
- anything else on the whole logits (a sum over positions, ``argmax``, ``nan_to_num``,
  ``where``, in-place writes, ``.tolist()``, ``.data`` ...) is refused: the trace stops with
  ``Unproven`` and the caller uses the full logits instead.

So the positions recorded are exactly the positions whose values the call could see. The
engine traces the metric once on the base run's logits (``probe``) to choose the positions to
compute, then traces **every** later call again, on logits that are NaN everywhere else
(``HiddenLogits``: one reused buffer, only the read entries written per call): a call that
reads elsewhere -- a data-dependent index, a random one, another branch, another vocabulary
entry when only the probed ones were computed -- is caught and that cell is recomputed on its
full logits. The check is per call, so it never depends on the probe having seen the metric's
every behaviour.

What a metric with side effects sees: three more calls (the probe), and, on the fast path,
logits that hold NaN at the positions it does not read; a call that fails on watched logits is
made again on the full logits (so its own errors still reach the caller).
"""

import contextlib
import operator
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tl_interp._types import MetricFn
from tl_interp.errors import TlInterpDeprecationWarning
from tl_interp.compat import torch_functions

__all__ = ["Unproven", "Watched", "Trace", "Probe", "probe", "traced", "hidden", "HiddenLogits", "EVERY"]


class Unproven(BaseException):
    """Raised inside a watched metric call at the first operation that could read positions
    the trace cannot name. A ``BaseException``, so a metric's own ``except Exception`` cannot
    swallow it (the trace records the refusal anyway)."""


EVERY = "every"  # an index that leaves the vocabulary axis whole (not spelled out as 49k ids)


@dataclass
class Trace:
    """What one watched call read: the ``positions`` and vocabulary ``columns`` its indexing
    selected (``columns`` is ``EVERY`` once any index or operation took them all), or why that is
    unknown (``refused``); ``allowed`` / ``allowed_columns``: what it may read (None: any)."""

    seq: int
    allowed: frozenset[int] | None = None
    positions: set[int] = field(default_factory=set)
    refused: str | None = None
    allowed_columns: frozenset[int] | None = None
    columns: set[int] | str = field(default_factory=set)

    def note(self, positions: Tensor, columns: Tensor | str = EVERY) -> None:
        got = {int(p) for p in positions.flatten().tolist()}
        self.positions |= got
        if self.allowed is not None and not got <= self.allowed:
            self.refuse(f"it read positions {sorted(got - self.allowed)}, which were not computed")
        if self.columns == EVERY or isinstance(columns, str):
            self.columns = EVERY
        else:
            self.columns |= {int(c) for c in columns.flatten().tolist()}
        if self.allowed_columns is not None and not (self.columns != EVERY and self.columns <= self.allowed_columns):
            self.refuse("it read vocabulary entries that were not computed")

    def refuse(self, why: str) -> None:
        if self.refused is None:
            self.refused = why
        raise Unproven(why)


def _getters(*names: str) -> set[Any]:
    return {getattr(Tensor, n).__get__ for n in names}


_METADATA: set[Any] = {Tensor.size, Tensor.dim, Tensor.__len__, Tensor.numel, Tensor.is_floating_point,
                       Tensor.element_size, Tensor.is_contiguous, Tensor.stride, Tensor.get_device,
                       *_getters("shape", "ndim", "dtype", "device", "requires_grad", "is_cuda", "layout")}
_CASTS: set[Any] = {Tensor.float, Tensor.double, Tensor.half, Tensor.bfloat16, Tensor.to, Tensor.cpu,
                    Tensor.detach, Tensor.clone, Tensor.contiguous}
_OVER_VOCAB: set[Any] = {Tensor.softmax, Tensor.log_softmax, torch.softmax, torch.log_softmax, F.softmax,
                         F.log_softmax}


class Watched(Tensor):
    """Logits whose every operation is checked against a ``Trace`` (module docstring)."""

    _trace: Trace

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _METADATA:
            with torch_functions.as_plain_tensors():
                return func(*args, **kwargs)
        leaves = torch_functions.leaves((args, kwargs))
        watched = [a for a in leaves if isinstance(a, Watched)]
        name = getattr(func, "__name__", repr(func))
        trace = watched[0]._trace
        this = args[0] if args else None
        if len(watched) != 1 or this is not watched[0]:
            trace.refuse(f"{name} took the whole logits with other values or inside a container")
        if func is Tensor.__getitem__:
            shape = tuple(this.shape)
            read, columns = _selected(args[1], shape, 1), _selected(args[1], shape, len(shape) - 1)
            if read is None or columns is None:
                trace.refuse(f"an index {args[1]!r} whose positions or vocabulary entries cannot be named")
            trace.note(read, EVERY if columns.numel() == shape[-1] else columns)
            with torch_functions.as_plain_tensors():
                return func(*args, **kwargs)  # an ordinary tensor: the values at those positions
        if func in _CASTS or (func in _OVER_VOCAB and _over_vocab(args, kwargs, this.ndim)):
            if func in _OVER_VOCAB:  # every entry of a position mixes into each of its outputs
                trace.note(torch.empty(0, dtype=torch.long), EVERY)
            with torch_functions.as_plain_tensors():
                out = func(*args, **kwargs)
            if isinstance(out, Tensor) and out.shape == this.shape:
                return watch(out, trace)
        trace.refuse(f"{name} on the whole logits")


def _over_vocab(args: tuple, kwargs: dict, ndim: int) -> bool:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return isinstance(dim, int) and dim in (-1, ndim - 1)


def watch(logits: Tensor, trace: Trace) -> Watched:
    """``logits`` as a ``Watched`` tensor reporting to ``trace`` (the same storage, no copy)."""
    out = logits.as_subclass(Watched)
    out._trace = trace
    return out


def _width(item: Any) -> int:
    """How many dims of the indexed tensor an index item consumes."""
    if item is None or isinstance(item, bool):
        return 0
    if isinstance(item, Tensor) and item.dtype == torch.bool:
        return item.ndim
    return 1


def _selected(index: Any, shape: tuple[int, ...], axis: int) -> Tensor | None:
    """The entries of ``axis`` of ``shape`` (1: positions, the last: the vocabulary) an index
    selects, or None if they can't be named."""
    items = index if isinstance(index, tuple) else (index,)
    if sum(item is Ellipsis for item in items) > 1:
        return None
    used = sum(_width(item) for item in items if item is not Ellipsis)
    expanded: list[Any] = []
    for item in items:
        expanded += [slice(None)] * (len(shape) - used) if item is Ellipsis else [item]
    dim, size = 0, shape[axis]
    for item in expanded:
        width = _width(item)
        if dim <= axis < dim + width:
            return _along(item, axis - dim, size)
        dim += width
    return torch.arange(size)  # the index leaves the axis whole


def _along(item: Any, axis: int, seq: int) -> Tensor | None:
    """The positions one index item selects on an axis of length ``seq``."""
    if isinstance(item, slice):
        try:
            r = range(seq)[item]
        except (TypeError, ValueError):
            return None
        return torch.arange(r.start, r.stop, r.step, dtype=torch.long) if len(r) else torch.empty(0, dtype=torch.long)
    if not isinstance(item, Tensor):
        try:
            return _along(torch.tensor([operator.index(item)]), 0, seq)
        except TypeError:
            pass
        try:
            item = torch.as_tensor(item)
        except (TypeError, ValueError, RuntimeError):
            return None
    if item.dtype == torch.bool:
        return item.nonzero()[:, axis] if item.ndim > axis and item.shape[axis] == seq else None
    if item.dtype.is_floating_point or item.dtype.is_complex:
        return None
    values = item.flatten().long().cpu()
    if values.numel() and bool(((values < -seq) | (values >= seq)).any()):
        return None
    return values % seq


@contextlib.contextmanager
def _no_random_draws(what: list[str]) -> Iterator[None]:
    """Notes in ``what`` if the block draws from torch's or Python's random generator."""
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    yield
    if not torch.equal(torch.get_rng_state(), torch_state) or random.getstate() != py_state:
        what.append("it draws random numbers")


def traced(metric: MetricFn, logits: Tensor, allowed: frozenset[int] | None = None,
           allowed_columns: frozenset[int] | None = None) -> tuple[Any, Trace]:
    """``metric(logits)`` watched: its value (None if refused) and its ``Trace``.

    Example:
        >>> import torch
        >>> value, trace = traced(lambda x: x.log_softmax(-1)[:, 2, 0].sum(), torch.zeros(1, 4, 3))
        >>> sorted(trace.positions), trace.refused
        ([2], None)
        >>> traced(lambda x: x.argmax(), torch.zeros(1, 4, 3))[1].refused
        'argmax on the whole logits'
    """
    trace = Trace(seq=logits.shape[1], allowed=allowed, allowed_columns=allowed_columns)
    try:
        value = metric(watch(logits, trace))
    except Unproven as err:
        trace.refused = trace.refused or str(err)
        return None, trace
    except Exception as err:  # e.g. a library that wants exactly torch.Tensor: the full logits decide
        trace.refused = trace.refused or f"it raised {type(err).__name__} on watched logits: {err}"
        return None, trace
    if trace.refused is not None:  # caught by the metric itself
        return None, trace
    if isinstance(value, Watched):
        value = value.as_subclass(Tensor)
    return value, trace


def hidden(rows: Tensor, positions: Tensor, shape: tuple[int, ...], fill: float, columns: Tensor | None = None
           ) -> Tensor:
    """Logits of ``shape`` (batch, pos, d_vocab) holding ``rows`` (batch, d_vocab) at each row's
    position and ``fill`` everywhere else; with ``columns``, ``rows`` is (batch, len(columns)):
    the entries of those vocabulary columns, every other entry is ``fill`` too."""
    out = torch.full(shape, fill, dtype=rows.dtype, device=rows.device)
    at = torch.arange(shape[0], device=rows.device), positions.to(rows.device)
    if columns is None:
        out[at] = rows
    else:
        out[at[0][:, None], at[1][:, None], columns.to(rows.device)[None, :]] = rows
    return out


class HiddenLogits:
    """``hidden`` logits for many calls of one plain metric, without a fresh ``(batch, pos,
    d_vocab)`` tensor per call: one NaN buffer, into which each call's rows are written at the
    traced entries and NaN written back after it -- so every call sees exactly what ``hidden``
    would give it, for the cost of its few entries (on SmolLM2, 8 of 49,152 per row).

    Nothing stale can reach a call: its value is copied out before the NaN goes back (a value
    that is a view of the logits keeps its numbers); a call that writes into the buffer (its
    version counter moves) or keeps a view of it (``compat.torch_functions.storage_uses``) has
    the buffer given up, the next call gets a new one; and ``clean()``, checked by the caller
    after a batch of calls, scans for a write no counter saw (``.data``, NumPy), so those calls
    are made again on fresh logits. Without the storage count, every call gets fresh logits.

    Args:
        shape: the logits' shape ``(batch, pos, d_vocab)``.
        positions: ``(batch,)`` each row's traced position.
        columns: the traced vocabulary entries (None: every entry of the position).
        logits: any tensor of the logits' dtype and device (its values are not used).

    Example:
        >>> import torch
        >>> logits = torch.randn(2, 4, 6)
        >>> read = HiddenLogits((2, 4, 6), torch.tensor([3, 3]), None, logits)
        >>> value, trace = read.traced(lambda x: x[:, -1, 2].sum(), logits[:, 3], frozenset({3}), None)
        >>> torch.equal(value, logits[:, 3, 2].sum()), read.clean()
        (True, True)
    """

    def __init__(self, shape: tuple[int, ...], positions: Tensor, columns: Tensor | None, logits: Tensor) -> None:
        self.shape, self.dtype, self.device = shape, logits.dtype, logits.device
        self.positions, self.columns = positions.to(self.device), None if columns is None else columns.to(self.device)
        rows = torch.arange(shape[0], device=self.device)
        self._at = ((rows, self.positions) if self.columns is None else
                    (rows[:, None], self.positions[:, None], self.columns[None, :]))
        self._buffer: Tensor | None = None
        self._uses = 0
        self._unseen = False  # a buffer given up held a value no call wrote through a counted view
        self.reused = torch_functions.counts_usable()
        self.given_up = 0  # buffers given up: a call wrote into one or kept a view of it

    def _take(self) -> Tensor:
        if self._buffer is None:
            with torch.inference_mode(False):  # a normal tensor: its version counter sees writes
                self._buffer = torch.full(self.shape, float("nan"), dtype=self.dtype, device=self.device)
            self._uses = torch_functions.storage_uses(self._buffer)
        return self._buffer

    def traced(self, metric: MetricFn, rows: Tensor, allowed: frozenset[int] | None,
               allowed_columns: frozenset[int] | None) -> tuple[Any, Trace]:
        """``traced(metric, hidden(rows, ...))``: its value (copied) and its ``Trace``."""
        if not self.reused:
            return traced(metric, self.fresh(rows), allowed, allowed_columns)
        buffer = self._take()
        buffer[self._at] = rows
        version = torch_functions.writes(buffer)
        value, trace = traced(metric, buffer, allowed, allowed_columns)
        if isinstance(value, Tensor):
            value = value.clone()  # a view of the buffer would change with the next call
        if torch_functions.writes(buffer) == version and torch_functions.storage_uses(buffer) == self._uses:
            buffer[self._at] = float("nan")  # ready for the next call
        else:  # left as it is: a view the call kept keeps its numbers; the next call gets a new buffer
            seen = buffer.isnan()
            seen[self._at] = True
            self._unseen = self._unseen or not bool(seen.all())  # what earlier calls may have read
            self._buffer = None
            self.given_up += 1
        return value, trace

    def fresh(self, rows: Tensor) -> Tensor:
        """New hidden logits holding ``rows`` (``hidden``), sharing nothing with the buffer."""
        return hidden(rows, self.positions, self.shape, float("nan"), self.columns)

    def clean(self) -> bool:
        """No call since the last ``renew`` could have seen a value it was not given: the buffer,
        and every buffer given up since, held NaN everywhere between calls."""
        return not self._unseen and (self._buffer is None or bool(self._buffer.isnan().all()))

    def renew(self) -> None:
        """Start again from a new buffer (after ``clean()`` found a write)."""
        self._buffer, self._unseen = None, False
        self.given_up += 1


@dataclass(frozen=True)
class Probe:
    """What tracing a plain metric on the base run's logits showed: the one position it reads
    (``read_position``) and, when it reads only a few, the vocabulary entries (``columns``, sorted;
    None: all of them), or ``why`` the full logits are needed."""

    read_position: int | None
    why: str | None
    columns: Tensor | None = None

    @property
    def position(self) -> int | None:
        """The old name of ``read_position``."""
        warnings.warn("Probe.position is now Probe.read_position", TlInterpDeprecationWarning, stacklevel=2)
        return self.read_position

    def describe(self) -> str:
        if self.read_position is not None:
            entries = "" if self.columns is None else f", vocabulary entries {self.columns.tolist()}"
            return (f"plain metric traced: it reads position {self.read_position} only{entries} (every cell's reads "
                    "checked, a cell reading elsewhere is recomputed on full logits)")
        return f"plain metric reads the full logits: {self.why}"


def probe(metric: MetricFn, logits: Tensor, value: Tensor) -> Probe:
    """Trace ``metric`` on the base run's ``logits`` (whose metric value is ``value``): which one
    position it reads, shown by an unchanged value when every other position is hidden, first as
    NaN, then as finite garbage, without drawing random numbers.

    Example:
        >>> import torch
        >>> logits = torch.randn(2, 5, 7)
        >>> last = lambda x: (x[:, -1, 3] - x[:, -1, 4]).mean()
        >>> probe(last, logits, last(logits)).read_position
        4
        >>> every = lambda x: x[:, :, 3].mean()
        >>> probe(every, logits, every(logits)).why
        'it reads every position (the read-only head computes one position per row)'
    """
    if not torch_functions.usable():
        return Probe(None, "torch's Tensor-subclass switches are not as expected here (compat.torch_functions)")
    draws: list[str] = []
    with _no_random_draws(draws):
        got, trace = traced(metric, logits.clone())  # a metric writing into its logits keeps the base run's
    if trace.refused is not None:
        return Probe(None, trace.refused)
    if draws:
        return Probe(None, draws[0])
    if len(trace.positions) != 1:
        read = "every position" if len(trace.positions) == trace.seq else f"positions {sorted(trace.positions)}"
        return Probe(None, f"it reads {read} (the read-only head computes one position per row)")
    (position,) = trace.positions
    columns = None if trace.columns == EVERY else torch.tensor(sorted(trace.columns), dtype=torch.long)
    at = torch.full((logits.shape[0],), position, dtype=torch.long)
    rows = logits[torch.arange(logits.shape[0]), at.to(logits.device)]
    if columns is not None:
        rows = rows[:, columns.to(logits.device)]
    allowed_columns = None if columns is None else frozenset(columns.tolist())
    for fill in (float("nan"), 1e4):
        with _no_random_draws(draws):
            again, trace = traced(metric, hidden(rows, at, tuple(logits.shape), fill, columns),
                                  frozenset(trace.positions), allowed_columns)
        if trace.refused is not None or draws:
            return Probe(None, trace.refused or draws[0])
        if not (_same(again, value) and _same(got, value)):
            return Probe(None, f"its value changed when the entries it does not read were hidden ({fill})")
    return Probe(position, None, columns)


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and bool(
        torch.equal(a, b) or (a.isnan() == b.isnan()).all() and torch.equal(a.nan_to_num(), b.nan_to_num()))
