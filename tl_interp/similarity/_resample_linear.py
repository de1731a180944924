"""Batched bootstrap of linear CKA, Procrustes and SVCCA from what resampling rows does not change.

A bootstrap resample draws row i of X and Y c_i times (counts c, sum n). Centring the resample by
its own mean, everything these scores need is a count-weighted sum over the fixed rows, centred
once (A, B: X and Y centred, or (n, n) factors with the same Gram matrix when d > n):

    Xr^T Yr            = A^T C B - (A^T c)(c^T B) / n                       (C = diag(c))
    <Kr_c, Lr_c>_F     = c^T (K o L) c - (2/n) (c o Kc).(Lc) + (c^T K c)(c^T L c) / n^2

where K = A A^T, L = B B^T: the resample's centred Gram matrices are a gather of K's and L's
rows and columns, centred (Kornblith et al. 2019's biased HSIC). So linear CKA is five matrix
products per block of resamples (no gather at all; with few features, three weighted
cross-products ||Xr^T Yr||^2, ||Xr^T Xr||, ||Yr^T Yr|| cost less and are used), Procrustes one weighted cross-covariance and
one SVD per resample (Schoenemann 1966's nuclear norm), SVCCA (Raghu et al. 2017) three weighted
covariances, two eigendecompositions (the kept directions) and one SVD (the canonical
correlations of the whitened cross-covariance). Each equals the loop ``metric(X[rows], Y[rows])``
up to rounding. A resample whose value this form can't certify (few distinct rows, a variance
lost to cancellation, a kept direction with under 1e-6 of the top variance, a variance fraction
within 1e-10 of ``keep``) is flagged and recomputed by the loop, which raises where it would.
"""

import torch
from torch import Tensor

from tl_interp.similarity._cca import _svcca_bases, svcca
from tl_interp.similarity._inputs import centred, paired_rows
from tl_interp.similarity._kernels import _checked, _factor, cka
from tl_interp.similarity._procrustes import procrustes
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__ = ["weighted_cross"]

_CANCELLED = 1e-6  # a resample keeping less than this share of its uncentred sum of squares goes to the loop
_WELL_KEPT = 1e-6  # a kept direction needs at least this share of the top variance (errors ~ eps / share)
_BLOCK_BYTES = 32 * 2**20  # larger blocks only add allocation; each resample has its own decompositions
_KEEP_MARGIN = 1e-10  # a variance fraction this close to ``keep`` could round either way: the loop decides


