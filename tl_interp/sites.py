"""Hook-point names and what lives at them.

``site(kind, layer)`` spells TransformerLens hook names (``site("resid_pre", 3)`` ->
``"blocks.3.hook_resid_pre"``); ``resolve`` checks names and name filters against a model
and suggests the closest valid names (difflib) when one does not exist; ``site_info`` says
how the activation at a hook point is laid out (its named axes and, where the model's config
tells, their sizes), which is what lets an intervention be validated before any forward pass.
"""

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from tl_interp._checks import checked
from tl_interp._types import NameFilter, SiteKind
from tl_interp.errors import HookNameError, SelectionError, TypeCheckError, UnsupportedError

__all__ = ["site", "SITE_KINDS", "SiteInfo", "site_info", "d_vocab_out", "hook_names", "resolve", "describe_where"]

_TEMPLATES: dict[str, str] = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "attn_in": "blocks.{layer}.hook_attn_in",
    "mlp_in": "blocks.{layer}.hook_mlp_in",
    "q": "blocks.{layer}.attn.hook_q",
    "k": "blocks.{layer}.attn.hook_k",
    "v": "blocks.{layer}.attn.hook_v",
    "z": "blocks.{layer}.attn.hook_z",
    "result": "blocks.{layer}.attn.hook_result",
    "rot_q": "blocks.{layer}.attn.hook_rot_q",
    "rot_k": "blocks.{layer}.attn.hook_rot_k",
    "pattern": "blocks.{layer}.attn.hook_pattern",
    "attn_scores": "blocks.{layer}.attn.hook_attn_scores",
    "mlp_pre": "blocks.{layer}.mlp.hook_pre",
    "mlp_pre_linear": "blocks.{layer}.mlp.hook_pre_linear",
    "mlp_post": "blocks.{layer}.mlp.hook_post",
    "ln1_scale": "blocks.{layer}.ln1.hook_scale",
    "ln1_normalized": "blocks.{layer}.ln1.hook_normalized",
    "ln2_scale": "blocks.{layer}.ln2.hook_scale",
    "ln2_normalized": "blocks.{layer}.ln2.hook_normalized",
    "ln_final_scale": "ln_final.hook_scale",
    "ln_final_normalized": "ln_final.hook_normalized",
}
SITE_KINDS: tuple[str, ...] = get_args(SiteKind)


