"""Batched bootstrap of SVCCA and PWCCA from each resample's covariances.

A resample's centred covariances Cxx, Cyy, Cxy are count-weighted sums over the fixed rows
(``_resample_products``: one GEMM for a block of resamples). From them, per resample:

- SVCCA (Raghu et al. 2017): each side's eigendecomposition Cxx = V diag(lam) V^T gives its kept
  directions (the top ones holding ``keep`` of the variance, or ``dims``) and its whitened basis
  Ux = Xr V_k lam_k^-1/2; the canonical correlations are the singular values of
  Ux^T Uy = lam_k^-1/2 V_k^T Cxy V'_k lam'_k^-1/2.
- PWCCA (Morcos et al. 2018): every direction with variance is kept, and the SVD of the same
  whitened cross-covariance, P diag(rho) Q^T, also gives the canonical directions (P on X's side);
  their weights sum_j |<h_i, z_j>| over the units z_j of the side with fewer units are
  |P^T lam^1/2 V^T| summed over units (mapped back to units through the factor's basis when d > n).

So a resample costs its covariances (n d^2 multiply-adds each, the GEMM) and three d x d
decompositions: two eigendecompositions and one SVD. Each value equals the loop's
``svcca(X[rows], Y[rows])`` / ``pwcca(...)`` up to rounding. A resample whose value this form can't
certify is flagged and recomputed by the loop (which raises where it would): few distinct rows, a
kept direction with under 1e-6 of the top variance (PWCCA: any direction, so a unit that is
constant on the resample, which the loop drops, is caught too), a variance fraction within 1e-10
of ``keep``, or p + q >= n kept directions (the loop refuses those).
"""

import warnings

import torch
from torch import Tensor

from tl_interp.similarity._cca import _drop_constant, _pwcca_parts, _svcca_bases, pwcca, svcca
from tl_interp.similarity._inputs import centred, paired_rows
from tl_interp.similarity._kernels import _factor
from tl_interp.similarity._resample_linear import BLOCK_BYTES, few_distinct
from tl_interp.similarity._resample_products import products_bytes, weighted_products
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__: list[str] = []

_WELL_KEPT = 1e-6  # a kept direction needs at least this share of the top variance (errors ~ eps / share)
_KEEP_MARGIN = 1e-10  # a variance fraction this close to ``keep`` could round either way: the loop decides


def _kept(cov: Tensor, keep: float, dims: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per resample: whitening maps ``V_k lam_k^-1/2`` (zero past the k kept directions), k, whether k
    is certain, and the eigenvectors and variances (descending)."""
    lam, vec = torch.linalg.eigh(cov)
    lam, vec = lam.flip(-1).clamp(min=0), vec.flip(-1)  # descending variances
    top = lam[:, :1]
    well = lam > _WELL_KEPT * top
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
    return vec * scale[:, None, :], k, sure, vec, lam


def _cca_bytes(r1: int, r2: int) -> int:
    """Bytes per resample: the three covariances, and the decompositions' d x d temporaries."""
    return products_bytes((r1, r1, True), (r2, r2, True), (r1, r2, False)) + 8 * 12 * max(r1, r2) ** 2


@register_bootstrap(svcca)
def _svcca_bootstrap(x: Tensor, y: Tensor, *, keep: float = 0.99, dims: int | None = None) -> PreparedBootstrap:
    _svcca_bases(x, y, keep, dims)  # the metric's own checks, raised as it raises them
    xs, ys = paired_rows(x, y, "svcca", min_rows=3)
    a, b = _factor(centred(xs, "X", "svcca")), _factor(centred(ys, "Y", "svcca"))
    n = a.shape[0]

    def _svcca_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        cxx, cyy, cxy = weighted_products(counts, [(a, a), (b, b), (a, b)])
        wx, kx, sure_x, _, _ = _kept(cxx, keep, dims)
        wy, ky, sure_y, _, _ = _kept(cyy, keep, dims)
        rho = torch.linalg.svdvals(wx.mT @ cxy @ wy).clamp(max=1.0)
        m = torch.minimum(kx, ky)
        value = (rho * (torch.arange(rho.shape[1]) < m[:, None])).sum(1) / m
        unsure = few_distinct(counts) | ~sure_x | ~sure_y | (kx + ky >= n)  # the loop refuses p + q >= n
        return torch.where(unsure, 0.0, value), unsure

    return PreparedBootstrap(_svcca_resampled, bytes_per_resample=_cca_bytes(a.shape[1], b.shape[1]),
                             block_bytes=BLOCK_BYTES)


def _units(xc: Tensor) -> tuple[Tensor, Tensor | None]:
    """An (n, r) factor of the centred units xc (n, d), r = rank(xc) as the metric counts it, and the
    map from its coordinates to the units (V_r^T of xc = U S V^T; None: the factor is xc itself).
    Every resample's rows lie in the same r directions, so with all r of them well kept its rank is r."""
    u, s, vt = torch.linalg.svd(xc, full_matrices=False)
    rank = int((s > s[0] * max(xc.shape) * torch.finfo(torch.float64).eps).sum())
    if rank == xc.shape[1]:
        return xc, None
    return u[:, :rank] * s[:rank], vt[:rank]


@register_bootstrap(pwcca)
def _pwcca_bootstrap(x: Tensor, y: Tensor) -> PreparedBootstrap:
    _pwcca_parts(x, y)  # the metric's own checks (room for the canonical correlations), raised as it raises them
    xs, ys = paired_rows(x, y, "pwcca", min_rows=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the metric has warned about constant units already
        xc = _drop_constant(centred(xs, "X", "pwcca"), "X", "pwcca")
        yc = _drop_constant(centred(ys, "Y", "pwcca"), "Y", "pwcca")
    x_side = xc.shape[1] <= yc.shape[1]
    (a, to_x), (b, to_y) = _units(xc), _units(yc)
    n = a.shape[0]

    def _pwcca_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        cxx, cyy, cxy = weighted_products(counts, [(a, a), (b, b), (a, b)])
        wx, kx, sure_x, vx, lx = _kept(cxx, 1.0, None)
        wy, ky, sure_y, vy, ly = _kept(cyy, 1.0, None)
        p, rho, qt = torch.linalg.svd(wx.mT @ cxy @ wy, full_matrices=False)
        k = rho.shape[-1]
        # the loads S V^T of the units: lam^1/2 V^T in the factor's coordinates, then mapped to the units
        directions, lam, vec, to_units = (p[..., :k], lx, vx, to_x) if x_side else (qt[..., :k, :].mT, ly, vy, to_y)
        loads = lam.sqrt()[:, :, None] * vec.mT
        loads = loads if to_units is None else loads @ to_units
        weights = (directions.mT @ loads).abs().sum(-1)
        value = (weights * rho.clamp(max=1.0)).sum(-1) / weights.sum(-1)
        unsure = few_distinct(counts) | ~sure_x | ~sure_y | (kx + ky >= n)
        return torch.where(unsure, 0.0, value), unsure

    units = max(xc.shape[1], yc.shape[1])
    return PreparedBootstrap(_pwcca_resampled,
                             bytes_per_resample=_cca_bytes(a.shape[1], b.shape[1]) + 8 * 3 * units * max(a.shape[1], b.shape[1]),
                             block_bytes=BLOCK_BYTES)
