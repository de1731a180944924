"""Neighbourhood and set overlaps: mutual k-nearest neighbours, Jaccard index, top-k Jaccard.

- ``mutual_knn`` (as in Huh, Cheung, Wang & Isola 2024, "The Platonic representation
  hypothesis"): L2-normalise each row, find every item's k nearest other items by cosine
  similarity in X and in Y, and average |N_X(i) & N_Y(i)| / k over items. Unrelated
  representations score k / (n - 1) on average (the chance level). Raw inner products would
  let row norms decide the neighbours, which is why rows are normalised first.
- ``jaccard(a, b)`` = |a & b| / |a | b| of two index sets; ``jaccard_topk`` of the indices of the
  k largest entries of two vectors (e.g. SAE feature activations), refusing a k whose boundary
  falls inside a run of tied values (the top-k set would be arbitrary).
"""

from collections.abc import Iterable
import warnings

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, SelectionError, ShapeError, TlInterpWarning
from tl_interp.similarity._gather import PairGather
from tl_interp.similarity._inputs import ArrayLike, first_copies, paired_rows
from tl_interp.stats import PreparedNull, register_null
from tl_interp.stats._inputs import as_float64

__all__ = ["mutual_knn", "knn_chance", "knn_resampled", "jaccard", "jaccard_topk"]


def _neighbours(x: Tensor, k: int, name: str, source: Tensor | None = None) -> Tensor:
    norms = x.norm(dim=1)
    zero = (norms == 0).nonzero().flatten()
    if zero.numel():
        raise InputError(f"mutual_knn: rows {zero[:10].tolist()} of {name} are all zero and have no direction")
    z = x / norms[:, None]
    sim = z @ z.T
    if source is not None:  # copies of one item (a bootstrap resample) are one item: exact ties, never neighbours
        first = first_copies(source)
        sim = sim[first][:, first]
        sim[source[:, None] == source[None, :]] = float("-inf")
    sim.fill_diagonal_(float("-inf"))
    # a stable sort: among equal similarities the first row wins, the same choice in X and Y
    order = sim.argsort(dim=1, descending=True, stable=True)[:, :k + 1]
    top = sim.gather(1, order)
    ties = int((top[:, k - 1] == top[:, k]).sum())
    if ties and source is None:
        warnings.warn(f"mutual_knn: {ties} rows of {name} have a tie at their {k}-th neighbour (duplicate or "
                      "equidistant rows); which neighbour is kept is arbitrary", TlInterpWarning, stacklevel=5)
    return order[:, :k]


def _knn_sets(X: ArrayLike, Y: ArrayLike, k: int) -> tuple[Tensor, Tensor]:
    x, y = paired_rows(X, Y, "mutual_knn", min_rows=3)
    n = x.shape[0]
    if not 1 <= k <= n - 2:
        raise SelectionError(f"mutual_knn: k={k} with {n} rows; k must be in [1, n - 2] = [1, {n - 2}] "
                             "(k = n - 1 makes every item everyone's neighbour)")
    return _neighbours(x, k, "X"), _neighbours(y, k, "Y")


@checked
def mutual_knn(X: ArrayLike, Y: ArrayLike, *, k: int = 10) -> float:
    """Mean fraction of each item's k nearest neighbours (cosine, rows L2-normalised) shared by X and Y.

    Args:
        X, Y: activations ``(n, d1)`` and ``(n, d2)``, rows paired.
        k: neighbours per item, 1 <= k <= n - 2. Chance level: ``knn_chance(n, k)`` = k / (n - 1).

    Returns:
        The overlap in [0, 1].

    Example:
        >>> import torch
        >>> X = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
        >>> mutual_knn(X, 3 * X, k=5), round(knn_chance(40, 5), 4)
        (1.0, 0.1282)
    """
    nx, ny = _knn_sets(X, Y, k)
    shared = (nx[:, :, None] == ny[:, None, :]).any(-1).sum()
    return int(shared) / nx.numel()


