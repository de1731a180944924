"""Ablation hooks: replace activations with zero, a reference mean, or a resampled reference.

Zero ablation removes a component outright; mean ablation replaces it with its average over
a reference distribution (Wang et al. 2022, "Interpretability in the Wild"); resample
ablation replaces it with its value on another input drawn from a reference set
(Chan et al. 2022, "Causal scrubbing"), seeded so a study is reproducible.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked
from tl_interp._types import IndexSelection, NameFilter, PositionSelection
from tl_interp.errors import InputError, ShapeError
from tl_interp.hooks._edit import check_broadcast, check_finite, check_trailing, edit_intervention
from tl_interp.hooks._select import Selection, fit_to_activation
from tl_interp.intervention import Intervention
from tl_interp.sites import describe_where

__all__ = ["zero_ablate", "mean_ablate", "resample_ablate", "resample_draws"]


@checked
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


@checked
def mean_ablate(where: NameFilter, mean: Float[Tensor, "*site_shape"], *, positions: PositionSelection = None,
                heads: IndexSelection = None, neurons: IndexSelection = None,
                rows: IndexSelection = None) -> Intervention:
    """Replace the selected activations with a reference mean.

    Args:
        where: hook name, names, or name predicate.
        mean: the reference mean, broadcastable to the activation without its batch axis:
            per feature (``(d_model,)``, ``(head_index, d_head)``) or per position
            (``(pos, d_model)``). ``ti.collect(model, prompts, where, positions="all",
            reduce="mean")`` gives each prompt's mean over its real tokens (padding
            excluded); average its rows for a per-feature mean.
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
    check_finite(mean, "the mean", f"mean_ablate at {describe_where(where)}")

    def make_edit(name, info, context):
        check_trailing(context, info, tuple(mean.shape), "the mean")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            fitted = fit_to_activation(mean, act, axes, "the mean", context)
            check_broadcast(context, fitted, act[0], "the mean")
            return fitted.to(act.dtype)

        return edit

    return edit_intervention("mean_ablate", "mean-ablate", where, selection, make_edit)


@checked
def resample_ablate(where: NameFilter, reference: Float[Tensor, "n_reference *site_shape"], *, seed: int = 0,
                    exclude_self: bool | None = None, positions: PositionSelection = None,
                    heads: IndexSelection = None, neurons: IndexSelection = None,
                    rows: IndexSelection = None) -> Intervention:
    """Replace each row's selected activations with those of a randomly drawn reference row.

    Draws are made with a generator seeded by ``seed`` at every forward pass, so the same
    inputs are ablated identically on every run, and every site of a filter uses the same
    draw for a row (a whole reference example replaces it). When the reference set is the
    batch's own activations (``exclude_self``), row i is never replaced by itself -- with
    few prompts, self-draws would make effects shrink towards zero.

    Args:
        where: hook name, names, or name predicate.
        reference: activations cached on a reference set, ``(n_reference, *activation[1:])``.
        seed: the random seed for the draws (record it; results carry it in provenance).
        exclude_self: draw row i from the other reference rows only. Default (None): when the
            reference has exactly as many rows as the batch (the usual "resample from the same
            prompts"); pass False to allow self-draws, True to require them excluded.
        positions, heads, neurons, rows: which entries to replace.

    Returns:
        An Intervention.

    Example:
        >>> import torch
        >>> print(resample_ablate("blocks.0.hook_mlp_out", torch.randn(8, 5, 16), seed=3))
        Intervention (1 hook):
          1. resample-ablate (seed 3) at blocks.0.hook_mlp_out
    """
    context0 = f"resample_ablate at {describe_where(where)}"
    if reference.shape[0] == 0:
        raise InputError(f"{context0}: the reference set is empty")
    check_finite(reference, "the reference", context0)
    selection = Selection(positions, heads, neurons, rows)
    reference = reference.detach()

    def make_edit(name, info, context):
        check_trailing(context, info, tuple(reference.shape[1:]), "the reference")

        def edit(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            ref = fit_to_activation(reference, act, axes, "the reference", context)
            if ref.shape[1:] != act.shape[1:]:
                raise ShapeError(f"{context}: reference rows have shape {tuple(reference.shape[1:])}, "
                                 f"the activation's rows have {tuple(act.shape[1:])}; cache the reference "
                                 "set with the same sequence length")
            draw = resample_draws(ref.shape[0], act.shape[0], seed, exclude_self, context)
            return ref[draw.to(ref.device)].to(act.dtype)

        return edit

    return edit_intervention("resample_ablate", f"resample-ablate (seed {seed})", where, selection, make_edit)


def resample_draws(n_reference: int, batch: int, seed: int, exclude_self: bool | None, context: str) -> Tensor:
    """The reference row each batch row takes: uniform, seeded; never its own row when
    ``exclude_self`` (default: when the reference has one row per batch row).

    Example:
        >>> bool((resample_draws(4, 4, seed=0, exclude_self=None, context="x") != torch.arange(4)).all())
        True
    """
    exclude = (n_reference == batch) if exclude_self is None else exclude_self
    generator = torch.Generator().manual_seed(seed)
    if not exclude:
        return torch.randint(n_reference, (batch,), generator=generator)
    if n_reference != batch:
        raise ShapeError(f"{context}: exclude_self pairs reference row i with batch row i, but the reference has "
                         f"{n_reference} rows and the batch {batch}")
    if n_reference < 2:
        raise InputError(f"{context}: resampling from the batch's own prompts needs at least 2 prompts, so each can "
                         "draw another; give more prompts or a separate reference set")
    shift = 1 + torch.randint(n_reference - 1, (batch,), generator=generator)
    return (torch.arange(batch) + shift) % n_reference
