"""Which TransformerLens is installed, told by behaviour: its model classes and what needs which.

TransformerLens 4.0 removed ``HookedTransformer`` and ``HookedTransformerConfig`` (importing
them raises ``ImportError`` with a pointer to ``TransformerBridge``), so on 4.x a model is a
``TransformerBridge`` in compatibility mode: booted from a Hugging Face directory
(``boot_transformers``) or, for the bundled zoo, built natively from a HookedTransformer-style
config and state dict (``boot_native`` + ``convert_tl_checkpoint``). sae-lens (6.54, the newest)
requires ``transformer-lens<4``, so on 4.x everything that needs sae-lens raises one
``UnsupportedError`` naming that reason (``require_sae``).

Everything in tl_interp asks here (``has_hooked_transformer``, ``hooked_transformer_class``,
``is_hooked_transformer``, ``is_bridge``, ``sae_lens_reason``) rather than comparing version
strings: each answer comes from importing the thing and checking what it is.
"""

import functools
import importlib.util
from typing import Any

from tl_interp.errors import ModelLoadError, UnsupportedError

__all__ = ["hooked_transformer_class", "has_hooked_transformer", "hooked_reason", "is_hooked_transformer",
           "is_bridge", "bridge_class",
           "hooked_root_module", "sae_lens_reason", "require_sae", "require_hooked", "native_bridge",
           "native_reason", "hooked_config_class", "build_from_fields"]


@functools.cache
def _hooked() -> tuple[type | None, str | None]:
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: F401
    except ImportError as err:  # TransformerLens 4 raises ImportError with a migration pointer
        return None, f"this TransformerLens has no HookedTransformer ({str(err).split('.')[0]})"
    import torch

    if not (isinstance(HookedTransformer, type) and issubclass(HookedTransformer, torch.nn.Module)):
        return None, "transformer_lens.HookedTransformer is not a torch module class"
    return HookedTransformer, None


def hooked_transformer_class() -> type | None:
    """TransformerLens's ``HookedTransformer`` class, or None where it was removed (4.x).

    Example:
        >>> hooked_transformer_class() is None or hooked_transformer_class().__name__ == "HookedTransformer"
        True
    """
    return _hooked()[0]


def has_hooked_transformer() -> bool:
    """Whether the installed TransformerLens has ``HookedTransformer`` (3.x: yes, 4.x: no)."""
    return _hooked()[0] is not None


def hooked_reason() -> str | None:
    """Why there is no ``HookedTransformer`` here, or None when there is."""
    return _hooked()[1]


def is_hooked_transformer(model: Any) -> bool:
    """Whether ``model`` is a HookedTransformer (or subclass, e.g. HookedSAETransformer); always
    False on TransformerLens 4, which has none."""
    cls = hooked_transformer_class()
    return cls is not None and isinstance(model, cls)


def require_hooked(what: str) -> type:
    """``HookedTransformer``, or ``UnsupportedError`` naming ``what`` needs it and the way out.

    Example:
        >>> require_hooked("a test").__name__ if has_hooked_transformer() else "HookedTransformer"
        'HookedTransformer'
    """
    cls = hooked_transformer_class()
    if cls is None:
        raise UnsupportedError(
            f"{what} needs TransformerLens's HookedTransformer, which TransformerLens 4 removed "
            f"({hooked_reason()}); use a TransformerBridge model (ti.models.load gives one on 4.x) "
            "or install the default environment (constraints.txt: transformer-lens 3.9)")
    return cls


def bridge_class() -> type:
    """``transformer_lens.model_bridge.TransformerBridge`` (present on 3.9 and 4.x)."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a ``TransformerBridge``."""
    return isinstance(model, bridge_class())


def hooked_root_module() -> type:
    """``HookedRootModule``: TL's base of every hookable model (the top-level name on 3.9 and 4.x;
    4.0 removed its re-export from ``transformer_lens.hook_points``)."""
    from transformer_lens import HookedRootModule

    return HookedRootModule


