"""The kernels behind the vectorised permutation nulls: reordered pair matrices, never recomputed.

Several similarity scores, with the rows of Y reordered by a permutation P, are
    s(P) = scale * sum_ij K_ij L[P_i, P_j]
for a matrix K from X and a matrix L from Y that reordering rows only permutes: linear/RBF
CKA (K, L the centred Gram matrices; centring commutes with reordering rows, so nothing is
re-centred), debiased CKA (the unbiased centring commutes too), RSA (the standardised RDMs or
their ranks, zero diagonal: the ranks of reordered entries are the reordered ranks) and mutual
kNN (the neighbour adjacency matrices).

``DenseGather`` reorders L's rows then columns (two contiguous index_selects of n^2 entries)
and takes one dot product; on CPU that beats gathering the n(n-1)/2 upper-triangle entries by
a computed flat index, whose index arithmetic costs more than the gather itself.
``PairGather`` gathers only listed entries (k per row for mutual kNN).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DenseGather", "PairGather", "symmetric_gather", "off_diagonal_gather"]

_ROWS_BYTES = 4 * 2**20  # rows of L gathered per step: n x n temporaries at n = 4,096 would be 134 MB each


@dataclass(frozen=True)
class DenseGather:
    """``s(P) = scale * sum_ij K_ij L[P_i, P_j]`` for a chunk of permutations."""

    K: Tensor
    L: Tensor
    scale: float
    chunk: int = 64

    def __call__(self, perms: Tensor) -> Tensor:
        n = self.K.shape[0]
        rows = max(1, _ROWS_BYTES // (8 * n))  # gathered a block of rows at a time: temporaries of a few MB
        out = torch.zeros(perms.shape[0], dtype=torch.float64)
        for b, p in enumerate(perms):
            for start in range(0, n, rows):
                block = self.L.index_select(0, p[start:start + rows]).index_select(1, p)
                out[b] += torch.dot(block.reshape(-1), self.K[start:start + rows].reshape(-1))
        return out * self.scale


@dataclass(frozen=True)
class PairGather:
    """``s(P) = sum_k w_k L[P[i_k], P[j_k]]`` for listed coordinates, for a chunk of permutations."""

    rows: Tensor
    cols: Tensor
    weights: Tensor
    matrix: Tensor

    @property
    def chunk(self) -> int:
        return max(1, (1 << 18) // max(1, self.weights.numel()))

    def __call__(self, perms: Tensor) -> Tensor:
        n = self.matrix.shape[0]
        index = perms[:, self.rows] * n + perms[:, self.cols]  # (chunk, len(w))
        return self.matrix.reshape(-1)[index] @ self.weights


def symmetric_gather(K: Tensor, L: Tensor, scale: float = 1.0) -> DenseGather:
    """``scale * sum_ij K_ij L[P_i, P_j]``."""
    return DenseGather(K.contiguous(), L.contiguous(), scale)


def off_diagonal_gather(kx: Tensor, ly: Tensor, scale: float = 1.0) -> DenseGather:
    """``scale * sum_{i<j} kx_ij ly_{P_i P_j}`` for condensed (pdist-order) kx and ly."""
    n = int((1 + (1 + 8 * kx.numel()) ** 0.5) / 2)
    return DenseGather(_square(kx, n), _square(ly, n), scale / 2)  # each pair appears twice in the square


def _square(condensed: Tensor, n: int) -> Tensor:
    full = torch.zeros(n, n, dtype=torch.float64)
    upper = torch.ones(n, n, dtype=torch.bool).triu_(1)  # a mask, not int64 pair indices (16x less memory)
    full[upper] = condensed
    full.T[upper] = condensed
    return full
