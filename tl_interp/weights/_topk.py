"""Top-k tables: for each row of a score matrix, its k largest (or smallest) entries, labelled.

Typical use: the tokens each neuron writes to most (output congruence), the tokens that drive
it most (input congruence). A ``TopK`` holds indices, values and labels, renders as a long
pandas frame or a markdown table, and counts how often each column label recurs across rows.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import check_count, checked
from tl_interp.errors import SelectionError, ShapeError

__all__ = ["TopK", "top_k"]


@dataclass(frozen=True)
class TopK:
    """Per row: the ``k`` chosen columns (``indices``, ``values``: ``(rows, k)``) and their labels."""

    rows: tuple[str, ...]
    indices: Tensor
    values: Tensor
    labels: tuple[tuple[str, ...], ...]
    largest: bool

    def to_frame(self) -> Any:
        """A long frame: row, rank, column index, column label, value."""
        import pandas as pd

        records = [(row, rank, int(self.indices[r, rank]), self.labels[r][rank], float(self.values[r, rank]))
                   for r, row in enumerate(self.rows) for rank in range(self.indices.shape[1])]
        return pd.DataFrame(records, columns=["row", "rank", "index", "label", "value"])

    def counts(self) -> Counter:
        """How many rows list each column label (labels shared by many rows stand out)."""
        return Counter(label for row in self.labels for label in row)

    def markdown(self, *, digits: int = 3) -> str:
        """A markdown table: one line per row, its labelled entries in rank order."""
        lines = ["| row | " + ("top" if self.largest else "bottom") + f" {self.indices.shape[1]} |", "|---|---|"]
        for r, row in enumerate(self.rows):
            cells = ", ".join(f"{label!r} {float(v):+.{digits}f}" for label, v in zip(self.labels[r], self.values[r]))
            lines.append(f"| {row} | {cells} |")
        return "\n".join(lines)


@checked
def top_k(scores: Tensor, k: int, *, row_labels: Sequence[str] | None = None,
          column_labels: Sequence[str] | None = None, rows: Sequence[int] | None = None,
          largest: bool = True) -> TopK:
    """The ``k`` largest (or smallest) entries of each row of ``scores``, with their labels.

    Args:
        scores: ``(n_rows, n_columns)``.
        k: entries per row (at most ``n_columns``).
        row_labels, column_labels: labels (default: the indices as strings).
        rows: only these rows (indices), in this order.
        largest: largest entries (default) or smallest.

    Returns:
        ``TopK``.

    Example:
        >>> import torch
        >>> t = top_k(torch.tensor([[0.25, 1.5, 0.5]]), 2, column_labels=["a", "b", "c"])
        >>> t.labels, t.values.tolist()
        ((('b', 'c'),), [[1.5, 0.5]])
    """
    if scores.ndim != 2:
        raise ShapeError(f"top_k takes a (rows, columns) score matrix, got shape {tuple(scores.shape)}")
    n_rows, n_cols = scores.shape
    check_count(k, "k", high=n_cols, what="top_k")
    row_names = tuple(row_labels) if row_labels is not None else tuple(str(i) for i in range(n_rows))
    col_names = tuple(column_labels) if column_labels is not None else tuple(str(i) for i in range(n_cols))
    if len(row_names) != n_rows or len(col_names) != n_cols:
        raise ShapeError(f"top_k: {len(row_names)} row and {len(col_names)} column labels for scores "
                         f"{tuple(scores.shape)}")
    chosen = list(range(n_rows)) if rows is None else list(rows)
    bad = [r for r in chosen if not 0 <= r < n_rows]
    if bad:
        raise SelectionError(f"top_k: rows {bad} are out of range for {n_rows} rows")
    picked = scores.detach()[chosen]
    values, indices = torch.topk(picked, k, dim=1, largest=largest)
    labels = tuple(tuple(col_names[i] for i in row.tolist()) for row in indices)
    return TopK(tuple(row_names[r] for r in chosen), indices, values, labels, largest)
