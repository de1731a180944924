"""Subspace hooks: project activations onto or off a subspace, or set one component.

For an orthonormal basis Q (k x d) of a subspace, ``project_onto`` keeps x Q^T Q and
``project_out`` keeps x - x Q^T Q (directional ablation, Arditi et al. 2024 "Refusal is
mediated by a single direction"); ``set_component`` moves x along a unit direction u so
that x . u equals a chosen value. Bases are orthonormalised here (SVD in float64, keeping
the span), so the projections are exact whatever basis the caller passes.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp._types import IndexSelection, NameFilter, PositionSelection
from tl_interp.errors import ShapeError
from tl_interp.hooks._edit import check_finite, check_trailing, edit_intervention
from tl_interp.hooks._select import Selection
from tl_interp.intervention import Intervention
from tl_interp.sites import describe_where

__all__ = ["orthonormal_basis", "project_out", "project_onto", "set_component"]


@checked
def orthonormal_basis(basis: Float[Tensor, "d"] | Float[Tensor, "k d"], *,
                      rtol: float = 1e-6) -> Float[Tensor, "rank d"]:
    """Orthonormal rows spanning the same subspace as ``basis``'s rows (float64).

    Args:
        basis: one direction ``(d,)`` or ``k`` directions ``(k, d)``, any scale, not
            necessarily orthogonal.
        rtol: singular values below ``rtol * largest`` count as zero (dependent directions).

    Returns:
        ``(rank, d)`` orthonormal rows, ``rank <= k``.

    Example:
        >>> import torch
        >>> q = orthonormal_basis(torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
        >>> torch.allclose(q @ q.T, torch.eye(2, dtype=q.dtype))
        True
    """
    rows = basis.detach().to(torch.float64).reshape(-1, basis.shape[-1])
    check_finite(rows, "the basis", "orthonormal_basis")
    _, singular, vh = torch.linalg.svd(rows, full_matrices=False)
    if singular.numel() == 0 or singular[0] == 0:
        raise ShapeError("the basis is all zeros; it spans no subspace")
    rank = int((singular > rtol * singular[0]).sum())
    return vh[:rank]


@checked
def project_out(where: NameFilter, basis: Float[Tensor, "d"] | Float[Tensor, "k d"], *,
                positions: PositionSelection = None, heads: IndexSelection = None,
                rows: IndexSelection = None) -> Intervention:
    """Remove the component of the selected activations in the span of ``basis``.

    Acts on the last axis (``d_model`` on the residual stream, ``d_head`` on head sites).

    Args:
        where: hook name, names, or name predicate.
        basis: a direction ``(d,)`` or directions ``(k, d)``; orthonormalised internally.
        positions, heads, rows: which entries to project.

    Returns:
        An Intervention.

    Example:
        >>> import torch
        >>> print(project_out("blocks.0.hook_resid_post", torch.randn(2, 16)))
        Intervention (1 hook):
          1. project out a 2-dim subspace at blocks.0.hook_resid_post
    """
    q = orthonormal_basis(basis)
    return _project("project_out", f"project out a {q.shape[0]}-dim subspace", where, q, keep=False,
                    selection=Selection(positions, heads, None, rows))


@checked
def project_onto(where: NameFilter, basis: Float[Tensor, "d"] | Float[Tensor, "k d"], *,
                 positions: PositionSelection = None, heads: IndexSelection = None,
                 rows: IndexSelection = None) -> Intervention:
    """Keep only the component of the selected activations in the span of ``basis``.

    Example:
        >>> import torch
        >>> print(project_onto("blocks.0.hook_resid_post", torch.randn(16), positions=-1))
        Intervention (1 hook):
          1. project onto a 1-dim subspace (pos -1) at blocks.0.hook_resid_post
    """
    q = orthonormal_basis(basis)
    return _project("project_onto", f"project onto a {q.shape[0]}-dim subspace", where, q, keep=True,
                    selection=Selection(positions, heads, None, rows))


def _project(op: str, verb: str, where: NameFilter, q: Tensor, *, keep: bool,
             selection: Selection) -> Intervention:
    def make_edit(name, info, context):
        check_trailing(context, info, (q.shape[1],), "the basis")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            _check_width(context, q.shape[1], act)
            basis = q.to(act.device, act.dtype)
            inside = (act @ basis.T) @ basis
            return inside if keep else act - inside

        return edit

    return edit_intervention(op, verb, where, selection, make_edit)


@renamed(direction="vector")
@checked
def set_component(where: NameFilter, vector: Float[Tensor, "d"], value: float | Float[Tensor, "*batch_pos"], *,
                  positions: PositionSelection = None, heads: IndexSelection = None,
                  rows: IndexSelection = None) -> Intervention:
    """Shift the selected activations along ``vector`` so their component equals ``value``.

    With u the unit direction, x becomes x + (value - x.u) u: everything orthogonal to u
    is untouched. ``value`` is a number or a tensor broadcastable to the activation
    without its last axis (e.g. one value per row, ``(batch, 1)``).

    Example:
        >>> import torch
        >>> print(set_component("blocks.1.hook_resid_pre", torch.randn(16), 0.0))
        Intervention (1 hook):
          1. set component along direction to 0 at blocks.1.hook_resid_pre
    """
    check_finite(vector.detach(), "the vector", f"set_component at {describe_where(where)}")
    norm = vector.detach().to(torch.float64).norm()
    if norm == 0:
        raise ShapeError(f"set_component at {describe_where(where)}: the vector is the zero vector; give a non-zero one")
    u = vector.detach().to(torch.float64) / norm  # keep the sign: "along" u, not -u
    check_finite(value, "the value", f"set_component at {describe_where(where)}")
    label = f"tensor {tuple(value.shape)}" if isinstance(value, Tensor) else f"{value:g}"
    selection = Selection(positions, heads, None, rows)

    def make_edit(name, info, context):
        check_trailing(context, info, (u.shape[0],), "the direction")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            _check_width(context, u.shape[0], act)
            unit = u.to(act.device, act.dtype)
            target = value.to(act.device, act.dtype) if isinstance(value, Tensor) else value
            return act + (target - act @ unit).unsqueeze(-1) * unit

        return edit

    return edit_intervention("set_component", f"set component along direction to {label}", where,
                             selection, make_edit)


def _check_width(context: str, width: int, act: Tensor) -> None:
    if act.shape[-1] != width:
        raise ShapeError(f"{context}: the basis has {width} entries, the activation's last axis has "
                         f"{act.shape[-1]}")