@checked
def site(kind: str, layer: int | None = None) -> str:
    """The TransformerLens hook name for a kind of activation at a layer.

    Args:
        kind: one of ``SITE_KINDS`` (``"resid_pre"``, ``"z"``, ``"pattern"``, ``"mlp_post"``, ...).
        layer: the block index; omitted for model-level sites (``"embed"``, ``"ln_final_scale"``).

    Returns:
        The hook name, e.g. ``"blocks.3.hook_resid_pre"``.

    Example:
        >>> site("resid_pre", 3)
        'blocks.3.hook_resid_pre'
        >>> site("z", 1)
        'blocks.1.attn.hook_z'
    """
    template = _TEMPLATES.get(kind)
    if template is None:
        close = difflib.get_close_matches(kind, SITE_KINDS, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise HookNameError(f"unknown site kind {kind!r}{hint} (known: {', '.join(SITE_KINDS)})")
    needs_layer = "{layer}" in template
    if needs_layer and layer is None:
        raise HookNameError(f"site({kind!r}) needs a layer: site({kind!r}, layer)")
    if not needs_layer and layer is not None:
        raise HookNameError(f"site({kind!r}) is model-level and takes no layer; use site({kind!r})")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise TypeCheckError(f"site({kind!r}, {layer!r}): layer must be an int")
    if layer is not None and layer < 0:
        raise SelectionError(f"site({kind!r}, {layer}): layer {layer} is out of range; layers count from 0")
    return template.format(layer=layer)


# ---------------------------------------------------------------------------------------
# Layout of the activation at a hook point.

# leaf -> (counts key-value heads?, feature axis). k/v count KV heads on GQA models.
_HEAD_LAYOUT: dict[str, tuple[bool, str]] = {
    "hook_q": (False, "d_head"),
    "hook_z": (False, "d_head"),
    "hook_rot_q": (False, "d_head"),
    "hook_result": (False, "d_model"),
    "hook_q_input": (False, "d_model"),
    "hook_k": (True, "d_head"),
    "hook_v": (True, "d_head"),
    "hook_rot_k": (True, "d_head"),
    "hook_k_input": (True, "d_model"),
    "hook_v_input": (True, "d_model"),
}
_PATTERN_SITES = {"hook_pattern", "hook_attn_scores"}
_MLP_SITES = {"mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear"}
_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class SiteInfo:
    """How the activation at one hook point is laid out.

    Attributes:
        name: the hook name.
        axes: axis names in TransformerLens's vocabulary, e.g. ``("batch", "pos", "head_index",
            "d_head")``; for sites tl_interp does not know (custom modules) the layout is
            inferred from the tensor's rank when it arrives, and ``axes`` is ``None``.
        sizes: the sizes the model's config fixes (``{"head_index": 9, "d_head": 64}``);
            ``pos``/``batch`` are never fixed.
        layer: the block index, or ``None`` for model-level sites.
        seq_len: the input length when the caller knows it (for range-checking positions).
    """

    name: str
    axes: tuple[str, ...] | None
    sizes: dict[str, int] = field(default_factory=dict)
    layer: int | None = None
    seq_len: int | None = None
    dtype: Any = None  # the model's parameter dtype, when its config says (for overflow checks)

    def axes_for(self, ndim: int) -> tuple[str, ...]:
        """The axes of a tensor of rank ``ndim`` arriving at this site."""
        if self.axes is not None and len(self.axes) == ndim:
            return self.axes
        # Unknown site (e.g. a toy HookedRootModule): batch first, features last, and a
        # position axis in between for rank-3 tensors.
        generic = {1: ("batch",), 2: ("batch", "d_feature"), 3: ("batch", "pos", "d_feature")}
        return generic.get(ndim, ("batch",) + tuple(f"dim{i}" for i in range(1, ndim)))


def _cfg_get(cfg: Any, key: str) -> int | None:
    value = getattr(cfg, key, None) if cfg is not None else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _vocab_out(cfg: Any) -> int | None:
    out = _cfg_get(cfg, "d_vocab_out")
    return out if out is not None and out > 0 else _cfg_get(cfg, "d_vocab")


def d_vocab_out(model: Any) -> int:
    """The width of the model's logits: ``cfg.d_vocab_out``, or ``cfg.d_vocab`` where a config
    leaves it unset (TransformerLens's ``-1`` before ``__post_init__``, configs without it).

    Example:
        >>> from transformer_lens import HookedTransformerConfig
        >>> from types import SimpleNamespace
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4, d_vocab=5, act_fn="relu")
        >>> d_vocab_out(SimpleNamespace(cfg=cfg)), d_vocab_out(SimpleNamespace(cfg=SimpleNamespace(d_vocab=7, d_vocab_out=-1)))
        (5, 7)
    """
    vocab = _vocab_out(getattr(model, "cfg", None))
    if vocab is None:
        raise UnsupportedError(f"{type(model).__name__} has no config with d_vocab / d_vocab_out")
    return vocab


def site_info(model: Any, name: str) -> SiteInfo:
    """Layout of the activation at ``name`` on ``model`` (axes and config-fixed sizes).

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> site_info(HookedTransformer(cfg), "blocks.0.attn.hook_z").axes
        ('batch', 'pos', 'head_index', 'd_head')
    """
    cfg = getattr(model, "cfg", None)
    match = _LAYER_RE.match(name)
    layer = int(match.group(1)) if match else None
    leaf = name.rsplit(".", 1)[-1]
    tail2 = ".".join(name.rsplit(".", 2)[-2:])
    d_model, d_head, d_mlp = (_cfg_get(cfg, k) for k in ("d_model", "d_head", "d_mlp"))
    n_heads = _cfg_get(cfg, "n_heads")
    n_kv = _cfg_get(cfg, "n_key_value_heads") or n_heads
    if cfg is not None and getattr(cfg, "ungroup_grouped_query_attention", False) is True:
        n_kv = n_heads  # ungrouped: every query head has its own keys and values
    d_vocab = _vocab_out(cfg)

    dtype = getattr(cfg, "dtype", None)

    def sized(axes: tuple[str, ...], **sizes: int | None) -> SiteInfo:
        return SiteInfo(name, axes, {k: v for k, v in sizes.items() if v is not None}, layer, dtype=dtype)

    if cfg is None:
        return SiteInfo(name, None, {}, layer)
    if leaf in _HEAD_LAYOUT:
        kv, feature = _HEAD_LAYOUT[leaf]
        width = d_head if feature == "d_head" else d_model
        return sized(("batch", "pos", "head_index", feature),
                     head_index=n_kv if kv else n_heads, **{feature: width})
    if leaf in _PATTERN_SITES:
        return sized(("batch", "head_index", "query_pos", "key_pos"), head_index=n_heads)
    if tail2 in _MLP_SITES:
        return sized(("batch", "pos", "d_mlp"), d_mlp=d_mlp)
    if leaf == "hook_scale":
        return SiteInfo(name, None, {}, layer)
    if name == "unembed.hook_out":
        return sized(("batch", "pos", "d_vocab"), d_vocab=d_vocab)
    if name.startswith(("blocks.", "hook_", "ln_final.", "unembed.")):
        return sized(("batch", "pos", "d_model"), d_model=d_model)
    return SiteInfo(name, None, {}, layer)


# ---------------------------------------------------------------------------------------
# Resolving names and filters against a model.


def hook_names(model: Any) -> tuple[str, ...]:
    """All hook-point names of a HookedRootModule (including TransformerBridge aliases).

    Calls ``model.setup()`` first on a custom module whose ``hook_dict`` is still empty.
    """
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        raise HookNameError(
            f"{type(model).__name__} has no hook_dict: tl_interp works on TransformerLens "
            "HookedRootModules (HookedTransformer, TransformerBridge, or your own module with "
            "HookPoints and a call to self.setup() in __init__)"
        )
    if not hook_dict and hasattr(model, "setup"):
        model.setup()
        hook_dict = model.hook_dict
    return tuple(hook_dict)


def _suggest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(map(repr, close))}?"
    sample = ", ".join(repr(n) for n in list(names)[:6])
    return f" (the model has {len(names)} hook points, e.g. {sample})"


