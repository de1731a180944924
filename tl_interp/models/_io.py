"""Offline guards and the on-disk cache of converted checkpoints shared by the model loaders.

Nothing in ``tl_interp.models`` may reach the Hugging Face hub: the loaders run under
``tl_interp.compat.hub_offline`` (the hub's offline switch is one of its guarded internals).

The cache lives in ``$TL_INTERP_CACHE`` or ``~/.cache/tl_interp``. An entry is a directory
``<name>-<key>/`` holding ``model.safetensors`` (final TransformerLens weights),
``tokenizer/`` and ``config.json`` (the config, and a manifest with the SHA-256 of every
other file; the config carries its own checksum). The key hashes the *content* of the source
checkpoint (its SHA-256, not its path), the versions of the libraries that converted it and
the load options, so every virtual environment with the same libraries shares one entry.
Entries are built in a temporary sibling and renamed into place, and verified on every load
(a streaming SHA-256 of the 650 MB SmolLM2 weights costs ~0.5 s).
"""

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tl_interp._io import atomic_dir, manifest, read_checked_json, verify_manifest, write_checked_json
from tl_interp.errors import ArtifactError, ModelLoadError

__all__ = [
    "cache_root",
    "atomic_dir",
    "CACHE_ENV_VAR",
    "check_cache_writable",
    "entry_path",
    "write_entry",
    "read_entry",
    "versions",
    "load_or_build",
    "cached_model",
]

CACHE_ENV_VAR = "TL_INTERP_CACHE"
_ENTRY_FORMAT = 2


def cache_root() -> Path:
    """The directory holding converted checkpoints: ``$TL_INTERP_CACHE`` or ``~/.cache/tl_interp``.

    Example:
        >>> isinstance(cache_root(), Path)
        True
    """
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "tl_interp"


def check_cache_writable() -> Path:
    """Make sure a new cache entry can be written, before any slow conversion starts.

    Returns:
        ``cache_root()``, created if needed.

    Raises:
        ModelLoadError: the directory cannot be created or written; the message names
            ``TL_INTERP_CACHE``.
    """
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        source = f"${CACHE_ENV_VAR}" if os.environ.get(CACHE_ENV_VAR) else f"the default (${CACHE_ENV_VAR} is unset)"
        raise ModelLoadError(
            f"the model cache {str(root)!r} ({source}) is not writable: {err}. The first load converts the "
            f"checkpoint and must store it there; set {CACHE_ENV_VAR} to a writable directory"
        ) from err
    return root


def versions(*dists: str) -> dict[str, str]:
    """Installed versions of ``dists`` (``"absent"`` when not installed), for cache keys.

    Example:
        >>> versions("torch")["torch"] != "absent"
        True
    """
    out = {}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def entry_path(name: str, key: Mapping[str, Any]) -> Path:
    """The cache directory for ``name`` and a JSON-serialisable ``key`` (it may not exist yet).

    Example:
        >>> entry_path("m", {"source_sha256": "ab", "n_ctx": 8}).name.startswith("m-")
        True
    """
    full = {"format": _ENTRY_FORMAT, **key}
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / f"{name}-{digest}"


def write_entry(entry: Path, state_dict: Mapping[str, torch.Tensor], tokenizer: Any, meta: Mapping[str, Any]) -> None:
    """Publish a cache entry: weights, tokenizer and a checksummed config with their manifest.

    Args:
        entry: ``entry_path(...)``.
        state_dict: The final weights (float32, contiguous).
        tokenizer: A transformers tokenizer (``save_pretrained``).
        meta: JSON-serialisable config (``cfg``, provenance); ``files`` is added.
    """
    with atomic_dir(entry) as tmp:
        save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        files = [p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file()]
        write_checked_json(tmp / "config.json", {**meta, "format": _ENTRY_FORMAT, "files": manifest(tmp, files)})


def read_entry(entry: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """Verify and read a cache entry.

    Returns:
        ``(meta, state_dict, tokenizer)``.

    Raises:
        ArtifactError: a file of the entry is missing, truncated or corrupt (the message
            names it and says to pass ``refresh=True`` or delete the entry).
    """
    from tl_interp.models._hf import load_tokenizer

    fix = f"pass refresh=True to rebuild it, or delete {str(entry)!r}"
    meta = read_checked_json(entry / "config.json", fix=fix)
    if meta.get("format") != _ENTRY_FORMAT:
        raise ArtifactError(f"{str(entry)!r} has cache format {meta.get('format')!r}, expected {_ENTRY_FORMAT}; {fix}")
    verify_manifest(entry, meta.get("files", {}), fix=fix)
    state_dict = load_file(str(entry / "model.safetensors"))
    tokenizer = load_tokenizer(entry / "tokenizer")
    if tokenizer is None:
        raise ArtifactError(f"{str(entry / 'tokenizer')!r} holds no tokenizer; {fix}")
    return meta, state_dict, tokenizer


def load_or_build(
    entry: Path, build: Callable[[], tuple[Mapping[str, torch.Tensor], Any, Mapping[str, Any]]], *, refresh: bool
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """Read cache entry ``entry``, building and publishing it first if it does not exist.

    Args:
        entry: ``entry_path(...)``.
        build: Makes ``(state_dict, tokenizer, meta)`` from the source checkpoint (slow).
        refresh: Delete and rebuild an existing entry.

    Returns:
        ``read_entry(entry)``: what a warm load reads, also right after a build.

    Raises:
        ModelLoadError: the cache is not writable (checked before ``build`` runs).
        ArtifactError: the entry exists but is corrupt or incomplete.
    """
    if refresh and entry.exists():
        shutil.rmtree(entry)
    if not entry.exists():
        check_cache_writable()
        state_dict, tokenizer, meta = build()
        write_entry(entry, state_dict, tokenizer, meta)
        del state_dict
    return read_entry(entry)


def cached_model(
    entry: Path,
    build: Callable[[], tuple[Mapping[str, torch.Tensor], Any, Mapping[str, Any]]],
    *,
    refresh: bool,
    device: str,
    dtype: torch.dtype,
) -> Any:
    """The HookedTransformer stored in cache entry ``entry`` (built first if needed).

    The tokenizer pads on the right, whatever the checkpoint's tokenizer said (Gemma's GGUF
    says left), as tl_interp's batches assume.

    Raises:
        ModelLoadError: the cache is not writable when the entry must be built.
        ArtifactError: the entry is corrupt, or its config does not fit its weights.
    """
    from tl_interp.models._convert import build_hooked

    meta, state_dict, tokenizer = load_or_build(entry, build, refresh=refresh)
    tokenizer.padding_side = "right"
    try:
        return build_hooked(meta["cfg"], state_dict, tokenizer=tokenizer, device=device, dtype=dtype, processing=None)
    except (KeyError, ValueError, TypeError) as err:
        raise ArtifactError(f"the cache entry {str(entry)!r} does not describe a loadable model ({err}); "
                            "pass refresh=True to rebuild it, or delete that directory") from err
