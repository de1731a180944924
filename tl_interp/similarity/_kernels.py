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
from beartype import beartype
from torch import Tensor

from tl_interp.errors import InputError
from tl_interp.similarity._gather import symmetric_gather
from tl_interp.similarity._inputs import ArrayLike, centred, paired_rows
from tl_interp.stats import PreparedNull, register_null
from tl_interp.stats._inputs import check_choice

__all__ = ["cka", "gram_linear", "gram_rbf", "center_gram"]

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


def _centred_grams(X: ArrayLike, Y: ArrayLike, kernel: str, threshold: float, debiased: bool) -> tuple[Tensor, Tensor]:
    check_choice(kernel, "kernel", _KERNELS)
    if not threshold > 0:
        raise InputError(f"cka: threshold must be > 0, got {threshold}")
    x, y = paired_rows(X, Y, "cka")
    n = x.shape[0]
    if debiased and n < 4:
        raise InputError(f"cka(debiased=True) needs at least 4 rows, got {n}: the unbiased HSIC divides by "
                         "n - 3; use debiased=False or more rows")
    x, y = centred(x, "X", "cka"), centred(y, "Y", "cka")
    if kernel == "linear":
        kx, ky = gram_linear(x), gram_linear(y)
    else:
        kx, ky = gram_rbf(x, threshold), gram_rbf(y, threshold)
    return center_gram(kx, unbiased=debiased), center_gram(ky, unbiased=debiased)


def _norms(kx: Tensor, ky: Tensor) -> Tensor:
    norm = kx.norm() * ky.norm()
    if not bool(norm > 0):
        raise InputError(f"cka: a centred Gram matrix is zero (norms {float(kx.norm()):.3g} and "
                         f"{float(ky.norm()):.3g}); the representation has no variation across rows")
    return norm


@beartype
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
    kx, ky = _centred_grams(X, Y, kernel, threshold, debiased)
    return float((kx * ky).sum() / _norms(kx, ky))


@register_null(cka)
def _cka_null(x: Tensor, y: Tensor, *, kernel: str = "linear", threshold: float = 0.5,
              debiased: bool = False) -> PreparedNull:
    kx, ky = _centred_grams(x, y, kernel, threshold, debiased)
    scale = float(1 / _norms(kx, ky))
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    # A gather touches ~n^2/2 entries per permutation, the cross-product ~n d1 d2 multiply-adds
    # (at ~16x the rate): take whichever is cheaper (both are exact).
    if kernel == "linear" and not debiased and 8 * n * n > n * min(n, d1) * min(n, d2):
        return _cross_product_null(x, y, scale)
    gather = symmetric_gather(kx, ky, scale)
    return PreparedNull(gather, gather.chunk)


def _factor(xc: Tensor) -> Tensor:
    """An (n, r) matrix with the same Gram matrix as xc, r = min(n, d) (fewer multiply-adds later)."""
    if xc.shape[1] <= xc.shape[0]:
        return xc
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    return u * s


def _cross_product_null(x: Tensor, y: Tensor, scale: float) -> PreparedNull:
    a = _factor(x - x.mean(0))
    b = _factor(y - y.mean(0))
    n, d2 = b.shape
    chunk = max(1, (1 << 22) // (n * d2))

    def _cross_product(perms: Tensor) -> Tensor:
        # one GEMM for the chunk: A^T (d1, n) @ [B[P_1] | B[P_2] | ...] (n, chunk * d2)
        stacked = b[perms.T].reshape(n, -1)
        m = (a.T @ stacked).reshape(a.shape[1], perms.shape[0], d2)
        return m.pow(2).sum((0, 2)) * scale

    return PreparedNull(_cross_product, chunk)
