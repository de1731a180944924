"""Centred kernel alignment (CKA): linear and RBF kernels, biased and debiased HSIC.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) on Gram matrices of the rows of X and Y
(Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of neural network representations
revisited"). Biased HSIC uses the doubly centred Gram matrices; ``debiased=True`` uses the
unbiased HSIC estimator (Song et al. 2012) in Kornblith et al.'s "unbiased centring" form
(Nguyen, Raghu & Kornblith 2021), whose expectation is 0 for independent X and Y. RBF kernel:
exp(-d^2 / (2 sigma^2)) with sigma = threshold x the median distance (the median taken over
all entries of the squared-distance matrix, diagonal included, as in Kornblith et al.'s demo).

Linear CKA is invariant to orthogonal maps, isotropic scaling and translation of either side,
and to reordering units; it is not invariant to general invertible linear maps.
"""

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError
from tl_interp.similarity._gather import symmetric_gather
from tl_interp.similarity._inputs import ArrayLike, centred, paired_rows
from tl_interp.stats import PreparedNull, register_null
from tl_interp.stats._inputs import check_choice

__all__ = ["cka", "gram_linear", "gram_rbf", "center_gram", "cross_product_null"]

_KERNELS = ("linear", "rbf")


def gram_linear(x: Tensor) -> Tensor:
    """The linear-kernel Gram matrix X X^T."""
    return x @ x.T


