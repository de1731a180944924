"""Bundled sparse autoencoders, in sae-lens's disk format, trained by us offline.

- ``smollm2-135m-res-l15``: TopK SAE (k=32, 2304 features) on SmolLM2-135M-Instruct's
  residual stream at ``blocks.15.hook_resid_pre`` (the middle of its 30 layers), trained on
  CPython's ``pydoc_data.topics`` documentation text.
- ``ordinal-4l-res-l2``: TopK SAE (k=16, 1024 features) on ``ordinal-4l``'s residual stream
  at ``blocks.2.hook_resid_pre`` (the middle of its 4 layers), trained on its own prompts.
- ``gemma-3-270m-res-l9``: TopK SAE (k=32, 2560 features) on Gemma-3-270M's residual stream at
  ``blocks.9.hook_resid_pre`` (the middle of its 18 layers), trained on the same documentation
  text as SmolLM2's; weights stored in float16 (computed in float32). The model itself is
  opt-in (``tl_interp[gemma]``); retraining needs it, loading the SAE does not.

Each lives in ``tl_interp/models/saes/<name>/`` as ``cfg.json`` + ``sae_weights.safetensors``
(``sae_lens.SAE.load_from_disk`` reads it) and ``card.json`` (data, hyperparameters, seed,
held-out explained variance, L0, dead features, CE loss spliced in vs clean vs zero-ablated;
checksummed, with the SHA-256 of the other two files, verified by ``load_sae``).
Each reads only the positions it was trained on, ``cfg.metadata.seqpos_slice`` (also the
card's ``splice_positions``): 2: for SmolLM2, whose position 0 is the attention sink and
whose position 1 often carries a massive activation too (residual norm ~1e3..2e4 against
~150 elsewhere); 1: for ordinal-4l, whose position 0 is BOS. Splice them there:
``hooks.sae_splice(sae, positions=splice_positions(sae))``. SmolLM2 inputs should start with
``<|im_start|>``, as the training chunks did. Retrain with
``python -m tl_interp.models.train NAME`` (see ``train``).

Example:
    >>> from tl_interp.compat.sae import sae_hook_name
    >>> from tl_interp.models.saes import load_sae
    >>> sae = load_sae("ordinal-4l-res-l2")
    >>> sae_hook_name(sae), sae.cfg.d_sae
    ('blocks.2.hook_resid_pre', 1024)
"""

import difflib
from pathlib import Path
from typing import Any

import torch

from tl_interp._checks import checked
from tl_interp._io import read_checked_json, verify_manifest
from tl_interp.errors import ModelLoadError
from tl_interp.models.saes.specs import SPECS, SAESpec, splice_positions

__all__ = ["SAE_NAMES", "SAES_DIR", "SPECS", "SAESpec", "load_sae", "sae_card", "sae_path", "splice_positions"]

SAES_DIR = Path(__file__).resolve().parent
SAE_NAMES: tuple[str, ...] = tuple(SPECS)


def _fix(name: str, directory: Path | str | None) -> str:
    if directory is None:
        return f"reinstall tl_interp (or retrain with `python -m tl_interp.models.train {name}`)"
    return f"retrain it with `python -m tl_interp.models.train {name} --out {directory}`"


def _check(name: str) -> None:
    if name not in SPECS:
        close = difflib.get_close_matches(name, SAE_NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelLoadError(f"no bundled SAE {name!r}; {hint}known SAEs: {', '.join(SAE_NAMES)}")


def sae_path(name: str, *, directory: Path | str | None = None) -> Path:
    """The folder of SAE ``name`` (``cfg.json``, ``sae_weights.safetensors``, ``card.json``).

    Args:
        name: one of ``SAE_NAMES``.
        directory: a directory written by ``python -m tl_interp.models.train --out``;
            default the packaged SAEs.

    Returns:
        The folder's path.

    Raises:
        ModelLoadError: an unknown name (the message lists the known ones) or a missing folder.

    Example:
        >>> sae_path("ordinal-4l-res-l2").name
        'ordinal-4l-res-l2'
    """
    _check(name)
    path = Path(directory or SAES_DIR) / name
    if not (path / "sae_weights.safetensors").is_file():
        raise ModelLoadError(f"SAE {name!r} has no weights at {path}; train it with "
                             f"`python -m tl_interp.models.train {name} --out {path.parent}`")
    return path


def sae_card(name: str, *, directory: Path | str | None = None) -> dict[str, Any]:
    """The card of SAE ``name`` (how it was trained and what it measures), without loading it.

    Example:
        >>> sae_card("ordinal-4l-res-l2")["hook_name"]
        'blocks.2.hook_resid_pre'
    """
    return read_checked_json(sae_path(name, directory=directory) / "card.json", fix=_fix(name, directory))


@checked
def load_sae(name: str, *, directory: Path | str | None = None, device: str = "cpu") -> Any:
    """Load a bundled SAE with ``sae_lens.SAE.load_from_disk``, eval mode.

    Args:
        name: one of ``SAE_NAMES``.
        directory: where the SAE folders live; default the packaged ones.
        device: where to put the SAE.

    Returns:
        A sae-lens ``TopKSAE`` whose ``cfg.metadata.hook_name`` is its TransformerLens hook
        point (so ``hooks.sae_splice(sae)`` finds it), with its card as ``sae.card``.

    Raises:
        ModelLoadError: an unknown name (the message lists the known ones) or no weights.
        ArtifactError: the card, the weights or the config is truncated or corrupt
            (checksums: the card's own, and the SHA-256 of each file it lists).

    Example:
        >>> from tl_interp import hooks
        >>> sae = load_sae("ordinal-4l-res-l2")
        >>> print(hooks.sae_splice(sae, positions=splice_positions(sae)))
        Intervention (1 hook):
          1. SAE splice (no edit; error kept) (pos 1:) at blocks.2.hook_resid_pre
    """
    from tl_interp import compat

    compat.require_sae(f"load_sae({name!r})")
    from sae_lens import SAE

    from tl_interp._device import check_device

    check_device(device, f"load_sae({name!r})")
    folder = sae_path(name, directory=directory)
    card = sae_card(name, directory=directory)
    verify_manifest(folder, card.get("files", {}), fix=_fix(name, directory))
    sae = SAE.load_from_disk(folder, device=device)
    if sae.cfg.dtype != "float32":  # stored in float16 to stay small (card: storage_dtype)
        sae = sae.to(torch.float32)
    sae.card = card
    return sae.eval()
