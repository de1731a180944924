"""The batched bootstrap registered for ``cka``: linear (``_resample_linear``) and RBF.

RBF CKA (Kornblith et al. 2019) of a resample: its squared distances are a gather of the full
data's; its bandwidth is threshold x the median of its n^2 squared distances (copies and the
diagonal included, as the metric takes it), read from the full data's pair distances sorted once:
in that order pair (i, j) occurs 2 c_i c_j times and the sum_i c_i^2 zero distances come first, so
the median is where the cumulative count crosses n^2 / 2 (no sort; ``_Median`` counts only near the
middle). Then the biased HSIC of the resample's kernels over its distinct items, weighted by their
counts c (``_resample_linear``'s Gram form): one resample at a time above ``_SMALL`` rows, both
kernels pre-multiplied by sqrt(c_i c_j) so the three weighted sums are one small product. Equal to
the loop's ``cka(X[rows], Y[rows], kernel="rbf")`` up to rounding; a resample whose median lies
among the zero distances is flagged and run by the loop.

Debiased CKA's bootstrap (``compare``'s ``cka_debiased``) is ``_resample_debiased``.
"""

import math

import torch
from torch import Tensor

from tl_interp.similarity._kernels import _checked, cka
from tl_interp.similarity._resample_linear import BLOCK_BYTES, few_distinct, linear_cka_bootstrap
from tl_interp.similarity._resample_pairs import pair_indices
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__: list[str] = []

_SMALL = 96  # up to this many rows a block of resamples is one batch of (n, n) kernels (measured fastest)
_WINDOW = 1.5  # half-width of the median's window in the pair order, x n^1.5 (~7 spreads of the crossings)
_CUMULATIVE = 2**18  # entries of the cumulative counts taken at once
_SLICES = 16  # the median's window is cut into up to this many slices ...
_PREFIX_BYTES = 16 * 2**20  # ... whose (n, n) float32 prefix matrices take at most this (one at least)


def _squared_distances(xc: Tensor) -> Tensor:
    """The metric's squared distances between rows (``gram_rbf``'s formula), (n, n)."""
    sq = xc.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * xc @ xc.T).clamp(min=0)


