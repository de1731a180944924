"""The senders' sums of ``_rows.CircuitRows``: prefix sums of the senders (the *out* receivers'
constants), the signed senders each mixed (circuit, receiver) pair sums, their sparse matrix, and
the rule that picks the dense or the sparse product (see ``_rows``'s module docstring)."""

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["SPARSE_MIN_WORK", "DENSE_SPEEDUP", "always_dense", "sparse_pays", "prefix_sums", "pair_senders", "sparse_rows"]

SPARSE_MIN_WORK = 2 ** 25  # multiply-adds of a dense product below which it is always dense
DENSE_SPEEDUP = 4  # multiply-adds a dense product does in the time a sparse one adds one table entry


def always_dense(work: int) -> bool:
    """Whether a product of ``work`` multiply-adds is dense whatever its density (small models:
    the sparse product's fixed cost dominates).

    Example:
        >>> always_dense(1000), always_dense(2 ** 30)
        (True, False)
    """
    return work < SPARSE_MIN_WORK


def sparse_pays(work: int, entries: int, rows: int) -> bool:
    """Whether summing ``entries`` table entries sparsely beats a dense product of ``work``
    multiply-adds over ``rows`` receivers per cell (a dense product of several rows per cell does
    ~``DENSE_SPEEDUP`` multiply-adds in the time a sparse one adds an entry; of one row it is
    memory-bound alike).

    Example:
        >>> sparse_pays(work=1000, entries=100, rows=8), sparse_pays(work=1000, entries=300, rows=8)
        (True, False)
    """
    return entries * min(rows, DENSE_SPEEDUP) < work


def prefix_sums(values: Tensor, ends: Sequence[int]) -> dict[int, Tensor]:
    """``{n: values[:, :, :n].sum(2)}`` in float64 for the sorted ``ends`` (what receivers of ``n``
    senders read), each from the one before: a cumulative sum over the sender axis only where read.

    Example:
        >>> x = torch.arange(12.0).reshape(1, 1, 4, 3)
        >>> {n: s.tolist() for n, s in prefix_sums(x, [1, 4]).items()}
        {1: [[[0.0, 1.0, 2.0]]], 4: [[[18.0, 22.0, 26.0]]]}
    """
    sums, total, at = {}, values.new_zeros(values.shape[:2] + values.shape[3:], dtype=torch.float64), 0
    for n in ends:
        total = total + values[:, :, at:n].double().sum(2)
        sums[n], at = total, n
    return sums


def pair_senders(kept: Tensor, mixed: Tensor, rebuilt: Tensor) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Per circuit: its mixed receivers (ascending), how many senders each sums, those senders, and
    each pair's sign: -1 where its input is rebuilt from the constant (its kept senders summed),
    +1 where it is edited (its excluded ones). ``kept``: ``(circuit, receiver, sender)`` bool;
    ``mixed``, ``rebuilt``: ``(circuit, receiver)`` bool.

    Example:
        >>> kept = torch.tensor([[[True, False, True], [True, True, False]]])
        >>> [[t.tolist() for t in part] for part in pair_senders(kept, torch.tensor([[True, True]]),
        ...                                                 torch.tensor([[True, False]]))]
        [[[0, 1], [2, 1], [0, 2, 2], [-1.0, 1.0]]]
    """
    summed = torch.where(rebuilt[..., None], kept, ~kept) & mixed[..., None]
    per_pair = summed.sum(-1)
    pairs, entries = mixed.sum(1).tolist(), per_pair.sum(1).tolist()
    receivers, counts = mixed.nonzero()[:, 1], per_pair[mixed]
    signs = torch.where(rebuilt[mixed], -1.0, 1.0)
    return list(zip(receivers.split(pairs), counts.split(pairs), summed.nonzero()[:, 2].split(entries),
                    signs.split(pairs)))


def sparse_rows(parts: list[tuple[Tensor, Tensor, Tensor, Tensor]], index: Tensor, n_senders: int,
                 dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(cell, receiver, sign, matrix)`` of the mixed pairs of the pass's cells (circuits ``index``),
    cell-major (consecutive rows read one cell's table: they share its rows in the cache), receivers
    ascending: the ``(pair, cell * n_senders)`` sparse matrix of the signed senders each pair sums.

    Example:
        >>> kept = torch.tensor([[[False, True, False], [False, False, True]]] * 2)
        >>> parts = pair_senders(kept, torch.tensor([[True, True], [False, True]]), torch.zeros(2, 2, dtype=torch.bool))
        >>> cells, receivers, signs, m = sparse_rows(parts, torch.tensor([1, 0]), 3, torch.float32,
        ...                                           torch.device("cpu"))
        >>> cells.tolist(), receivers.tolist(), signs.tolist()
        ([0, 1, 1], [1, 0, 1], [1.0, 1.0, 1.0])
        >>> m.to_dense().tolist()
        [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]]
    """
    cells, receivers, counts, columns, signs = [], [], [], [], []
    for at, c in enumerate(index.tolist()):
        r, k, s, sign = parts[c]
        if len(r):
            cells.append(torch.full_like(r, at))
            receivers.append(r), counts.append(k), columns.append(s + at * n_senders), signs.append(sign)
    count, sign = torch.cat(counts), torch.cat(signs)
    rows = torch.repeat_interleave(torch.arange(len(count)), count)
    m = torch.sparse_coo_tensor(torch.stack([rows, torch.cat(columns)]), sign.repeat_interleave(count).to(dtype),
                                (len(count), len(index) * n_senders), is_coalesced=True, check_invariants=False)
    return torch.cat(cells), torch.cat(receivers), sign, m.to(device)
