"""Batched bootstrap of linear CKA and Procrustes from what resampling rows does not change.

A bootstrap resample draws row i of X and Y c_i times (counts c, sum n). Centring the resample by
its own mean, everything these scores need is a count-weighted sum over the fixed rows, centred
once (A, B: X and Y centred, or (n, n) factors with the same Gram matrix when d > n):

    Xr^T Yr            = A^T C B - (A^T c)(c^T B) / n                       (C = diag(c))
    <Kr_c, Lr_c>_F     = c^T (K o L) c - (2/n) (c o Kc).(Lc) + (c^T K c)(c^T L c) / n^2

where K = A A^T, L = B B^T: the resample's centred Gram matrices are a gather of K's and L's
rows and columns, centred (Kornblith et al. 2019's biased HSIC). So linear CKA is five matrix
products per block of resamples (no gather at all; with few features, three weighted
cross-products ||Xr^T Yr||^2, ||Xr^T Xr||, ||Yr^T Yr|| cost less and are used), Procrustes one
weighted cross-covariance (``_resample_products``: one GEMM for a block of resamples) and one SVD
per resample (Schoenemann 1966's nuclear norm). SVCCA and PWCCA: ``_resample_cca``. Each equals
the loop ``metric(X[rows], Y[rows])`` up to rounding. A resample whose value this form can't
certify (few distinct rows, a variance lost to cancellation) is flagged and recomputed by the
loop, which raises where it would.
"""
import torch
from torch import Tensor

from tl_interp.similarity._inputs import centred, paired_rows
from tl_interp.similarity._kernels import _checked, _factor
from tl_interp.similarity._procrustes import procrustes
from tl_interp.similarity._resample_products import products_bytes, weighted_products
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__ = ["linear_cka_bootstrap", "sums_of_squares", "few_distinct", "CANCELLED", "BLOCK_BYTES"]

CANCELLED = 1e-6  # a resample keeping less than this share of its uncentred sum of squares goes to the loop
BLOCK_BYTES = 128 * 2**20  # blocks of many resamples share the cross-products' GEMM (_resample_products)


def sums_of_squares(counts: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """Each resample's centred sum of squares, and its uncentred one (to detect cancellation)."""
    raw = counts @ a.pow(2).sum(1)
    return raw - (counts @ a).pow(2).sum(1) / a.shape[0], raw


def few_distinct(counts: Tensor, minimum: int = 2) -> Tensor:
    return (counts > 0).sum(1) < minimum


def linear_cka_bootstrap(x: Tensor, y: Tensor) -> PreparedBootstrap:
    """Linear CKA's batched bootstrap (registered for ``cka`` by ``_resample_kernels``, with RBF's)."""
    a, b = (_factor(t) for t in _checked(x, y, "linear", 0.5, False))
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
        unsure = few_distinct(counts) | ~(xx > CANCELLED * kk) | ~(yy > CANCELLED * ll)
        return torch.where(unsure, 0.0, xy / (xx * yy).clamp(min=0).sqrt()), unsure

    return PreparedBootstrap(_cka_resampled, bytes_per_resample=8 * 4 * n)


def _cka_feature_bootstrap(a: Tensor, b: Tensor) -> PreparedBootstrap:
    """Linear CKA per resample as ||Xr^T Yr||^2 / (||Xr^T Xr|| ||Yr^T Yr||) (the feature-space form, n >> d)."""
    def _cka_features(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        (sxx, rawx), (syy, rawy) = sums_of_squares(counts, a), sums_of_squares(counts, b)
        xy, xx, yy = (m.pow(2).sum((1, 2)) for m in weighted_products(counts, [(a, b), (a, a), (b, b)]))
        unsure = few_distinct(counts) | ~(sxx > CANCELLED * rawx) | ~(syy > CANCELLED * rawy)
        return torch.where(unsure, 0.0, xy / (xx * yy).clamp(min=1e-300).sqrt()), unsure

    r1, r2 = a.shape[1], b.shape[1]
    return PreparedBootstrap(_cka_features, bytes_per_resample=products_bytes((r1, r2, False), (r1, r1, True),
                                                                              (r2, r2, True)),
                             block_bytes=BLOCK_BYTES)


@register_bootstrap(procrustes)
def _procrustes_bootstrap(x: Tensor, y: Tensor) -> PreparedBootstrap:
    xs, ys = paired_rows(x, y, "procrustes")
    a, b = _factor(centred(xs, "X", "procrustes")), _factor(centred(ys, "Y", "procrustes"))

    def _procrustes_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        (sxx, rawx), (syy, rawy) = sums_of_squares(counts, a), sums_of_squares(counts, b)
        nuclear = torch.linalg.svdvals(weighted_products(counts, [(a, b)])[0]).sum(-1)
        unsure = few_distinct(counts) | ~(sxx > CANCELLED * rawx) | ~(syy > CANCELLED * rawy)
        value = (nuclear / (sxx * syy).clamp(min=0).sqrt()).clamp(max=1.0)
        return torch.where(unsure, 0.0, value), unsure

    r1, r2 = a.shape[1], b.shape[1]  # + the SVD's workspace, a few d x d per resample
    return PreparedBootstrap(_procrustes_resampled, bytes_per_resample=products_bytes((r1, r2, False)) + 8 * 4 * r1 * r2,
                             block_bytes=BLOCK_BYTES)
