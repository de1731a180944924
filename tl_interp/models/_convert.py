"""Hugging Face config and weights -> HookedTransformer, without going through the hub.

TransformerLens's own ``convert_hf_model_config`` wants an official hub name: on a local
path it breaks whenever the path contains "llama"/"gemma" (it then infers the architecture
from the *name* and never reads the config) and on GPT-2 configs written by
transformers 5 (no ``n_ctx``). So the config builders live here, one per architecture,
each mirroring the field choices of TransformerLens 3.9's
``loading_from_pretrained.convert_hf_model_config`` for that architecture; the weights go
through TransformerLens's own ``weight_conversions`` functions, and the standard processing
(LayerNorm folding, centering, value-bias folding) through
``HookedTransformer.load_and_process_state_dict``, exactly as ``from_pretrained`` does.
"""

from collections.abc import Callable, Mapping
from typing import Any

import torch
from tl_interp.compat.convert import CONVERTERS, supported_activations, weight_converter
from tl_interp.compat.tl import hooked_config_class, require_hooked

__all__ = [
    "HOOKED_ARCHITECTURES",
    "UnsupportedForHooked",
    "hooked_config_dict",
    "convert_state_dict",
    "processing_flags",
    "final_config_dict",
    "build_hooked",
    "DEFAULT_N_CTX_CAP",
]

# Rotary/causal-mask buffers are (n_ctx, ...) per layer; 2048 keeps them small while
# covering every prompt an interpretability study feeds these models.
DEFAULT_N_CTX_CAP = 2048


class UnsupportedForHooked(NotImplementedError):
    """This checkpoint uses a feature the HookedTransformer converters do not reproduce."""


def _rope_theta(hf_config: Any) -> float:
    theta = getattr(hf_config, "rope_theta", None)
    if theta is None:
        params = getattr(hf_config, "rope_parameters", None) or {}
        theta = params.get("rope_theta", 10000.0)
    return float(theta)


def _rope_fields(hf_config: Any) -> dict[str, Any]:
    """Rotary scaling: plain RoPE and llama3 NTK-by-parts are supported, others are not."""
    scaling = getattr(hf_config, "rope_scaling", None) or getattr(hf_config, "rope_parameters", None)
    rope_type = ((scaling or {}).get("rope_type") or (scaling or {}).get("type") or "default")
    if rope_type == "default":
        return {}
    if rope_type == "llama3":
        return {
            "use_NTK_by_parts_rope": True,
            "NTK_original_ctx_len": scaling.get(
                "original_max_position_embeddings", hf_config.max_position_embeddings
            ),
            "NTK_by_parts_low_freq_factor": scaling.get("low_freq_factor", 1.0),
            "NTK_by_parts_high_freq_factor": scaling.get("high_freq_factor", 4.0),
            "NTK_by_parts_factor": scaling.get("factor", 1.0),
        }
    raise UnsupportedForHooked(f"rope scaling of type {rope_type!r}")


def _head_dim(hf_config: Any) -> int:
    head_dim = getattr(hf_config, "head_dim", None)
    if isinstance(head_dim, int) and head_dim > 0:
        return head_dim
    return hf_config.hidden_size // hf_config.num_attention_heads


def _no_biases(hf_config: Any) -> None:
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(hf_config, flag, False):
            raise UnsupportedForHooked(f"{flag}=True (the converter drops these biases)")


def _llama_like(hf_config: Any) -> dict[str, Any]:
    _no_biases(hf_config)
    d_head = _head_dim(hf_config)
    n_kv = hf_config.num_key_value_heads or hf_config.num_attention_heads
    return {
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": hf_config.num_attention_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_act,
        # TL switches to its grouped-query code path whenever this is not None.
        "n_key_value_heads": n_kv if n_kv != hf_config.num_attention_heads else None,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "rotary_base": _rope_theta(hf_config),
        "final_rms": True,
        "gated_mlp": True,
        **_rope_fields(hf_config),
    }


