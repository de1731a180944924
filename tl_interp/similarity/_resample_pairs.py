"""Batched bootstrap of RSA and mutual kNN from orders computed once on the full data.

A bootstrap resample draws item i c_i times; ``compare`` leaves out pairs of two copies of one
item. The resample's dissimilarities (and neighbour similarities) are then those of the full data,
each pair of distinct items (i, j) present c_i c_j times: rows are normalised one by one, so
resampling gathers entries and recomputes nothing.

- RSA, Spearman (Kriegeskorte et al. 2008; ties get average ranks, as scipy's rankdata): sort each
  RDM once. In that order the resample's entries are the same pairs with multiplicities c_i c_j,
  so a pair's average rank is (multiplicity before its tie group) + (its group's multiplicity + 1)/2:
  a cumulative sum per resample, no sort. The score is the multiplicity-weighted Pearson
  correlation of the two rank vectors. Pearson on the dissimilarities is the weighted
  correlation directly. Kendall's tau-b gathers the resample's entries (``_resample_kendall``).
- mutual kNN (Huh et al. 2024): sort each item's neighbours once. In a resample each copy of item
  j fills one of item i's k slots, in that order, so item i takes min(c_j, k - copies before j)
  slots of j; two sides share sum_j min(slots_X, slots_Y) of them, for each of i's c_i copies.
  Only the first few neighbours in the order can hold the k slots: a prefix is read, widened
  until it holds them.

The values equal the loop's (``rsa_resampled`` / ``knn_resampled`` on ``X[rows]``) up to rounding
(ranks are exact integers or halves). Resamples the loop would refuse (a constant RDM, an item
with fewer than k + 1 other rows) are flagged and run through the loop, which raises.
"""

import ctypes
import ctypes.util

import torch
from torch import Tensor

from tl_interp.similarity._inputs import paired_rows
from tl_interp.similarity._neighbors import _knn_sets, knn_resampled
from tl_interp.similarity._resample_kendall import kendall_bootstrap
from tl_interp.similarity._rsa import _rdms, rsa_resampled
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__ = ["average_ranks", "pair_indices"]

_CACHED = 4 * 2**20  # gathers and cumulative sums run fastest on blocks of a few MB (benchmarks/similarity.py)
_CHUNK = 1 << 12  # RDM entries per chunk: (chunk, resamples) temporaries stay in cache, whatever n
_BLOCK = 1024 * 2**20  # at most this much per block of RSA resamples (Y's ranks of every resample in it)
_INT16_ROWS = 2**15  # up to this many rows, row ids are held as int16
_INT32_RANKS = 2**31  # while n^2 is below this, twice a rank (a half <= n^2 / 2) is an exact int32


def pair_indices(n: int) -> tuple[Tensor, Tensor]:
    """The n(n-1)/2 pairs i < j in pdist order as int32 (half of ``triu_indices``' int64, never made)."""
    per_row = torch.arange(n - 1, 0, -1)
    i = torch.repeat_interleave(torch.arange(n - 1, dtype=torch.int32), per_row)
    starts = (per_row.cumsum(0) - per_row).int()
    return i, torch.arange(i.numel(), dtype=torch.int32) - starts[i] + i + 1


def average_ranks(multiplicity: Tensor, ties: tuple[Tensor, Tensor] | None, before: Tensor | float = 0.0) -> Tensor:
    """Average ranks (1-based) of entries in sorted order (axis 0), each present ``multiplicity`` times (one
    column per resample), after ``before`` earlier copies; ``ties``: each entry's first and last index in its
    run of equal values.

    Example:
        >>> import torch
        >>> average_ranks(torch.tensor([[1.0], [2.0], [1.0]]), None).flatten().tolist()  # sorted a, b, b, c
        [1.0, 2.5, 4.0]
    """
    total = multiplicity.cumsum(0) + before
    if ties is None:
        return total - (multiplicity - 1) / 2  # (copies before + 1 + copies up to here) / 2
    earlier = total - multiplicity
    return (earlier[ties[0]] + total[ties[1]] + 1) / 2


