"""Building steering vectors from prompt sets: mean difference, PCA, SAE features.

``contrast_vector`` is the difference of mean activations between a positive and a negative
prompt set at one site (Turner et al. 2023; Rimsky et al. 2024, "contrastive activation
addition"); ``pca_vector`` is the first principal direction of paired differences (Zou et
al. 2023, "Representation Engineering"; repeng's ``pca_diff``); ``sae_contrast_vector`` is
the mean difference of SAE feature activations (a vector in feature space). The ``*_vectors``
forms read many sites (e.g. every layer) from the same forward passes.

Activations are read with the attention mask: "last" is each prompt's last real token and
"mean" averages over real tokens only, so batching and padding never change a vector.
"""

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp._checks import checked
from tl_interp import hooks
from tl_interp._types import NameFilter
from tl_interp.engine.compat import is_hooked_transformer
from tl_interp.steering._vector import SteeringVector
from tl_interp.errors import InputError, ShapeError
from tl_interp.models._adapter import adapt
from tl_interp.results import prompt_hash
from tl_interp.sites import resolve, site_info

__all__ = ["contrast_vector", "contrast_vectors", "pca_vector", "pca_vectors", "sae_contrast_vector",
           "read_activations"]

ReadRule: TypeAlias = Literal["last", "mean"] | int


def _check_prompts(fn: str, positive: Sequence[str], negative: Sequence[str], paired: bool) -> None:
    for label, prompts in (("positive", positive), ("negative", negative)):
        if isinstance(prompts, str):
            raise InputError(f"{fn}: the {label} prompts must be a list of strings, not one string")
        if len(prompts) == 0:
            raise InputError(f"{fn}: the {label} prompt set is empty; give at least one prompt")
    if paired and len(positive) != len(negative):
        raise InputError(f"{fn}: paired prompts need sets of equal size; got {len(positive)} positive and "
                         f"{len(negative)} negative")


def _check_sites(model: Any, names: tuple[str, ...], fn: str) -> None:
    for name in names:
        axes = site_info(model, name).axes
        if axes is not None and len(axes) != 3:
            raise ShapeError(f"{fn}: {name} has axes {axes}; steering vectors are read at sites shaped "
                             "(batch, pos, d) such as resid_pre/resid_post/attn_out/mlp_out")


def read_activations(model: Any, prompts: Sequence[str], where: NameFilter, *, position: ReadRule = "last",
                     batch_size: int = 32, progress: bool = False) -> dict[str, Tensor]:
    """One activation vector per prompt at each site: ``{hook name: (n_prompts, d)}``, float32, CPU.

    Args:
        model: any model ``tl_interp.models.adapt`` accepts (with a tokenizer).
        prompts: the prompts.
        where: hook name(s) or a name filter.
        position: ``"last"`` (last real token), ``"mean"`` (mean over real tokens) or an int
            (``k >= 0``: position ``k``; ``k < 0``: counted back from the last real token).
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Example:
        >>> import tempfile
        >>> from tl_interp.models import load, make_tiny_hf_dir
        >>> model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
        >>> acts = read_activations(model, ["the cat sat", "a dog"], "blocks.1.hook_resid_pre")
        >>> tuple(acts["blocks.1.hook_resid_pre"].shape)
        (2, 64)
    """
    names = resolve(model, where, context="read_activations")
    _check_sites(model, names, "read_activations")
    if isinstance(position, str) and position not in ("last", "mean"):
        raise ShapeError(f"read_activations: position must be 'last', 'mean' or an int, not {position!r}")
    ad = adapt(model)
    layers = [site_info(model, n).layer for n in names]
    stop = max(layers) + 1 if is_hooked_transformer(model) and all(layer is not None for layer in layers) else None
    out: dict[str, list[Tensor]] = {n: [] for n in names}
    starts = range(0, len(prompts), batch_size)
    for lo in tqdm(starts, desc="reading activations", disable=not progress or len(starts) < 2):
        batch = ad.tokenize(list(prompts[lo:lo + batch_size]))
        keep = None if position == "mean" else _read_index(position, batch.last_index, batch.tokens.shape[1])
        store = hooks.cache(names, positions=keep, dtype=torch.float32).collect(
            model, batch.tokens, attention_mask=batch.attention_mask,
            **({} if stop is None else {"stop_at_layer": stop}))
        for n in names:
            act = store[n]
            if position == "mean":
                w = batch.attention_mask.to(act.dtype)[..., None]
                act = (act * w).sum(1) / w.sum(1)
            out[n].append(act.cpu())
    return {n: torch.cat(parts) for n, parts in out.items()}


