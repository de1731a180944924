"""The shared shape of every editing hook: select entries, compute an edit, write it back.

Each factory in ``tl_interp.hooks`` supplies only its edit (``act -> edited``) and its
binding-time checks; this module turns that into an ``Intervention`` whose hook function
applies the edit under the selection's mask and is named after the factory (``_zero_ablate``)
so reprs and tracebacks read well.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from tl_interp._types import NameFilter
from tl_interp.errors import InputError, ShapeError
from tl_interp.hooks._select import Selection, apply_masked
from tl_interp.intervention import Intervention
from tl_interp.sites import SiteInfo, describe_where

__all__ = ["edit_intervention", "Edit", "check_trailing", "check_broadcast", "check_finite", "check_fits_dtype",
           "check_no_overflow"]

# (activation, its axes) -> the edited activation, broadcastable to the activation's shape.
Edit = Callable[[Tensor, tuple[str, ...]], Tensor]
# (hook name, site layout, error context) -> Edit; raises on anything it can check statically.
EditBuilder = Callable[[str, SiteInfo, str], Edit]


def edit_intervention(op: str, verb: str, where: NameFilter, selection: Selection,
                      make_edit: EditBuilder) -> Intervention:
    """An Intervention applying ``make_edit``'s edit to the ``selection`` at ``where``.

    Args:
        op: the factory's name (``"zero_ablate"``), used in errors and the hook's ``__name__``.
        verb: what the edit does, for ``print(intervention)`` (``"zero-ablate"``).
        where: hook name, names, or name filter.
        selection: which entries to edit.
        make_edit: builds the edit for one resolved hook name.
    """
    selected = str(selection)
    description = f"{verb}{f' ({selected})' if selected else ''} at {describe_where(where)}"

    def build(name: str, info: SiteInfo):
        context = f"{op} at {name}"
        selection.check(context, info)
        edit = make_edit(name, info, context)

        def hook_fn(act: Tensor, hook: object) -> Tensor:
            axes = info.axes_for(act.ndim)
            mask = selection.mask(act, axes, context)
            return check_no_overflow(act, apply_masked(act, edit(act, axes), mask), context)

        hook_fn.__name__ = hook_fn.__qualname__ = f"_{op}"
        return hook_fn

    build.__name__ = op
    return Intervention.single(where, build=build, description=description)


def check_trailing(context: str, info: SiteInfo, shape: tuple[int, ...], what: str) -> None:
    """Binding-time check that a tensor's trailing dims fit the site's config-fixed sizes."""
    if info.axes is None or not shape:
        return
    for size, axis in zip(reversed(shape), reversed(info.axes)):
        expected = info.sizes.get(axis)
        if expected is not None and size != 1 and size != expected:
            raise ShapeError(
                f"{context}: {what} has {size} entries, the site has {axis}={expected} "
                f"({what} shape {tuple(shape)}; site axes {info.axes})"
            )


def check_broadcast(context: str, tensor: Tensor, act: Tensor, what: str) -> None:
    """Run-time check that ``tensor`` broadcasts to the activation's shape."""
    if tensor.ndim > act.ndim or any(t not in (1, a) for t, a in zip(reversed(tensor.shape), reversed(act.shape))):
        raise ShapeError(
            f"{context}: {what} has shape {tuple(tensor.shape)}, which does not broadcast to the "
            f"activation's shape {tuple(act.shape)}"
        )


def all_finite(x: Tensor) -> bool:
    """Whether every entry is finite. A finite sum proves it in one reduction (any NaN or inf
    makes the sum non-finite), ~30x cheaper than ``isfinite(x).all()`` on CPU; a sum that
    overflows only sends the check to the entry-by-entry test."""
    if not x.dtype.is_floating_point and not x.dtype.is_complex:
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def check_finite(value: Tensor | float, what: str, context: str) -> None:
    """Refuse NaN and infinite numbers: they would turn every downstream value into NaN."""
    finite = all_finite(value) if isinstance(value, Tensor) else bool(torch.isfinite(torch.tensor(float(value))))
    if not finite:
        raise InputError(f"{context}: {what} has non-finite entries (NaN or inf); give finite numbers")


def check_no_overflow(act: Tensor, edited: Tensor, context: str) -> Tensor:
    """``edited``, unless the edit turned finite values into inf/NaN (a value past the dtype's
    range, e.g. a large scale in float16): that would poison every later value silently."""
    if edited.dtype.is_floating_point and not all_finite(edited) and all_finite(act):
        largest = torch.finfo(edited.dtype).max
        raise InputError(f"{context}: the edit wrote non-finite values (inf or NaN) into a {edited.dtype} activation "
                         f"(its largest value is {largest:.3g}); use a smaller scale or value, or a float32 model")
    return edited


def check_fits_dtype(magnitude: float, info: SiteInfo, what: str, context: str) -> None:
    """Refuse an edit whose values overflow the model's dtype (e.g. a large vector in fp16)."""
    dtype = info.dtype
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point and magnitude > torch.finfo(dtype).max:
        raise InputError(f"{context}: {what} reaches {magnitude:.3g}, beyond the largest {dtype} value "
                         f"({torch.finfo(dtype).max:.3g}); it would become inf. Use a smaller scale or a float32 model")
