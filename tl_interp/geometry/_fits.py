"""How well paired states Y are explained by X: one shift, a rotation, or both.

For paired rows ``X, Y`` of shape ``(n, d)`` (row i of X goes with row i of Y), each fit's
*relative residual* is ``||Y - fit(X)||_F / ||Y - mean(Y)||_F`` (0: Y is explained exactly; 1:
no better than Y's own mean):

- ``shift_residual``: ``fit(X) = X + t`` with the best single shift ``t = mean(Y - X)``;
- ``rotation_residual``: ``fit(X) = X Q``, Q orthogonal (orthogonal Procrustes, Schoenemann
  1966: ``Q = U V^T`` from ``X^T Y = U S V^T``; ``||Y - X Q||^2 = ||X||^2 + ||Y||^2 - 2 ||X^T Y||_*``);
- ``shift_rotation_residual``: ``fit(X) = (X - mean X) Q + mean Y`` (rotation of the centred
  states, then the shift).

``difference_pca(X, Y, k)`` is the share of the variance of the centred differences ``Y - X``
in their first ``k`` principal components (high when one consistent transformation moves
every pair). Each statistic registers a vectorised pairings null with ``ti.stats`` (re-pairing
X's rows with shuffled Y rows, computed from ``n x n`` Gram matrices), so
``ti.stats.permutation_test(rotation_residual, X, Y, alternative="less")`` asks whether the
true pairing fits better than unrelated pairs. A rotation has d(d-1)/2 free parameters: with
fewer pairs than dimensions it fits unrelated pairs well too, which is why the baseline matters.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp.errors import InputError, ShapeError
from tl_interp._checks import checked
from tl_interp.errors import InputError, SelectionError, ShapeError
from tl_interp.stats import PreparedNull, register_null
from tl_interp.stats._inputs import check_finite, unit_scale

__all__ = ["max_components", "shift_residual", "rotation_residual", "shift_rotation_residual", "difference_pca",
           "procrustes_rotation"]

_CHUNK_ENTRIES = 1 << 22  # permutations per batched evaluation: (chunk, n, n) stays ~32 MB


def _pair(X: Tensor, Y: Tensor, what: str) -> tuple[Tensor, Tensor]:
    if X.shape != Y.shape or X.ndim != 2:
        raise ShapeError(f"{what}: X and Y must be paired (n, d) states of the same shape, got {tuple(X.shape)} "
                         f"and {tuple(Y.shape)}")
    if X.shape[0] < 2:
        raise InputError(f"{what} needs at least 2 pairs, got {X.shape[0]}")
    a = check_finite(X.detach().double().cpu(), f"{what}: X", "remove or impute those pairs first")
    b = check_finite(Y.detach().double().cpu(), f"{what}: Y", "remove or impute those pairs first")
    # one common power of two (exact): the relative residuals are unchanged, and squares can't overflow
    exponent = unit_scale(torch.stack([a, b]))[1]
    return torch.ldexp(a, -exponent), torch.ldexp(b, -exponent)


def _spread(b: Tensor, what: str) -> Tensor:
    """||Y - mean(Y)||^2, the normaliser; refuses Y without variation."""
    spread = ((b - b.mean(0)) ** 2).sum()
    if not bool(spread > 0):
        raise InputError(f"{what}: every row of Y is the same, so no fit can be compared with its mean")
    return spread


def max_components(n: int, d: int) -> int:
    """The rank the centred differences of n pairs in d dimensions can have: min(n - 1, d)."""
    return min(n - 1, d)


def _chunk(n: int) -> int:
    return max(1, _CHUNK_ENTRIES // (n * n))


def _relative(squared: Tensor, spread: Tensor) -> Tensor:
    return (squared.clamp(min=0.0) / spread).sqrt()


@renamed(A="X", B="Y")
@checked
def shift_residual(X: Float[Tensor, "n d"], Y: Float[Tensor, "n d"]) -> Tensor:
    """Relative residual of ``Y ~ X + t`` with the best single shift ``t`` (0-d float64).

    Args:
        X, Y: paired states ``(n, d)``, row i of X with row i of Y.

    Returns:
        0-d float64: ``||Y - fit(X)|| / ||Y - mean(Y)||``.

    Example:
        >>> import torch
        >>> X = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
        >>> float(shift_residual(X, X + torch.tensor([1.0, -2.0, 0.5]))) < 1e-6
        True
    """
    a, b = _pair(X, Y, "shift_residual")
    d = b - a
    return _relative(((d - d.mean(0)) ** 2).sum(), _spread(b, "shift_residual"))


@register_null(shift_residual)
def _shift_null(x: Tensor, y: Tensor) -> PreparedNull:
    x, y = _pair(x, y, "shift_residual")
    # ||Y_p - X - mean||^2 = ||X||^2 + ||Y||^2 - 2 sum_i <a_i, b_p(i)> - n ||mean(Y) - mean(X)||^2
    n = x.shape[0]
    cross = x @ y.T
    fixed = (x ** 2).sum() + (y ** 2).sum() - n * ((y.mean(0) - x.mean(0)) ** 2).sum()
    spread = _spread(y, "shift_residual")
    rows = torch.arange(n)

    def _shift_permuted(perms: Tensor) -> Tensor:
        return _relative(fixed - 2 * cross[rows, perms].sum(1), spread)

    return PreparedNull(_shift_permuted, _chunk(n))


def _factor(x: Tensor) -> Tensor:
    """R with x^T = Q R (reduced QR): x^T y has the singular values of R_x R_y^T."""
    return torch.linalg.qr(x.T, mode="reduced").R


@renamed(A="X", B="Y")
@checked
def procrustes_rotation(X: Float[Tensor, "n d"], Y: Float[Tensor, "n d"]) -> Float[Tensor, "d d"]:
    """The orthogonal ``Q`` minimising ``||X Q - Y||_F`` (``scipy.linalg.orthogonal_procrustes``).

    Args:
        X, Y: paired states ``(n, d)``.

    Returns:
        ``(d, d)`` float64 orthogonal matrix (unique when ``X^T Y`` has full rank).

    Example:
        >>> import torch
        >>> Q = procrustes_rotation(torch.eye(3), torch.eye(3)[[1, 0, 2]])
        >>> Q.round().tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    a, b = _pair(X, Y, "procrustes_rotation")
    u, _, vh = torch.linalg.svd(a.T @ b)
    return u @ vh


