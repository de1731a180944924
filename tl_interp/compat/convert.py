"""TransformerLens's weight conversions and its list of activation functions.

The local Hugging Face loader (``tl_interp.models._convert``) maps a checkpoint's weights to
TL's layout with TL's own ``transformer_lens.pretrained.weight_conversions`` functions and
refuses an activation TL can't run (``transformer_lens.utilities.activation_functions.
SUPPORTED_ACTIVATIONS``). Both are module internals, not TL's public API: they are read here.
"""

import inspect
from collections.abc import Callable
from typing import Any

from tl_interp.compat._guard import NO_FALLBACK, require
from tl_interp.compat.tl import require_hooked

__all__ = ["CONVERTERS", "weight_converter", "supported_activations"]

# architecture -> the TL function that maps its Hugging Face weights (model, cfg) -> state dict
CONVERTERS = {"GPT2LMHeadModel": "convert_gpt2_weights", "LlamaForCausalLM": "convert_llama_weights",
              "MistralForCausalLM": "convert_mistral_weights", "Qwen2ForCausalLM": "convert_qwen2_weights"}


def _check_conversions() -> str | None:
    from transformer_lens.pretrained import weight_conversions

    for arch, name in CONVERTERS.items():
        fn = getattr(weight_conversions, name, None)
        if not callable(fn):
            return f"transformer_lens weight_conversions.{name} ({arch}) is gone"
        if list(inspect.signature(fn).parameters)[1:] != ["cfg"]:
            return f"transformer_lens weight_conversions.{name}(model, cfg) changed"
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    if not isinstance(SUPPORTED_ACTIVATIONS, dict) or "gelu_new" not in SUPPORTED_ACTIVATIONS:
        return "transformer_lens SUPPORTED_ACTIVATIONS is no longer a dict of activation names"
    return None


NO_FALLBACK.update({"weight_conversions": _check_conversions})


def weight_converter(architecture: str) -> Callable[[Any, Any], dict[str, Any]]:
    """TL's ``weight_conversions`` function for a Hugging Face architecture: ``(hf_model, cfg) ->
    state dict`` in TL's layout.

    Example:
        >>> weight_converter("LlamaForCausalLM").__name__
        'convert_llama_weights'
    """
    require_hooked(f"converting a {architecture} checkpoint to HookedTransformer layout")
    require("weight_conversions", f"converting a {architecture} checkpoint")
    from transformer_lens.pretrained import weight_conversions

    return getattr(weight_conversions, CONVERTERS[architecture])


def supported_activations() -> frozenset[str]:
    """The names of the activation functions TL's MLPs can run (``cfg.act_fn``).

    Example:
        >>> "silu" in supported_activations()
        True
    """
    require_hooked("checking an activation function against HookedTransformer's")
    require("weight_conversions", "checking an activation function")
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    return frozenset(SUPPORTED_ACTIVATIONS)
