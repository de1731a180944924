"""Whitening maps of a stack of covariances (one per bootstrap resample), and when to trust them.

CCA needs, per resample and side, a map W with W^T C W = I on the directions it keeps; the
canonical correlations are then the singular values of Wx^T Cxy Wy whichever W is used.

- ``kept_directions``: the eigendecomposition C = V diag(lam) V^T, W = V_k lam_k^-1/2 on the top k
  directions (SVCCA's truncation to ``keep`` of the variance, or ``dims`` of them, needs the
  spectrum and its directions).
- ``cholesky_whitening``: when every direction is kept (PWCCA; SVCCA with ``keep=1.0``), W = L^-T
  for C = L L^T: a Cholesky and a triangular inverse, about a fifth of an eigendecomposition.

Both certify a resample only when its smallest kept variance is at least ``WELL_KEPT`` of the top
one (rounding errors grow like eps / that share). The Cholesky form certifies most resamples from
lam_max / lam_min <= tr(C) tr(C^-1) = tr(C) ||L^-1||_F^2, which costs nothing more; the rest get
their exact eigenvalues (``eigvalsh``, values only) and are decided as the eigendecomposition
decides them.
"""

import torch
from torch import Tensor

__all__ = ["WELL_KEPT", "kept_directions", "cholesky_whitening"]

WELL_KEPT = 1e-6  # a kept direction needs at least this share of the top variance (errors ~ eps / share)
_KEEP_MARGIN = 1e-10  # a variance fraction this close to ``keep`` could round either way: the loop decides
_CERTAIN = 0.5  # the trace bound certifies with this factor to spare for its own rounding


def kept_directions(cov: Tensor, keep: float, dims: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per covariance of the stack ``(B, r, r)``: the whitening map ``V_k lam_k^-1/2`` (zero past the k
    kept directions, variances descending), k, and whether k and the map are certain.

    Example:
        >>> import torch
        >>> cov = torch.diag(torch.tensor([4.0, 1.0, 1e-3], dtype=torch.float64))[None]
        >>> w, k, sure = kept_directions(cov, 0.99, None)
        >>> int(k[0]), bool(sure[0]), (w.mT @ cov @ w)[0].diagonal().tolist()
        (2, True, [1.0, 1.0, 0.0])
    """
    lam, vec = torch.linalg.eigh(cov)
    lam, vec = lam.flip(-1).clamp(min=0), vec.flip(-1)  # descending variances
    well = lam > WELL_KEPT * lam[:, :1]
    if dims is not None:
        k = torch.full((cov.shape[0],), dims, dtype=torch.long)
        sure = well[:, dims - 1]
    elif keep >= 1.0:
        k = torch.full((cov.shape[0],), lam.shape[1], dtype=torch.long)
        sure = well.all(1)
    else:
        frac = lam.cumsum(1) / lam.sum(1, keepdim=True)
        k = (frac < keep - 1e-12).sum(1) + 1
        sure = ((frac - (keep - 1e-12)).abs() > _KEEP_MARGIN).all(1) & well.gather(1, (k - 1)[:, None]).squeeze(1)
    mask = torch.arange(lam.shape[1]) < k[:, None]
    scale = torch.where(mask & well, lam.clamp(min=1e-300).rsqrt(), 0.0)
    return vec * scale[:, None, :], k, sure


def cholesky_whitening(cov: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per covariance of the stack ``(B, r, r)`` = L L^T: ``L^-1`` (so W = L^-T whitens every direction),
    ``L``, and whether every direction has at least ``WELL_KEPT`` of the top variance.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> cov = x.mT @ x
        >>> inverse, factor, sure = cholesky_whitening(cov)
        >>> torch.allclose(inverse @ cov @ inverse.mT, torch.eye(3, dtype=torch.float64).expand(2, 3, 3)), sure.tolist()
        (True, [True, True])
    """
    factor, info = torch.linalg.cholesky_ex(cov)
    positive = info == 0
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
    factor = torch.where(positive[:, None, None], factor, eye)  # a failed factor is replaced: finite, and flagged
    inverse = torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False)
    bound = cov.diagonal(dim1=-2, dim2=-1).sum(-1) * inverse.pow(2).sum((-2, -1))  # >= lam_max / lam_min
    sure = positive & (bound * WELL_KEPT < _CERTAIN)
    ask = positive & ~sure
    if ask.any():  # the bound can't tell: the exact eigenvalues decide, as kept_directions would
        lam = torch.linalg.eigvalsh(cov[ask])
        sure[ask] = lam[:, 0] > WELL_KEPT * lam[:, -1]
    return inverse, factor, sure
