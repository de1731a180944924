"""Batched bootstrap of RSA with Kendall's tau-b: the resample's RDM entries gathered, not recomputed.

A resample's RDM entries (``rsa_resampled``: pairs of rows copying different items) are, as a
multiset, the full data's dissimilarities of item pairs (i, j), each c_i c_j times; tau-b depends
only on that multiset of (x, y) pairs. So the two RDMs are computed once, and a resample gathers
its entries (int32 indices) and counts concordant and discordant pairs with scipy's tau-b
(an O(N log N) merge sort of the N entries): what a tau-b of N entries costs, without the RDMs'
n^2 d recomputation. Equal to the loop's value up to the rounding of the dissimilarities
themselves (the counts are exact); a resample whose RDM is constant on either side is flagged and
run by the loop, which refuses it.
"""

import scipy.stats
import torch
from torch import Tensor

from tl_interp.similarity._gather import _square
from tl_interp.stats import PreparedBootstrap

__all__ = ["kendall_bootstrap"]


def kendall_bootstrap(dx: Tensor, dy: Tensor, n: int) -> PreparedBootstrap:
    """The prepared bootstrap from the full data's condensed RDMs ``dx``, ``dy`` of n items."""
    sx, sy = _square(dx, n), _square(dy, n)
    rows = torch.arange(n)
    i, j = torch.triu_indices(n, n, offset=1, dtype=torch.int32)  # the resample's row pairs, pdist order

    def _rsa_kendall(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        values = torch.zeros(counts.shape[0], dtype=torch.float64)
        unsure = torch.zeros(counts.shape[0], dtype=torch.bool)
        for r, c in enumerate(counts.long()):
            source = rows.repeat_interleave(c)  # the resample's rows, sorted by item (tau ignores order)
            keep = source[i] != source[j]
            a, b = source[i[keep]], source[j[keep]]
            ex, ey = sx[a, b], sy[a, b]
            if bool(ex.min() == ex.max()) or bool(ey.min() == ey.max()):
                unsure[r] = True
                continue
            values[r] = scipy.stats.kendalltau(ex.numpy(), ey.numpy()).statistic
        return values, unsure

    # one resample at a time: its ~n^2 / 2 entries, indices and scipy's sort
    return PreparedBootstrap(_rsa_kendall, bytes_per_resample=8 * 8 * n * n // 2, block_bytes=64 * 2**20)