@renamed(A="X", B="Y")
@checked
def rotation_residual(X: Float[Tensor, "n d"], Y: Float[Tensor, "n d"]) -> Tensor:
    """Relative residual of ``Y ~ X Q`` with the best orthogonal ``Q`` (0-d float64).

    Args:
        X, Y: paired states ``(n, d)``, row i of X with row i of Y.

    Returns:
        0-d float64: ``||Y - fit(X)|| / ||Y - mean(Y)||``.

    Example:
        >>> import torch
        >>> X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
        >>> Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1))).Q
        >>> float(rotation_residual(X, X @ Q)) < 1e-6
        True
    """
    a, b = _pair(X, Y, "rotation_residual")
    nuclear = torch.linalg.svdvals(_factor(a) @ _factor(b).T).sum()
    return _relative((a ** 2).sum() + (b ** 2).sum() - 2 * nuclear, _spread(b, "rotation_residual"))


def _rotation_null(a: Tensor, b: Tensor, spread: Tensor) -> PreparedNull:
    ra, rb_t = _factor(a), _factor(b).T  # Y_p^T = Q_b R_b P^T, so X^T Y_p ~ R_a (P R_b^T)
    fixed = (a ** 2).sum() + (b ** 2).sum()

    def _rotation_permuted(perms: Tensor) -> Tensor:
        nuclear = torch.linalg.svdvals(ra @ rb_t[perms]).sum(-1)
        return _relative(fixed - 2 * nuclear, spread)

    return PreparedNull(_rotation_permuted, _chunk(a.shape[0]))


