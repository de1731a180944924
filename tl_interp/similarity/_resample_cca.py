"""Batched bootstrap of SVCCA and PWCCA from each resample's covariances.

A resample's centred covariances Cxx, Cyy, Cxy are count-weighted sums over the fixed rows
(``_resample_products``: one GEMM for a block of resamples). From them, per resample, with W a map
that whitens a side's kept directions (``_whiten``: Wx^T Cxx Wx = I there):

- SVCCA (Raghu et al. 2017): the canonical correlations of the kept subspaces are the singular values
  of Wx^T Cxy Wy. Keeping ``keep < 1`` of the variance (or ``dims`` directions) needs each side's
  eigendecomposition (W = V_k lam_k^-1/2); keeping every direction (``keep=1.0``) needs only a
  Cholesky factor (W = L^-T), since the singular values do not depend on which whitening is used.
- PWCCA (Morcos et al. 2018): every direction with variance is kept (W = L^-T), and the SVD of the
  whitened cross-covariance, P diag(rho) Q^T, also gives the canonical variates h_i = Xr W p_i; their
  weights sum_j |<h_i, z_j>| over the units z_j of the side with fewer units are |P^T W^T Cxx| =
  |P^T L^T| summed over units (mapped back to units through the factor's basis when d > n).

So a resample costs its covariances (n d^2 multiply-adds each, the GEMM) and d x d decompositions:
SVCCA two eigendecompositions (``keep=1.0``: two Cholesky factors) and one SVD of values, PWCCA two
Cholesky factors and one SVD with vectors. Each value equals the loop's ``svcca(X[rows], Y[rows])``
/ ``pwcca(...)`` up to rounding. A resample whose value this form can't certify is flagged and
recomputed by the loop (which raises where it would): few distinct rows, a kept direction with
under 1e-6 of the top variance (PWCCA: any direction, so a unit that is constant on the resample,
which the loop drops, is caught too), a variance fraction within 1e-10 of ``keep``, or p + q >= n
kept directions (the loop refuses those).
"""

import warnings

import torch
from torch import Tensor

from tl_interp.similarity._cca import _drop_constant, _pwcca_parts, _svcca_bases, pwcca, svcca
from tl_interp.similarity._inputs import centred, paired_rows
from tl_interp.similarity._kernels import _factor
from tl_interp.similarity._resample_linear import BLOCK_BYTES, few_distinct
from tl_interp.similarity._resample_products import products_bytes, weighted_products
from tl_interp.similarity._whiten import cholesky_whitening, kept_directions
from tl_interp.stats import PreparedBootstrap, register_bootstrap

__all__: list[str] = []


def _cca_bytes(r1: int, r2: int) -> int:
    """Bytes per resample: the three covariances, and the decompositions' d x d temporaries."""
    return products_bytes((r1, r1, True), (r2, r2, True), (r1, r2, False)) + 8 * 12 * max(r1, r2) ** 2


@register_bootstrap(svcca)
def _svcca_bootstrap(x: Tensor, y: Tensor, *, keep: float = 0.99, dims: int | None = None) -> PreparedBootstrap:
    _svcca_bases(x, y, keep, dims)  # the metric's own checks, raised as it raises them
    xs, ys = paired_rows(x, y, "svcca", min_rows=3)
    a, b = _factor(centred(xs, "X", "svcca")), _factor(centred(ys, "Y", "svcca"))
    n, r1, r2 = a.shape[0], a.shape[1], b.shape[1]

    def _svcca_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        cxx, cyy, cxy = weighted_products(counts, [(a, a), (b, b), (a, b)])
        wx, kx, sure_x = kept_directions(cxx, keep, dims)
        wy, ky, sure_y = kept_directions(cyy, keep, dims)
        rho = torch.linalg.svdvals(wx.mT @ cxy @ wy).clamp(max=1.0)
        m = torch.minimum(kx, ky)
        value = (rho * (torch.arange(rho.shape[1]) < m[:, None])).sum(1) / m
        unsure = few_distinct(counts) | ~sure_x | ~sure_y | (kx + ky >= n)  # the loop refuses p + q >= n
        return torch.where(unsure, 0.0, value), unsure

    def _svcca_every_direction(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        cxx, cyy, cxy = weighted_products(counts, [(a, a), (b, b), (a, b)])
        (ix, _, sure_x), (iy, _, sure_y) = cholesky_whitening(cxx), cholesky_whitening(cyy)
        value = torch.linalg.svdvals(ix @ cxy @ iy.mT).clamp(max=1.0).mean(-1)
        unsure = few_distinct(counts) | ~sure_x | ~sure_y | torch.tensor(r1 + r2 >= n)
        return torch.where(unsure, 0.0, value), unsure

    every = dims is None and keep >= 1.0
    return PreparedBootstrap(_svcca_every_direction if every else _svcca_resampled,
                             bytes_per_resample=_cca_bytes(r1, r2), block_bytes=BLOCK_BYTES)


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
    n, r1, r2 = a.shape[0], a.shape[1], b.shape[1]
    to_units = to_x if x_side else to_y

    def _pwcca_resampled(counts: Tensor, memory_mb: float) -> tuple[Tensor, Tensor]:
        cxx, cyy, cxy = weighted_products(counts, [(a, a), (b, b), (a, b)])
        (ix, lx, sure_x), (iy, ly, sure_y) = cholesky_whitening(cxx), cholesky_whitening(cyy)
        p, rho, qt = torch.linalg.svd(ix @ cxy @ iy.mT, full_matrices=False)
        k = rho.shape[-1]
        # <h_i, z_j> = p_i^T L^-1 Cxx e_j = (P^T L^T)_ij in the factor's coordinates, then mapped to the units
        directions, loads = (p[..., :k], lx.mT) if x_side else (qt[..., :k, :].mT, ly.mT)
        loads = loads if to_units is None else loads @ to_units
        weights = (directions.mT @ loads).abs().sum(-1)
        value = (weights * rho.clamp(max=1.0)).sum(-1) / weights.sum(-1)
        unsure = few_distinct(counts) | ~sure_x | ~sure_y | torch.tensor(r1 + r2 >= n)
        return torch.where(unsure, 0.0, value), unsure

    units = max(xc.shape[1], yc.shape[1])
    return PreparedBootstrap(_pwcca_resampled,
                             bytes_per_resample=_cca_bytes(r1, r2) + 8 * 3 * units * max(r1, r2),
                             block_bytes=BLOCK_BYTES)
