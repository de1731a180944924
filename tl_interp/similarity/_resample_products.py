"""Each bootstrap resample's centred cross-products, for many resamples in one GEMM.

A resample draws row i c_i times (counts c, sum n). With A (n, d1) and B (n, d2) centred once on
the full data, the resample's centred cross-product is

    Xr^T Yr = A^T C B - (A^T c)(c^T B) / n        (C = diag(c))

and the first term, entry (p, q), is ``c . (A[:, p] * B[:, q])``: the counts of a block of
resamples ``(r, n)`` times the rows' outer products ``(n, d1 d2)``, one well-shaped GEMM whatever
r (only the upper triangle when A is B). The outer products are formed a column chunk at a time
(``_CHUNK_BYTES``), so they never take more memory than one chunk.

Cost: n d1 d2 multiply-adds per resample and product, which no exact method avoids for general
A and B: the entries of A^T C B are n-term sums with per-resample weights. With n > d this, not the
d x d decomposition after it, is what a resample costs (``benchmarks/similarity.py`` prices both).
"""

import torch
from torch import Tensor

__all__ = ["weighted_products", "products_bytes"]

_CHUNK_BYTES = 8 * 2**20  # outer products formed per chunk of columns (a few MB: stays in cache)


def _columns(d1: int, d2: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """The (p, q) entries computed: all of them, or p <= q for a symmetric product."""
    if symmetric:
        p, q = torch.triu_indices(d1, d1)
        return p, q
    p, q = torch.meshgrid(torch.arange(d1), torch.arange(d2), indexing="ij")
    return p.reshape(-1), q.reshape(-1)


def products_bytes(*shapes: tuple[int, int, bool]) -> int:
    """Bytes per resample of ``weighted_products`` for products of widths ``(d1, d2, symmetric)``."""
    return 8 * sum(2 * d1 * d2 + (d1 * (d1 + 1) // 2 if sym else d1 * d2) for d1, d2, sym in shapes)


def weighted_products(counts: Tensor, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """``[(r, d1, d2)]``: each resample's ``A^T C B - (A^T c)(c^T B) / n`` for every ``(A, B)`` in pairs
    (``A is B``: symmetric, half the multiply-adds), all pairs in one GEMM per column chunk.

    Example:
        >>> import torch
        >>> a = torch.randn(6, 2, dtype=torch.float64)
        >>> counts = torch.tensor([[2.0, 0, 1, 1, 0, 2]], dtype=torch.float64)
        >>> rows = torch.tensor([0, 0, 2, 3, 5, 5])
        >>> (m,) = weighted_products(counts, [(a, a)])
        >>> xr = a[rows] - a[rows].mean(0)
        >>> torch.allclose(m[0], xr.T @ xr)
        True
    """
    n = counts.shape[1]
    factors = torch.cat([t.T for pair in pairs for t in pair])  # (sum of widths, n): row gathers are copies
    left, right, layout, offset = [], [], [], 0
    for a, b in pairs:
        p, q = _columns(a.shape[1], b.shape[1], a is b)
        left.append(p + offset)
        right.append(q + offset + a.shape[1])
        layout.append((p, q, a.shape[1], b.shape[1], a is b))
        offset += a.shape[1] + b.shape[1]
    left_all, right_all = torch.cat(left), torch.cat(right)
    step = max(1, _CHUNK_BYTES // (8 * n))
    flat = torch.empty(counts.shape[0], left_all.numel(), dtype=torch.float64)
    for start in range(0, left_all.numel(), step):
        cols = slice(start, start + step)
        outer = factors[left_all[cols]] * factors[right_all[cols]]  # (chunk, n)
        flat[:, cols] = counts @ outer.T
    out, start = [], 0
    for (a, b), (p, q, d1, d2, symmetric) in zip(pairs, layout):
        values = flat[:, start:start + p.numel()]
        start += p.numel()
        if symmetric:  # index_copy_ along one flat axis: far cheaper than a 2-d advanced-index assignment
            m = torch.empty(counts.shape[0], d1 * d2, dtype=torch.float64)
            m.index_copy_(1, p * d2 + q, values).index_copy_(1, q * d2 + p, values)
            m = m.reshape(-1, d1, d2)
        else:
            m = values.reshape(-1, d1, d2)  # (p, q) in row-major order
        out.append(m - (counts @ a)[:, :, None] * (counts @ b)[:, None, :] / n)
    return out
