"""Activation patching: write activations from another run into this one.

The source is a tensor for one site, or any mapping from hook names to tensors (a
``tl_interp`` cache, TransformerLens's ``ActivationCache``, a dict) so one ``patch`` over a
name filter patches every matching site from the same source run (Meng et al. 2022;
Heimersheim & Nanda 2024, "How to use and interpret activation patching").
"""

from collections.abc import Mapping

from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens import ActivationCache

from tl_interp._checks import checked, renamed
from tl_interp._types import IndexSelection, NameFilter, PositionSelection
from tl_interp.errors import HookNameError, ShapeError
from tl_interp.hooks._edit import check_finite, check_trailing, edit_intervention
from tl_interp.hooks._select import Selection, fit_to_activation
from tl_interp.intervention import Intervention

__all__ = ["patch"]

Source = Float[Tensor, "..."] | Mapping[str, Tensor] | ActivationCache


def _source_for(source: Source, name: str, context: str) -> Tensor:
    # Not detached: a source that carries a graph (e.g. points on an integrated-gradients
    # path) must pass gradients through the patch.
    if isinstance(source, Tensor):
        return source
    try:
        return source[name]
    except KeyError:
        raise HookNameError(f"{context}: the source has no activation for {name!r}; cache it "
                            "first (hooks.cache(...) on the source run)") from None


@renamed(mask="entries")
@checked
def patch(where: NameFilter, source: Source, *, positions: PositionSelection = None,
          heads: IndexSelection = None, neurons: IndexSelection = None,
          rows: IndexSelection = None, entries: Bool[Tensor, "..."] | None = None) -> Intervention:
    """Overwrite the selected activations with the source run's activations.

    Args:
        where: hook name, names, or name predicate.
        source: a tensor shaped like the activation (or like one row, broadcast over the
            batch), or a mapping from hook names to such tensors.
        positions, heads, neurons, rows: which entries to overwrite.
        entries: a boolean tensor broadcastable to the activation, ANDed with the selections
            above (e.g. a different head in each row, for many patches in one forward pass).

    Returns:
        An Intervention.

    Example:
        >>> import torch
        >>> from tl_interp import site
        >>> clean = {site("resid_pre", 1): torch.zeros(2, 4, 8)}
        >>> print(patch(site("resid_pre", 1), clean, positions=[0, 2]))
        Intervention (1 hook):
          1. patch from source (pos [0, 2]) at blocks.1.hook_resid_pre
    """
    selection = Selection(positions, heads, neurons, rows, entries)

    def make_edit(name, info, context):
        src = _source_for(source, name, context)
        check_trailing(context, info, tuple(src.shape), "the source")
        check_finite(src.detach(), "the source activation", context)

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            fitted = fit_to_activation(src, act, axes, "the source", context)
            if fitted.shape != act.shape and fitted.shape != act.shape[1:] and fitted.shape != (1, *act.shape[1:]):
                raise ShapeError(f"{context}: the source has shape {tuple(src.shape)}, the activation "
                                 f"has {tuple(act.shape)}; patch between runs of the same token length "
                                 "and batch size (or give one row to broadcast)")
            return fitted.to(act.dtype)

        return edit

    return edit_intervention("patch", "patch from source", where, selection, make_edit)
