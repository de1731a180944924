"""Pairwise cosine similarity of weight vectors, ordered by hierarchical clustering.

``cosine_matrix(W)`` is the ``(n, n)`` matrix of cosines between the rows of ``W``; with
``cluster=True`` it also holds a dendrogram order from scipy's agglomerative clustering
(``scipy.cluster.hierarchy.linkage`` on cosine distance 1 - cos, average linkage by
default), so that a heatmap in that order shows groups of vectors pointing the same way as
blocks on the diagonal. ``cluster_around`` lists the vectors most aligned with one exemplar.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, SelectionError
from tl_interp.results import Result, register_result, short
from tl_interp.weights._vectors import Vectors, as_vectors

__all__ = ["CosineMatrix", "cosine_matrix", "Cluster", "cluster_around"]

_METHODS = ("average", "complete", "single", "weighted")


def _unit_rows(v: Vectors) -> Tensor:
    lengths = v.matrix.norm(dim=1, keepdim=True)
    zero = (lengths.flatten() == 0).nonzero().flatten().tolist()
    if zero:
        raise InputError(f"{v.name}: vectors {[v.labels[i] for i in zero[:5]]} are zero; a cosine needs a direction "
                         "(drop them, e.g. v.select(...))")
    return v.matrix / lengths


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class CosineMatrix(Result):
    """Cosines between vectors (``values``, rows in the input order) and a clustered order.

    ``.matrix`` is the cosine matrix, ``.order`` the dendrogram order (``None`` without
    clustering), ``.ordered`` / ``.ordered_labels`` the matrix and labels in that order.
    """

    kind = "cosine_matrix"

    @property
    def matrix(self) -> Tensor:
        return self.values

    @property
    def order(self) -> Tensor | None:
        return self.extras.get("order")

    @property
    def ordered(self) -> Tensor:
        order = self.order if self.order is not None else torch.arange(self.values.shape[0])
        return self.values[order][:, order]

    @property
    def ordered_labels(self) -> tuple[str, ...]:
        labels = self.labels["row"]
        return labels if self.order is None else tuple(labels[i] for i in self.order.tolist())

    def _pairs(self, k: int) -> tuple[float, list[tuple[str, float]]]:
        """Mean |cosine| off the diagonal and the ``k`` most aligned (or anti-aligned) pairs."""
        n = self.values.shape[0]
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        off = self.values.double()[upper]
        rows, cols = upper.nonzero().unbind(1)
        order = off.abs().argsort(descending=True, stable=True)[:k].tolist()
        labels = self.labels["row"]
        return float(off.abs().mean()), [(f"{short(labels[int(rows[i])])} ~ {short(labels[int(cols[i])])}",
                                          float(off[i])) for i in order]

    def _headline(self) -> str:
        mean, pairs = self._pairs(3)
        how = f"clustered ({self.provenance.settings.get('linkage', '?')} linkage)" if self.order is not None \
            else "not clustered"
        return (f"{self.values.shape[0]} vectors, {how}; mean |cos| off the diagonal {mean:.3f}; most aligned: "
                + ", ".join(f"{p} {v:+.3f}" for p, v in pairs))

    def _summary_lines(self) -> list[str]:
        mean, pairs = self._pairs(10)
        lines = [f"{'vectors':>24}: {self.values.shape[0]}", f"{'mean |cos| off diagonal':>24}: {mean:.4f}",
                 "the 10 most aligned (or anti-aligned) pairs:"]
        return lines + [f"{p:>52}: {v:+.4f}" for p, v in pairs]

    def clusters(self, n_clusters: int) -> Tensor:
        """A cluster id (1..n_clusters) per vector, cutting the dendrogram (``fcluster(maxclust)``)."""
        from scipy.cluster.hierarchy import fcluster

        if "linkage" not in self.extras:
            raise OptionError("clusters() needs the dendrogram: build the matrix with cluster=True")
        n = int(self.extras["linkage"].shape[0]) + 1
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or not 1 <= n_clusters <= n:
            raise SelectionError(f"clusters: n_clusters={n_clusters!r} with {n} vectors; choose an int in [1, {n}] "
                                 "(scipy's fcluster would silently give one cluster per vector for 0)")
        ids = fcluster(self.extras["linkage"].numpy(), t=n_clusters, criterion="maxclust")
        return torch.as_tensor(ids, dtype=torch.long)

    def figure(self, *, title: str | None = None, **kwargs: Any) -> Any:
        """A labelled diverging heatmap of the cosines in the clustered order."""
        from tl_interp.viz.figures import heatmap

        labels = list(self.ordered_labels)
        name = self.provenance.settings.get("vectors", "vectors")
        return heatmap(self.ordered, x_labels=labels, y_labels=labels, x_title=name, y_title=name,
                       title=title or f"cosine similarity of {name} ({self.provenance.model_id})",
                       colorbar="cosine", **kwargs)


@checked
def cosine_matrix(W: Tensor | Vectors, *, cluster: bool = True, method: str = "average",
                  labels: Sequence[str] | None = None) -> CosineMatrix:
    """Pairwise cosine similarities of the rows of ``W``, with a hierarchical-clustering order.

    Args:
        W: ``(n, d)`` vectors as rows (a tensor, or ``Vectors`` from ``mlp_out(model, layer)`` etc.).
        cluster: also compute the dendrogram order (scipy ``linkage`` on 1 - cos).
        method: the linkage: ``"average"`` (default), ``"complete"``, ``"single"`` or ``"weighted"``.
        labels: a label per row (defaults to the ``Vectors``' labels or ``"0", "1", ...``).

    Returns:
        ``CosineMatrix`` with ``.matrix`` ``(n, n)`` float64 and ``.order`` ``(n,)``.

    Example:
        >>> import torch
        >>> W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
        >>> cm = cosine_matrix(W)
        >>> cm.ordered_labels
        ('0', '2', '1', '3')
    """
    if method not in _METHODS:
        raise OptionError(f"method={method!r}; choose one of {', '.join(_METHODS)}")
    v = as_vectors(W, labels=labels)
    if len(v) < 2:
        raise InputError(f"{v.name}: a cosine matrix needs at least 2 vectors, got {len(v)}")
    unit = _unit_rows(v)
    matrix = (unit @ unit.T).clamp(-1.0, 1.0)
    extras: dict[str, Tensor] = {}
    if cluster:
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        distance = (1.0 - matrix).numpy().copy()
        np.fill_diagonal(distance, 0.0)
        tree = linkage(squareform(np.maximum(distance, 0.0), checks=False), method=method)
        extras = {"order": torch.as_tensor(leaves_list(tree), dtype=torch.long),
                  "linkage": torch.as_tensor(tree, dtype=torch.float64)}
    return CosineMatrix(matrix, ("row", "column"), "cosine", v.provenance(linkage=method if cluster else None),
                        {"row": v.labels, "column": v.labels}, extras)


@dataclass(frozen=True)
class Cluster:
    """The vectors whose cosine with an exemplar passes a threshold, most aligned first."""

    exemplar: str
    indices: Tensor
    labels: tuple[str, ...]
    cosines: Tensor
    threshold: float

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"label": self.labels, "index": self.indices.tolist(), "cosine": self.cosines.tolist()})


@checked
def cluster_around(W: Tensor | Vectors, exemplar: int | str, *, threshold: float = 0.5, absolute: bool = True,
                   labels: Sequence[str] | None = None) -> Cluster:
    """The vectors aligned with ``exemplar`` (itself included): cosine above ``threshold``.

    Args:
        W: vectors as rows.
        exemplar: its row index or label (e.g. ``"L2N1"``).
        threshold: minimum cosine (of its absolute value with ``absolute=True``: anti-aligned
            vectors count too, as they write the same direction with the opposite sign).
        absolute: compare ``|cos|`` rather than ``cos``.
        labels: a label per row.

    Returns:
        ``Cluster``, sorted by cosine (descending).

    Example:
        >>> import torch
        >>> W = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.05]])
        >>> cluster_around(W, 0, threshold=0.8).labels
        ('0', '1', '3')
    """
    if not 0 <= threshold <= 1:
        raise OptionError(f"threshold={threshold} is a cosine bound in [0, 1]")
    v = as_vectors(W, labels=labels)
    row = v.index([exemplar])[0]
    unit = _unit_rows(v)
    cos = (unit @ unit[row]).clamp(-1.0, 1.0)
    keep = ((cos.abs() if absolute else cos) >= threshold).nonzero().flatten()
    order = keep[cos[keep].argsort(descending=True)]
    return Cluster(v.labels[row], order, tuple(v.labels[i] for i in order.tolist()), cos[order], threshold)
