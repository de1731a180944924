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
  correlation directly. Kendall's tau keeps the loop.
- mutual kNN (Huh et al. 2024): sort each item's neighbours once. In a resample each copy of item
  j fills one of item i's k slots, in that order, so item i takes min(c_j, k - copies before j)
  slots of j; two sides share sum_j min(slots_X, slots_Y) of them, for each of i's c_i copies.
  Only the first few neighbours in the order can hold the k slots: a prefix is read, widened
  until it holds them.

The values equal the loop's (``rsa_resampled`` / ``knn_resampled`` on ``X[rows]``) up to rounding
(ranks are exact integers or halves). Resamples the loop would refuse (a constant RDM, an item
with fewer than k + 1 other rows) are flagged and run through the loop, which raises.
"""

import torch
from torch import Tensor

from tl_interp.similarity._inputs import paired_rows
from tl_interp.similarity._neighbors import _knn_sets, knn_resampled
from tl_interp.similarity._rsa import _rdms, rsa_resampled
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__ = ["average_ranks"]

_CACHED = 4 * 2**20  # gathers and cumulative sums run fastest on blocks of a few MB (benchmarks/similarity.py)


def _tie_groups(sorted_values: Tensor) -> tuple[Tensor, Tensor] | None:
    """For each entry of a sorted vector, the first and last index of its run of equal values (None: no ties)."""
    new = torch.ones_like(sorted_values, dtype=torch.bool)
    new[1:] = sorted_values[1:] != sorted_values[:-1]
    if bool(new.all()):
        return None
    starts = new.nonzero().flatten()
    ends = torch.cat([starts[1:] - 1, torch.tensor([sorted_values.numel() - 1])])
    group = new.cumsum(0) - 1
    return starts[group], ends[group]


def average_ranks(multiplicity: Tensor, ties: tuple[Tensor, Tensor] | None) -> Tensor:
    """Average ranks (1-based) of entries in sorted order, each present ``multiplicity`` times (per row).

    Example:
        >>> import torch
        >>> average_ranks(torch.tensor([[1.0, 2.0, 1.0]]), None).tolist()  # sorted a, b, b, c
        [[1.0, 2.5, 4.0]]
    """
    total = multiplicity.cumsum(1)
    if ties is None:
        return total - (multiplicity - 1) / 2  # (copies before + 1 + copies up to here) / 2
    before = total - multiplicity
    return (before[:, ties[0]] + total[:, ties[1]] + 1) / 2


def _weighted_correlation(w: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pearson correlation of a and b with multiplicities w (per row), and whether either side is constant.

    a and b should be roughly centred already (the one-pass sums lose digits to a large mean)."""
    wa, wb, total = w * a, w * b, w.sum(1)
    sa, sb = wa.sum(1), wb.sum(1)
    cov = torch.linalg.vecdot(wa, b) - sa * sb / total
    va = torch.linalg.vecdot(wa, a) - sa * sa / total
    vb = torch.linalg.vecdot(wb, b) - sb * sb / total
    constant = ~(va > 0) | ~(vb > 0)
    return torch.where(constant, 0.0, cov / (va * vb).clamp(min=1e-300).sqrt()), constant


@register_bootstrap(rsa_resampled)
def _rsa_bootstrap(x: Tensor, y: Tensor, *, rdm: str = "correlation", compare: str = "spearman"
                   ) -> PreparedBootstrap | None:
    if compare == "kendall":
        return None  # tau needs pair counts per resample: the loop runs
    dx, dy = _rdms(x, y, rdm, compare)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    if compare == "pearson":
        cx, cy = dx - dx.mean(), dy - dy.mean()  # a shift changes no correlation; it spares the sums digits

        def _rsa_pearson(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
            return _weighted_correlation(counts[:, i] * counts[:, j], cx, cy)

        return PreparedBootstrap(_rsa_pearson, bytes_per_resample=8 * 8 * dx.numel(), block_bytes=_CACHED)
    sx, ox = dx.sort(stable=True)
    sy, oy = dy.sort(stable=True)
    ties_x, ties_y = _tie_groups(sx), _tie_groups(sy)
    ix, jx, iy, jy = i[ox], j[ox], i[oy], j[oy]
    y_pos = torch.empty_like(oy)
    y_pos[oy] = torch.arange(oy.numel())
    y_of_x = y_pos[ox]  # where each entry of X's order sits in Y's order

    def _rsa_spearman(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        wx = counts[:, ix] * counts[:, jx]
        # the ranks' weighted mean is (N + 1) / 2 exactly, N = sum_{i<j} c_i c_j = (n^2 - sum c_i^2) / 2
        middle = ((counts.shape[1] ** 2 - counts.pow(2).sum(1, keepdim=True)) / 2 + 1) / 2
        ry = average_ranks(counts[:, iy] * counts[:, jy], ties_y)[:, y_of_x] - middle
        return _weighted_correlation(wx, average_ranks(wx, ties_x) - middle, ry)

    return PreparedBootstrap(_rsa_spearman, bytes_per_resample=8 * 10 * dx.numel(), block_bytes=_CACHED)


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
    y_of_x = y_pos.gather(1, order_x)  # where X's q-th neighbour of item i sits in Y's order

    def _knn_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        present = counts > 0
        width = min(n - 1, 2 * k + 16)
        while True:  # widen the prefix until every present item's k slots lie inside it on both sides
            wx, wy = counts[:, order_x[:, :width]], counts[:, order_y[:, :width]]  # (r, n, width)
            cx, cy = wx.cumsum(-1), wy.cumsum(-1)
            if width == n - 1 or bool(((cx[..., -1] >= k) & (cy[..., -1] >= k) | ~present).all()):
                break
            width = min(n - 1, 4 * width)
        slots_x = (k - (cx - wx)).clamp(min=0).minimum(wx)
        pos = y_of_x[:, :width]
        before_y = (cy - wy).gather(-1, pos.clamp(max=width - 1).expand_as(wx))
        slots_y = torch.where(pos < width, (k - before_y).clamp(min=0).minimum(wx), 0.0)
        shared = (counts * slots_x.minimum(slots_y).sum(-1)).sum(1) / (n * k)
        unsure = (present & (n - counts < k + 1)).any(1)  # the loop would pick copies of the item itself
        return shared, unsure

    return PreparedBootstrap(_knn_resampled, bytes_per_resample=8 * 8 * n * min(n - 1, 2 * k + 16),
                             block_bytes=_CACHED)