def _llama(hf_config: Any) -> dict[str, Any]:
    return {**_llama_like(hf_config), "default_prepend_bos": True}


def _mistral(hf_config: Any) -> dict[str, Any]:
    if getattr(hf_config, "sliding_window", None):
        raise UnsupportedForHooked("sliding-window attention")
    cfg = _llama_like(hf_config)
    # convert_mistral_weights always writes the grouped (underscored) K/V keys.
    cfg["n_key_value_heads"] = hf_config.num_key_value_heads
    return {**cfg, "default_prepend_bos": True}


def _qwen2(hf_config: Any) -> dict[str, Any]:
    if getattr(hf_config, "use_sliding_window", False):
        raise UnsupportedForHooked("sliding-window attention")
    cfg = _llama_like(hf_config)
    cfg["n_key_value_heads"] = hf_config.num_key_value_heads
    # Qwen2 tokenizers add no BOS and the models were trained without one.
    return {**cfg, "default_prepend_bos": False}


def _gpt2(hf_config: Any) -> dict[str, Any]:
    if getattr(hf_config, "add_cross_attention", False):
        raise UnsupportedForHooked("cross-attention")
    return {
        "d_model": hf_config.n_embd,
        "d_head": hf_config.n_embd // hf_config.n_head,
        "n_heads": hf_config.n_head,
        "d_mlp": hf_config.n_inner or 4 * hf_config.n_embd,
        "n_layers": hf_config.n_layer,
        "n_ctx": hf_config.n_positions,
        "eps": hf_config.layer_norm_epsilon,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.activation_function,
        "use_attn_scale": getattr(hf_config, "scale_attn_weights", True),
        "use_local_attn": False,
        "scale_attn_by_inverse_layer_idx": hf_config.scale_attn_by_inverse_layer_idx,
        "normalization_type": "LN",
        "positional_embedding_type": "standard",
        "default_prepend_bos": True,
    }


# config builders; the weights go through TL's converter for the same architecture (compat.convert)
_BUILDERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "GPT2LMHeadModel": _gpt2,
    "LlamaForCausalLM": _llama,
    "MistralForCausalLM": _mistral,
    "Qwen2ForCausalLM": _qwen2,
}
HOOKED_ARCHITECTURES: tuple[str, ...] = tuple(_BUILDERS)


def hooked_config_dict(
    hf_config: Any,
    *,
    model_name: str,
    n_ctx: int | None = DEFAULT_N_CTX_CAP,
    architecture: str | None = None,
) -> dict[str, Any]:
    """Build the ``HookedTransformerConfig`` fields for a Hugging Face config, offline.

    Args:
        hf_config: A ``transformers.PretrainedConfig`` whose ``architectures[0]`` is one of
            ``HOOKED_ARCHITECTURES``.
        model_name: Stored as ``cfg.model_name`` (used as the model id in provenance).
        n_ctx: Cap on the context length (``None``: the checkpoint's full length).
        architecture: Overrides ``hf_config.architectures[0]`` (GGUF-derived configs have
            none; pass the loaded model's class name).

    Returns:
        A JSON-serialisable dict for ``HookedTransformerConfig.from_dict`` (no device/dtype).

    Raises:
        UnsupportedForHooked: the architecture or one of its features is not covered.

    Example:
        >>> from transformers import GPT2Config
        >>> cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, architectures=["GPT2LMHeadModel"])
        >>> hooked_config_dict(cfg, model_name="tiny")["d_head"]
        16
    """
    arch = architecture or (getattr(hf_config, "architectures", None) or [None])[0]
    if arch not in _BUILDERS:
        raise UnsupportedForHooked(f"architecture {arch!r}")
    cfg = _BUILDERS[arch](hf_config)
    if cfg["act_fn"] not in supported_activations():
        raise UnsupportedForHooked(f"activation {cfg['act_fn']!r}")
    if n_ctx is not None:
        cfg["n_ctx"] = min(cfg["n_ctx"], n_ctx)
    cfg.update(
        original_architecture=arch,
        model_name=model_name,
        init_weights=False,
        tokenizer_name=None,
        eps=float(cfg["eps"]),
    )
    return cfg


