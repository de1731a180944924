"""Where the zoo keeps its weights and model cards, and how they are read and written.

A zoo directory holds ``weights/<name>.safetensors`` (parameters only, float32),
``cards/<name>.json`` (how the weights were made and what they measure) and, for models with
their own tokenizer, ``tokenizers/<name>/``. The card is checksummed and lists every other
file of the model with its size and SHA-256 (``card["files"]``); the loaders verify both
before using anything, so a flipped byte, a truncated or a foreign file raises
``ArtifactError`` instead of loading garbage. The packaged directory is this package's own;
``python -m tl_interp.models.train NAME --out DIR`` writes the same layout anywhere, and
every loader takes ``directory=`` to read it back. Writes are atomic (``tl_interp._io``).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tl_interp._io import atomic_file, manifest, read_checked_json, verify_manifest, write_checked_json
from tl_interp.errors import ModelLoadError

__all__ = [
    "ZOO_DIR",
    "weights_path",
    "card_path",
    "read_card",
    "write_card",
    "read_weights",
    "write_weights",
    "load_parameters",
]

ZOO_DIR = Path(__file__).resolve().parent


def _fix(name: str, directory: Path | str | None) -> str:
    if directory is None:
        return f"reinstall tl_interp (or retrain with `python -m tl_interp.models.train {name}`)"
    return f"retrain it with `python -m tl_interp.models.train {name} --out {directory}`"


def weights_path(name: str, directory: Path | str | None = None) -> Path:
    """Path of ``<directory>/weights/<name>.safetensors`` (the packaged zoo by default)."""
    return Path(directory or ZOO_DIR) / "weights" / f"{name}.safetensors"


def card_path(name: str, directory: Path | str | None = None) -> Path:
    """Path of ``<directory>/cards/<name>.json`` (the packaged zoo by default)."""
    return Path(directory or ZOO_DIR) / "cards" / f"{name}.json"


def read_card(name: str, directory: Path | str | None = None) -> dict[str, Any]:
    """Read (and verify the checksum of) the model card of zoo model ``name``.

    Raises:
        ArtifactError: the card is missing, corrupt or not a tl_interp card.
    """
    return read_checked_json(card_path(name, directory), fix=_fix(name, directory))


def write_card(
    name: str, card: dict[str, Any], directory: Path | str | None = None, *, files: Sequence[str] = ()
) -> Path:
    """Write a model card atomically, with the manifest of ``files`` and its checksum.

    Args:
        name: The model's name.
        card: The card (``files`` is replaced).
        directory: The zoo directory (default the packaged one).
        files: Paths relative to ``directory`` that belong to the model (weights, tokenizer).

    Returns:
        The card's path.
    """
    root = Path(directory or ZOO_DIR)
    return write_checked_json(card_path(name, directory), {**card, "files": manifest(root, files)})


def read_weights(name: str, directory: Path | str | None = None) -> dict[str, Tensor]:
    """Read the parameters of zoo model ``name``, after verifying every file its card lists.

    Raises:
        ArtifactError: the card or one of its files is missing, truncated or corrupt.
    """
    card = read_card(name, directory)
    verify_manifest(Path(directory or ZOO_DIR), card.get("files", {}), fix=_fix(name, directory))
    return load_file(weights_path(name, directory))


def write_weights(name: str, model: nn.Module, directory: Path | str | None = None) -> Path:
    """Save ``model``'s parameters (not buffers) as float32 safetensors, atomically."""
    path = weights_path(name, directory)
    tensors = {k: p.detach().to(torch.float32).contiguous() for k, p in model.named_parameters()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"zoo_model": name})
    return path


def load_parameters(name: str, model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Copy ``tensors`` into ``model``'s parameters, requiring an exact match of names/shapes."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ModelLoadError(
            f"zoo model {name!r}: weight file does not match the architecture "
            f"(missing {missing}, unexpected {unexpected}); retrain it with "
            f"`python -m tl_interp.models.train {name}`"
        )
    with torch.no_grad():
        for key, param in params.items():
            if param.shape != tensors[key].shape:
                raise ModelLoadError(
                    f"zoo model {name!r}: parameter {key} has shape "
                    f"{tuple(tensors[key].shape)} in the weight file, the model expects "
                    f"{tuple(param.shape)}; retrain it with "
                    f"`python -m tl_interp.models.train {name}`"
                )
            param.copy_(tensors[key])