def _read_index(position: ReadRule, last: Tensor, seq: int) -> Tensor:
    if position == "last":
        return last
    assert isinstance(position, int)
    index = torch.full_like(last, position) if position >= 0 else last + position + 1
    if bool(((index < 0) | (index > last)).any()):
        raise ShapeError(f"read_activations: position {position} falls outside some prompts (their last real "
                         f"tokens are at {last.tolist()})")
    return index


def _provenance(model: Any, positive: Sequence[str], negative: Sequence[str], position: ReadRule) -> dict[str, Any]:
    return dict(model_id=adapt(model).model_id, position_rule=str(position),
                prompt_hash=prompt_hash(list(positive), list(negative)), n_positive=len(positive),
                n_negative=len(negative), source_prompts=(*positive, *negative))


@checked
def contrast_vectors(model: Any, positive: Sequence[str], negative: Sequence[str], where: NameFilter, *,
                     position: ReadRule = "last", paired: bool = False, name: str | None = None,
                     batch_size: int = 32, progress: bool = False) -> list[SteeringVector]:
    """Mean-difference vectors (positive minus negative) at every site ``where`` names.

    Example:
        >>> import tempfile
        >>> from tl_interp import site
        >>> from tl_interp.models import load, make_tiny_hf_dir
        >>> model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
        >>> vs = contrast_vectors(model, ["the cat"], ["a dog"], [site("resid_pre", l) for l in range(2)])
        >>> [v.hook_name for v in vs]
        ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre']
    """
    _check_prompts("contrast_vector", positive, negative, paired)
    pos = read_activations(model, positive, where, position=position, batch_size=batch_size, progress=progress)
    neg = read_activations(model, negative, where, position=position, batch_size=batch_size, progress=progress)
    prov = _provenance(model, positive, negative, position)
    return [SteeringVector((pos[n].double().mean(0) - neg[n].double().mean(0)).float(), n,
                           name=name or f"contrast @ {n}", method="mean_diff", **prov) for n in pos]


@checked
def contrast_vector(model: Any, positive: Sequence[str], negative: Sequence[str], site: str, *,
                    position: ReadRule = "last", paired: bool = False, name: str | None = None,
                    batch_size: int = 32, progress: bool = False) -> SteeringVector:
    """The mean activation on ``positive`` minus the mean on ``negative``, at one site.

    Args:
        model: the model (any family ``adapt`` accepts, with a tokenizer).
        positive, negative: prompt sets (``paired=True`` checks they pair one to one; the
            mean difference of pairs equals the difference of means).
        site: a hook name, e.g. ``site("resid_pre", 6)``.
        position: ``"last"`` (last real token, default), ``"mean"`` (masked mean over
            tokens) or an int position (negative: from the last real token back).
        name: label for tables (default ``"contrast @ <site>"``).

    Returns:
        A residual-space ``SteeringVector`` remembering the prompts and how it was read.

    Example:
        >>> import tempfile
        >>> from tl_interp.models import load, make_tiny_hf_dir
        >>> model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
        >>> v = contrast_vector(model, ["the cat sat"], ["the dog sat"], "blocks.1.hook_resid_pre")
        >>> v.vector.shape, v.method, v.n_positive
        (torch.Size([64]), 'mean_diff', 1)
    """
    return contrast_vectors(model, positive, negative, site, position=position, paired=paired, name=name,
                            batch_size=batch_size, progress=progress)[0]


def _first_pc(diffs: Tensor, center: bool) -> Tensor:
    """Unit first principal direction of the rows of ``diffs`` (float64), sign-aligned with their mean."""
    x = diffs - diffs.mean(0, keepdim=True) if center else diffs
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    direction = vh[0]
    return direction if float(diffs.mean(0) @ direction) >= 0 else -direction