def gram_rbf(x: Tensor, threshold: float) -> Tensor:
    """The RBF Gram matrix, bandwidth ``threshold`` x the median distance between rows."""
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp(min=0)
    flat = d2.reshape(-1)
    # numpy's median (the mean of the two middle values), as in Kornblith et al.'s demo;
    # torch.median would take the lower one
    k = flat.numel()
    median = (flat.kthvalue((k + 1) // 2).values + flat.kthvalue(k // 2 + 1).values) / 2
    return torch.exp(-d2 / (2 * threshold ** 2 * median))


def center_gram(gram: Tensor, *, unbiased: bool) -> Tensor:
    """Doubly centred Gram matrix; ``unbiased`` gives the form whose inner products are unbiased HSIC."""
    n = gram.shape[0]
    if not unbiased:
        means = gram.mean(0)
        means = means - means.mean() / 2
        return gram - means[:, None] - means[None, :]
    g = gram.clone()
    g.fill_diagonal_(0)
    means = g.sum(0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    g = g - means[:, None] - means[None, :]
    g.fill_diagonal_(0)
    return g


def _checked(X: ArrayLike, Y: ArrayLike, kernel: str, threshold: float, debiased: bool) -> tuple[Tensor, Tensor]:
    check_choice(kernel, "kernel", _KERNELS)
    if not threshold > 0:
        raise InputError(f"cka: threshold must be > 0, got {threshold}")
    x, y = paired_rows(X, Y, "cka")
    if debiased and x.shape[0] < 4:
        raise InputError(f"cka(debiased=True) needs at least 4 rows, got {x.shape[0]}: the unbiased HSIC divides "
                         "by n - 3; use debiased=False or more rows")
    return centred(x, "X", "cka"), centred(y, "Y", "cka")


def _centred_grams(xc: Tensor, yc: Tensor, kernel: str, threshold: float, debiased: bool) -> tuple[Tensor, Tensor]:
    if kernel == "linear":
        kx, ky = gram_linear(xc), gram_linear(yc)
    else:
        kx, ky = gram_rbf(xc, threshold), gram_rbf(yc, threshold)
    return center_gram(kx, unbiased=debiased), center_gram(ky, unbiased=debiased)


def _gram_terms(kx: Tensor, ky: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (kx * ky).sum(), (kx * kx).sum(), (ky * ky).sum()


def _feature_terms(xc: Tensor, yc: Tensor, debiased: bool) -> tuple[Tensor, Tensor, Tensor]:
    """HSIC(X, Y), HSIC(X, X), HSIC(Y, Y) from d x d cross-products (no n x n matrix), as in
    Kornblith et al.'s feature_space_linear_cka; equal to the Gram-matrix forms."""
    xy, xx, yy = (xc.T @ yc).pow(2).sum(), (xc.T @ xc).pow(2).sum(), (yc.T @ yc).pow(2).sum()
    if not debiased:
        return xy, xx, yy
    n = xc.shape[0]
    rx, ry = xc.pow(2).sum(1), yc.pow(2).sum(1)

    def _unbiased(dot: Tensor, ra: Tensor, rb: Tensor) -> Tensor:
        return dot - n / (n - 2) * (ra @ rb) + ra.sum() * rb.sum() / ((n - 1) * (n - 2))

    return _unbiased(xy, rx, ry), _unbiased(xx, rx, rx), _unbiased(yy, ry, ry)


def _hsic_terms(xc: Tensor, yc: Tensor, kernel: str, threshold: float, debiased: bool) -> tuple[Tensor, ...]:
    n, d1, d2 = xc.shape[0], xc.shape[1], yc.shape[1]
    if kernel == "linear" and n * n * (d1 + d2) > n * (d1 * d2 + d1 * d1 + d2 * d2):  # fewer multiply-adds
        return _feature_terms(xc, yc, debiased)
    return _gram_terms(*_centred_grams(xc, yc, kernel, threshold, debiased))


def _norm(xx: Tensor, yy: Tensor) -> Tensor:
    norm = (xx * yy).sqrt()
    if not bool(norm > 0):
        raise InputError(f"cka: HSIC(X, X) = {float(xx):.3g} and HSIC(Y, Y) = {float(yy):.3g}; a representation "
                         "without variation (or too few rows for the debiased estimate) has no CKA")
    return norm


@checked
def cka(X: ArrayLike, Y: ArrayLike, *, kernel: str = "linear", threshold: float = 0.5,
        debiased: bool = False) -> float:
    """Centred kernel alignment of the rows of X ``(n, d1)`` and Y ``(n, d2)``, in float64.

    Args:
        X, Y: activations, rows paired (the same items in the same order).
        kernel: ``"linear"`` or ``"rbf"``.
        threshold: RBF bandwidth as a multiple of the median distance.
        debiased: use the unbiased HSIC estimator (needs n >= 4; can be slightly negative).

    Returns:
        CKA as a float; 1 for identical inputs, about 0 (debiased) for independent ones.

    Example:
        >>> import torch
        >>> X = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
        >>> round(cka(X, 3 * X @ torch.linalg.qr(torch.randn(8, 8))[0] + 1), 6)
        1.0
    """
    xy, xx, yy = _hsic_terms(*_checked(X, Y, kernel, threshold, debiased), kernel, threshold, debiased)
    return float(xy / _norm(xx, yy))


@register_null(cka)
def _cka_null(x: Tensor, y: Tensor, *, kernel: str = "linear", threshold: float = 0.5,
              debiased: bool = False) -> PreparedNull:
    xc, yc = _checked(x, y, kernel, threshold, debiased)
    n, d1, d2 = xc.shape[0], xc.shape[1], yc.shape[1]
    # Per permutation the Gram path reorders n^2 entries, the cross-product path costs
    # n r1 r2 multiply-adds (r = min(n, d)) at ~50x the rate per entry on CPU (benchmarks/
    # similarity.py measures both): take whichever is cheaper; both are exact.
    if kernel == "linear" and min(n, d1) * min(n, d2) < 50 * n:
        _, xx, yy = _feature_terms(xc, yc, debiased)
        scale = float(1 / _norm(xx, yy))
        cross = cross_product_null(xc, yc, scale)
        return _unbiased_null(xc, yc, cross, scale) if debiased else cross
    kx, ky = _centred_grams(xc, yc, kernel, threshold, debiased)
    _, xx, yy = _gram_terms(kx, ky)
    gather = symmetric_gather(kx, ky, float(1 / _norm(xx, yy)))
    return PreparedNull(gather, gather.chunk)


def _unbiased_null(xc: Tensor, yc: Tensor, cross: PreparedNull, scale: float) -> PreparedNull:
    """Debiased CKA per permutation in ``_feature_terms``' form: the cross-product null, minus n / (n - 2)
    times a gathered dot of the rows' squared norms, plus a constant (reordering rows changes neither sum)."""
    n = xc.shape[0]
    rx, ry = xc.pow(2).sum(1), yc.pow(2).sum(1)
    constant = float(rx.sum() * ry.sum()) / ((n - 1) * (n - 2))

    def _unbiased_cross_product(perms: Tensor) -> Tensor:
        return cross.evaluate(perms) + scale * (constant - n / (n - 2) * (ry[perms] @ rx))

    return PreparedNull(_unbiased_cross_product, cross.chunk)


def _factor(xc: Tensor) -> Tensor:
    """An (n, r) matrix with the same Gram matrix as xc, r = min(n, d) (fewer multiply-adds later)."""
    if xc.shape[1] <= xc.shape[0]:
        return xc
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    return u * s


def cross_product_null(xc: Tensor, yc: Tensor, scale: float) -> PreparedNull:
    """``scale * ||Xc^T Yc[P]||_F^2`` per permutation, one GEMM per chunk (on centred inputs)."""
    a, b = _factor(xc), _factor(yc)
    at = a.T.contiguous()
    n, d2 = b.shape
    chunk = max(1, (1 << 20) // (n * d2))  # the stacked block stays in cache (measured best on CPU)

    def _cross_product(perms: Tensor) -> Tensor:
        # one GEMM for the chunk: A^T (d1, n) @ [B[P_1] | B[P_2] | ...] (n, chunk * d2)
        stacked = b.index_select(0, perms.T.reshape(-1)).reshape(n, -1)
        m = (at @ stacked).reshape(at.shape[0], perms.shape[0], d2)
        return m.pow(2).sum((0, 2)) * scale

    return PreparedNull(_cross_product, chunk)


def _weighted_unbiased_hsic(k: Tensor, l: Tensor, w: Tensor) -> Tensor:
    """Song et al.'s unbiased HSIC as a U-statistic over *distinct items* weighted by counts w.

    U = mean over distinct (i, j, q, r) of K_ij L_ij + K_ij L_qr - 2 K_ij L_iq, each mean a
    w-weighted sum over distinct items (inclusion-exclusion on coinciding indices; K, L with
    zero diagonals) divided by k! e_k(w). With w = 1 it is the usual estimator.
    """
    kb, lb = k.clone(), l.clone()
    kb.fill_diagonal_(0)
    lb.fill_diagonal_(0)
    kw, lw, m, w2 = kb @ w, lb @ w, kb * lb, w * w
    pairs = w @ m @ w
    triples = (w * kw * lw).sum() - w @ m @ w2
    quads = (w @ kw) * (w @ lw) - 4 * (w2 * kw * lw).sum() + 2 * (w2 @ m @ w2)
    p1, p2, p3, p4 = (w.pow(i).sum() for i in range(1, 5))  # Newton's identities -> e_2, e_3, e_4
    e2 = (p1 * p1 - p2) / 2
    e3 = (e2 * p1 - p1 * p2 + p3) / 3
    e4 = (e3 * p1 - e2 * p2 + p1 * p3 - p4) / 4
    return pairs / (2 * e2) + quads / (24 * e4) - 2 * triples / (6 * e3)


def cka_debiased_resampled(x: Tensor, y: Tensor, source: Tensor, *, kernel: str = "linear", threshold: float = 0.5,
                           **_: object) -> float:
    """Debiased CKA of a bootstrap resample: copies of an item weight it, never pair with it.

    The unbiased HSIC assumes its index tuples are distinct items; duplicated rows would act as
    perfectly correlated pairs (on unrelated data the resampled score jumps by ~+0.7), so the
    resample is read as counts over its distinct items. Needs >= 4 distinct items. Linear kernel: the
    items' rows centred by their unweighted mean. RBF kernel: the bandwidth is threshold x the median
    of the resample's n^2 squared distances, as ``cka(X[rows], kernel="rbf")`` takes it (copies
    included), and the kernel is read at the distinct items.
    """
    check_choice(kernel, "kernel", _KERNELS)
    items, counts = torch.unique(source, return_counts=True)
    if items.numel() < 4:
        return float("nan")
    row_of = torch.zeros(int(source.max()) + 1, dtype=torch.long)
    row_of[source] = torch.arange(source.numel())  # some row holding each item (its copies are identical)
    rows, w = row_of[items], counts.double()
    if kernel == "linear":
        xs, ys = x[rows], y[rows]
        xs, ys = xs - xs.mean(0), ys - ys.mean(0)
        kx, ky = gram_linear(xs), gram_linear(ys)
    else:
        kx, ky = (gram_rbf(t - t.mean(0), threshold)[rows][:, rows] for t in (x, y))
    xy, xx, yy = (_weighted_unbiased_hsic(a, b, w) for a, b in ((kx, ky), (kx, kx), (ky, ky)))
    return float(xy / (xx * yy).sqrt())
