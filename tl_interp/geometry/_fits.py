"""How well paired states B are explained by A: one shift, a rotation, or both.

For paired rows ``A, B`` of shape ``(n, d)`` (row i of A goes with row i of B), each fit's
*relative residual* is ``||B - fit(A)||_F / ||B - mean(B)||_F`` (0: B is explained exactly; 1:
no better than B's own mean):

- ``shift_residual``: ``fit(A) = A + t`` with the best single shift ``t = mean(B - A)``;
- ``rotation_residual``: ``fit(A) = A Q``, Q orthogonal (orthogonal Procrustes, Schoenemann
  1966: ``Q = U V^T`` from ``A^T B = U S V^T``; ``||B - A Q||^2 = ||A||^2 + ||B||^2 - 2 ||A^T B||_*``);
- ``shift_rotation_residual``: ``fit(A) = (A - mean A) Q + mean B`` (rotation of the centred
  states, then the shift).

``difference_pca(A, B, k)`` is the share of the variance of the centred differences ``B - A``
in their first ``k`` principal components (high when one consistent transformation moves
every pair). Each statistic registers a vectorised pairings null with ``ti.stats`` (re-pairing
A's rows with shuffled B rows, computed from ``n x n`` Gram matrices), so
``ti.stats.permutation_test(rotation_residual, A, B, alternative="less")`` asks whether the
true pairing fits better than unrelated pairs. A rotation has d(d-1)/2 free parameters: with
fewer pairs than dimensions it fits unrelated pairs well too, which is why the baseline matters.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, SelectionError, ShapeError
from tl_interp.stats import PreparedNull, register_null
from tl_interp.stats._inputs import check_finite, unit_scale

__all__ = ["max_components", "shift_residual", "rotation_residual", "shift_rotation_residual", "difference_pca",
           "procrustes_rotation"]

_CHUNK_ENTRIES = 1 << 22  # permutations per batched evaluation: (chunk, n, n) stays ~32 MB


def _pair(A: Tensor, B: Tensor, what: str) -> tuple[Tensor, Tensor]:
    if A.shape != B.shape or A.ndim != 2:
        raise ShapeError(f"{what}: A and B must be paired (n, d) states of the same shape, got {tuple(A.shape)} "
                         f"and {tuple(B.shape)}")
    if A.shape[0] < 2:
        raise InputError(f"{what} needs at least 2 pairs, got {A.shape[0]}")
    a = check_finite(A.detach().double().cpu(), f"{what}: A", "remove or impute those pairs first")
    b = check_finite(B.detach().double().cpu(), f"{what}: B", "remove or impute those pairs first")
    # one common power of two (exact): the relative residuals are unchanged, and squares can't overflow
    exponent = unit_scale(torch.stack([a, b]))[1]
    return torch.ldexp(a, -exponent), torch.ldexp(b, -exponent)


def _spread(b: Tensor, what: str) -> Tensor:
    """||B - mean(B)||^2, the normaliser; refuses B without variation."""
    spread = ((b - b.mean(0)) ** 2).sum()
    if not bool(spread > 0):
        raise InputError(f"{what}: every row of B is the same, so no fit can be compared with its mean")
    return spread


def max_components(n: int, d: int) -> int:
    """The rank the centred differences of n pairs in d dimensions can have: min(n - 1, d)."""
    return min(n - 1, d)


def _chunk(n: int) -> int:
    return max(1, _CHUNK_ENTRIES // (n * n))


def _relative(squared: Tensor, spread: Tensor) -> Tensor:
    return (squared.clamp(min=0.0) / spread).sqrt()


@checked
def shift_residual(A: Float[Tensor, "n d"], B: Float[Tensor, "n d"]) -> Tensor:
    """Relative residual of ``B ~ A + t`` with the best single shift ``t`` (0-d float64).

    Args:
        A, B: paired states ``(n, d)``, row i of A with row i of B.

    Returns:
        0-d float64: ``||B - fit(A)|| / ||B - mean(B)||``.

    Example:
        >>> import torch
        >>> A = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
        >>> float(shift_residual(A, A + torch.tensor([1.0, -2.0, 0.5]))) < 1e-6
        True
    """
    a, b = _pair(A, B, "shift_residual")
    d = b - a
    return _relative(((d - d.mean(0)) ** 2).sum(), _spread(b, "shift_residual"))


@register_null(shift_residual)
def _shift_null(x: Tensor, y: Tensor) -> PreparedNull:
    x, y = _pair(x, y, "shift_residual")
    # ||B_p - A - mean||^2 = ||A||^2 + ||B||^2 - 2 sum_i <a_i, b_p(i)> - n ||mean(B) - mean(A)||^2
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


@checked
def procrustes_rotation(A: Float[Tensor, "n d"], B: Float[Tensor, "n d"]) -> Float[Tensor, "d d"]:
    """The orthogonal ``Q`` minimising ``||A Q - B||_F`` (``scipy.linalg.orthogonal_procrustes``).

    Args:
        A, B: paired states ``(n, d)``.

    Returns:
        ``(d, d)`` float64 orthogonal matrix (unique when ``A^T B`` has full rank).

    Example:
        >>> import torch
        >>> Q = procrustes_rotation(torch.eye(3), torch.eye(3)[[1, 0, 2]])
        >>> Q.round().tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    a, b = _pair(A, B, "procrustes_rotation")
    u, _, vh = torch.linalg.svd(a.T @ b)
    return u @ vh


