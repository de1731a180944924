"""Splicing a sparse autoencoder into a model: encode, edit features, decode.

At the SAE's hook point the activation x is encoded to features f = enc(x), an edit maps
f to f', and the hook writes back dec(f'). With ``keep_error=True`` (the default) the SAE's
reconstruction error is kept: the hook writes x + dec(f') - dec(f), which equals
dec(f') + (x - dec(f)) -- sae-lens's ``use_error_term`` -- and is exactly x when the edit
changes nothing, so an empty splice leaves the model's output bit-identical. With
``keep_error=False`` the model runs on the reconstruction itself, as
``HookedSAETransformer.run_with_saes`` does. Works with any sae_lens SAE class (standard,
top-k, JumpReLU, gated ...) on any TransformerLens model; hook_z SAEs see heads flattened.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp import compat
from tl_interp._checks import checked, renamed
from tl_interp._types import IndexSelection, PositionSelection
from tl_interp.compat.sae import sae_hook_name, sae_site
from tl_interp.errors import InputError, SelectionError, ShapeError, TlInterpError
from tl_interp.hooks._edit import check_finite, check_trailing, edit_intervention
from tl_interp.hooks._select import Selection
from tl_interp.intervention import Intervention
from tl_interp.positions import From

__all__ = ["card_splice_positions", "sae_splice", "FeatureEdit", "ablate_features", "clamp_features", "scale_features", "add_features"]

Features = Float[Tensor, "... d_sae"]


@dataclass(frozen=True)
class FeatureEdit:
    """A named edit of SAE feature activations, ``features -> features``; composes with ``+``."""

    fn: Callable[[Tensor], Tensor]
    description: str

    def __call__(self, features: Tensor) -> Tensor:
        return self.fn(features)

    def __add__(self, other: "FeatureEdit") -> "FeatureEdit":
        first, second = self.fn, other.fn
        return FeatureEdit(lambda f: second(first(f)), f"{self.description}, then {other.description}")

    def __str__(self) -> str:
        return self.description


def _ids(features: Sequence[int] | int) -> list[int]:
    ids = [features] if isinstance(features, int) else list(features)
    if not ids:
        raise SelectionError("a feature edit needs at least one feature index")
    return ids


def _set_columns(f: Tensor, ids: list[int], new: Callable[[Tensor], Tensor]) -> Tensor:
    if max(ids) >= f.shape[-1] or min(ids) < -f.shape[-1]:
        raise SelectionError(f"feature index out of range for d_sae={f.shape[-1]}: {ids}")
    out = f.clone()
    out[..., ids] = new(f[..., ids])
    return out


@checked
def ablate_features(features: Sequence[int] | int) -> FeatureEdit:
    """Set the given features' activations to zero.

    Example:
        >>> import torch
        >>> ablate_features([1])(torch.ones(2, 3)).tolist()
        [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    """
    ids = _ids(features)
    return FeatureEdit(lambda f: _set_columns(f, ids, torch.zeros_like), f"ablate features {ids}")


@checked
def clamp_features(features: Sequence[int] | int, value: float) -> FeatureEdit:
    """Set the given features' activations to ``value`` (wherever the splice applies).

    Example:
        >>> import torch
        >>> clamp_features(0, 5.0)(torch.zeros(1, 2)).tolist()
        [[5.0, 0.0]]
    """
    ids = _ids(features)
    check_finite(value, "the clamp value", "clamp_features")
    return FeatureEdit(lambda f: _set_columns(f, ids, lambda c: torch.full_like(c, value)),
                       f"clamp features {ids} to {value:g}")


@renamed(factor="scale")
@checked
def scale_features(features: Sequence[int] | int, scale: float) -> FeatureEdit:
    """Multiply the given features' activations by ``scale``.

    Example:
        >>> import torch
        >>> scale_features([0, 1], 2.0)(torch.ones(1, 3)).tolist()
        [[2.0, 2.0, 1.0]]
    """
    ids = _ids(features)
    check_finite(scale, "the scale", "scale_features")
    return FeatureEdit(lambda f: _set_columns(f, ids, lambda c: c * scale), f"scale features {ids} by {scale:g}")


@checked
def add_features(vector: Float[Tensor, "d_sae"], scale: float = 1.0) -> FeatureEdit:
    """Add ``scale * vector`` in feature space (a steering vector over SAE features).

    Example:
        >>> import torch
        >>> add_features(torch.tensor([0.0, 1.0]), 3.0)(torch.zeros(1, 2)).tolist()
        [[0.0, 3.0]]
    """
    v = vector.detach()
    check_finite(v, "the feature-space vector", "add_features")
    check_finite(scale, "scale", "add_features")

    def _add(f: Tensor) -> Tensor:
        if f.shape[-1] != v.shape[0]:
            raise ShapeError(f"the feature-space vector has {v.shape[0]} entries, the SAE has d_sae={f.shape[-1]}")
        return f + scale * v.to(f.device, f.dtype)

    return FeatureEdit(_add, f"add {scale:g} x feature vector ({int((v != 0).sum())} non-zero)")


def card_splice_positions(sae: Any) -> From | None:
    """The positions a bundled SAE was trained on (its card's ``splice_positions``), as a rule.

    Example:
        >>> class Bundled: card = {"splice_positions": "2:"}
        >>> card_splice_positions(Bundled())
        From(2)
    """
    card = getattr(sae, "card", None)
    spec = card.get("splice_positions") if isinstance(card, dict) else None
    if not spec:
        return None
    start, sep, stop = str(spec).partition(":")
    if sep != ":" or stop.strip() or not start.strip().isdigit():
        raise ShapeError(f"the SAE card's splice_positions {spec!r} is not of the form 'k:'")
    return From(int(start))


def looks_like_sae(obj: Any) -> bool:
    """Whether ``obj`` is an SAE (``encode``, ``decode`` and ``cfg.d_sae``), not a model: how an
    old positional order ``(sae, model, ...)`` is told from the new ``(model, sae, ...)``."""
    return callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None)) and hasattr(
        getattr(obj, "cfg", None), "d_sae")


def sae_first(args: tuple[Any, ...]) -> bool:
    """``(sae, model, ...)``: the old order of the SAE studies (``@reordered``'s test)."""
    return len(args) >= 2 and looks_like_sae(args[0]) and not looks_like_sae(args[1])


def _check_edit(edit: Callable[[Tensor], Tensor], d_sae: int, context: str) -> None:
    """Run the feature edit on dummy features, so one that returns the wrong shape (or fails)
    is refused before any forward pass instead of inside one."""
    dummy = torch.zeros(1, 2, d_sae)
    try:
        with torch.no_grad():
            out = edit(dummy)
    except TlInterpError:  # already the toolkit's error for the mistake (a feature out of range ...)
        raise
    except Exception as err:
        raise ShapeError(f"{context}: the feature edit failed on features of shape (batch, pos, d_sae) = "
                         f"{tuple(dummy.shape)}: {type(err).__name__}: {err}") from err
    if not isinstance(out, Tensor) or out.shape != dummy.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(f"{context}: the feature edit must return features of the shape it gets "
                         f"(..., d_sae={d_sae}); on {tuple(dummy.shape)} it returned {got}")


@checked
def sae_splice(sae: Any, edit: FeatureEdit | Callable[[Tensor], Tensor] | None = None, *,
               where: str | None = None, positions: PositionSelection = None, rows: IndexSelection = None,
               keep_error: bool = True) -> Intervention:
    """Replace the activation at the SAE's hook point by its SAE reconstruction, with an edit.

    The order of every hook factory: where it acts, then what it applies, then options by name.
    An SAE fixes its own hook point, so it comes first and ``where=`` is an optional override.

    Args:
        sae: any ``sae_lens`` SAE (its ``encode``/``decode`` are used as they are).
        edit: a FeatureEdit (``ablate_features``, ``clamp_features``, ``scale_features``,
            ``add_features``, composed with ``+``) or any ``features -> features`` function.
        where: the hook point; defaults to the SAE's ``cfg.metadata.hook_name``.
        positions: splice only there (other entries keep the model's activation). Default: the
            positions the SAE was trained on, from its card (``"splice_positions": "2:"`` means
            ``From(2)``: each row's real tokens from the third on), else every position. Pass
            ``positions="all"`` to splice at every real token regardless of the card.
        rows: splice only in these batch rows.
        keep_error: add back the SAE's reconstruction error (default), so only the edit changes
            the model; ``False`` runs the model on the reconstruction.

    Returns:
        An Intervention.

    Example:
        >>> from sae_lens import StandardSAE, StandardSAEConfig
        >>> sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=64))
        >>> print(sae_splice(sae, ablate_features([3, 7]), where="blocks.0.hook_resid_post"))
        Intervention (1 hook):
          1. SAE splice (ablate features [3, 7]; error kept) at blocks.0.hook_resid_post
    """
    compat.require_sae("hooks.sae_splice")  # sae-lens requires TransformerLens < 4
    own = sae_hook_name(sae)
    if where is not None and own is not None and where != own:
        raise InputError(f"sae_splice: the SAE was trained at {own}; at {where} its features would read "
                         "activations it never saw (same width is not the same space). Splice it at its own site "
                         "(omit where=), or use the SAE trained at " + where)
    name = where or sae_site(sae)
    d_in = int(sae.cfg.d_in)
    if edit is not None:
        _check_edit(edit, int(sae.cfg.d_sae), f"sae_splice at {name}")
    is_z = name.endswith("hook_z")
    label = str(edit) if isinstance(edit, FeatureEdit) else ("no edit" if edit is None else getattr(edit, "__name__", "edit"))
    card_positions = card_splice_positions(sae) if positions is None else None
    if card_positions is not None:
        positions = card_positions
        label += f"; positions {card_positions!r} from the SAE's card"
    verb = f"SAE splice ({label}; error {'kept' if keep_error else 'dropped'})"

    def make_edit(hook_name: str, info: Any, context: str):
        if not is_z:
            check_trailing(context, info, (d_in,), "the SAE input")

        def splice(act: Tensor, axes: tuple[str, ...]) -> Tensor:
            flat = act.flatten(-2) if is_z else act
            if flat.shape[-1] != d_in:
                raise ShapeError(f"{context}: the SAE has d_in={d_in}, the activation's last axis has "
                                 f"{flat.shape[-1]} (shape {tuple(act.shape)})")
            features = sae.encode(flat)
            edited = features if edit is None else edit(features)
            if not isinstance(edited, Tensor) or edited.shape != features.shape:
                got = tuple(edited.shape) if isinstance(edited, Tensor) else type(edited).__name__
                raise ShapeError(f"{context}: the feature edit must return features of shape {tuple(features.shape)} "
                                 f"(d_sae={features.shape[-1]}), it returned {got}")
            if keep_error:
                if edit is None:
                    return act
                delta = sae.decode(edited) - sae.decode(features)
                out = flat + delta.to(flat.dtype)
            else:
                out = sae.decode(edited).to(flat.dtype)
            return out.unflatten(-1, act.shape[-2:]) if is_z else out

        return splice

    return edit_intervention("sae_splice", verb, name, Selection(positions, None, None, rows), make_edit)


