"""The batched bootstrap registered for ``cka``: linear (``_resample_linear``) and RBF.

RBF CKA (Kornblith et al. 2019) of a resample: its squared distances are a gather of the full
data's; its bandwidth is threshold x the median of its n^2 squared distances (copies and the
diagonal included, as the metric takes it), read from the full data's pair distances sorted once:
in that order pair (i, j) occurs 2 c_i c_j times and the sum_i c_i^2 zero distances come first, so
the median is where the cumulative count crosses n^2 / 2 (one cumulative sum of int32 counts per
resample, no sort). Then the biased HSIC of the resample's kernels over its distinct items,
weighted by their counts c (``_resample_linear``'s Gram form). Equal to the loop's
``cka(X[rows], Y[rows], kernel="rbf")`` up to rounding; a resample whose median lies among the
zero distances is flagged and run by the loop.

Debiased CKA keeps the loop: its resample is read as weights over distinct items, centred by their
unweighted mean, and the weighted unbiased HSIC is not invariant to that shift, so the full data's
Gram matrices can't be reused without a per-resample correction (not written yet).
"""

import torch
from torch import Tensor

from tl_interp.similarity._kernels import _checked, cka
from tl_interp.similarity._resample_linear import BLOCK_BYTES, few_distinct, linear_cka_bootstrap
from tl_interp.similarity._resample_pairs import pair_indices
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__: list[str] = []

_SMALL = 512  # up to this many rows a block of resamples is one batch of (n, n) kernels


def _squared_distances(xc: Tensor) -> Tensor:
    """The metric's squared distances between rows (``gram_rbf``'s formula), (n, n)."""
    sq = xc.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * xc @ xc.T).clamp(min=0)


class _Median:
    """Each resample's median of its n^2 squared distances, from the pair distances sorted once."""

    def __init__(self, d2: Tensor) -> None:
        n = d2.shape[0]
        i, j = pair_indices(n)  # int32: exact below 2^31 rows
        order = d2[torch.ones(n, n, dtype=torch.bool).triu_(1)].argsort()  # pairs i < j, in pair_indices' order
        self.i, self.j = i[order], j[order]
        self.d2 = d2

    def __call__(self, counts: Tensor) -> tuple[Tensor, Tensor]:
        """(median, whether it lies among the zero distances of copies and the diagonal)."""
        n = counts.shape[1]
        whole = counts.int()  # int32 cumulative counts: exact up to n^2 < 2^31
        zeros = whole.pow(2).sum(1, keepdim=True)
        # numpy's median of n^2 values: the mean of the values at 1-based ranks (N + 1) // 2 and N // 2 + 1
        ranks = torch.tensor([[(n * n + 1) // 2, n * n // 2 + 1]], dtype=torch.int32)
        step = max(1, _SMALL ** 2 // n ** 2)  # resamples whose cumulative counts are taken at once
        at = torch.cat([torch.searchsorted((2 * c[:, self.i] * c[:, self.j]).cumsum(1, dtype=torch.int32),
                                           (ranks - z).clamp(min=1).int())
                        for c, z in zip(whole.split(step), zeros.split(step))])
        medians = self.d2[self.i[at].long(), self.j[at].long()].mean(1)
        return medians, (zeros >= ranks[:, :1]).flatten()


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
        if n <= _SMALL:  # the whole block at once, absent items at weight 0
            k = torch.exp(dx / -(scale * mx)[:, None, None])
            l = torch.exp(dy / -(scale * my)[:, None, None])
            values = _rbf_cka(k, l, counts, n)
        else:  # one resample at a time, over its distinct items
            values = torch.empty(counts.shape[0], dtype=torch.float64)
            for r, c in enumerate(counts):
                items = c.nonzero().flatten()
                k = torch.exp(dx[items][:, items] / -(scale * mx[r]))
                l = torch.exp(dy[items][:, items] / -(scale * my[r]))
                values[r] = _rbf_cka(k, l, c[items], n)
        unsure = few_distinct(counts) | zx | zy | ~(mx > 0) | ~(my > 0)
        return torch.where(unsure, 0.0, values), unsure

    # ~3 n^2 / 2 int32 for the median; the kernels: ~5 n^2 float64 (whole block) or one resample's
    return PreparedBootstrap(_cka_rbf, bytes_per_resample=4 * 3 * n * n // 2 + 8 * 5 * n * n,
                             block_bytes=2 * BLOCK_BYTES)


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