@checked
def rotation_residual(A: Float[Tensor, "n d"], B: Float[Tensor, "n d"]) -> Tensor:
    """Relative residual of ``B ~ A Q`` with the best orthogonal ``Q`` (0-d float64).

    Args:
        A, B: paired states ``(n, d)``, row i of A with row i of B.

    Returns:
        0-d float64: ``||B - fit(A)|| / ||B - mean(B)||``.

    Example:
        >>> import torch
        >>> A = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
        >>> Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1))).Q
        >>> float(rotation_residual(A, A @ Q)) < 1e-6
        True
    """
    a, b = _pair(A, B, "rotation_residual")
    nuclear = torch.linalg.svdvals(_factor(a) @ _factor(b).T).sum()
    return _relative((a ** 2).sum() + (b ** 2).sum() - 2 * nuclear, _spread(b, "rotation_residual"))


def _rotation_null(a: Tensor, b: Tensor, spread: Tensor) -> PreparedNull:
    ra, rb_t = _factor(a), _factor(b).T  # B_p^T = Q_b R_b P^T, so A^T B_p ~ R_a (P R_b^T)
    fixed = (a ** 2).sum() + (b ** 2).sum()

    def _rotation_permuted(perms: Tensor) -> Tensor:
        nuclear = torch.linalg.svdvals(ra @ rb_t[perms]).sum(-1)
        return _relative(fixed - 2 * nuclear, spread)

    return PreparedNull(_rotation_permuted, _chunk(a.shape[0]))


@register_null(rotation_residual)
def _rotation_residual_null(x: Tensor, y: Tensor) -> PreparedNull:
    x, y = _pair(x, y, "rotation_residual")
    return _rotation_null(x, y, _spread(y, "rotation_residual"))


@checked
def shift_rotation_residual(A: Float[Tensor, "n d"], B: Float[Tensor, "n d"]) -> Tensor:
    """Relative residual of ``B ~ (A - mean A) Q + mean B`` (rotation and shift; 0-d float64).

    Args:
        A, B: paired states ``(n, d)``, row i of A with row i of B.

    Returns:
        0-d float64: ``||B - fit(A)|| / ||B - mean(B)||``.

    Example:
        >>> import torch
        >>> A = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
        >>> Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1))).Q
        >>> float(shift_rotation_residual(A, A @ Q + 4.0)) < 1e-6
        True
    """
    a, b = _pair(A, B, "shift_rotation_residual")
    return rotation_residual(a - a.mean(0), b - b.mean(0))


@register_null(shift_rotation_residual)
def _shift_rotation_null(x: Tensor, y: Tensor) -> PreparedNull:
    x, y = _pair(x, y, "shift_rotation_residual")
    # permuting B's rows leaves its mean alone: the null of the centred rotation fit
    return _rotation_null(x - x.mean(0), y - y.mean(0), _spread(y, "shift_rotation_residual"))


@checked
def difference_pca(A: Float[Tensor, "n d"], B: Float[Tensor, "n d"], k: int = 5) -> Tensor:
    """Share of the variance of the centred differences ``B - A`` in their top ``k`` components.

    Args:
        A, B: paired states ``(n, d)``.
        k: number of principal components, ``1 <= k < min(n, d)``.

    Returns:
        0-d float64 in (0, 1].

    Example:
        >>> import torch
        >>> A = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
        >>> B = A + torch.arange(10.0)[:, None] * torch.tensor([1.0, 0.0, 0.0, 0.0])
        >>> round(float(difference_pca(A, B, k=1)), 6)
        1.0
    """
    a, b = _pair(A, B, "difference_pca")
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
        cross = g_ba[perms]  # (b, n, n): rows of B re-paired
        gram = g_bb[perms[:, :, None], perms[:, None, :]] - cross - cross.transpose(1, 2) + g_aa
        power = torch.linalg.eigvalsh(gram).flip(-1).clamp(min=0.0)
        return power[:, :k].sum(-1) / power.sum(-1)

    return PreparedNull(_pca_permuted, _chunk(x.shape[0]))
