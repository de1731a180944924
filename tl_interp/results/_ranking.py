"""Rankings: the k largest entries of a result, as labelled ``(label, value)`` pairs.

Every result that can be ranked answers ``result.top(k, *, absolute=True, largest=True)`` with a
``Ranking`` (docs/vocabulary.md, "Top-k"): entries ordered by ``|value|`` (``absolute=True``)
or by the signed value (``absolute=False``), largest first (``largest=False``: smallest
first), NaNs last, ties in the result's own order. A ``Ranking`` iterates as ``(label, value)``
pairs (so ``dict(r.top(5))`` and ``for label, value in r.top(5)`` read as they did), prints in
one short line, and gives ``.to_frame()`` with every column (the row it was ranked in, the
index, interval bounds ... where the result has them).
"""

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch import Tensor

from tl_interp._checks import check_count
from tl_interp.errors import OptionError, ShapeError

__all__ = ["Ranking", "check_k", "order"]

_REPR_ENTRIES = 5
TOP_DEFAULT = 10  # entries a top() without k shows (fewer when there are fewer)
_LABEL_CHARS = 24


def check_k(k: Any, what: str, n: int | None = None) -> Any:
    """``k`` if it is an int >= 1 and at most ``n``, the number of entries there are to rank
    (``_checks.check_count``: a non-int is a ``TypeCheckError``, a count out of range a
    ``SelectionError`` that says how many entries there are), named ``what`` (``"PatchingResult.top"``).

    A top-k never quietly returns fewer than ``k`` entries: asking for more than exist is a mistake.
    ``k=None`` is the display default, up to ``TOP_DEFAULT`` (10) entries: ``min(10, n)`` once ``n``
    is known, and ``None`` (still the default) while it is not.

    Example:
        >>> check_k(3, "Result.top", 2)
        Traceback (most recent call last):
        ...
        tl_interp.errors.SelectionError: Result.top: k=3 is out of range: there are 2 entries; choose 1 <= k <= 2
        >>> check_k(None, "Result.top", 4), check_k(None, "Result.top", 40)
        (4, 10)
    """
    if k is None:
        return None if n is None else min(TOP_DEFAULT, n)
    k = check_count(k, "k", what=what)  # an int >= 1 first: "choose k >= 1" whatever there is
    return k if n is None else check_count(k, "k", high=n, what=what, items="entries")


def order(values: Tensor, k: int, *, absolute: bool = True, largest: bool = True) -> list[int]:
    """Indices of the ``k`` first entries of 1-D ``values`` in rank order (NaNs last, stable ties);
    ``k`` is at most ``values.numel()`` (``check_k``).

    Example:
        >>> order(torch.tensor([1.0, -3.0, float("nan"), 2.0]), 3)
        [1, 3, 0]
        >>> order(torch.tensor([1.0, -3.0, float("nan"), 2.0]), 2, absolute=False, largest=False)
        [1, 0]
    """
    flat = values.detach().double().flatten().cpu()
    key = flat.abs() if absolute else flat
    key = key if largest else -key
    nan = torch.isnan(flat)
    real = (~nan).nonzero().flatten()
    n = min(k, real.numel())
    chosen = real[:0]
    if n:
        # candidates: every entry at least as large as the n-th (ties at the edge included), then a
        # stable sort of those few, so equal values keep the result's own order
        threshold = torch.topk(key[real], n).values[-1]
        candidates = real[key[real] >= threshold]
        chosen = candidates[torch.argsort(key[candidates], descending=True, stable=True)][:n]
    return torch.cat([chosen, nan.nonzero().flatten()])[:k].tolist()


