"""Tuned-lens translators: one affine map per layer, added residually, stored checksummed.

A tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the
Tuned Lens", arXiv:2303.08112) reads layer ``l``'s residual stream ``h`` as
``head(h + W_l h + b_l)``: the model's own final norm and unembedding after a learned affine
*translator*. As in the reference implementation (``tuned_lens.nn.TunedLens``) the
translator's output is added to ``h`` and ``W_l, b_l`` start at zero, so an untrained lens is
the logit lens and weight decay pulls towards it. Layer ``l`` reads ``blocks.l.hook_resid_pre``
(the reference's ``hidden_states[l]``); the final residual stream needs no translator.

Bundled translators live in ``tl_interp/models/lenses/<name>/``: ``translators.safetensors``
(checksummed in its header) and ``card.json`` (checksummed, with the file's SHA-256).
"""

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import check_layer, checked
from tl_interp._io import load_checked, manifest, read_checked_json, save_checked, verify_manifest, write_checked_json
from tl_interp.errors import ModelLoadError, ShapeError

__all__ = ["Translators", "LENSES_DIR", "LENS_NAMES", "load_translators"]

LENSES_DIR = Path(__file__).resolve().parent.parent / "models" / "lenses"
LENS_NAMES: tuple[str, ...] = ("smollm2-135m-tuned-lens",)
_FILE = "translators.safetensors"


@dataclass(frozen=True, eq=False)
class Translators:
    """Per-layer affine translators ``h -> h + h @ weight[l].T + bias[l]`` (float32).

    Attributes:
        weight: ``(n_layers, d_model, d_model)``, ``nn.Linear`` layout (out, in).
        bias: ``(n_layers, d_model)``.
        model: the model's name (``ti.models.load``) or id they were trained for.
        card: how they were trained and what they measure (empty for untrained ones).
    """

    weight: Tensor
    bias: Tensor
    model: str = ""
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, d = self.bias.shape
        if tuple(self.weight.shape) != (n, d, d):
            raise ShapeError(f"Translators: weight has shape {tuple(self.weight.shape)}, the bias says "
                             f"(n_layers, d_model, d_model) = ({n}, {d}, {d})")

    @property
    def n_layers(self) -> int:
        """How many layers have a translator (the model's ``n_layers``)."""
        return int(self.bias.shape[0])

    @property
    def d_model(self) -> int:
        """The residual width they read."""
        return int(self.bias.shape[1])

    @classmethod
    def identity(cls, n_layers: int, d_model: int, *, model: str = "") -> "Translators":
        """Zero residual maps: the tuned lens they give is the logit lens (the reference's init).

        Example:
            >>> t = Translators.identity(2, 4)
            >>> torch.equal(t.translate(torch.ones(3, 4), 1), torch.ones(3, 4))
            True
        """
        return cls(torch.zeros(n_layers, d_model, d_model), torch.zeros(n_layers, d_model), model)

    def translate(self, h: Tensor, layer: int) -> Tensor:
        """``h + h @ W_l.T + b_l`` for residuals ``(..., d_model)`` read before block ``layer``."""
        check_layer(layer, self.n_layers, "Translators.translate")
        w, b = self.weight[layer].to(h), self.bias[layer].to(h)
        return h + torch.nn.functional.linear(h, w, b)

    def save(self, folder: Path | str, card: dict[str, Any] | None = None) -> Path:
        """Write ``folder/translators.safetensors`` and ``folder/card.json`` (with the file's hash).

        Stored in the card's ``storage_dtype`` (float16 halves a 30-layer SmolLM2 lens to 20 MB);
        loading computes in float32.

        Example:
            >>> import tempfile
            >>> folder = Translators.identity(2, 4, model="toy").save(tempfile.mkdtemp())
            >>> Translators.load(folder).model
            'toy'
        """
        card = dict(self.card if card is None else card)
        dtype = getattr(torch, card.get("storage_dtype", "float32"))
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_checked(out / _FILE, {"weight": self.weight.to(dtype), "bias": self.bias.to(dtype)},
                     {"kind": "tuned_lens_translators", "model": self.model})
        write_checked_json(out / "card.json", {**card, "model_name": self.model, "files": manifest(out, [_FILE])})
        return out

    @classmethod
    def load(cls, folder: Path | str, *, fix: str = "retrain or reinstall it") -> "Translators":
        """Read translators written by ``save``, verifying the card and the weights' checksums."""
        root = Path(folder)
        card = read_checked_json(root / "card.json", fix=fix)
        verify_manifest(root, card.get("files", {}), fix=fix)
        tensors, meta = load_checked(root / _FILE, fix=fix)
        return cls(tensors["weight"].float(), tensors["bias"].float(), meta.get("model", ""), card)


@checked
def load_translators(name: str, *, directory: Path | str | None = None) -> Translators:
    """A bundled tuned lens by name (offline, checksums verified).

    Args:
        name: one of ``LENS_NAMES`` (``"smollm2-135m-tuned-lens"``).
        directory: where lens folders live (``python -m tl_interp.models.train NAME --out DIR``);
            default the packaged ``tl_interp/models/lenses``.

    Raises:
        ModelLoadError: an unknown name or a missing folder.
        ArtifactError: a corrupt or truncated card or weights file.
    """
    if name not in LENS_NAMES and directory is None:
        close = difflib.get_close_matches(name, LENS_NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelLoadError(f"no bundled tuned lens {name!r}; {hint}known lenses: {', '.join(LENS_NAMES)}")
    folder = Path(directory or LENSES_DIR) / name
    if not (folder / _FILE).is_file():
        raise ModelLoadError(f"tuned lens {name!r} has no weights at {folder}; train it with "
                             f"`python -m tl_interp.models.train {name} --out {folder.parent}`")
    return Translators.load(folder, fix=f"retrain it with `python -m tl_interp.models.train {name}`")
