"""``SteeringVector``: a direction plus where it was read, how, and from which prompts.

A steering vector is a value, not a bare tensor: it knows its hook point (the one it was read at
and is applied at), its space (the residual stream, or an SAE's feature space), how it was
built (mean difference, PCA, SAE features, random control), the position rule it was read
with, a hash of the prompts (and the prompts themselves, so an evaluation can keep them out
of the held-out columns), and it saves and loads through one safetensors file.

Where a vector is added follows the positions vocabulary (``tl_interp.positions``):
``"last"`` (each prompt's last real token), ``"all"`` (every real token), ``From(k)`` (each
row's real tokens from the k-th on), explicit indices or masks.
"""

import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked
from tl_interp import hooks
from tl_interp._io import load_checked, save_checked
from tl_interp.compat.sae import sae_hook_name
from tl_interp.errors import ArtifactError, InputError, ShapeError, TlInterpDeprecationWarning, TlInterpWarning
from tl_interp.intervention import Intervention
from tl_interp.positions import From, Positions, describe

__all__ = ["SteeringVector", "From", "PositionRule", "Space", "steer_positions", "sae_identity", "sae_digest"]

Space: TypeAlias = Literal["residual", "sae"]
PositionRule: TypeAlias = Positions  # the positions vocabulary (kept as the steering module's old name)


def rule_label(rule: object) -> str:
    return describe(rule).strip("'")


@checked
def steer_positions(rule: Positions, tokens: Any = None) -> Positions:
    """Deprecated: position rules are now resolved by the hooks themselves; returns ``rule``.

    Example:
        >>> steer_positions("last")
        'last'
    """
    warnings.warn("steer_positions is no longer needed: pass positions ('last', 'all', From(k), ...) "
                  "straight to SteeringVector.intervention or hooks.add", TlInterpDeprecationWarning, stacklevel=2)
    return rule


def sae_identity(sae: Any) -> tuple[str, str | None]:
    """``(name, hook name)`` of an SAE: what a feature-space vector must match (the hook is
    None when the SAE's config names none)."""
    card = getattr(sae, "card", None)
    if isinstance(card, dict) and card.get("name"):
        name = str(card.get("name"))
    else:  # no card: the class and its decoder's weights say which SAE it is
        import hashlib

        w = sae.W_dec.detach().float().cpu().contiguous()
        name = f"{type(sae).__name__}:{hashlib.sha256(w.numpy().tobytes()).hexdigest()[:12]}"
    return name, sae_hook_name(sae)


