"""SVCCA and PWCCA: canonical correlation analysis of two representations.

- SVCCA (Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017): centre each side, keep the top singular
  directions that explain ``keep`` of its variance (or exactly ``dims`` of them), then the mean
  canonical correlation between the two kept subspaces. With orthonormal bases Ux, Uy of the
  kept subspaces the canonical correlations are the singular values of Ux^T Uy.
- PWCCA (Morcos, Raghu & Bengio 2018): the canonical correlations of the full (rank-)spaces,
  weighted by how much of the representation each canonical variate accounts for:
  alpha_i = sum_j |<h_i, z_j>| over the centred units z_j of the side with fewer units (X on a
  tie), normalised to sum 1, as in the authors' reference code.

Pitfall: CCA between a p- and a q-dimensional subspace of the (n-1)-dimensional space of centred
rows has at least p + q - (n - 1) canonical correlations exactly 1, whatever the data; when
p + q >= n the score is refused (use CKA, or fewer dimensions). Constant units carry no signal
and are dropped with a warning. CCA is invariant to any invertible linear map of either side
(SVCCA exactly so when no directions are truncated).
"""

import warnings

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, TlInterpWarning
from tl_interp.similarity._inputs import ArrayLike, centred, paired_rows
from tl_interp.stats import PreparedNull, register_null

__all__ = ["svcca", "pwcca"]


def _drop_constant(xc: Tensor, name: str, what: str) -> Tensor:
    dead = (xc.abs().amax(0) == 0).nonzero().flatten()
    if dead.numel():
        shown = dead[:10].tolist()
        warnings.warn(f"{what}: {dead.numel()} of {xc.shape[1]} units of {name} are constant (indices {shown}"
                      f"{' ...' if dead.numel() > 10 else ''}) and carry no signal; they were dropped",
                      TlInterpWarning, stacklevel=5)
        xc = xc[:, xc.abs().amax(0) > 0]
    return xc


def _basis(xc: Tensor, keep: float | None, dims: int | None, name: str, what: str) -> tuple[Tensor, Tensor, Tensor]:
    """Orthonormal basis U (n, k) of the kept directions, their singular values and V^T rows."""
    u, s, vt = torch.linalg.svd(xc, full_matrices=False)
    rank = int((s > s[0] * max(xc.shape) * torch.finfo(torch.float64).eps).sum())
    if dims is not None:
        if dims > rank:
            raise InputError(f"{what}: dims={dims} but {name} has only {rank} directions with variance")
        k = dims
    elif keep is None or keep >= 1.0:
        k = rank
    else:
        frac = (s[:rank] ** 2).cumsum(0) / (s[:rank] ** 2).sum()
        k = int((frac < keep - 1e-12).sum()) + 1
    return u[:, :k], s[:k], vt[:k]


def _check_room(p: int, q: int, n: int, what: str, fix: str) -> None:
    if p + q >= n:
        raise InputError(f"{what}: X keeps {p} and Y keeps {q} dimensions but there are only {n} rows; "
                         f"with p + q >= n at least {p + q - n + 1} canonical correlations are exactly 1 "
                         f"whatever the data, so the score is meaningless. Use cka(...), or {fix}")


def _svcca_bases(X: ArrayLike, Y: ArrayLike, keep: float, dims: int | None) -> tuple[Tensor, Tensor]:
    if not 0 < keep <= 1:
        raise OptionError(f"svcca: keep must be a variance fraction in (0, 1], got {keep}")
    if dims is not None and dims < 1:
        raise OptionError(f"svcca: dims must be >= 1, got {dims}")
    x, y = paired_rows(X, Y, "svcca", min_rows=3)
    xc = _drop_constant(centred(x, "X", "svcca"), "X", "svcca")
    yc = _drop_constant(centred(y, "Y", "svcca"), "Y", "svcca")
    ux = _basis(xc, keep, dims, "X", "svcca")[0]
    uy = _basis(yc, keep, dims, "Y", "svcca")[0]
    _check_room(ux.shape[1], uy.shape[1], x.shape[0], "svcca", "keep fewer directions (dims=..., or a lower keep)")
    return ux, uy


