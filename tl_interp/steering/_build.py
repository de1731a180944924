"""Building steering vectors from prompt sets: mean difference, PCA, SAE features.

``contrast_vector`` is the difference of mean activations between a positive and a negative
prompt set at one site (Turner et al. 2023; Rimsky et al. 2024, "contrastive activation
addition"); ``pca_vector`` is the first principal direction of paired differences (Zou et
al. 2023, "Representation Engineering"; repeng's ``pca_diff``); ``sae_contrast_vector`` is
the mean difference of SAE feature activations (a vector in feature space). The ``*_vectors``
forms read many sites (e.g. every layer) from the same forward passes.

Activations are read by ``ti.collect`` with the attention mask: ``positions="last"`` is each
prompt's last real token and ``reduce="mean"`` averages over real tokens only, so batching and
padding never change a vector.
"""

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp._checks import SIZED_BY_MEMORY, checked, renamed, retired_keywords
from tl_interp._types import NameFilter, Reduce
from tl_interp.engine.collect import collect
from tl_interp.engine.inputs import Inputs, as_batch
from tl_interp.errors import InputError, ShapeError, TlInterpDeprecationWarning
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.positions import Positions, describe
from tl_interp.results import prompt_hash
from tl_interp.sites import resolve, site_info
from tl_interp.steering._vector import SteeringVector, sae_identity

__all__ = ["contrast_vector", "contrast_vectors", "pca_vector", "pca_vectors", "sae_contrast_vector",
           "read_activations"]

def _batch(model: Any, prompts: Inputs, role: str, fn: str) -> Tokenized:
    if isinstance(prompts, (list, tuple)) and len(prompts) == 0:
        raise InputError(f"{fn}: the {role} prompt set is empty; give at least one prompt")
    return as_batch(model, prompts, role=f"{fn}: {role}")


def _check_pairs(fn: str, positive: Tokenized, negative: Tokenized, paired: bool) -> None:
    if paired and len(positive) != len(negative):
        raise InputError(f"{fn}: paired prompts need sets of equal size; got {len(positive)} positive and "
                         f"{len(negative)} negative")


def _check_sites(model: Any, names: tuple[str, ...], fn: str) -> None:
    for name in names:
        axes = site_info(model, name).axes
        if axes is not None and len(axes) != 3:
            raise ShapeError(f"{fn}: {name} has axes {axes}; steering vectors are read at sites shaped "
                             "(batch, pos, d) such as resid_pre/resid_post/attn_out/mlp_out")


def _positions(positions: Any, reduce: Reduce) -> tuple[Positions, Reduce]:
    """The old read rule ``"mean"`` is ``positions="all", reduce="mean"``."""
    if positions == "mean":
        warnings.warn("positions='mean' is now positions='all', reduce='mean'", TlInterpDeprecationWarning,
                      stacklevel=4)
        return "all", "mean"
    return positions, reduce


def _read(model: Any, batch: Tokenized, where: NameFilter, positions: Positions, reduce: Reduce, memory_mb: float,
          progress: bool, fn: str) -> dict[str, Tensor]:
    names = resolve(model, where, context=fn)
    _check_sites(model, names, fn)
    states = collect(model, batch, list(names), positions=positions, reduce=reduce, memory_mb=memory_mb,
                     progress=progress)
    out = {}
    for n in names:
        acts = states[n]
        if acts.ndim != 2:
            raise InputError(f"{fn}: positions={describe(positions)} read several positions per prompt; a vector "
                             "needs one per prompt: use 'last', one index per row, or reduce='mean'")
        out[n] = acts
    return out


@retired_keywords(batch_size=SIZED_BY_MEMORY)
@renamed(prompts="inputs", position="positions")
@checked
def read_activations(model: Any, inputs: Inputs, where: NameFilter, *, positions: Positions = "last",
                     reduce: Reduce = None, memory_mb: float = 1024.0, progress: bool = False) -> dict[str, Tensor]:
    """One activation vector per prompt at each site: ``{hook name: (n_prompts, d)}``, float32, CPU.

    A thin view of ``ti.collect`` (use it directly for anything beyond one vector per prompt).

    Example:
        >>> import tempfile
        >>> from tl_interp.models import load, make_tiny_hf_dir
        >>> model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
        >>> acts = read_activations(model, ["the cat sat", "a dog"], "blocks.1.hook_resid_pre")
        >>> tuple(acts["blocks.1.hook_resid_pre"].shape)
        (2, 64)
    """
    positions, reduce = _positions(positions, reduce)
    return _read(model, as_batch(model, inputs), where, positions, reduce, memory_mb, progress, "read_activations")