def weighted_cross(counts: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``(r, d1, d2)`` cross-products of each resample's centred rows, ``A^T C B - (A^T c)(c^T B) / n``."""
    n, d2 = b.shape
    stacked = (counts.T[:, :, None] * b[:, None, :]).reshape(n, -1)  # [C_1 B | C_2 B | ...]
    m = (a.T @ stacked).reshape(a.shape[1], counts.shape[0], d2).transpose(0, 1)
    return m - (counts @ a)[:, :, None] * (counts @ b)[:, None, :] / n


def _sums_of_squares(counts: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """Each resample's centred sum of squares, and its uncentred one (to detect cancellation)."""
    raw = counts @ a.pow(2).sum(1)
    return raw - (counts @ a).pow(2).sum(1) / a.shape[0], raw


def _few_distinct(counts: Tensor, minimum: int = 2) -> Tensor:
    return (counts > 0).sum(1) < minimum


@register_bootstrap(cka)
def _cka_bootstrap(x: Tensor, y: Tensor, *, kernel: str = "linear", threshold: float = 0.5,
                   debiased: bool = False) -> PreparedBootstrap | None:
    if kernel != "linear" or debiased:
        return None  # RBF's bandwidth is a median per resample; debiased CKA weights distinct items (the loop)
    a, b = (_factor(t) for t in _checked(x, y, kernel, threshold, debiased))
    n, r1, r2 = a.shape[0], a.shape[1], b.shape[1]
    if r1 * r2 + r1 * r1 + r2 * r2 < 5 * n:  # three weighted cross-products cost less than five Gram products
        return _cka_feature_bootstrap(a, b)

    def _cka_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        ct = counts.T.contiguous()  # (n, r)
        rows_per_block = max(1, int(memory_mb * 2**20 // (8 * (8 * n + 6 * ct.shape[1]))))
        sums = torch.zeros(8, counts.shape[0], dtype=torch.float64)
        for start in range(0, n, rows_per_block):
            rows = slice(start, start + rows_per_block)
            kb, lb = a[rows] @ a.T, b[rows] @ b.T  # (R, n) rows of K and L
            kc, lc, mc, kkc, llc = (torch.cat([kb, lb, kb * lb, kb * kb, lb * lb]) @ ct).split(kb.shape[0])
            w = ct[rows]
            for i, term in enumerate((mc, kkc, llc, kc, lc, kc * lc, kc * kc, lc * lc)):
                sums[i] += (w * term).sum(0)
        kl, kk, ll, ck, cl, ckl, ckk, cll = sums
        xy = kl - 2 / n * ckl + ck * cl / n ** 2
        xx = kk - 2 / n * ckk + ck * ck / n ** 2
        yy = ll - 2 / n * cll + cl * cl / n ** 2
        unsure = _few_distinct(counts) | ~(xx > _CANCELLED * kk) | ~(yy > _CANCELLED * ll)
        return torch.where(unsure, 0.0, xy / (xx * yy).clamp(min=0).sqrt()), unsure

    return PreparedBootstrap(_cka_resampled, bytes_per_resample=8 * 4 * n)


def _cka_feature_bootstrap(a: Tensor, b: Tensor) -> PreparedBootstrap:
    """Linear CKA per resample as ||Xr^T Yr||^2 / (||Xr^T Xr|| ||Yr^T Yr||) (the feature-space form, n >> d)."""
    def _cka_features(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        (sxx, rawx), (syy, rawy) = _sums_of_squares(counts, a), _sums_of_squares(counts, b)
        xy, xx, yy = (weighted_cross(counts, p, q).pow(2).sum((1, 2)) for p, q in ((a, b), (a, a), (b, b)))
        unsure = _few_distinct(counts) | ~(sxx > _CANCELLED * rawx) | ~(syy > _CANCELLED * rawy)
        return torch.where(unsure, 0.0, xy / (xx * yy).clamp(min=1e-300).sqrt()), unsure

    r = max(a.shape[1], b.shape[1])
    return PreparedBootstrap(_cka_features, bytes_per_resample=8 * (a.shape[0] * r + 3 * r * r),
                             block_bytes=_BLOCK_BYTES)


@register_bootstrap(procrustes)
def _procrustes_bootstrap(x: Tensor, y: Tensor) -> PreparedBootstrap:
    xs, ys = paired_rows(x, y, "procrustes")
    a, b = _factor(centred(xs, "X", "procrustes")), _factor(centred(ys, "Y", "procrustes"))
    n = a.shape[0]

    def _procrustes_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        (sxx, rawx), (syy, rawy) = _sums_of_squares(counts, a), _sums_of_squares(counts, b)
        nuclear = torch.linalg.svdvals(weighted_cross(counts, a, b)).sum(-1)
        unsure = _few_distinct(counts) | ~(sxx > _CANCELLED * rawx) | ~(syy > _CANCELLED * rawy)
        value = (nuclear / (sxx * syy).clamp(min=0).sqrt()).clamp(max=1.0)
        return torch.where(unsure, 0.0, value), unsure

    return PreparedBootstrap(_procrustes_resampled, bytes_per_resample=8 * (n * b.shape[1] + 4 * a.shape[1] * b.shape[1]),
                             block_bytes=_BLOCK_BYTES)


def _kept(counts: Tensor, a: Tensor, keep: float, dims: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Whitening maps ``V_k S_k^-1`` (zero past the k kept directions), k, and whether k is certain."""
    lam, vec = torch.linalg.eigh(weighted_cross(counts, a, a))
    lam, vec = lam.flip(-1).clamp(min=0), vec.flip(-1)  # descending variances
    top = lam[:, :1]
    well = lam > _WELL_KEPT * top
    if dims is not None:
        k = torch.full((counts.shape[0],), dims, dtype=torch.long)
        sure = well[:, dims - 1]
    elif keep >= 1.0:
        k = torch.full((counts.shape[0],), lam.shape[1], dtype=torch.long)
        sure = well.all(1)
    else:
        frac = lam.cumsum(1) / lam.sum(1, keepdim=True)
        k = (frac < keep - 1e-12).sum(1) + 1
        sure = ((frac - (keep - 1e-12)).abs() > _KEEP_MARGIN).all(1) & well.gather(1, (k - 1)[:, None]).squeeze(1)
    mask = torch.arange(lam.shape[1]) < k[:, None]
    scale = torch.where(mask & well, lam.clamp(min=1e-300).rsqrt(), 0.0)
    return vec * scale[:, None, :], k, sure


@register_bootstrap(svcca)
def _svcca_bootstrap(x: Tensor, y: Tensor, *, keep: float = 0.99, dims: int | None = None) -> PreparedBootstrap:
    _svcca_bases(x, y, keep, dims)  # the metric's own checks, raised as it raises them
    xs, ys = paired_rows(x, y, "svcca", min_rows=3)
    a, b = _factor(centred(xs, "X", "svcca")), _factor(centred(ys, "Y", "svcca"))
    n, r1, r2 = a.shape[0], a.shape[1], b.shape[1]

    def _svcca_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        wx, kx, sure_x = _kept(counts, a, keep, dims)
        wy, ky, sure_y = _kept(counts, b, keep, dims)
        rho = torch.linalg.svdvals(wx.mT @ weighted_cross(counts, a, b) @ wy).clamp(max=1.0)
        m = torch.minimum(kx, ky)
        value = (rho * (torch.arange(rho.shape[1]) < m[:, None])).sum(1) / m
        unsure = _few_distinct(counts) | ~sure_x | ~sure_y | (kx + ky >= n)  # the loop refuses p + q >= n
        return torch.where(unsure, 0.0, value), unsure

    per = n * max(r1, r2) + 10 * max(r1, r2) ** 2
    return PreparedBootstrap(_svcca_resampled, bytes_per_resample=8 * per, block_bytes=_BLOCK_BYTES)
