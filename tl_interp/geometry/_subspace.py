"""Subspaces of activation (or weight) space: projection, variance explained, spectra, low rank.

A subspace is given by any basis ``(k, d)`` whose rows span it; it is orthonormalised here
(``hooks.orthonormal_basis``: SVD in float64, dependent rows dropped), so every function gives
the same answer for any basis of the same span. Rows of ``X`` are samples, its last axis
is the space (``d``).

- ``project(X, basis)``: ``X Q^T Q``;
- ``variance_explained(X, basis)``: ``||project(Xc)||^2 / ||Xc||^2`` with ``Xc`` = X minus its
  mean row (``center=False``: of X itself, the share of its squared norm);
- ``spectrum(X)``: singular values, the variance share of each direction and the effective
  rank exp(H(p)), p the normalised singular values (Roy & Vetterli 2007);
- ``low_rank(X, k)``: the best rank-k approximation (Eckart-Young), ``U_k S_k V_k^T``.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError
from tl_interp.hooks import orthonormal_basis
from tl_interp.stats._inputs import centre, check_finite, unit_scale

__all__ = ["project", "variance_explained", "Spectrum", "spectrum", "low_rank"]


def _rows(X: Tensor, what: str) -> Tensor:
    if X.ndim < 2:
        raise ShapeError(f"{what}: X holds samples as rows, (n, d) or (..., n, d); got shape {tuple(X.shape)}")
    x = X.detach().double().reshape(-1, X.shape[-1]).cpu()
    return check_finite(x, f"{what}: X", "remove or impute those rows first")


def _basis(basis: Tensor, width: int, what: str) -> Tensor:
    if basis.shape[-1] != width:
        raise ShapeError(f"{what}: the basis vectors have {basis.shape[-1]} entries, X's rows have {width}")
    return orthonormal_basis(basis.detach().cpu())


@checked
def project(X: Float[Tensor, "*batch d"],
            basis: Float[Tensor, " d"] | Float[Tensor, "k d"]) -> Float[Tensor, "*batch d"]:
    """The component of each row of ``X`` inside the span of ``basis`` (float64).

    Example:
        >>> import torch
        >>> project(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 0.0, 0.0]])).tolist()
        [[1.0, 0.0, 0.0]]
    """
    q = _basis(basis, X.shape[-1], "project")
    x = check_finite(X.detach().double().cpu(), "project: X", "remove or impute those rows first")
    return (x @ q.T) @ q


@checked
def variance_explained(X: Float[Tensor, "*batch n d"], basis: Float[Tensor, " d"] | Float[Tensor, "k d"], *,
                       center: bool = True) -> float:
    """Share of the variance of ``X`` (squared norm of centred rows) inside the span of ``basis``.

    Args:
        X: samples as rows ``(n, d)`` (leading axes are flattened into rows).
        basis: rows spanning the subspace (any scale, not necessarily orthogonal).
        center: subtract the mean row first (variance); ``False``: share of the squared norm.

    Returns:
        A float in [0, 1]; 1 for a basis spanning all of X's variation.

    Example:
        >>> import torch
        >>> X = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
        >>> variance_explained(X, torch.tensor([[1.0, 0.0]]))
        0.2
    """
    x = unit_scale(_rows(X, "variance_explained"))[0]  # a ratio: exact power-of-two scaling avoids overflow
    if center:
        x = unit_scale(centre(x))[0]
    total = (x ** 2).sum()
    if not bool(total > 0):
        raise InputError("variance_explained: X has no variance" + (" around its mean" if center else ""))
    q = _basis(basis, x.shape[1], "variance_explained")
    return float(((x @ q.T) ** 2).sum() / total)


@dataclass(frozen=True)
class Spectrum:
    """Singular values (descending), each direction's variance share, and the effective rank."""

    singular_values: Tensor
    explained: Tensor
    effective_rank: float

    def rank(self, share: float = 0.99) -> int:
        """How many directions hold ``share`` (in (0, 1]) of the variance; at most the number with variance.

        Example:
            >>> import torch
            >>> spectrum(torch.diag(torch.tensor([3.0, 1.0, 0.0]))).rank(1.0)
            2
        """
        if not 0 < share <= 1:
            raise OptionError(f"Spectrum.rank: share={share} is not a fraction of the variance in (0, 1]; e.g. 0.99 "
                              "for the directions holding 99% of it")
        held = int((self.explained > 0).sum())
        return min(held, int((self.explained.cumsum(0) < share - 1e-12).sum()) + 1)


@checked
def spectrum(X: Float[Tensor, "n d"], *, center: bool = False) -> Spectrum:
    """The singular value spectrum of ``X`` (optionally of its centred rows).

    Example:
        >>> import torch
        >>> s = spectrum(torch.diag(torch.tensor([3.0, 1.0, 0.0])))
        >>> s.singular_values.tolist(), s.rank(0.9)
        ([3.0, 1.0, 0.0], 1)
    """
    x = _rows(X, "spectrum")
    if center:
        x = centre(x)
    # shares and entropy are scale-free: compute them at unit scale (exact), give the values back at X's scale
    x, exponent = unit_scale(x)
    values = torch.linalg.svdvals(x)
    if not bool(values.sum() > 0):
        raise InputError("spectrum: X is all zeros")
    p = values / values.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    power = values ** 2
    return Spectrum(torch.ldexp(values, exponent), power / power.sum(), float(entropy.exp()))


@checked
def low_rank(X: Float[Tensor, "n d"], k: int) -> Float[Tensor, "n d"]:
    """The best rank-``k`` approximation of ``X`` in Frobenius norm (float64).

    Example:
        >>> import torch
        >>> low_rank(torch.diag(torch.tensor([3.0, 1.0])), 1).tolist()
        [[3.0, 0.0], [0.0, 0.0]]
    """
    x = _rows(X, "low_rank")
    if not 1 <= k <= min(x.shape):
        raise SelectionError(f"low_rank: k={k}; choose 1 <= k <= {min(x.shape)} for a {tuple(x.shape)} matrix")
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k]
