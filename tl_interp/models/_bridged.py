"""The bundled real checkpoints on TransformerLens 4: a converted local directory + the Bridge.

TransformerLens 4 has no ``HookedTransformer`` (``compat.tl``), so SmolLM2-135M and
Gemma-3-270M are dequantised from their GGUF files once into a plain Hugging Face directory
(``save_pretrained`` of the fp32 model and its tokenizer), cached under the same cache root and
keyed the same way (the source file's SHA-256 and the library versions), and each load boots it
with ``TransformerBridge.boot_transformers`` in compatibility mode (``_hf.load_bridge``). With
``processed=True`` the Bridge applies TransformerLens's standard processing, so its hook points
carry the same values as the processed HookedTransformer on 3.9.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tl_interp._io import atomic_dir
from tl_interp.errors import ModelLoadError
from tl_interp.models._hf import load_bridge
from tl_interp.models._io import check_cache_writable, entry_path

__all__ = ["converted_dir", "load_converted"]


def converted_dir(name: str, key: dict[str, Any], make_hf: Callable[[], tuple[Any, Any]], *,
                  refresh: bool = False) -> Path:
    """The cached Hugging Face directory of ``name`` for ``key``, written first if it is missing.

    Args:
        name: The model's tl_interp name (the entry is ``<name>-hf-<digest>``).
        key: What the directory depends on (source SHA-256, library versions).
        make_hf: Builds ``(hf_model, tokenizer)`` from the source checkpoint (slow; only on a miss).
        refresh: Rewrite the directory even if it exists.
    """
    import shutil

    entry = entry_path(f"{name}-hf", key)
    if refresh and entry.exists():
        shutil.rmtree(entry)
    if not (entry / "config.json").is_file():
        check_cache_writable()
        hf_model, tokenizer = make_hf()
        packed = sorted({str(p.dtype) for p in hf_model.parameters()} - {"torch.float32"})
        if packed:
            raise ModelLoadError(f"{name}: transformers left weights in {packed}, not dequantised fp32; "
                                 "the converted directory would hold packed values, so the load stops")
        # the weights are plain fp32 now; only the markers of their former GGUF storage remain
        hf_model.hf_quantizer = None
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        with atomic_dir(entry) as tmp:
            hf_model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
        del hf_model
    return entry


def load_converted(name: str, key: dict[str, Any], make_hf: Callable[[], tuple[Any, Any]], *, processed: bool,
                   device: str, dtype: torch.dtype, refresh: bool, prepend_bos: bool | None = None) -> Any:
    """A TransformerBridge (compatibility mode, eval) on ``converted_dir(name, key, make_hf)``.

    ``prepend_bos`` overrides the Bridge's ``cfg.default_prepend_bos`` (SmolLM2 is used without a
    BOS token, as on 3.9); the tokenizer pads on the right, as tl_interp's batches assume.
    """
    path = converted_dir(name, key, make_hf, refresh=refresh)
    bridge = load_bridge(path, processed=processed, device=device, dtype=dtype)
    if prepend_bos is not None:
        bridge.cfg.default_prepend_bos = prepend_bos
    if getattr(bridge, "tokenizer", None) is not None:
        bridge.tokenizer.padding_side = "right"
    return bridge
