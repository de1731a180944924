"""Each bootstrap resample's centred cross-products, for many resamples in one GEMM.

A resample draws row i c_i times (counts c, sum n). With A (n, d1) and B (n, d2) centred once on
the full data, the resample's centred cross-product is

    Xr^T Yr = A^T C B - (A^T c)(c^T B) / n        (C = diag(c))

and the first term, entry (p, q), is ``c . (A[:, p] * B[:, q])``: the counts of a block of
resamples ``(r, n)`` times the rows' outer products ``(n, d1 d2)``, one well-shaped GEMM whatever
r (only the upper triangle when A is B). The outer products are formed by broadcasting, a few
rows of the product at a time (``_CHUNK_BYTES``), so they never take more memory than one chunk;
forming them costs n d1 d2 per block, so a block of fewer than d1 resamples instead weights B's
rows per resample (n r d2) and takes one GEMM A^T [C_1 B | C_2 B | ...].

Cost: n d1 d2 multiply-adds per resample and product, which no exact method avoids for general
A and B: the entries of A^T C B are n-term sums with per-resample weights. With n > d this, not the
d x d decomposition after it, is what a resample costs (``benchmarks/similarity.py`` prices both).
"""

import torch
from torch import Tensor

__all__ = ["weighted_products", "products_bytes"]

_CHUNK_BYTES = 8 * 2**20  # outer products formed per chunk of columns (a few MB: stays in cache)


def products_bytes(*shapes: tuple[int, int, bool]) -> int:
    """Bytes per resample of ``weighted_products`` for products of widths ``(d1, d2, symmetric)``."""
    return 8 * sum(3 * d1 * d2 for d1, d2, _ in shapes)


def weighted_products(counts: Tensor, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """``[(r, d1, d2)]``: each resample's ``A^T C B - (A^T c)(c^T B) / n`` for every ``(A, B)`` in pairs
    (``A is B``: symmetric, the upper triangle computed and mirrored).

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
    r, n = counts.shape
    out = []
    for a, b in pairs:
        symmetric = a is b
        d1, d2 = a.shape[1], b.shape[1]
        if r < d1:  # few resamples: weighting B's rows per resample costs less than all the outer products
            stacked = (counts.T[:, :, None] * b[:, None, :]).reshape(n, -1)  # [C_1 B | C_2 B | ...]
            m = (a.T @ stacked).reshape(d1, r, d2).transpose(0, 1)
            out.append(m - (counts @ a)[:, :, None] * (counts @ b)[:, None, :] / n)
            continue
        at, bt = a.T.contiguous(), b.T.contiguous()  # (d, n): outer products by broadcasting, no gathers
        m = torch.empty(r, d1, d2, dtype=torch.float64)
        step = max(1, min(_CHUNK_BYTES // (8 * n * d2), -(-d1 // 8) if symmetric else d1))  # triangles: 8+ row blocks
        for p0 in range(0, d1, step):
            p1, q0 = min(d1, p0 + step), (p0 if symmetric else 0)
            outer = (at[p0:p1, None, :] * bt[None, q0:, :]).reshape(-1, n)  # rows p0:p1 x columns q0:
            block = (counts @ outer.T).reshape(r, p1 - p0, d2 - q0)
            m[:, p0:p1, q0:] = block
            if symmetric:  # the mirrored block, and its diagonal square made exactly symmetric
                m[:, q0:, p0:p1] = block.mT
                square = block[:, :, : p1 - p0]
                m[:, p0:p1, p0:p1] = square.triu() + square.triu(1).mT
        out.append(m.add_((counts @ a)[:, :, None] * (counts @ b)[:, None, :], alpha=-1 / n))
    return out