def _per_row_order(values: Tensor, k: int, absolute: bool, largest: bool) -> list[list[int]]:
    """``order`` of each row of 2-D ``values``: one ``torch.topk`` for every row whose k-th entry is
    not tied with the (k+1)-th and is finite (the k chosen are then certain; they are put in
    ``order``'s order), ``order`` itself for the other rows (ties at the edge, NaNs, infinities)."""
    key = values.detach().double().cpu()
    key = key.abs() if absolute else key
    key = key if largest else -key
    n = min(k, key.shape[1])
    if not n:
        return [[] for _ in range(key.shape[0])]
    top = torch.topk(torch.nan_to_num(key, nan=-float("inf")), n, dim=1)
    edge = top.values[:, -1:]
    certain = ((key >= edge).sum(1) == n) & torch.isfinite(edge[:, 0]) & torch.isfinite(top.values).all(1)
    by_index = top.indices.sort(dim=1).values  # then a stable sort by key: ties keep the row's order
    ranked = by_index.gather(1, key.gather(1, by_index).argsort(dim=1, descending=True, stable=True))
    return [ranked[r].tolist() if bool(certain[r]) else order(values[r], k, absolute=absolute, largest=largest)
            for r in range(key.shape[0])]


def _short(text: str) -> str:
    text = str(text).replace("\n", "\\n")
    return text if len(text) <= _LABEL_CHARS else text[:_LABEL_CHARS - 1] + "…"