def knn_resampled(x: Tensor, y: Tensor, source: Tensor, *, k: int = 10) -> float:
    """``mutual_knn`` of bootstrap-resampled rows; copies of the same item are not neighbours."""
    nx, ny = _neighbours(x, k, "X", source), _neighbours(y, k, "Y", source)
    return int((nx[:, :, None] == ny[:, None, :]).any(-1).sum()) / nx.numel()


@checked
def knn_chance(n: int, k: int) -> float:
    """Expected ``mutual_knn`` of unrelated representations: k / (n - 1), for 1 <= k <= n - 2.

    Example:
        >>> knn_chance(11, 5)
        0.5
    """
    if n < 3 or not 1 <= k <= n - 2:
        raise SelectionError(f"knn_chance: k={k} neighbours among n={n} items; mutual_knn needs n >= 3 and "
                             f"1 <= k <= n - 2{f' = {n - 2}' if n >= 3 else ''} (each item has n - 1 others, and "
                             "k = n - 1 makes every item everyone's neighbour); pass (n, k) as mutual_knn gets them")
    return k / (n - 1)


@register_null(mutual_knn)
def _knn_null(x: Tensor, y: Tensor, *, k: int = 10) -> PreparedNull:
    nx, ny = _knn_sets(x, y, k)
    n = x.shape[0]
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    adjacency[torch.arange(n)[:, None], ny] = 1.0
    rows = torch.arange(n).repeat_interleave(k)
    weights = torch.full((n * k,), 1.0 / (n * k), dtype=torch.float64)
    gather = PairGather(rows, nx.reshape(-1), weights, adjacency)
    return PreparedNull(gather, gather.chunk)


@checked
def jaccard(a: Iterable[int] | Tensor, b: Iterable[int] | Tensor) -> float:
    """Jaccard index |a & b| / |a | b| of two sets of indices.

    Example:
        >>> jaccard([1, 2, 3], [2, 3, 4, 5])
        0.4
    """
    sa = set(a.flatten().tolist()) if isinstance(a, Tensor) else set(a)
    sb = set(b.flatten().tolist()) if isinstance(b, Tensor) else set(b)
    if not sa and not sb:
        raise InputError("jaccard of two empty sets is undefined (0/0)")
    return len(sa & sb) / len(sa | sb)


def _topk(v: Tensor, k: int, name: str) -> set[int]:
    if v.ndim != 1:
        raise InputError(f"jaccard_topk: {name} must be a vector, got shape {tuple(v.shape)}")
    if not 1 <= k <= v.numel():
        raise SelectionError(f"jaccard_topk: k={k} but {name} has {v.numel()} entries")
    ordered = v.sort(descending=True).values
    if k < v.numel() and bool(ordered[k - 1] == ordered[k]):
        tied = int((v == ordered[k - 1]).sum())
        above = int((v > ordered[k - 1]).sum())
        raise InputError(f"jaccard_topk: the top-{k} of {name} is ambiguous: {above} entries are larger than "
                         f"{float(ordered[k - 1]):.6g} and {tied} are tied at it (e.g. inactive SAE features); "
                         f"use k <= {above} or the set of entries above a threshold with jaccard()")
    return set(v.topk(k).indices.tolist())


@checked
def jaccard_topk(x: ArrayLike, y: ArrayLike, *, k: int) -> float:
    """Jaccard index of the indices of the k largest entries of two vectors.

    Example:
        >>> import torch
        >>> jaccard_topk(torch.tensor([5.0, 4, 3, 0, 1]), torch.tensor([0.0, 4, 3, 5, 1]), k=3)
        0.5
    """
    a, b = as_float64(x, "jaccard_topk: x"), as_float64(y, "jaccard_topk: y")
    if a.shape != b.shape:
        raise ShapeError(f"jaccard_topk: x has shape {tuple(a.shape)} and y {tuple(b.shape)}; the top-k indices of "
                         "two vectors only compare when entry i means the same thing in both (the same features "
                         "or tokens), so they must have the same length")
    return jaccard(_topk(a, k, "x"), _topk(b, k, "y"))