class _SortedPairs:
    """One RDM's pairs in sorted order, in chunks of whole tie groups (ranks need a group's total)."""

    def __init__(self, values: Tensor, i: Tensor, j: Tensor, n: int) -> None:
        ordered, order = values.sort(stable=True)
        self.order = order.int()
        self.i, self.j = _narrow(i[self.order], n), _narrow(j[self.order], n)
        new = torch.ones(ordered.numel(), dtype=torch.bool)
        new[1:] = ordered[1:] != ordered[:-1]
        del ordered
        starts = new.nonzero().flatten()
        cuts = torch.arange(0, new.numel(), _CHUNK)
        cuts = starts[torch.searchsorted(starts, cuts).clamp(max=starts.numel() - 1)].unique()  # group starts
        bounds = torch.cat([cuts, torch.tensor([new.numel()])]).tolist()
        self.chunks = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            flags = new[lo:hi]
            ties = None
            if not bool(flags.all()):
                first = flags.nonzero().flatten().int()
                last = torch.cat([first[1:] - 1, torch.tensor([hi - lo - 1], dtype=torch.int32)])
                group = flags.cumsum(0) - 1
                ties = (first[group], last[group])
            self.chunks.append((lo, hi, ties))

    def ranks(self, counts_t: Tensor):
        """Per chunk: (slice, multiplicities c_i c_j, average ranks), each (chunk, resamples), from
        ``counts_t`` (n, resamples): resamples side by side, so a gathered row serves all of them."""
        carry = torch.zeros(1, counts_t.shape[1], dtype=torch.float64)
        for lo, hi, ties in self.chunks:
            w = counts_t[self.i[lo:hi].int()] * counts_t[self.j[lo:hi].int()]
            r = average_ranks(w, ties, carry)
            carry = carry + w.sum(0, keepdim=True)
            yield slice(lo, hi), w, r


class _Moments:
    """Running multiplicity-weighted sums for a Pearson correlation, chunk by chunk."""

    def __init__(self, rows: int) -> None:
        self.sums = torch.zeros(6, rows, dtype=torch.float64)

    def add(self, w: Tensor, a: Tensor, b: Tensor) -> None:
        """Entries on axis 0, resamples on axis 1."""
        wa, wb = w * a, w * b
        for k, t in enumerate((w, wa, wb, wa * b, wa * a, wb * b)):
            self.sums[k] += t.sum(0)

    def correlation(self) -> tuple[Tensor, Tensor]:
        """The correlation, and whether either side is constant. Values should be roughly centred
        (the one-pass sums lose digits to a large mean)."""
        total, sa, sb, sab, saa, sbb = self.sums
        cov, va, vb = sab - sa * sb / total, saa - sa * sa / total, sbb - sb * sb / total
        constant = ~(va > 0) | ~(vb > 0)
        return torch.where(constant, 0.0, cov / (va * vb).clamp(min=1e-300).sqrt()), constant