@dataclass(frozen=True, eq=False)
class Ranking(Sequence[tuple[str, float]]):
    """Entries of a result in rank order, as ``(label, value)`` pairs.

    Attributes:
        labels, values: per entry, in rank order.
        absolute, largest: how it was ranked (by ``|value|`` or signed; largest or smallest first).
        row_labels: per entry, the row it was ranked within (``result.top(k, per=axis)``), else None.
        columns: further per-entry columns (``index``, ``ci_low``, ``ci_high`` ...).
        value_name: what the values are (the frame's column name).

    Example:
        >>> r = Ranking(("a", "b"), (2.0, -1.0))
        >>> r
        Ranking(by |value|, largest first: a +2, b -1)
        >>> dict(r), r[0], r == [("a", 2.0), ("b", -1.0)]
        ({'a': 2.0, 'b': -1.0}, ('a', 2.0), True)
    """

    labels: tuple[str, ...]
    values: tuple[float, ...]
    absolute: bool = True
    largest: bool = True
    row_labels: tuple[str, ...] | None = None
    columns: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    value_name: str = "value"

    def __post_init__(self) -> None:
        n = len(self.labels)
        sizes = {len(self.values), *(len(c) for c in self.columns.values())} | (
            {len(self.row_labels)} if self.row_labels is not None else set())
        if sizes - {n}:
            raise ShapeError(f"Ranking: {n} labels but columns of lengths {sorted(sizes)}; give one entry per label")

    @classmethod
    def of(cls, values: Tensor, labels: Sequence[str] | Callable[[int], str], k: int, *, absolute: bool = True, largest: bool = True,
           columns: Mapping[str, Sequence[Any]] | None = None, value_name: str = "value") -> "Ranking":
        """The ``k`` first entries of ``values`` (flattened) in rank order.

        ``labels`` labels every entry, or is a function of an entry's flat index (only the chosen
        entries are labelled).

        Example:
            >>> Ranking.of(torch.tensor([0.5, -2.0, 1.0]), ["x", "y", "z"], 2).labels
            ('y', 'z')
        """
        flat = values.detach().flatten()
        chosen = order(flat, check_k(k, "Ranking.of", flat.numel()), absolute=absolute, largest=largest)
        extra = {name: tuple(col[i] for i in chosen) for name, col in (columns or {}).items()}
        label = labels if callable(labels) else labels.__getitem__
        return cls(tuple(label(i) for i in chosen), tuple(float(flat[i]) for i in chosen), absolute, largest,
                   None, extra, value_name)

    @classmethod
    def per_row(cls, values: Tensor, row_labels: Sequence[str], labels: Sequence[str] | Callable[[int], str], k: int, *,
                absolute: bool = True, largest: bool = True, value_name: str = "value") -> "Ranking":
        """Each row of 2-D ``values`` ranked on its own: ``k`` entries per row, rows in order.

        Example:
            >>> r = Ranking.per_row(torch.tensor([[1.0, 3.0], [4.0, 2.0]]), ["n0", "n1"], ["a", "b"], 1)
            >>> r.row_labels, r.labels, r.columns["index"]
            (('n0', 'n1'), ('b', 'a'), (1, 0))
        """
        if values.ndim != 2:
            raise ShapeError(f"Ranking.per_row takes a (rows, columns) tensor, not shape {tuple(values.shape)}")
        label = labels if callable(labels) else labels.__getitem__
        chosen = _per_row_order(values, check_k(k, "Ranking.per_row", values.shape[1]), absolute, largest)
        rows, names, vals, index = [], [], [], []
        for r, picked in enumerate(chosen):
            for j in picked:
                rows.append(row_labels[r])
                names.append(label(j))
                vals.append(float(values[r, j]))
                index.append(j)
        return cls(tuple(names), tuple(vals), absolute, largest, tuple(rows), {"index": tuple(index)}, value_name)

    # -- a sequence of (label, value) pairs --------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    @overload
    def __getitem__(self, i: int) -> tuple[str, float]: ...

    @overload
    def __getitem__(self, i: slice) -> "Ranking": ...

    def __getitem__(self, i: int | slice) -> "tuple[str, float] | Ranking":
        if isinstance(i, slice):
            return Ranking(self.labels[i], self.values[i], self.absolute, self.largest,
                           None if self.row_labels is None else self.row_labels[i],
                           {name: col[i] for name, col in self.columns.items()}, self.value_name)
        return self.labels[i], self.values[i]

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(zip(self.labels, self.values))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Ranking):
            return (list(self) == list(other) and self.row_labels == other.row_labels
                    and dict(self.columns) == dict(other.columns))
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == [tuple(p) if isinstance(p, (list, tuple)) else p for p in other]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -- reading it ---------------------------------------------------------------------------
    @property
    def by(self) -> str:
        """How the entries were ranked, in words (``"|value|, largest first"``)."""
        return f"{'|value|' if self.absolute else 'value'}, {'largest' if self.largest else 'smallest'} first"

    def __repr__(self) -> str:
        shown = [(f"{_short(r)}: " if r is not None else "") + f"{_short(label)} {value:+.4g}"
                 for r, (label, value) in zip(self.row_labels or [None] * len(self), self)]
        more = f", ... {len(self) - _REPR_ENTRIES} more" if len(self) > _REPR_ENTRIES else ""
        return f"Ranking(by {self.by}: {', '.join(shown[:_REPR_ENTRIES])}{more})"

    def to_frame(self) -> Any:
        """A pandas frame: ``rank`` (from 0, within its row), ``row`` (if any), ``label``, the value, columns."""
        import pandas as pd

        ranks, seen = [], Counter()
        for r in self.row_labels or [None] * len(self):
            ranks.append(seen[r])
            seen[r] += 1
        data: dict[str, Any] = {"rank": ranks}
        if self.row_labels is not None:
            data["row"] = list(self.row_labels)
        data["label"] = list(self.labels)
        data[self.value_name] = list(self.values)
        data.update({name: list(col) for name, col in self.columns.items()})
        return pd.DataFrame(data)

    def by_row(self) -> dict[str, "Ranking"]:
        """One ranking per row (a ranking made with ``per=``), rows in order."""
        if self.row_labels is None:
            return {"": self}
        out: dict[str, list[int]] = {}
        for i, r in enumerate(self.row_labels):
            out.setdefault(r, []).append(i)
        return {r: Ranking(tuple(self.labels[i] for i in idx), tuple(self.values[i] for i in idx), self.absolute,
                           self.largest, None, {n: tuple(c[i] for i in idx) for n, c in self.columns.items()},
                           self.value_name) for r, idx in out.items()}

    def counts(self) -> Counter:
        """How many entries carry each label (labels shared by many rows stand out)."""
        return Counter(self.labels)

    def markdown(self, *, digits: int = 3) -> str:
        """A markdown table: one line per row, its labelled entries in rank order."""
        lines = [f"| row | top {max((len(r) for r in self.by_row().values()), default=0)} ({self.by}) |", "|---|---|"]
        for row, ranking in self.by_row().items():
            cells = ", ".join(f"{label!r} {v:+.{digits}f}" for label, v in ranking)
            lines.append(f"| {row} | {cells} |")
        return "\n".join(lines)