class _Median:
    """Each resample's median of its n^2 squared distances, from the pair distances sorted once.

    In sorted order pair (i, j) weighs 2 c_i c_j, after the sum_i c_i^2 zeros; the median's two ranks are
    where the cumulative weight crosses them. Those crossings lie near the middle of the order (they
    spread by ~0.2 n^1.5 pairs), so a window around the middle is cut into a few slices, and the weight
    of every pair before each slice is one quadratic form c^T S c per resample (S: the 0/1 matrix of those
    pairs; one GEMM for a block of resamples and every slice, exact in float32: its entries are integer
    sums of at most n counts). The cumulative count then runs over the one slice holding each crossing.
    A resample whose crossings fall outside the window takes the whole order.
    """

    def __init__(self, d2: Tensor) -> None:
        n = d2.shape[0]
        i, j = pair_indices(n)  # int32: exact below 2^31 rows
        order = d2[torch.ones(n, n, dtype=torch.bool).triu_(1)].argsort()  # pairs i < j, in pair_indices' order
        self.i, self.j = i[order], j[order]
        self.d2 = d2
        size, half = i.numel(), int(_WINDOW * n ** 1.5)
        lo, self.hi = max(0, size // 2 - half), min(size, size // 2 + half)
        slices = max(1, min(_SLICES, _PREFIX_BYTES // (4 * n * n)))
        self.starts = torch.linspace(lo, self.hi, slices + 1).long()[:-1]
        self.width = max(1, -(-(self.hi - lo) // slices))
        self.before = torch.zeros(n, slices * n, dtype=torch.float32)  # [S_1 | S_2 | ...]: pairs before each slice
        done, running = 0, torch.zeros(n, n, dtype=torch.float32)
        for k, first in enumerate(self.starts.tolist()):
            running[self.i[done:first].long(), self.j[done:first].long()] = 1
            running[self.j[done:first].long(), self.i[done:first].long()] = 1
            self.before[:, k * n:(k + 1) * n] = running
            done = first

    def __call__(self, counts: Tensor) -> tuple[Tensor, Tensor]:
        """(median, whether it lies among the zero distances of copies and the diagonal)."""
        b, n = counts.shape
        whole = counts.int()  # int32 cumulative counts: exact up to n^2 < 2^31
        zeros = whole.pow(2).sum(1, keepdim=True)
        # numpy's median of n^2 values: the mean of the values at 1-based ranks (N + 1) // 2 and N // 2 + 1
        targets = (torch.tensor([[(n * n + 1) // 2, n * n // 2 + 1]]) - zeros).long()  # ranks among the pairs
        before = (counts.float() @ self.before).view(b, -1, n).double().mul_(counts[:, None]).sum(2).long()
        k = torch.searchsorted(before, targets) - 1  # the last slice starting below each target (-1: none)
        start = self.starts[k.clamp(min=0)]
        rest = targets - before.gather(1, k.clamp(min=0))
        at = torch.empty_like(targets)
        step = max(1, _CUMULATIVE // (2 * self.width))
        offsets = torch.arange(self.width)
        for first in range(0, b, step):
            part = slice(first, first + step)
            positions = (start[part, :, None] + offsets).clamp(max=self.i.numel() - 1).flatten(1)
            rows = whole[part]
            weights = 2 * rows.gather(1, self.i[positions].long()) * rows.gather(1, self.j[positions].long())
            cumulative = weights.view(-1, 2, self.width).cumsum(2, dtype=torch.int32)
            at[part] = start[part] + torch.searchsorted(cumulative, rest[part, :, None].clamp(min=1).int())[..., 0]
        outside = ((k < 0) | (targets <= 0) | (at >= self.hi)).any(1).nonzero().flatten()
        for first in range(0, outside.numel(), max(1, _CUMULATIVE // self.i.numel())):
            rows = outside[first:first + max(1, _CUMULATIVE // self.i.numel())]
            cumulative = (2 * whole[rows][:, self.i] * whole[rows][:, self.j]).cumsum(1, dtype=torch.int32)
            at[rows] = torch.searchsorted(cumulative, targets[rows].clamp(min=1).int()).long()
        medians = self.d2[self.i[at].long(), self.j[at].long()].mean(1)
        return medians, (targets[:, 0] <= 0)


@register_bootstrap(cka)
def _cka_bootstrap(x: Tensor, y: Tensor, *, kernel: str = "linear", threshold: float = 0.5,
                   debiased: bool = False) -> PreparedBootstrap | None:
    if debiased:
        return None  # resamples repeat items, which the unbiased HSIC assumes distinct: the loop runs
    if kernel == "linear":
        return linear_cka_bootstrap(x, y)
    xc, yc = _checked(x, y, kernel, threshold, debiased)
    n = xc.shape[0]
    dx, dy = _squared_distances(xc), _squared_distances(yc)
    median_x, median_y = _Median(dx), _Median(dy)
    scale = 2 * threshold ** 2

    def _cka_rbf(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        (mx, zx), (my, zy) = median_x(counts), median_y(counts)
        values = torch.empty(counts.shape[0], dtype=torch.float64)
        # exp(-d2 / h) as exp2(-d2 log2(e) / h): torch's exp2 is vectorised, its exp not (5x the time)
        if n <= _SMALL:  # a few resamples at once (their kernels in cache), absent items at weight 0
            step = max(1, _CUMULATIVE // (n * n))
            for first in range(0, counts.shape[0], step):
                part = slice(first, first + step)
                k = torch.exp2(dx * (-math.log2(math.e) / (scale * mx[part]))[:, None, None])
                l = torch.exp2(dy * (-math.log2(math.e) / (scale * my[part]))[:, None, None])
                values[part] = _rbf_cka(k, l, counts[part], n)
        else:  # one resample at a time, over its distinct items
            bandwidths = -math.log2(math.e) / (scale * torch.stack([mx, my], 1))[:, :, None, None]
            for r, c in enumerate(counts):
                items = c.nonzero().flatten()
                kernels = torch.empty(2, items.numel(), items.numel(), dtype=torch.float64)
                for side, d2 in enumerate((dx, dy)):  # rows then columns: index_select is fastest on rows
                    torch.index_select(d2.index_select(0, items), 1, items, out=kernels[side])
                w = c[items]
                half = w.log2() / 2  # sqrt(w_i w_j) k_ij = exp2(log2(k_ij) + log2(w_i) / 2 + log2(w_j) / 2)
                torch.addcmul(half[:, None] + half[None, :], kernels, bandwidths[r], out=kernels)
                values[r] = _items_cka(kernels.exp2_(), w, n)
        unsure = few_distinct(counts) | zx | zy | ~(mx > 0) | ~(my > 0)
        return torch.where(unsure, 0.0, values), unsure

    # held: the squared distances (float64), each side's sorted pairs (int32) and prefix matrices (float32);
    # working set, whatever the block: one resample's two kernels over its ~0.64 n distinct items and an
    # (m, n) gather (float64), and 2^18 cumulative counts with their indices; per resample: its counts in a
    # few dtypes and its weights before each slice (float32, then float64 twice)
    slices = median_x.before.shape[1] // n
    return PreparedBootstrap(_cka_rbf, bytes_per_resample=40 * n + 20 * slices * n, block_bytes=2 * BLOCK_BYTES,
                             held_bytes=2 * (8 + 4 + 4 * slices) * n * n + 8 * 15 * n * n // 10 + 32 * _CUMULATIVE)


def _rbf_cka(k: Tensor, l: Tensor, w: Tensor, n: int) -> Tensor:
    """CKA of the centred resample kernels from kernels over items (k, l: (..., m, m)) and their counts
    w (..., m): the biased HSIC as weighted sums (``_resample_linear``'s Gram form)."""
    def times_w(m: Tensor) -> Tensor:
        return (m @ w[..., None])[..., 0]

    kw, lw = times_w(k), times_w(l)
    sk, sl = (w * kw).sum(-1), (w * lw).sum(-1)
    xy = (w * times_w(k * l)).sum(-1) - 2 / n * (w * kw * lw).sum(-1) + sk * sl / n ** 2
    xx = (w * times_w(k * k)).sum(-1) - 2 / n * (w * kw * kw).sum(-1) + sk * sk / n ** 2
    yy = (w * times_w(l * l)).sum(-1) - 2 / n * (w * lw * lw).sum(-1) + sl * sl / n ** 2
    return xy / (xx * yy).clamp(min=1e-300).sqrt()


def _items_cka(scaled: Tensor, w: Tensor, n: int) -> Tensor:
    """``_rbf_cka`` of one resample from both kernels over its distinct items, given as
    S = kernels o (sqrt(w) sqrt(w)^T) ``(2, m, m)``: the weighted sums w^T (A o B) w of the three pairs are one
    product S S^T of the flattened S, and K w = (S sqrt(w)) / sqrt(w)."""
    root = w.sqrt()
    kw = (scaled @ root) / root  # (2, m): K w, L w
    sums = kw @ w
    flat = scaled.reshape(2, -1)
    hadamard = flat @ flat.T  # [[w'(KoK)w, w'(KoL)w], [., w'(LoL)w]]
    cross = (kw * w) @ kw.T  # [[sum w Kw Kw, sum w Kw Lw], [., sum w Lw Lw]]
    centred = hadamard - 2 / n * cross + torch.outer(sums, sums) / n ** 2
    return centred[0, 1] / (centred[0, 0] * centred[1, 1]).clamp(min=1e-300).sqrt()