def resolve(model: Any, where: NameFilter, *, context: str = "", dedupe: bool = True) -> tuple[str, ...]:
    """The hook names ``where`` selects on ``model``; an error if it selects none.

    Args:
        model: a HookedRootModule.
        where: an exact hook name, a sequence of names, or a predicate over names.
        context: what is being resolved, prefixed to error messages.
        dedupe: name each hook point once (aliases dropped); caches keep every alias.

    Returns:
        The matching names, in the model's hook order for predicates, as given otherwise;
        several names of one hook point (TransformerBridge aliases) count once.

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> resolve(HookedTransformer(cfg), lambda n: n.endswith("resid_pre"))
        ('blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre')
    """
    names = hook_names(model)
    known = set(names)
    prefix = f"{context}: " if context else ""
    if isinstance(where, str):
        if where not in known:
            raise HookNameError(f"{prefix}no hook point {where!r}{_suggest(where, names)}")
        return (where,)
    if callable(where):
        chosen = tuple(n for n in names if where(n))
        if not chosen:
            label = getattr(where, "__name__", repr(where))
            raise HookNameError(
                f"{prefix}the name filter {label} matches none of the model's {len(names)} hook "
                f"points (e.g. {', '.join(repr(n) for n in names[:4])}); check the filter"
            )
        return _one_name_per_point(model, chosen) if dedupe else chosen
    chosen = tuple(where)
    if not chosen:
        raise HookNameError(f"{prefix}an empty list of hook names selects nothing; name at least one")
    for n in chosen:
        if n not in known:
            raise HookNameError(f"{prefix}no hook point {n!r}{_suggest(n, names)}")
    return _one_name_per_point(model, chosen) if dedupe else chosen


def _one_name_per_point(model: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    """The first name of each distinct hook point: a bridge's aliases (``blocks.1.hook_in`` and
    ``blocks.1.hook_resid_pre``) name one HookPoint, which must be hooked once, not twice."""
    seen: set[int] = set()
    out = []
    for n in names:
        point = id(model.hook_dict[n])
        if point not in seen:
            seen.add(point)
            out.append(n)
    return tuple(out)


def describe_where(where: NameFilter) -> str:
    """A short human-readable form of a name filter, for reprs."""
    if isinstance(where, str):
        return where
    if callable(where):
        return f"<names where {getattr(where, '__name__', 'filter')}>"
    items = list(where)
    return ", ".join(items) if len(items) <= 3 else f"{items[0]}, ... ({len(items)} names)"

