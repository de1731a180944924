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
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__: list[str] = []


def _squared_distances(xc: Tensor) -> Tensor:
    """The metric's squared distances between rows (``gram_rbf``'s formula), (n, n)."""
    sq = xc.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * xc @ xc.T).clamp(min=0)


class _Median:
    """Each resample's median of its n^2 squared distances, from the pair distances sorted once."""

    def __init__(self, d2: Tensor) -> None:
        n = d2.shape[0]
        i, j = torch.triu_indices(n, n, offset=1)
        order = d2[i, j].argsort()
        self.i, self.j = i[order].int(), j[order].int()  # int32: exact below 2^31 rows
        self.d2 = d2

    def __call__(self, counts: Tensor) -> tuple[Tensor, Tensor]:
        """(median, whether it lies among the zero distances of copies and the diagonal)."""
        n = counts.shape[1]
        whole = counts.int()  # int32 cumulative counts: exact up to n^2 < 2^31
        zeros = whole.pow(2).sum(1)
        # numpy's median of n^2 values: the mean of the values at 1-based ranks (N + 1) // 2 and N // 2 + 1
        ranks = torch.tensor([(n * n + 1) // 2, n * n // 2 + 1])
        medians = torch.empty(counts.shape[0], dtype=torch.float64)
        for r, c in enumerate(whole):
            total = (2 * c[self.i] * c[self.j]).cumsum(0, dtype=torch.int32)
            at = torch.searchsorted(total, (ranks - zeros[r]).clamp(min=1).int())
            medians[r] = self.d2[self.i[at].long(), self.j[at].long()].mean()
        return medians, zeros >= ranks[0]


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
        for r, c in enumerate(counts):
            items = c.nonzero().flatten()
            w = c[items]
            k = torch.exp(dx[items][:, items] / -(scale * mx[r]))
            l = torch.exp(dy[items][:, items] / -(scale * my[r]))
            kw, lw = k @ w, l @ w
            sk, sl = w @ kw, w @ lw
            # biased HSIC of the centred resample kernels, as a weighted sum over distinct items
            xy = w @ ((k * l) @ w) - 2 / n * (w * kw) @ lw + sk * sl / n ** 2
            xx = w @ ((k * k) @ w) - 2 / n * (w * kw) @ kw + sk * sk / n ** 2
            yy = w @ ((l * l) @ w) - 2 / n * (w * lw) @ lw + sl * sl / n ** 2
            values[r] = xy / (xx * yy).clamp(min=1e-300).sqrt()
        unsure = few_distinct(counts) | zx | zy | ~(mx > 0) | ~(my > 0)
        return torch.where(unsure, 0.0, values), unsure

    # resamples run one at a time: ~3 n^2 / 2 int32 for the median, ~7 (0.632 n)^2 float64 for the kernels
    return PreparedBootstrap(_cka_rbf, bytes_per_resample=4 * 3 * n * n // 2 + 8 * 3 * n * n, block_bytes=BLOCK_BYTES)
