"""Load a local Hugging Face model directory as a HookedTransformer or a TransformerBridge.

Two backends:

* ``"hooked"``: TransformerLens's ``HookedTransformer`` for the architectures whose config
  and weights ``_convert`` maps (GPT-2, Llama, Mistral, Qwen2), with the standard
  load-time processing (LayerNorm folding, centering) unless ``processed=False``.
* ``"bridge"``: ``TransformerBridge.boot_transformers`` on the directory, for any
  architecture transformers can load, then ``enable_compatibility_mode`` so hook names and
  shapes are HookedTransformer's. By default the bridge keeps the checkpoint's own weights
  (``no_processing=True``): its logits then equal Hugging Face's bit for bit, and the
  bridge stays the reference-faithful fallback for architectures whose processing
  TransformerLens has not validated. Pass ``processed=True`` for HookedTransformer's
  coordinate system (folded norms, centred unembedding) on the bridge as well.

``backend="auto"`` (the default) takes the HookedTransformer when it can and the bridge
otherwise; on TransformerLens 4, which has no HookedTransformer, that is always the bridge. Everything runs with the hub switched off and ``trust_remote_code=False`` passed
explicitly, so a directory's own Python code is never run and no interactive prompt asks.
"""

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import torch

from tl_interp.compat.hub import hub_offline
from tl_interp.compat.tl import bridge_class, has_hooked_transformer, hooked_reason
from tl_interp.errors import ModelLoadError
from tl_interp.models._convert import (
    DEFAULT_N_CTX_CAP,
    HOOKED_ARCHITECTURES,
    UnsupportedForHooked,
    build_hooked,
    convert_state_dict,
    hooked_config_dict,
    processing_flags,
)

__all__ = ["load", "Backend", "default_device"]

Backend = Literal["auto", "hooked", "bridge"]
_log = logging.getLogger(__name__)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def default_device() -> str:
    """``"cuda"`` when available, else ``"cpu"``.

    Example:
        >>> default_device() in ("cuda", "cpu")
        True
    """
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{str(path)!r} has no config.json, so it is not a Hugging Face model directory; "
            "save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)"
        )
    for name in ("config.json", "tokenizer_config.json"):
        try:
            custom = "auto_map" in json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if custom:
            # trust_remote_code=False is passed to every load, but TransformerLens reloads the
            # tokenizer without it; refusing here means no code runs and no prompt can appear
            raise ModelLoadError(
                f"{str(path / name)!r} has an 'auto_map' entry: the directory ships its own Python code, "
                "which tl_interp never runs (trust_remote_code=False); convert the model to a standard "
                "transformers architecture first"
            )


def load_tokenizer(path: Path) -> Any | None:
    """The directory's tokenizer, or ``None`` if it ships none.

    Args:
        path: A local Hugging Face model or tokenizer directory.

    Returns:
        A ``transformers`` tokenizer, or ``None``.
    """
    from transformers import AutoTokenizer

    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        return None
    with hub_offline():
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def _load_hooked(
    path: Path, hf_config: Any, cfg_dict: dict[str, Any], *, processed: bool, device: str, dtype: torch.dtype
) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    with hub_offline():
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(path), config=hf_config, local_files_only=True, trust_remote_code=False, dtype=torch.float32
        )
    state_dict = convert_state_dict(hf_model, cfg_dict)
    del hf_model
    return build_hooked(
        cfg_dict,
        state_dict,
        tokenizer=load_tokenizer(path),
        device=device,
        dtype=dtype,
        processing=processing_flags(cfg_dict, processed),
    )


def load_bridge(path: Path, *, processed: bool, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """``TransformerBridge.boot_transformers`` on a local directory, offline, in compatibility mode."""
    with hub_offline():
        try:
            bridge = bridge_class().boot_transformers(
                str(path), device=device, dtype=dtype, trust_remote_code=False
            )
        except (ValueError, NotImplementedError, KeyError) as err:
            raise ModelLoadError(
                f"TransformerBridge cannot load {str(path)!r}: {err}. The bridge needs an "
                "architecture listed in transformer_lens.model_bridge.supported_architectures"
            ) from err
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=not processed)
    return bridge.eval()


def load(
    path: str | os.PathLike[str],
    *,
    backend: Backend = "auto",
    processed: bool | None = None,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    n_ctx: int | None = DEFAULT_N_CTX_CAP,
) -> torch.nn.Module:
    """Load a local Hugging Face model directory (config.json + weights + tokenizer), offline.

    Args:
        path: The directory.
        backend: ``"hooked"`` (HookedTransformer; GPT-2, Llama, Mistral, Qwen2 only),
            ``"bridge"`` (TransformerBridge in compatibility mode; any supported
            architecture), or ``"auto"``: hooked when possible, else bridge.
        processed: Apply TransformerLens's weight processing (fold norms, centre weights).
            ``None`` means the backend's default: ``True`` for hooked, ``False`` for bridge.
        device: Where to put the model (default: cuda if available, else cpu).
        dtype: Parameter dtype.
        n_ctx: Context-length cap for the hooked backend (keeps rotary and mask buffers
            small); ``None`` keeps the checkpoint's full length.

    Returns:
        A ``HookedTransformer`` or a ``TransformerBridge``, in eval mode.

    Raises:
        ModelLoadError: the directory is missing or malformed, or the requested backend
            cannot load this architecture.

    Example:
        >>> import tempfile
        >>> from tl_interp.models import make_tiny_hf_dir
        >>> model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
        >>> type(model).__name__ in ("HookedTransformer", "TransformerBridge"), model.cfg.n_layers
        (True, 2)
    """
    from transformers import AutoConfig

    root = Path(path).expanduser()
    _check_dir(root)
    if backend not in ("auto", "hooked", "bridge"):
        raise ModelLoadError(f"unknown backend {backend!r}; use 'auto', 'hooked' or 'bridge'")
    device = device or default_device()
    with hub_offline():
        hf_config = AutoConfig.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
    if backend == "hooked" and not has_hooked_transformer():
        raise ModelLoadError(f"backend='hooked' cannot load {str(root)!r}: {hooked_reason()}; use backend='bridge' "
                             "(or 'auto'), or the default environment (constraints.txt: transformer-lens 3.9)")
    if backend != "bridge" and has_hooked_transformer():
        try:
            cfg_dict = hooked_config_dict(hf_config, model_name=root.name, n_ctx=n_ctx)
        except UnsupportedForHooked as why:
            if backend == "hooked":
                raise ModelLoadError(
                    f"HookedTransformer cannot load {str(root)!r}: unsupported {why}. "
                    f"Supported architectures: {', '.join(HOOKED_ARCHITECTURES)}; "
                    "use load(path, backend='bridge') for anything else"
                ) from why
            _log.info("loading %s with TransformerBridge: unsupported %s", root, why)
        else:
            return _load_hooked(
                root,
                hf_config,
                cfg_dict,
                processed=True if processed is None else processed,
                device=device,
                dtype=dtype,
            )
    return load_bridge(root, processed=bool(processed), device=device, dtype=dtype)