@checked
def svcca(X: ArrayLike, Y: ArrayLike, *, keep: float = 0.99, dims: int | None = None) -> float:
    """Mean canonical correlation after an SVD that keeps ``keep`` of each side's variance.

    Args:
        X, Y: activations ``(n, d1)`` and ``(n, d2)``, rows paired.
        keep: fraction of variance each side keeps (1.0: every direction with variance).
        dims: keep exactly this many top directions on each side instead (overrides ``keep``).

    Returns:
        The mean of the min(p, q) canonical correlations, in [0, 1].

    Example:
        >>> import torch
        >>> X = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
        >>> round(svcca(X, X @ torch.randn(6, 6, generator=torch.Generator().manual_seed(1)), keep=1.0), 6)
        1.0
    """
    ux, uy = _svcca_bases(X, Y, keep, dims)
    return float(torch.linalg.svdvals(ux.T @ uy).clamp(max=1.0).mean())


@register_null(svcca)
def _svcca_null(x: Tensor, y: Tensor, *, keep: float = 0.99, dims: int | None = None) -> PreparedNull:
    ux, uy = _svcca_bases(x, y, keep, dims)

    def _svcca_permuted(perms: Tensor) -> Tensor:
        return torch.linalg.svdvals(ux.T @ uy[perms]).clamp(max=1.0).mean(-1)

    return PreparedNull(_svcca_permuted, max(1, (1 << 21) // (ux.shape[0] * uy.shape[1])))


def _pwcca_parts(X: ArrayLike, Y: ArrayLike) -> tuple[Tensor, Tensor, Tensor, bool]:
    x, y = paired_rows(X, Y, "pwcca", min_rows=3)
    xc = _drop_constant(centred(x, "X", "pwcca"), "X", "pwcca")
    yc = _drop_constant(centred(y, "Y", "pwcca"), "Y", "pwcca")
    ux, sx, vx = _basis(xc, None, None, "X", "pwcca")
    uy, sy, vy = _basis(yc, None, None, "Y", "pwcca")
    _check_room(ux.shape[1], uy.shape[1], x.shape[0], "pwcca",
                "reduce each side to fewer dimensions first (e.g. its top principal components)")
    x_side = xc.shape[1] <= yc.shape[1]
    # Ux^T Xc = S V^T: projections of the side's units onto its basis, unchanged by reordering rows
    loads = sx[:, None] * vx if x_side else sy[:, None] * vy
    return ux, uy, loads, x_side


def _pwcca_score(ux: Tensor, uy: Tensor, loads: Tensor, x_side: bool) -> Tensor:
    a, rho, bt = torch.linalg.svd(ux.mT @ uy, full_matrices=False)  # batched over leading axes
    k = rho.shape[-1]
    directions = a[..., :k] if x_side else bt[..., :k, :].mT  # canonical directions in the basis
    weights = (directions.mT @ loads).abs().sum(-1)  # (..., k): sum_j |<h_i, z_j>|
    weights = weights / weights.sum(-1, keepdim=True)
    return (weights * rho.clamp(max=1.0)).sum(-1)


@checked
def pwcca(X: ArrayLike, Y: ArrayLike) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): canonical correlations weighted by their share of X.

    Args:
        X, Y: activations ``(n, d1)`` and ``(n, d2)``, rows paired; rank(X) + rank(Y) < n.

    Returns:
        The weighted mean canonical correlation, in [0, 1].

    Example:
        >>> import torch
        >>> X = torch.randn(100, 5, generator=torch.Generator().manual_seed(0))
        >>> round(pwcca(X, X + 1.0), 6)
        1.0
    """
    return float(_pwcca_score(*_pwcca_parts(X, Y)))


@register_null(pwcca)
def _pwcca_null(x: Tensor, y: Tensor) -> PreparedNull:
    ux, uy, loads, x_side = _pwcca_parts(x, y)

    def _pwcca_permuted(perms: Tensor) -> Tensor:
        return _pwcca_score(ux, uy[perms], loads, x_side)

    return PreparedNull(_pwcca_permuted, max(1, (1 << 21) // (ux.shape[0] * uy.shape[1])))
