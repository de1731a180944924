"""Steering hooks: add a vector to, or rescale, activations.

Activation addition (Turner et al. 2023, "Activation Addition"; Rimsky et al. 2024,
"Steering Llama 2 via Contrastive Activation Addition") adds ``scale * vector`` to the
selected positions of a site, usually the residual stream.
"""

from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp._types import IndexSelection, NameFilter, PositionSelection
from tl_interp.hooks._edit import check_broadcast, check_finite, check_fits_dtype, check_trailing, edit_intervention
from tl_interp.hooks._select import Selection
from tl_interp.intervention import Intervention
from tl_interp.sites import describe_where

__all__ = ["add", "scale"]


@checked
def add(where: NameFilter, vector: Float[Tensor, "*feature"], *, scale: float = 1.0,
        positions: PositionSelection = None, heads: IndexSelection = None,
        neurons: IndexSelection = None, rows: IndexSelection = None) -> Intervention:
    """Add ``scale * vector`` to the selected activations.

    Args:
        where: hook name, names, or name predicate.
        vector: broadcast over the activation's leading axes: ``(d_model,)`` on the residual
            stream, ``(d_head,)`` on a head site (every selected head), ``(head_index, d_head)``.
        scale: the multiplier; 0 leaves the activation unchanged.
        positions, heads, neurons, rows: where to add it.

    Returns:
        An Intervention.

    Example:
        >>> import torch
        >>> from tl_interp import site
        >>> print(add(site("resid_post", 2), torch.ones(576), scale=4.0, positions=-1))
        Intervention (1 hook):
          1. add 4 x vector (norm 24) (pos -1) at blocks.2.hook_resid_post
    """
    selection = Selection(positions, heads, neurons, rows)
    vector = vector.detach()
    check_finite(vector, "the vector", f"add at {describe_where(where)}")
    check_finite(scale, "scale", f"add at {describe_where(where)}")
    norm = float(vector.norm())

    def make_edit(name, info, context):
        check_trailing(context, info, tuple(vector.shape), "the vector")
        check_fits_dtype(abs(scale) * float(vector.abs().max()) if vector.numel() else 0.0, info,
                         "scale x vector", context)

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            check_broadcast(context, vector, act, "the vector")
            return act + scale * vector.to(act.device, act.dtype)

        return edit

    return edit_intervention("add", f"add {scale:g} x vector (norm {norm:.3g})", where, selection, make_edit)


@renamed(factor="scale")
@checked
def scale(where: NameFilter, scale: float | Float[Tensor, "*feature"], *, positions: PositionSelection = None,
          heads: IndexSelection = None, neurons: IndexSelection = None,
          rows: IndexSelection = None) -> Intervention:
    """Multiply the selected activations by ``scale`` (a number or a broadcastable tensor).

    Example:
        >>> from tl_interp import site
        >>> print(scale(site("z", 0), 0.0, heads=1))
        Intervention (1 hook):
          1. scale by 0 (heads 1) at blocks.0.attn.hook_z
    """
    factor = scale
    selection = Selection(positions, heads, neurons, rows)
    check_finite(factor, "the scale", f"scale at {describe_where(where)}")
    is_tensor = isinstance(factor, Tensor)
    label = f"scale by tensor {tuple(factor.shape)}" if is_tensor else f"scale by {factor:g}"

    def make_edit(name, info, context):
        if is_tensor:
            check_trailing(context, info, tuple(factor.shape), "the factor")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            if is_tensor:
                check_broadcast(context, factor, act, "the factor")
                return act * factor.to(act.device, act.dtype)
            return act * factor

        return edit

    return edit_intervention("scale", label, where, selection, make_edit)


