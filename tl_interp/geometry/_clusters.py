"""Cluster units (e.g. hidden neurons) by the subspace their input weights read (seed 001).

Each unit's input weight vector ``w`` (a row of ``W``) is split over named, mutually orthogonal
subspaces (bases ``(k, d)``, orthonormalised here): its share in subspace s is
``||Q_s w||^2 / ||w||^2``, and what lies in none of them is the ``rest``. A unit joins the
subspace holding the largest share when that share is at least ``min_share``; otherwise it
is ``mixed``. In Chughtai, Chan & Nanda 2023 ("A Toy Model of Universality") the neurons of a
group-composition network cluster this way by irreducible representation. The seed used a
threshold on raw squared coefficients; a share is scale-free, so one threshold fits every unit.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, ShapeError
from tl_interp.hooks import orthonormal_basis
from tl_interp.stats._inputs import check_finite

__all__ = ["SubspaceClusters", "cluster_by_subspace"]

MIXED = -1


@dataclass(frozen=True)
class SubspaceClusters:
    """Each unit's share of squared weight norm per subspace, and the cluster it joins.

    Attributes:
        names: the subspaces, in the order of ``shares``' columns.
        shares: ``(n_units, n_subspaces)`` shares in [0, 1]; each row sums to at most 1.
        rest: ``(n_units,)`` share outside every subspace.
        norms: ``(n_units,)`` the weight norms.
        assignment: ``(n_units,)`` index into ``names``, or -1 (``mixed``).
        min_share: the threshold used.
    """

    names: tuple[str, ...]
    shares: Tensor
    rest: Tensor
    norms: Tensor
    assignment: Tensor
    min_share: float

    def members(self, name: str) -> Tensor:
        """Indices of the units in cluster ``name`` (``"mixed"`` for the unassigned)."""
        if name != "mixed" and name not in self.names:
            raise OptionError(f"SubspaceClusters.members: no cluster {name!r}; clusters: {self.names + ('mixed',)}")
        code = MIXED if name == "mixed" else self.names.index(name)
        return (self.assignment == code).nonzero().flatten()

    def counts(self) -> dict[str, int]:
        """Units per cluster, ``mixed`` last."""
        return {n: int(self.members(n).numel()) for n in self.names + ("mixed",)}

    def summary(self) -> str:
        """One line per cluster: size and the mean share of its members in their subspace."""
        lines = []
        for i, name in enumerate(self.names + ("mixed",)):
            idx = self.members(name)
            if name == "mixed":
                lines.append(f"{name:>14}: {idx.numel()} units (largest share < {self.min_share})")
            elif idx.numel():
                lines.append(f"{name:>14}: {idx.numel()} units, mean share {float(self.shares[idx, i].mean()):.3f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        body = ", ".join(f"{k} {v}" for k, v in self.counts().items() if v)
        return f"SubspaceClusters({self.shares.shape[0]} units, min_share {self.min_share}: {body})"


@checked
def cluster_by_subspace(W: Float[Tensor, "n_units d"], bases: Mapping[str, Tensor], *,
                        min_share: float = 0.5) -> SubspaceClusters:
    """Assign each unit (a row of ``W``: its input weights) to the subspace holding most of its norm.

    Args:
        W: ``(n_units, d)`` what each unit reads, e.g. a hidden layer's input weights transposed.
        bases: name -> rows ``(k, d)`` spanning a subspace (any scale); the subspaces must be
            mutually orthogonal (e.g. the isotypic components of a group's representations).
        min_share: a unit joins its largest subspace only if that holds at least this share
            of its squared norm, in (0, 1]; otherwise it is ``mixed``.

    Returns:
        ``SubspaceClusters``: ``.shares``, ``.assignment``, ``.members(name)``, ``.counts()``.

    Raises:
        OptionError: ``min_share`` outside (0, 1], or overlapping subspaces.
        InputError: a unit with all-zero weights (it reads nothing).

    Example:
        >>> import torch
        >>> W = torch.tensor([[3.0, 0.1, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
        >>> c = cluster_by_subspace(W, {"first": torch.tensor([[1.0, 0, 0]]), "others": torch.tensor([[0, 1.0, 0], [0, 0, 1.0]])})
        >>> c.assignment.tolist(), c.counts()
        ([0, 1, -1], {'first': 1, 'others': 1, 'mixed': 1})
    """
    if not 0 < min_share <= 1:
        raise OptionError(f"cluster_by_subspace: min_share={min_share} must be a share of the norm in (0, 1]")
    if not bases:
        raise OptionError("cluster_by_subspace: bases is empty; give name -> (k, d) rows spanning each subspace")
    w = check_finite(W.detach().double().cpu(), "cluster_by_subspace: W", "remove those units first")
    names = tuple(bases)
    qs = []
    for name in names:
        b = bases[name]
        if b.ndim != 2 or b.shape[1] != w.shape[1]:
            raise ShapeError(f"cluster_by_subspace: bases[{name!r}] must be (k, {w.shape[1]}) rows in the units' "
                             f"input space, got shape {tuple(b.shape)}")
        qs.append(orthonormal_basis(b.detach().cpu()).double())
    for i in range(len(qs)):
        for j in range(i + 1, len(qs)):
            overlap = float((qs[i] @ qs[j].T).abs().max())
            if overlap > 1e-6:
                raise OptionError(f"cluster_by_subspace: subspaces {names[i]!r} and {names[j]!r} overlap (largest "
                                  f"cosine between their directions {overlap:.3g}); shares of overlapping subspaces "
                                  "count a direction twice. Orthogonalise them first")
    norms = w.norm(dim=1)
    zero = (norms == 0).nonzero().flatten()
    if zero.numel():
        raise InputError(f"cluster_by_subspace: units {zero[:10].tolist()} have all-zero weights and read no "
                         "subspace; drop them first")
    u = w / norms[:, None]
    shares = torch.stack([((u @ q.T) ** 2).sum(1) for q in qs], dim=1)
    top, index = shares.max(1)
    assignment = torch.where(top >= min_share, index, torch.full_like(index, MIXED))
    return SubspaceClusters(names=names, shares=shares, rest=(1 - shares.sum(1)).clamp(min=0), norms=norms,
                            assignment=assignment, min_share=min_share)