# -- sae-lens ----------------------------------------------------------------------------------
@functools.cache
def sae_lens_reason() -> str | None:
    """Why sae-lens can't be used here, or None when it can.

    Example:
        >>> sae_lens_reason() is None or "sae-lens" in sae_lens_reason()
        True
    """
    if not has_hooked_transformer():
        return ("sae-lens requires TransformerLens < 4 (its HookedSAETransformer subclasses HookedTransformer, "
                "which TransformerLens 4 removed), and no sae-lens release supports TransformerLens 4 yet")
    if importlib.util.find_spec("sae_lens") is None:
        return "sae-lens is not installed (pip install -c constraints.txt -e '.[sae]')"
    return None


def require_sae(what: str) -> None:
    """Raise the one ``UnsupportedError`` for SAE features where sae-lens can't be used.

    Example:
        >>> require_sae("sae_splice") if sae_lens_reason() is None else None
    """
    why = sae_lens_reason()
    if why is not None:
        raise UnsupportedError(f"{what} needs sae-lens: {why}")


# -- building a zoo model natively on TransformerLens 4 ---------------------------------------------
_NATIVE_CFG_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn",
                      "normalization_type", "attn_only", "positional_embedding_type", "default_prepend_bos",
                      "original_architecture", "tokenizer_prepends_bos", "seed")


def native_reason(cfg: dict[str, Any]) -> str | None:
    """Why a HookedTransformer-style config can't be built as a native bridge here, or None."""
    if cfg.get("positional_embedding_type", "standard") != "standard":
        return (f"{cfg['positional_embedding_type']!r} positional embeddings: TransformerLens 4's checkpoint "
                "converter (convert_tl_checkpoint) supports learned positions only")
    for flag in ("gated_mlp", "n_key_value_heads", "use_normalization_before_and_after", "final_rms",
                 "output_logits_soft_cap", "parallel_attn_mlp"):
        value = cfg.get(flag)
        if value not in (None, False, -1.0, 0.0):
            return f"cfg {flag}={value!r}: not part of the native bridge's checked conversion"
    return None


def native_bridge(cfg: dict[str, Any], state_dict: dict[str, Any] | None, *, tokenizer: Any | None = None,
                  name: str = "native") -> Any:
    """A TransformerBridge in compatibility mode holding a HookedTransformer-format ``state_dict``
    (TL 4's ``boot_native`` + ``convert_tl_checkpoint``, loaded strictly; weights unprocessed, as the
    HookedTransformer built from the same state dict). ``state_dict=None`` keeps the native model's
    own initialisation (``cfg["seed"]``), for benchmarks.

    Raises:
        ModelLoadError: the config needs something the conversion does not cover (``native_reason``).
    """
    why = native_reason(cfg)
    if why is not None:
        raise ModelLoadError(f"{name}: can't build a TransformerBridge from its checkpoint: {why}")
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    fields = {k: cfg[k] for k in _NATIVE_CFG_FIELDS if k in cfg}
    bridge_cfg = TransformerBridgeConfig.from_dict(fields)
    bridge = bridge_class().boot_native(bridge_cfg, tokenizer=tokenizer, model_name=name)
    if state_dict is not None:
        bridge.load_state_dict(convert_tl_checkpoint(dict(state_dict), bridge.cfg), strict=True)
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    return bridge.eval()


def hooked_config_class() -> type:
    """``HookedTransformerConfig`` (TransformerLens 3.x), or ``UnsupportedError`` on 4.x."""
    require_hooked("a HookedTransformerConfig")
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig


def build_from_fields(fields: dict[str, Any], state_dict: dict[str, Any], *, tokenizer: Any | None = None,
                      name: str = "native") -> Any:
    """A model with HookedTransformer-format weights ``state_dict`` and config ``fields``, unprocessed:
    a ``HookedTransformer`` where TransformerLens has one (3.x), a native ``TransformerBridge`` in
    compatibility mode on 4.x (``native_bridge``). Weights are loaded strictly (every parameter,
    nothing else), in eval mode.
    """
    cls = hooked_transformer_class()
    if cls is None:
        return native_bridge(fields, state_dict, tokenizer=tokenizer, name=name)
    import torch

    model = cls(hooked_config_class()(**fields), tokenizer=tokenizer)
    params = dict(model.named_parameters())
    if set(params) != set(state_dict):
        raise ModelLoadError(f"{name}: weights do not match the architecture (missing "
                             f"{sorted(set(params) - set(state_dict))}, unexpected {sorted(set(state_dict) - set(params))})")
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(state_dict[key])
    return model.eval()
