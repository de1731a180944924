"""Orthogonal Procrustes similarity and the shape distances built on it.

After centring each side and scaling it to unit Frobenius norm (Xn, Yn), the best rotation R
minimises ||Xn - Yn R||_F, and ||Xn - Yn R||^2 = 2 - 2 ||Xn^T Yn||_* (Schoenemann 1966). The
similarity is the nuclear norm ||Xn^T Yn||_* in [0, 1]: 1 means equal up to rotation (or
reflection), translation and isotropic scale. Distances (Williams, Kunz, Kornblith & Linderman
2021, "Generalized shape metrics"): angular arccos(similarity), euclidean sqrt(2 - 2 similarity)
(= the Procrustes residual). Beware: ``scipy.spatial.procrustes``'s "disparity" is
1 - similarity^2, not 1 - similarity; quoting one as the other is how the same data gets
"Procrustes scores" of 0.72 and 0.99. Widths may differ (the narrower side is zero-padded).
"""

import math

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.similarity._inputs import ArrayLike, centred, paired_rows
from tl_interp.stats import PreparedNull, register_null
from tl_interp.stats._inputs import check_choice

__all__ = ["procrustes", "procrustes_distance"]


def _reduced(X: ArrayLike, Y: ArrayLike, what: str) -> tuple[Tensor, Tensor]:
    """(n, r) factors with the same singular values of Xn^T Yn: Xn = U S V^T -> U S."""
    x, y = paired_rows(X, Y, what)
    out = []
    for name, t in (("X", x), ("Y", y)):
        tc = centred(t, name, what)
        tc = tc / tc.norm()
        if tc.shape[1] > tc.shape[0]:
            u, s, _ = torch.linalg.svd(tc, full_matrices=False)
            tc = u * s
        out.append(tc)
    return out[0], out[1]


@checked
def procrustes(X: ArrayLike, Y: ArrayLike) -> float:
    """Procrustes similarity ||Xn^T Yn||_* of the centred, unit-norm X and Y, in [0, 1].

    Args:
        X, Y: activations ``(n, d1)`` and ``(n, d2)``, rows paired.

    Returns:
        1 for equal up to rotation, translation and isotropic scale; lower otherwise.

    Example:
        >>> import torch
        >>> X = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
        >>> Q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))[0]
        >>> round(procrustes(X, 2 * X @ Q - 5), 6)
        1.0
    """
    a, b = _reduced(X, Y, "procrustes")
    return float(torch.linalg.svdvals(a.T @ b).sum().clamp(max=1.0))


@register_null(procrustes)
def _procrustes_null(x: Tensor, y: Tensor) -> PreparedNull:
    a, b = _reduced(x, y, "procrustes")

    def _procrustes_permuted(perms: Tensor) -> Tensor:
        return torch.linalg.svdvals(a.T @ b[perms]).sum(-1).clamp(max=1.0)

    return PreparedNull(_procrustes_permuted, max(1, (1 << 21) // (b.shape[0] * b.shape[1])))


@checked
def procrustes_distance(X: ArrayLike, Y: ArrayLike, kind: str = "angular") -> float:
    """Procrustes shape distance: ``"angular"`` arccos(similarity) or ``"euclidean"`` sqrt(2 - 2 similarity).

    Args:
        X, Y: activations, rows paired.
        kind: ``"angular"`` (radians, in [0, pi/2]) or ``"euclidean"`` (in [0, sqrt 2]).

    Returns:
        The distance; 0 for shapes equal up to rotation, translation and scale.

    Example:
        >>> import torch
        >>> X = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
        >>> round(procrustes_distance(X, X + 1.0, kind="euclidean"), 6)
        0.0
    """
    check_choice(kind, "kind", ("angular", "euclidean"))
    sim = procrustes(X, Y)
    return math.acos(sim) if kind == "angular" else math.sqrt(max(0.0, 2 - 2 * sim))