def _texts(inputs: Inputs, batch: Tokenized) -> tuple[str, ...]:
    """The prompts as given (strings), else decoded from the batch's real tokens."""
    if isinstance(inputs, str):
        return (inputs,)
    if isinstance(inputs, (list, tuple)) and all(isinstance(t, str) for t in inputs):
        return tuple(inputs)
    return tuple("".join(t for t, m in zip(row, mask) if m)
                 for row, mask in zip(batch.str_tokens, batch.attention_mask.tolist()))


def _provenance(model: Any, positive: Tokenized, negative: Tokenized, positions: Positions, reduce: Reduce,
                texts: tuple[str, ...]) -> dict[str, Any]:
    rule = describe(positions).strip("'") + (" (mean)" if reduce == "mean" else "")
    return dict(model_id=adapt(model).model_id, position_rule=rule,
                prompt_hash=prompt_hash(positive.tokens, negative.tokens), n_positive=len(positive),
                n_negative=len(negative), source_prompts=texts)


@retired_keywords(batch_size=SIZED_BY_MEMORY)
@renamed(position="positions")
@checked
def contrast_vectors(model: Any, positive: Inputs, negative: Inputs, where: NameFilter, *,
                     positions: Positions = "last", reduce: Reduce = None, paired: bool = False,
                     name: str | None = None, memory_mb: float = 1024.0,
                     progress: bool = False) -> list[SteeringVector]:
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
    fn = "contrast_vector"
    positions, reduce = _positions(positions, reduce)
    pos_b, neg_b = _batch(model, positive, "positive", fn), _batch(model, negative, "negative", fn)
    _check_pairs(fn, pos_b, neg_b, paired)
    pos = _read(model, pos_b, where, positions, reduce, memory_mb, progress, fn)
    neg = _read(model, neg_b, where, positions, reduce, memory_mb, progress, fn)
    prov = _provenance(model, pos_b, neg_b, positions, reduce, _texts(positive, pos_b) + _texts(negative, neg_b))
    return [SteeringVector((pos[n].double().mean(0) - neg[n].double().mean(0)).float(), n,
                           name=name or f"contrast @ {n}", method="mean_diff", **prov) for n in pos]


