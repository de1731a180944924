"""Ablation hooks: replace activations with zero, a reference mean, or a resampled reference.

Zero ablation removes a component outright; mean ablation replaces it with its average over
a reference distribution (Wang et al. 2022, "Interpretability in the Wild"); resample
ablation replaces it with its value on another input drawn from a reference set
(Chan et al. 2022, "Causal scrubbing"), seeded so a study is reproducible.
"""

import torch
from beartype import beartype
from jaxtyping import Float, jaxtyped
from torch import Tensor

from tl_interp._types import IndexSelection, NameFilter, PositionSelection
from tl_interp.errors import ShapeError
from tl_interp.hooks._edit import check_broadcast, check_trailing, edit_intervention
from tl_interp.hooks._select import Selection
from tl_interp.intervention import Intervention

__all__ = ["zero_ablate", "mean_ablate", "resample_ablate"]


@jaxtyped(typechecker=beartype)
def zero_ablate(where: NameFilter, *, positions: PositionSelection = None, heads: IndexSelection = None,
                neurons: IndexSelection = None, rows: IndexSelection = None) -> Intervention:
    """Set the selected activations to zero.

    Args:
        where: hook name (``site("z", 1)``), list of names, or name predicate.
        positions, heads, neurons, rows: which entries to zero (default: all).

    Returns:
        An Intervention.

    Example:
        >>> from tl_interp import site
        >>> print(zero_ablate(site("z", 1), heads=[3]))
        Intervention (1 hook):
          1. zero-ablate (heads [3]) at blocks.1.attn.hook_z
    """
    selection = Selection(positions, heads, neurons, rows)

    def make_edit(name, info, context):
        return lambda act, axes: torch.zeros((), dtype=act.dtype, device=act.device)

    return edit_intervention("zero_ablate", "zero-ablate", where, selection, make_edit)


@jaxtyped(typechecker=beartype)
def mean_ablate(where: NameFilter, mean: Float[Tensor, "*site_shape"], *, positions: PositionSelection = None,
                heads: IndexSelection = None, neurons: IndexSelection = None,
                rows: IndexSelection = None) -> Intervention:
    """Replace the selected activations with a reference mean.

    Args:
        where: hook name, names, or name predicate.
        mean: the reference mean, broadcastable to the activation without its batch axis:
            per feature (``(d_model,)``, ``(head_index, d_head)``) or per position
            (``(pos, d_model)``). ``tl_interp.hooks.mean_activation`` computes it, masking pads.
        positions, heads, neurons, rows: which entries to replace.

    Returns:
        An Intervention.

    Example:
        >>> import torch
        >>> from tl_interp import site
        >>> print(mean_ablate(site("resid_pre", 2), torch.zeros(576), positions=-1))
        Intervention (1 hook):
          1. mean-ablate (pos -1) at blocks.2.hook_resid_pre
    """
    selection = Selection(positions, heads, neurons, rows)
    mean = mean.detach()

    def make_edit(name, info, context):
        check_trailing(context, info, tuple(mean.shape), "the mean")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            check_broadcast(context, mean, act[0], "the mean")
            return mean.to(act.device, act.dtype)

        return edit

    return edit_intervention("mean_ablate", "mean-ablate", where, selection, make_edit)


@jaxtyped(typechecker=beartype)
def resample_ablate(where: NameFilter, reference: Float[Tensor, "n_reference *site_shape"], *, seed: int = 0,
                    positions: PositionSelection = None, heads: IndexSelection = None,
                    neurons: IndexSelection = None, rows: IndexSelection = None) -> Intervention:
    """Replace each row's selected activations with those of a randomly drawn reference row.

    Draws are made with a generator seeded by ``seed`` at every forward pass, so the same
    inputs are ablated identically on every run, and every site of a filter uses the same
    draw for a row (a whole reference example replaces it).

    Args:
        where: hook name, names, or name predicate.
        reference: activations cached on a reference set, ``(n_reference, *activation[1:])``.
        seed: the random seed for the draws (record it; results carry it in provenance).
        positions, heads, neurons, rows: which entries to replace.

    Returns:
        An Intervention.

    Example:
        >>> import torch
        >>> print(resample_ablate("blocks.0.hook_mlp_out", torch.randn(8, 5, 16), seed=3))
        Intervention (1 hook):
          1. resample-ablate (seed 3) at blocks.0.hook_mlp_out
    """
    if reference.shape[0] == 0:
        raise ShapeError(f"resample_ablate at {where}: the reference set is empty")
    selection = Selection(positions, heads, neurons, rows)
    reference = reference.detach()

    def make_edit(name, info, context):
        check_trailing(context, info, tuple(reference.shape[1:]), "the reference")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            if reference.shape[1:] != act.shape[1:]:
                raise ShapeError(f"{context}: reference rows have shape {tuple(reference.shape[1:])}, "
                                 f"the activation's rows have {tuple(act.shape[1:])}; cache the reference "
                                 "set with the same sequence length")
            generator = torch.Generator().manual_seed(seed)
            draw = torch.randint(reference.shape[0], (act.shape[0],), generator=generator)
            return reference[draw].to(act.device, act.dtype)

        return edit

    return edit_intervention("resample_ablate", f"resample-ablate (seed {seed})", where, selection, make_edit)
