"""Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008).

Each side becomes a representational dissimilarity matrix (RDM) over its rows, condensed to
the n(n-1)/2 pairs i < j in scipy.spatial.distance.pdist order ("correlation": 1 - Pearson r of
two rows, "euclidean", "cosine": 1 - cosine similarity); the two RDMs are then compared by
Spearman's rho (ties get average ranks, as in scipy.stats.spearmanr), Pearson's r, or Kendall's
tau-b. The permutation null reorders Y's items: its RDM entries are gathered, never recomputed,
and since the ranks of reordered entries are the reordered ranks, Spearman's null is a
Pearson correlation of fixed standardised ranks: one gather and one dot product per permutation.
"""

import scipy.stats
import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, ShapeError
from tl_interp.similarity._gather import _square, off_diagonal_gather
from tl_interp.similarity._inputs import ArrayLike, first_copies, paired_rows
from tl_interp.stats import PreparedNull, register_null
from tl_interp.stats._inputs import as_float64, check_choice, unit_scale

__all__ = ["rsa", "rdm", "rsa_resampled"]

_RDMS = ("correlation", "euclidean", "cosine")
_COMPARES = ("spearman", "pearson", "kendall")


@checked
def rdm(X: ArrayLike, kind: str = "correlation") -> Tensor:
    """Condensed dissimilarities of the rows of X ``(n, d)``, in scipy.spatial.distance.pdist order.

    Args:
        X: activations, one row per item.
        kind: ``"correlation"`` (1 - Pearson r of two rows), ``"euclidean"`` or ``"cosine"``.

    Returns:
        float64 tensor of the n(n-1)/2 dissimilarities of pairs i < j.

    Example:
        >>> import torch
        >>> rdm(torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]), "euclidean").tolist()
        [5.0, 1.0, 4.242640687119285]
    """
    x = as_float64(X, "X", min_ndim=2)
    if x.ndim != 2:
        raise ShapeError(f"rdm: X must be (n, features), got shape {tuple(x.shape)}")
    return _rdm(x, kind, "X")


def _rdm(x: Tensor, kind: str, name: str) -> Tensor:
    check_choice(kind, "rdm", _RDMS)
    upper = torch.ones(x.shape[0], x.shape[0], dtype=torch.bool).triu_(1)  # pairs i < j in pdist order (n^2 bytes)
    x, exponent = unit_scale(x)  # exact: no overflow of squared entries at any finite scale
    if kind == "euclidean":
        # differences, not |a|^2 + |b|^2 - 2ab: equal distances stay exactly equal (tied ranks as in pdist)
        return torch.ldexp(torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")[upper], exponent)
    z = unit_scale(x - x.mean(1, keepdim=True), dim=1)[0] if kind == "correlation" else unit_scale(x, dim=1)[0]
    norms = z.norm(dim=1)
    bad = (norms == 0).nonzero().flatten()
    if bad.numel():
        what = "constant" if kind == "correlation" else "all zero"
        raise InputError(f"rsa: {bad.numel()} rows of {name} are {what} (rows {bad[:10].tolist()}), so their "
                         f"{kind} distance is undefined; drop them or use rdm='euclidean'")
    z = z / norms[:, None]
    return (z @ z.T).neg_().add_(1)[upper]  # 1 - z z^T, in place


def _standardised(v: Tensor, compare: str, name: str) -> Tensor:
    """Entries as z-scores (population sd) of their values or average ranks."""
    if compare == "spearman":
        v = torch.as_tensor(scipy.stats.rankdata(v.numpy()), dtype=torch.float64)
    sd = v.std(correction=0)
    if not bool(sd > 0):
        raise InputError(f"rsa: every dissimilarity of {name} is the same ({float(v[0]):.6g}); a correlation "
                         "with it is undefined")
    return (v - v.mean()) / sd


def _kendall(dx: Tensor, dy: Tensor) -> float:
    """Kendall's tau-b of two RDMs; a constant RDM is refused as for the other correlations (scipy gives NaN)."""
    _standardised(dx, "pearson", "X")
    _standardised(dy, "pearson", "Y")
    return float(scipy.stats.kendalltau(dx.numpy(), dy.numpy()).statistic)


def _rdms(X: ArrayLike, Y: ArrayLike, kind: str, compare: str) -> tuple[Tensor, Tensor]:
    check_choice(compare, "compare", _COMPARES)
    x, y = paired_rows(X, Y, "rsa", min_rows=3, rescale=False)  # _rdm scales exactly itself
    return _rdm(x, kind, "X"), _rdm(y, kind, "Y")


@checked
def rsa(X: ArrayLike, Y: ArrayLike, *, rdm: str = "correlation", compare: str = "spearman") -> float:
    """Correlation between the dissimilarity matrices of X's and Y's rows.

    Args:
        X, Y: activations ``(n, d1)`` and ``(n, d2)``, rows paired (n >= 3).
        rdm: dissimilarity: ``"correlation"``, ``"euclidean"`` or ``"cosine"``.
        compare: ``"spearman"``, ``"pearson"`` or ``"kendall"`` (tau-b).

    Returns:
        The correlation of the two condensed RDMs, in [-1, 1].

    Example:
        >>> import torch
        >>> X = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
        >>> round(rsa(X, 4 * X, rdm="euclidean"), 6)
        1.0
    """
    dx, dy = _rdms(X, Y, rdm, compare)
    if compare == "kendall":
        return _kendall(dx, dy)
    zx, zy = _standardised(dx, compare, "X"), _standardised(dy, compare, "Y")
    return float((zx @ zy) / zx.numel())


@register_null(rsa)
def _rsa_null(x: Tensor, y: Tensor, *, rdm: str = "correlation", compare: str = "spearman") -> PreparedNull | None:
    if compare == "kendall":
        return None  # tau needs a sort per permutation: the loop runs
    dx, dy = _rdms(x, y, rdm, compare)
    zx, zy = _standardised(dx, compare, "X"), _standardised(dy, compare, "Y")
    gather = off_diagonal_gather(zx, zy, 1 / zx.numel())
    return PreparedNull(gather, gather.chunk)


def rsa_resampled(x: Tensor, y: Tensor, source: Tensor, *, rdm: str = "correlation", compare: str = "spearman") -> float:
    """``rsa`` of bootstrap-resampled rows, leaving out the pairs of two copies of one item
    (their dissimilarity is 0 on both sides by construction, which would inflate the score).

    Copies are one item, so a pair's dissimilarity is read from the first copies of its two
    items: copies tie exactly (computed per row, their products can differ in the last bit, and
    ranks would then split the tie by rounding)."""
    check_choice(compare, "compare", _COMPARES)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    first = first_copies(source)
    keep = source[i] != source[j]
    dx, dy = (_square(_rdm(t, rdm, name), x.shape[0])[first[i], first[j]][keep] for t, name in ((x, "X"), (y, "Y")))
    if compare == "kendall":
        return _kendall(dx, dy)
    zx, zy = _standardised(dx, compare, "X"), _standardised(dy, compare, "Y")
    return float((zx @ zy) / zx.numel())