@retired_keywords(batch_size=SIZED_BY_MEMORY)
@renamed(site="where", position="positions")
@checked
def contrast_vector(model: Any, positive: Inputs, negative: Inputs, where: str, *, positions: Positions = "last",
                    reduce: Reduce = None, paired: bool = False, name: str | None = None, memory_mb: float = 1024.0,
                    progress: bool = False) -> SteeringVector:
    """The mean activation on ``positive`` minus the mean on ``negative``, at one hook point.

    Args:
        model: the model (any family ``adapt`` accepts, with a tokenizer).
        positive, negative: prompt sets (any input form; ``paired=True`` checks they pair one to
            one -- the mean difference of pairs equals the difference of means).
        where: a hook name, e.g. ``site("resid_pre", 6)``.
        positions: where each prompt is read: ``"last"`` (last real token, default), one index
            per row, a token finder such as ``first(" her")``; with ``reduce="mean"`` any
            selection of several positions (``"all"`` for the masked mean over real tokens).
        reduce: ``"mean"`` to average the selected positions of each prompt.
        name: label for tables (default ``"contrast @ <hook>"``).

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
    return contrast_vectors(model, positive, negative, where, positions=positions, reduce=reduce, paired=paired,
                            name=name, memory_mb=memory_mb, progress=progress)[0]


def _first_pc(diffs: Tensor, center: bool) -> Tensor:
    """Unit first principal direction of the rows of ``diffs`` (float64), sign-aligned with their mean."""
    x = diffs - diffs.mean(0, keepdim=True) if center else diffs
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    direction = vh[0]
    return direction if float(diffs.mean(0) @ direction) >= 0 else -direction


@retired_keywords(batch_size=SIZED_BY_MEMORY)
@renamed(position="positions")
@checked
def pca_vectors(model: Any, positive: Inputs, negative: Inputs, where: NameFilter, *, positions: Positions = "last",
                reduce: Reduce = None, center: bool = False, name: str | None = None, memory_mb: float = 1024.0,
                progress: bool = False) -> list[SteeringVector]:
    """First principal direction of paired differences at every site ``where`` names."""
    fn = "pca_vector"
    positions, reduce = _positions(positions, reduce)
    pos_b, neg_b = _batch(model, positive, "positive", fn), _batch(model, negative, "negative", fn)
    _check_pairs(fn, pos_b, neg_b, paired=True)
    if len(pos_b) < 2:
        raise InputError("pca_vector: a principal direction needs at least 2 pairs")
    pos = _read(model, pos_b, where, positions, reduce, memory_mb, progress, fn)
    neg = _read(model, neg_b, where, positions, reduce, memory_mb, progress, fn)
    prov = _provenance(model, pos_b, neg_b, positions, reduce, _texts(positive, pos_b) + _texts(negative, neg_b))
    out = []
    for n in pos:
        diffs = pos[n].double() - neg[n].double()
        direction = _first_pc(diffs, center)
        out.append(SteeringVector((direction * (diffs @ direction).mean()).float(), n, name=name or f"pca @ {n}",
                                  method="pca" + (" (centred)" if center else ""), **prov))
    return out


@retired_keywords(batch_size=SIZED_BY_MEMORY)
@renamed(site="where", position="positions")
@checked
def pca_vector(model: Any, positive: Inputs, negative: Inputs, where: str, *, positions: Positions = "last",
               reduce: Reduce = None, center: bool = False, name: str | None = None, memory_mb: float = 1024.0,
               progress: bool = False) -> SteeringVector:
    """First principal direction of the paired differences ``positive[i] - negative[i]``.

    The direction is the top right-singular vector of the difference matrix (uncentred by
    default, so a consistent shift counts; ``center=True`` is repeng's centred ``pca_diff``),
    its sign chosen so the mean difference projects positively, and its length the mean
    projection of the differences, so scales are comparable with ``contrast_vector``.

    Example:
        >>> import tempfile
        >>> from tl_interp.models import load, make_tiny_hf_dir
        >>> model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
        >>> v = pca_vector(model, ["one two", "two three"], ["jan feb", "feb mar"], "blocks.1.hook_resid_pre")
        >>> v.method, v.vector.shape
        ('pca', torch.Size([64]))
    """
    return pca_vectors(model, positive, negative, where, positions=positions, reduce=reduce, center=center,
                       name=name, memory_mb=memory_mb, progress=progress)[0]


def sae_name(sae: Any) -> str:
    """The bundled name of an SAE (its card's), else its class and a digest of its decoder."""
    return sae_identity(sae)[0]


@retired_keywords(batch_size=SIZED_BY_MEMORY)
@renamed(position="positions")
@checked
def sae_contrast_vector(model: Any, sae: Any, positive: Inputs, negative: Inputs, *, positions: Positions = "last",
                        reduce: Reduce = None, paired: bool = False, name: str | None = None,
                        sae_id: str | None = None, keep_error: bool = True, memory_mb: float = 1024.0,
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
    compat.require_sae("steering.sae_contrast_vector")  # sae-lens requires TransformerLens < 4
    fn = "sae_contrast_vector"
    positions, reduce = _positions(positions, reduce)
    hook = compat.sae.sae_site(sae)
    width = int(sae.cfg.d_in)
    pos_b, neg_b = _batch(model, positive, "positive", fn), _batch(model, negative, "negative", fn)
    _check_pairs(fn, pos_b, neg_b, paired)
    feats = []
    for batch in (pos_b, neg_b):
        acts = _read(model, batch, hook, positions, reduce, memory_mb, progress, fn)[hook]
        if acts.shape[-1] != width:
            raise ShapeError(f"sae_contrast_vector: the SAE has d_in={width}, {hook} has width {acts.shape[-1]}")
        with torch.no_grad():
            feats.append(sae.encode(acts.to(sae.W_dec.dtype)).double().mean(0))
    prov = _provenance(model, pos_b, neg_b, positions, reduce, _texts(positive, pos_b) + _texts(negative, neg_b))
    return SteeringVector((feats[0] - feats[1]).float(), hook, name=name or f"SAE contrast @ {hook}", space="sae",
                          method="sae_mean_diff", sae_id=sae_id or sae_name(sae),
                          keep_error=keep_error, sae=sae, **prov)
