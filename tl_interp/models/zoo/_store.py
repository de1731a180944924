"""Where the zoo keeps its weights and model cards, and how they are read and written.

A zoo directory holds ``weights/<name>.safetensors`` (parameters only, float32) and
``cards/<name>.json`` (how the weights were made and what they measure). The packaged
directory is this package's own; ``python -m tl_interp.models.train NAME --out DIR`` writes
the same layout anywhere, and every loader takes ``directory=`` to read it back.
Writes are atomic (temporary file, then ``os.replace``), so an interrupted run never leaves
a half-written file where a loader would find it.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tl_interp._io import atomic_file
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


def weights_path(name: str, directory: Path | str | None = None) -> Path:
    """Path of ``<directory>/weights/<name>.safetensors`` (the packaged zoo by default)."""
    return Path(directory or ZOO_DIR) / "weights" / f"{name}.safetensors"


def card_path(name: str, directory: Path | str | None = None) -> Path:
    """Path of ``<directory>/cards/<name>.json`` (the packaged zoo by default)."""
    return Path(directory or ZOO_DIR) / "cards" / f"{name}.json"


def read_card(name: str, directory: Path | str | None = None) -> dict[str, Any]:
    """Read the model card of zoo model ``name`` as a dict."""
    path = card_path(name, directory)
    if not path.is_file():
        raise ModelLoadError(
            f"no model card for zoo model {name!r} at {path}; "
            f"train it with `python -m tl_interp.models.train {name} --out {path.parent.parent}`"
        )
    return json.loads(path.read_text())


def write_card(name: str, card: dict[str, Any], directory: Path | str | None = None) -> Path:
    """Write a model card as indented JSON, atomically; returns its path."""
    path = card_path(name, directory)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return path


def read_weights(name: str, directory: Path | str | None = None) -> dict[str, Tensor]:
    """Read the parameters of zoo model ``name`` from its safetensors file."""
    path = weights_path(name, directory)
    if not path.is_file():
        raise ModelLoadError(
            f"no weights for zoo model {name!r} at {path}; "
            f"train them with `python -m tl_interp.models.train {name} --out {path.parent.parent}`"
        )
    return load_file(path)


def write_weights(
    name: str, model: nn.Module, directory: Path | str | None = None
) -> Path:
    """Save ``model``'s parameters (not buffers) as float32 safetensors, atomically."""
    path = weights_path(name, directory)
    tensors = {
        k: p.detach().to(torch.float32).contiguous() for k, p in model.named_parameters()
    }
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