@register_null(rotation_residual)
def _rotation_residual_null(x: Tensor, y: Tensor) -> PreparedNull:
    x, y = _pair(x, y, "rotation_residual")
    return _rotation_null(x, y, _spread(y, "rotation_residual"))


@renamed(A="X", B="Y")
@checked
def shift_rotation_residual(X: Float[Tensor, "n d"], Y: Float[Tensor, "n d"]) -> Tensor:
    """Relative residual of ``Y ~ (X - mean X) Q + mean Y`` (rotation and shift; 0-d float64).

    Args:
        X, Y: paired states ``(n, d)``, row i of X with row i of Y.

    Returns:
        0-d float64: ``||Y - fit(X)|| / ||Y - mean(Y)||``.

    Example:
        >>> import torch
        >>> X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
        >>> Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1))).Q
        >>> float(shift_rotation_residual(X, X @ Q + 4.0)) < 1e-6
        True
    """
    a, b = _pair(X, Y, "shift_rotation_residual")
    return rotation_residual(a - a.mean(0), b - b.mean(0))


@register_null(shift_rotation_residual)
def _shift_rotation_null(x: Tensor, y: Tensor) -> PreparedNull:
    x, y = _pair(x, y, "shift_rotation_residual")
    # permuting Y's rows leaves its mean alone: the null of the centred rotation fit
    return _rotation_null(x - x.mean(0), y - y.mean(0), _spread(y, "shift_rotation_residual"))


@renamed(A="X", B="Y")
@checked
def difference_pca(X: Float[Tensor, "n d"], Y: Float[Tensor, "n d"], k: int = 5) -> Tensor:
    """Share of the variance of the centred differences ``Y - X`` in their top ``k`` components.

    Args:
        X, Y: paired states ``(n, d)``.
        k: number of principal components, ``1 <= k < min(n, d)``.

    Returns:
        0-d float64 in (0, 1].

    Example:
        >>> import torch
        >>> X = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
        >>> Y = X + torch.arange(10.0)[:, None] * torch.tensor([1.0, 0.0, 0.0, 0.0])
        >>> round(float(difference_pca(X, Y, k=1)), 6)
        1.0
    """
    a, b = _pair(X, Y, "difference_pca")
    top = max_components(*a.shape)
    if not 1 <= k < top:
        raise SelectionError(f"difference_pca: k={k} components of {a.shape[0]} pairs in {a.shape[1]} dimensions; "
                             f"choose 1 <= k < {top} (the centred differences span at most min(n - 1, d) = {top} "
                             "directions, so k >= that explains all of them for every pairing)")
    d = (b - a) - (b - a).mean(0)
    power = torch.linalg.svdvals(d) ** 2
    if not bool(power.sum() > 0):
        raise InputError("difference_pca: every pair differs by the same vector; the differences have no variance")
    return power[:k].sum() / power.sum()


@register_null(difference_pca)
def _difference_pca_null(x: Tensor, y: Tensor, *, k: int = 5) -> PreparedNull:
    x, y = _pair(x, y, "difference_pca")
    # Gram of the centred differences of the re-paired states: all from fixed n x n blocks
    ac, bc = x - x.mean(0), y - y.mean(0)
    g_bb, g_ba, g_aa = bc @ bc.T, bc @ ac.T, ac @ ac.T

    def _pca_permuted(perms: Tensor) -> Tensor:
        cross = g_ba[perms]  # (b, n, n): rows of Y re-paired
        gram = g_bb[perms[:, :, None], perms[:, None, :]] - cross - cross.transpose(1, 2) + g_aa
        power = torch.linalg.eigvalsh(gram).flip(-1).clamp(min=0.0)
        return power[:, :k].sum(-1) / power.sum(-1)

    return PreparedNull(_pca_permuted, _chunk(x.shape[0]))