@register_bootstrap(rsa_resampled)
def _rsa_bootstrap(x: Tensor, y: Tensor, *, rdm: str = "correlation", compare: str = "spearman"
                   ) -> PreparedBootstrap | None:
    dx, dy = _rdms(x, y, rdm, compare)
    n, size = x.shape[0], dx.numel()
    if compare == "kendall":
        return kendall_bootstrap(dx, dy, n)
    i, j = pair_indices(n)
    chunk = min(size, _CHUNK)
    if compare == "pearson":
        dx -= dx.mean()  # a shift changes no correlation; it spares the sums digits
        dy -= dy.mean()

        def _rsa_pearson(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
            moments, counts_t = _Moments(counts.shape[0]), counts.T.contiguous()
            for lo in range(0, size, chunk):
                part = slice(lo, lo + chunk)
                moments.add(counts_t[i[part]] * counts_t[j[part]], dx[part, None], dy[part, None])
            return moments.correlation()

        return PreparedBootstrap(_rsa_pearson, bytes_per_resample=8 * 5 * chunk, block_bytes=_BLOCK)
    sorted_x = _SortedPairs(dx, i, j, n)
    sorted_y = _SortedPairs(dy, i, j, n)
    del dx, dy, i, j
    y_of_x = torch.empty(size, dtype=torch.int32)
    y_of_x[sorted_y.order.long()] = torch.arange(size, dtype=torch.int32)
    y_of_x = y_of_x[sorted_x.order.long()]  # where each entry of X's order sits in Y's order
    sorted_x.order = sorted_y.order = None
    # ranks are halves up to N < n^2 / 2, so twice a rank is an exact int32 below 46,341 rows: Y's ranks, the
    # bulk of a block, take half of float64's memory
    twice = n * n < _INT32_RANKS

    def _rsa_spearman(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        # the ranks' weighted mean is (N + 1) / 2 exactly, N = sum_{i<j} c_i c_j = (n^2 - sum c_i^2) / 2
        middle = ((counts.shape[1] ** 2 - counts.pow(2).sum(1)) / 2 + 1) / 2
        counts_t = counts.T.contiguous()
        # (entry, resample): one gather serves all
        ry = torch.empty(size, counts.shape[0], dtype=torch.int32 if twice else torch.float64)
        for part, _, r in sorted_y.ranks(counts_t):
            ry[part] = 2 * r if twice else r
        moments = _Moments(counts.shape[0])
        for part, w, r in sorted_x.ranks(counts_t):
            moments.add(w, r - middle, ry[y_of_x[part]].double() / (2 if twice else 1) - middle)
        return moments.correlation()

    _release_freed()
    # per resample: Y's ranks, and a chunk's float64 temporaries (counts gathered, multiplicities, cumulative
    # counts, ranks, the gathered ranks and the moments' products: under 16 chunks)
    held = (4 * _narrow_bytes(n) + 4) * size + sum(8 * (hi - lo) for lo, hi, ties in sorted_x.chunks + sorted_y.chunks
                                                    if ties)
    return PreparedBootstrap(_rsa_spearman, bytes_per_resample=(4 if twice else 8) * size + 8 * 16 * chunk,
                             block_bytes=_BLOCK, held_bytes=held)  # pairs, order map, tie groups


def _narrow_bytes(n: int) -> int:
    return 2 if n <= _INT16_ROWS else 4


def _narrow(index: Tensor, n: int) -> Tensor:
    """Row ids (< n) held as int16 when they fit: the sorted pairs are the bulk of what RSA holds."""
    return index.short() if _narrow_bytes(n) == 2 else index


def _release_freed() -> None:
    """Hand the preparation's freed temporaries back to the OS (glibc's malloc_trim). Freed blocks just under
    glibc's 32 MiB mmap threshold stay resident otherwise (~100 MB at n = 4,096), on top of the blocks'
    budget; elsewhere this does nothing."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _neighbour_order(x: Tensor) -> Tensor:
    """Each row's other rows, most cosine-similar first ``(n, n - 1)`` (ties in index order)."""
    z = x / x.norm(dim=1, keepdim=True)
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    return sim.argsort(dim=1, descending=True, stable=True)[:, :-1]


@register_bootstrap(knn_resampled)
def _knn_bootstrap(x: Tensor, y: Tensor, *, k: int = 10) -> PreparedBootstrap:
    _knn_sets(x, y, k)  # the metric's checks (k, rows without direction), raised as it raises them
    xs, ys = paired_rows(x, y, "mutual_knn", min_rows=3)
    n = xs.shape[0]
    order_x, order_y = _neighbour_order(xs), _neighbour_order(ys)
    y_pos = torch.full((n, n), n - 1, dtype=torch.long)  # an item's own position: never read
    y_pos.scatter_(1, order_y, torch.arange(n - 1).expand(n, n - 1).contiguous())
    y_of_x = y_pos.gather(1, order_x).int()  # where X's q-th neighbour of item i sits in Y's order
    del y_pos
    order_x, order_y = order_x.int(), order_y.int()  # int32 (exact): half the memory held at large n

    def _knn_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        present = counts > 0
        width = min(n - 1, 2 * k + 16)
        while True:  # widen the prefix until every present item's k slots lie inside it on both sides
            prefix_x, prefix_y = order_x[:, :width].long(), order_y[:, :width].long()  # int64: the fast gather
            wx, wy = counts[:, prefix_x], counts[:, prefix_y]  # (r, n, width)
            cx, cy = wx.cumsum(-1), wy.cumsum(-1)
            if width == n - 1 or bool(((cx[..., -1] >= k) & (cy[..., -1] >= k) | ~present).all()):
                break
            width = min(n - 1, 4 * width)
        slots_x = (k - (cx - wx)).clamp(min=0).minimum(wx)
        pos = y_of_x[:, :width].long()  # gather takes int64 indices
        before_y = (cy - wy).gather(-1, pos.clamp(max=width - 1).expand_as(wx))
        slots_y = torch.where(pos < width, (k - before_y).clamp(min=0).minimum(wx), 0.0)
        shared = (counts * slots_x.minimum(slots_y).sum(-1)).sum(1) / (n * k)
        unsure = (present & (n - counts < k + 1)).any(1)  # the loop would pick copies of the item itself
        return shared, unsure

    return PreparedBootstrap(_knn_resampled, bytes_per_resample=8 * 8 * n * min(n - 1, 2 * k + 16),
                             block_bytes=_CACHED)