def sae_digest(sae: Any) -> str:
    """A digest of an SAE's weights (every tensor of its state dict: ``W_enc``, ``W_dec``, the
    biases, thresholds), which a feature-space vector checks whatever the SAE's card says: two
    SAEs sharing a card name (a retrained or edited copy) have different features.

    Example:
        >>> from sae_lens import StandardSAE, StandardSAEConfig
        >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
        >>> len(sae_digest(sae)), sae_digest(sae) == sae_digest(sae)
        (16, True)
    """
    import hashlib

    h = hashlib.sha256()
    for key, tensor in sorted(sae.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@checked
@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A steering direction and its provenance.

    Attributes:
        vector: ``(d_model,)`` in the residual stream (``space="residual"``) or ``(d_sae,)``
            SAE feature activations (``space="sae"``).
        hook_name: the hook point it was read at and is added at (for SAE space: the SAE's).
        name: a label for tables and figures.
        space: ``"residual"`` or ``"sae"``.
        method: how it was built (``"mean_diff"``, ``"pca"``, ``"sae_mean_diff"``,
            ``"random"``, ``"decomposed"``, ...).
        model_id, position_rule, prompt_hash, n_positive, n_negative, seed: provenance.
        source_prompts: the prompts it was built from (kept out of held-out evaluation).
        sae_id: which SAE a feature-space vector belongs to (its card name, else class and decoder digest).
        sae_digest: a digest of that SAE's weights (``sae_digest``), recorded from the SAE it is
            built with and checked against every SAE it is given, card or no card.
        keep_error: SAE space only: splice with the SAE's reconstruction error kept.
        sae: the SAE object (SAE space only; not saved: pass it to ``load``).
    """

    vector: Float[Tensor, " d"]
    hook_name: str
    name: str = "vector"
    space: Space = "residual"
    method: str = "mean_diff"
    model_id: str = ""
    position_rule: str = "last"
    prompt_hash: str = ""
    n_positive: int = 0
    n_negative: int = 0
    seed: int | None = None
    source_prompts: tuple[str, ...] = ()
    sae_id: str | None = None
    keep_error: bool = True
    sae: Any = field(default=None, repr=False, compare=False)
    sae_digest: str | None = None

    def __post_init__(self) -> None:
        if self.vector.ndim != 1:
            raise ShapeError(f"a steering vector is 1-D; got shape {tuple(self.vector.shape)}")
        if not bool(torch.isfinite(self.vector).all()):
            raise InputError(f"steering vector {self.name!r} has non-finite entries (NaN or inf)")
        if self.space not in ("residual", "sae"):
            from tl_interp.errors import OptionError

            raise OptionError(f"space must be 'residual' or 'sae', not {self.space!r}")
        if self.space == "sae" and self.sae is not None:
            if self.vector.shape[0] != int(self.sae.cfg.d_sae):
                raise ShapeError(f"feature-space vector {self.name!r} has {self.vector.shape[0]} entries; "
                                 f"the SAE has d_sae={int(self.sae.cfg.d_sae)}")
            name, hook = sae_identity(self.sae)
            if self.sae_id is not None and self.sae_id != name:
                raise InputError(f"feature-space vector {self.name!r} belongs to the SAE {self.sae_id!r}; the SAE "
                                 f"given is {name!r} (same width is not the same features). Pass the vector's own SAE")
            if hook is not None and hook != self.hook_name:
                raise InputError(f"feature-space vector {self.name!r} is applied at {self.hook_name}; the SAE given reads "
                                 f"{hook}. Pass the SAE trained at {self.hook_name}")
            digest = sae_digest(self.sae)
            if self.sae_digest is not None and self.sae_digest != digest:
                raise InputError(f"feature-space vector {self.name!r} was built with SAE weights of digest "
                                 f"{self.sae_digest}; the SAE given ({name!r}) has weights of digest {digest}: a "
                                 "matching name is not the same features (a retrained or edited copy?). Pass the "
                                 "SAE the vector was built with")
            object.__setattr__(self, "sae_digest", digest)
        object.__setattr__(self, "vector", self.vector.detach())
        object.__setattr__(self, "source_prompts", tuple(self.source_prompts))

    def __repr__(self) -> str:
        where = f"{self.hook_name}" + (f", SAE {self.sae_id}" if self.space == "sae" else "")
        return (f"SteeringVector({self.name!r}: {self.method}, {self.space} space, norm {self.norm:.3g}, "
                f"at {where}, read at {self.position_rule})")

    @property
    def site(self) -> str:
        """The hook point (the old name of ``hook_name``)."""
        return self.hook_name

    @property
    def norm(self) -> float:
        return float(self.vector.double().norm())

    @property
    def layer(self) -> int | None:
        parts = self.hook_name.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else None

    def renamed(self, name: str) -> "SteeringVector":
        return replace(self, name=name)

    def scaled(self, scale: float) -> "SteeringVector":
        """The same vector times ``scale`` (the name records it)."""
        return replace(self, vector=self.vector * scale, name=f"{self.name} x{scale:g}")

    def cosine(self, other: "SteeringVector") -> float:
        """Cosine similarity with a vector of the same width."""
        if other.vector.shape != self.vector.shape:
            raise ShapeError(f"cannot compare vectors of widths {self.vector.shape[0]} and {other.vector.shape[0]}")
        a, b = self.vector.double(), other.vector.double()
        return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))

    def random_like(self, seed: int) -> "SteeringVector":
        """A random direction of the same norm, site and space (a control); seeded.

        Example:
            >>> v = SteeringVector(torch.ones(4), "blocks.0.hook_resid_pre", name="v")
            >>> r = v.random_like(0)
            >>> round(r.norm, 4), r.name, r.method
            (2.0, 'random(seed=0) ~ v', 'random')
        """
        g = torch.Generator().manual_seed(seed)
        direction = torch.randn(self.vector.shape[0], generator=g, dtype=torch.float64)
        vec = (direction / direction.norm() * self.norm).to(self.vector.dtype)
        return replace(self, vector=vec, name=f"random(seed={seed}) ~ {self.name}", method="random", seed=seed,
                       source_prompts=())

    def without_features(self, features: list[int] | tuple[int, ...]) -> "SteeringVector":
        """A feature-space vector with the given features set to zero (SAE space only)."""
        if self.space != "sae":
            raise ShapeError("without_features applies to SAE-space vectors; for a residual vector use "
                             "decompose(vector, sae, k).ablate(features)")
        vec = self.vector.clone()
        vec[list(features)] = 0
        return replace(self, vector=vec, name=f"{self.name} - {len(features)} features", method=f"{self.method}, ablated")

    def to_residual(self) -> "SteeringVector":
        """A feature-space vector decoded to the residual stream: ``dec(v) - dec(0)``.

        With the reconstruction error kept, adding this in the residual stream equals adding
        ``v`` in feature space (the decoder is affine).
        """
        if self.space == "residual":
            return self
        sae = self._need_sae()
        zero = torch.zeros_like(self.vector)
        with torch.no_grad():
            dec = sae.decode(self.vector.to(sae.W_dec.dtype)[None]) - sae.decode(zero.to(sae.W_dec.dtype)[None])
        return replace(self, vector=dec[0].detach().float(), space="residual", name=f"{self.name} (decoded)",
                       method=f"{self.method}, decoded", sae=None)

    def _need_sae(self) -> Any:
        if self.sae is None:
            raise ShapeError(f"feature-space vector {self.name!r} carries no SAE; pass sae= to SteeringVector.load "
                             "or build it with sae_contrast_vector")
        return self.sae

    def intervention(self, scale: float = 1.0, positions: Positions = "all", tokens: Any = None) -> Intervention:
        """The hook that applies ``scale * vector`` at the vector's site.

        Residual space: ``hooks.add``. SAE space: ``hooks.sae_splice`` with
        ``hooks.add_features`` (the error term kept unless ``keep_error=False``).

        Args:
            scale: the multiplier; 0 leaves the model exactly unchanged.
            positions: where to add it (``"all"`` real tokens, ``"last"``, ``From(k)``, indices ...);
                padding-aware selections follow each run's attention mask.
            tokens: deprecated and ignored (positions follow the run's padding by themselves).

        Example:
            >>> v = SteeringVector(torch.ones(8), "blocks.0.hook_resid_pre")
            >>> print(v.intervention(2.0, "last"))
            Intervention (1 hook):
              1. add 2 x vector (norm 2.83) (pos 'last') at blocks.0.hook_resid_pre
        """
        if tokens is not None:
            warnings.warn("SteeringVector.intervention(tokens=...) is no longer needed and is ignored",
                          TlInterpDeprecationWarning, stacklevel=2)
        if self.space == "residual":
            return hooks.add(self.hook_name, self.vector, scale=scale, positions=positions)
        return hooks.sae_splice(self._need_sae(), hooks.add_features(self.vector, scale), keep_error=self.keep_error,
                                where=self.hook_name, positions=positions)

    # -- persistence ---------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("hook_name", "name", "space", "method", "model_id", "position_rule",
                                              "prompt_hash", "n_positive", "n_negative", "seed", "sae_id",
                                              "keep_error", "sae_digest")} | {"source_prompts": list(self.source_prompts)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vector and its provenance to one checksummed safetensors file, atomically."""
        return save_checked(path, {"vector": self.vector}, {"tl_interp.steering_vector": json.dumps(self._meta())})

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, sae: Any = None) -> "SteeringVector":
        """Read a vector written by ``save``; feature-space vectors need their ``sae``.

        Raises:
            ArtifactError: the file is missing, empty, truncated, corrupt (checksum mismatch)
                or not a saved steering vector.

        Example:
            >>> import tempfile
            >>> v = SteeringVector(torch.arange(3.0), "blocks.1.hook_resid_post", name="demo")
            >>> w = SteeringVector.load(v.save(tempfile.mkdtemp() + "/v.safetensors"))
            >>> torch.equal(w.vector, v.vector), w.name, w.hook_name
            (True, 'demo', 'blocks.1.hook_resid_post')
        """
        fix = "save the vector again (it cannot be repaired)"
        tensors, header = load_checked(path, fix=fix)
        try:
            meta = json.loads(header["tl_interp.steering_vector"])
            meta["source_prompts"] = tuple(meta["source_prompts"])
            vector = tensors["vector"]
            if "site" in meta:  # files written before the vocabulary's hook_name
                meta["hook_name"] = meta.pop("site")
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"{str(path)!r} is a safetensors file but not a saved steering vector "
                                f"({type(err).__name__}: {err}); {fix}") from err
        if meta.get("space") == "sae" and meta.get("sae_digest") is None and sae is not None:
            warnings.warn(f"{str(path)!r} was saved before steering vectors recorded their SAE's weights: only the "
                          f"SAE's name ({meta.get('sae_id')!r}) can be checked, not its weights; save it again "
                          "(SteeringVector.load(...).save(...)) to record them", TlInterpWarning, stacklevel=2)
        return cls(vector=vector, sae=sae, **meta)