@checked
def pca_vectors(model: Any, positive: Sequence[str], negative: Sequence[str], where: NameFilter, *,
                position: ReadRule = "last", center: bool = False, name: str | None = None,
                batch_size: int = 32, progress: bool = False) -> list[SteeringVector]:
    """First principal direction of paired differences at every site ``where`` names."""
    _check_prompts("pca_vector", positive, negative, paired=True)
    if len(positive) < 2:
        raise InputError("pca_vector: a principal direction needs at least 2 pairs")
    pos = read_activations(model, positive, where, position=position, batch_size=batch_size, progress=progress)
    neg = read_activations(model, negative, where, position=position, batch_size=batch_size, progress=progress)
    prov = _provenance(model, positive, negative, position)
    out = []
    for n in pos:
        diffs = pos[n].double() - neg[n].double()
        direction = _first_pc(diffs, center)
        out.append(SteeringVector((direction * (diffs @ direction).mean()).float(), n, name=name or f"pca @ {n}",
                                  method="pca" + (" (centred)" if center else ""), **prov))
    return out


@checked
def pca_vector(model: Any, positive: Sequence[str], negative: Sequence[str], site: str, *,
               position: ReadRule = "last", center: bool = False, name: str | None = None,
               batch_size: int = 32, progress: bool = False) -> SteeringVector:
    """First principal direction of the paired differences ``positive[i] - negative[i]``.

    The direction is the top right-singular vector of the difference matrix (uncentred by
    default, so a consistent shift counts; ``center=True`` is repeng's centred ``pca_diff``),
    its sign chosen so the mean difference projects positively, and its length the mean
    projection of the differences, so multipliers are comparable with ``contrast_vector``.

    Example:
        >>> import tempfile
        >>> from tl_interp.models import load, make_tiny_hf_dir
        >>> model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
        >>> v = pca_vector(model, ["one two", "two three"], ["jan feb", "feb mar"], "blocks.1.hook_resid_pre")
        >>> v.method, v.vector.shape
        ('pca', torch.Size([64]))
    """
    return pca_vectors(model, positive, negative, site, position=position, center=center, name=name,
                       batch_size=batch_size, progress=progress)[0]


def sae_name(sae: Any) -> str:
    """The bundled name of an SAE (its card's), else its class name."""
    card = getattr(sae, "card", None)
    return str(card.get("name")) if isinstance(card, dict) and card.get("name") else type(sae).__name__


def sae_hook_name(sae: Any) -> str:
    from tl_interp.hooks._sae import _sae_hook_name

    return _sae_hook_name(sae)


@checked
def sae_contrast_vector(model: Any, sae: Any, positive: Sequence[str], negative: Sequence[str], *,
                        position: ReadRule = "last", paired: bool = False, name: str | None = None,
                        sae_id: str | None = None, keep_error: bool = True, batch_size: int = 32,
                        progress: bool = False) -> SteeringVector:
    """Mean SAE feature activations on ``positive`` minus on ``negative`` (a feature-space vector).

    Activations are read at the SAE's hook point and encoded with ``sae.encode``. Applying
    the vector (``.intervention(scale)``) splices the SAE in and adds ``scale * vector`` to
    the features before decoding (``hooks.sae_splice`` + ``hooks.add_features``).

    Example:
        >>> from tl_interp.models import load, load_sae
        >>> model, sae = load("ordinal-4l"), load_sae("ordinal-4l-res-l2")
        >>> v = sae_contrast_vector(model, sae, ["one , two ,"], ["january , february ,"])
        >>> v.space, v.vector.shape, v.hook_name
        ('sae', torch.Size([1024]), 'blocks.2.hook_resid_pre')
    """
    _check_prompts("sae_contrast_vector", positive, negative, paired)
    hook = sae_hook_name(sae)
    width = int(sae.cfg.d_in)
    feats = []
    for prompts in (positive, negative):
        acts = read_activations(model, prompts, hook, position=position, batch_size=batch_size,
                                progress=progress)[hook]
        if acts.shape[-1] != width:
            raise ShapeError(f"sae_contrast_vector: the SAE has d_in={width}, {hook} has width {acts.shape[-1]}")
        with torch.no_grad():
            feats.append(sae.encode(acts.to(sae.W_dec.dtype)).double().mean(0))
    prov = _provenance(model, positive, negative, position)
    return SteeringVector((feats[0] - feats[1]).float(), hook, name=name or f"SAE contrast @ {hook}", space="sae",
                          method="sae_mean_diff", sae_id=sae_id or sae_name(sae),
                          keep_error=keep_error, sae=sae, **prov)