def convert_state_dict(hf_model: torch.nn.Module, cfg_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map a Hugging Face model's weights to HookedTransformer names (unprocessed).

    Args:
        hf_model: The loaded ``*ForCausalLM`` model.
        cfg_dict: Its ``hooked_config_dict``.

    Returns:
        The state dict in TransformerLens layout, on CPU in float32.
    """
    cfg = hooked_config_class().from_dict({**cfg_dict, "device": "cpu", "dtype": torch.float32})
    converter = weight_converter(cfg_dict["original_architecture"])
    with torch.no_grad():
        state_dict = converter(hf_model, cfg)
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}


def processing_flags(cfg_dict: Mapping[str, Any], processed: bool) -> dict[str, bool]:
    """TransformerLens's standard load-time processing for this model, or none of it.

    Centering the writing weights only means something before a LayerNorm (RMSNorm does not
    subtract the mean), so it is switched off for RMS models.

    Args:
        cfg_dict: The model's ``hooked_config_dict``.
        processed: Whether to process at all.

    Returns:
        Keyword arguments for ``HookedTransformer.load_and_process_state_dict``.
    """
    is_ln = cfg_dict["normalization_type"] in ("LN", "LNPre")
    return {
        "fold_ln": processed,
        "center_writing_weights": processed and is_ln,
        "center_unembed": processed,
        "fold_value_biases": processed,
    }


def final_config_dict(
    cfg_dict: Mapping[str, Any], processing: Mapping[str, bool] | None
) -> dict[str, Any]:
    """The config fields of the model after ``processing`` (folded norms become "Pre" norms).

    Args:
        cfg_dict: Config fields before processing.
        processing: ``processing_flags(...)``, or ``None`` for no change.

    Returns:
        A new dict; ``cfg_dict`` is not modified.
    """
    out = dict(cfg_dict)
    if processing is not None and processing["fold_ln"]:
        # As HookedTransformer.from_pretrained does before building the model.
        norm = out["normalization_type"]
        out["normalization_type"] = {"LN": "LNPre", "RMS": "RMSPre"}.get(norm, norm)
    return out


def build_hooked(
    cfg_dict: Mapping[str, Any],
    state_dict: dict[str, torch.Tensor],
    *,
    tokenizer: Any | None,
    device: str,
    dtype: torch.dtype,
    processing: Mapping[str, bool] | None,
) -> torch.nn.Module:
    """Instantiate a HookedTransformer and load (and optionally process) its weights.

    Args:
        cfg_dict: Config fields (``hooked_config_dict``, or a cached, already-processed one).
        state_dict: Weights in TransformerLens layout.
        tokenizer: A transformers tokenizer, or ``None``.
        device: Where the model lives.
        dtype: Parameter dtype; processing itself always runs in float32.
        processing: ``processing_flags(...)`` to process ``state_dict`` on the way in, or
            ``None`` when the weights are already in final form (loaded strictly).

    Returns:
        The model, in eval mode.
    """
    cfg_in = final_config_dict(cfg_dict, processing)
    hooked = require_hooked("building a HookedTransformer")
    cfg = hooked_config_class().from_dict({**cfg_in, "device": device, "dtype": dtype})
    model = hooked(cfg, tokenizer=tokenizer, move_to_device=False)
    if processing is not None:
        model.load_and_process_state_dict(dict(state_dict), **processing)
    else:
        # assign=True adopts the (already final) tensors instead of copying ~0.5 GB again.
        ready = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}
        missing, unexpected = model.load_state_dict(ready, strict=False, assign=True)
        buffers = {name for name, _ in model.named_buffers()}
        if unexpected or set(missing) - buffers:
            raise KeyError(
                f"state dict does not fit the config: missing {sorted(set(missing) - buffers)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
    model.move_model_modules_to_device()
    return model.eval()
