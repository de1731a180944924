"""The one kernel behind the vectorised permutation nulls: a weighted gather of a pair matrix.

Several similarity scores, with the rows of Y reordered by a permutation P, are
    s(P) = sum_k w_k L[P[i_k], P[j_k]]
for fixed coordinates (i_k, j_k), weights w_k from X and a matrix L from Y that permuting rows
does not change (only reorders): linear/RBF CKA (L = the centred Gram matrix of Y; centring
commutes with reordering rows, so nothing is re-centred), debiased CKA (the unbiased centring
commutes too), RSA (L = the standardised RDM or its ranks; ranks of a reordered RDM are the
reordered ranks) and mutual kNN (L = Y's neighbour adjacency). One permutation costs one
gather of len(w) entries and a dot product: for symmetric L the diagonal and the upper
triangle suffice (n(n+1)/2 entries).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PairGather", "symmetric_gather", "off_diagonal_gather"]

_BUDGET = 1 << 22  # gathered entries per chunk of permutations (32 MB of float64)


@dataclass(frozen=True)
class PairGather:
    """``s(P) = sum_k w_k L[P[i_k], P[j_k]]`` for a chunk of permutations."""

    rows: Tensor
    cols: Tensor
    weights: Tensor
    matrix: Tensor

    @property
    def chunk(self) -> int:
        return max(1, _BUDGET // max(1, self.weights.numel()))

    def __call__(self, perms: Tensor) -> Tensor:
        n = self.matrix.shape[0]
        flat = self.matrix.reshape(-1)
        index = perms[:, self.rows] * n + perms[:, self.cols]  # (chunk, len(w))
        return flat[index] @ self.weights


def symmetric_gather(K: Tensor, L: Tensor, scale: float = 1.0) -> PairGather:
    """``scale * sum_ij K_ij L[P_i, P_j]`` for symmetric K and L (diagonal + twice the upper triangle)."""
    n = K.shape[0]
    i, j = torch.triu_indices(n, n, offset=0)
    w = torch.where(i == j, K[i, j], 2 * K[i, j]) * scale
    keep = w != 0
    return PairGather(i[keep], j[keep], w[keep], L)


def off_diagonal_gather(kx: Tensor, L: Tensor, scale: float = 1.0) -> PairGather:
    """``scale * sum_{i<j} kx_ij L[P_i, P_j]`` with kx in scipy's condensed (pdist) order."""
    n = L.shape[0]
    i, j = torch.triu_indices(n, n, offset=1)
    return PairGather(i, j, kx * scale, L)
