"""Decomposing a residual steering vector into SAE decoder directions.

A steering vector is a *difference* of activations, not an activation, so it is not run
through the SAE's encoder (whose bias and threshold are tuned for activations). Instead it
is written as a sparse signed combination of decoder rows by orthogonal matching pursuit
(Pati, Rezaiifar & Krishnaprasad 1993): pick the decoder direction most aligned with what is
left, refit all picked coefficients by least squares, repeat ``k`` times. What the SAE cannot
explain with ``k`` features is the residual. Coefficients are in feature-activation units:
``vector ~= sum_i c_i * W_dec[i] + residual``, so the coefficients, placed in a ``(d_sae,)``
vector, are a feature-space steering vector that decodes to the explained part.
"""

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from tl_interp import compat
from tl_interp._checks import check_count, checked
from tl_interp.steering._build import sae_name
from tl_interp.errors import InputError, SelectionError, ShapeError
from tl_interp.steering._vector import SteeringVector, sae_identity

__all__ = ["decompose", "Decomposition"]


@dataclass(frozen=True, eq=False)
class Decomposition:
    """A residual vector as ``sum_i coefficients[i] * W_dec[features[i]] + residual``.

    Attributes:
        vector: the decomposed ``SteeringVector``.
        features: the chosen SAE features, in the order they were picked.
        coefficients: their least-squares coefficients (feature-activation units).
        residual: the part no chosen feature explains, ``(d_model,)``.
        explained: fraction of the vector's squared norm explained, ``1 - |residual|^2/|v|^2``.
        cosines: cosine of each chosen decoder direction with the vector.
        sae: the SAE.
    """

    vector: SteeringVector
    features: tuple[int, ...]
    coefficients: Tensor
    residual: Tensor
    explained: float
    cosines: Tensor
    sae: Any

    def __repr__(self) -> str:
        top = ", ".join(f"{f}:{c:+.3g}" for f, c in zip(self.features[:5], self.coefficients.tolist()))
        return (f"Decomposition({self.vector.name!r}: {len(self.features)} features explain "
                f"{self.explained:.1%}; top {top})")

    def _directions(self, features: list[int]) -> Tensor:
        return self.sae.W_dec.detach().double()[features]

    def _coef(self, feature: int) -> float:
        return float(self.coefficients[self.features.index(feature)])

    def _check(self, features: list[int] | tuple[int, ...]) -> list[int]:
        missing = [f for f in features if f not in self.features]
        if missing:
            raise SelectionError(f"features {missing} are not in the decomposition (it has {list(self.features)})")
        return list(features)

    def part(self, features: list[int] | tuple[int, ...]) -> Tensor:
        """``sum_{i in features} c_i W_dec[i]``, the part of the vector those features explain."""
        chosen = self._check(features)
        if not chosen:
            return torch.zeros_like(self.residual)
        coef = torch.tensor([self._coef(f) for f in chosen], dtype=torch.float64)
        return (coef @ self._directions(chosen)).to(self.residual.dtype)

    def ablate(self, features: list[int] | tuple[int, ...]) -> SteeringVector:
        """The vector with those features' contributions removed (the residual kept)."""
        chosen = self._check(features)
        vec = self.vector.vector - self.part(chosen)
        return replace(self.vector, vector=vec, name=f"{self.vector.name} - {len(chosen)} SAE features",
                       method=f"{self.vector.method}, features ablated")

    def keep(self, features: list[int] | tuple[int, ...]) -> SteeringVector:
        """Only those features' contributions (no residual): a residual-space vector."""
        chosen = self._check(features)
        return replace(self.vector, vector=self.part(chosen), name=f"{self.vector.name} [{len(chosen)} SAE features]",
                       method=f"{self.vector.method}, features kept")

    def sae_vector(self, features: list[int] | tuple[int, ...] | None = None, *,
                   keep_error: bool = True) -> SteeringVector:
        """The chosen coefficients as a feature-space vector ``(d_sae,)`` to add through the SAE."""
        chosen = list(self.features) if features is None else self._check(features)
        vec = torch.zeros(int(self.sae.cfg.d_sae), dtype=torch.float32)
        for f in chosen:
            vec[f] = self._coef(f)
        return replace(self.vector, vector=vec, space="sae", sae=self.sae, sae_id=sae_name(self.sae),
                       keep_error=keep_error, name=f"{self.vector.name} in SAE space ({len(chosen)} features)",
                       method=f"{self.vector.method}, decomposed")

    def to_frame(self) -> Any:
        """One row per chosen feature: rank, feature, coefficient, cosine with the vector."""
        import pandas as pd

        return pd.DataFrame({"rank": range(len(self.features)), "feature": list(self.features),
                             "coefficient": self.coefficients.tolist(), "cosine": self.cosines.tolist()})


@checked
def decompose(vector: SteeringVector, sae: Any, k: int = 20, *, tol: float = 1e-6) -> Decomposition:
    """Write a residual steering vector as ``k`` SAE decoder directions plus a residual.

    Args:
        vector: a residual-space vector read at (or applied to) the SAE's input space.
        sae: a sae-lens SAE whose ``d_in`` equals the vector's width.
        k: how many features to pick (fewer if the vector is explained to ``tol`` first).
        tol: stop once the residual's squared norm is below ``tol`` times the vector's.

    Returns:
        A ``Decomposition`` (features, coefficients, residual, explained fraction) that can
        ``ablate`` chosen features, ``keep`` them, or become a feature-space vector.

    Example:
        >>> from sae_lens import StandardSAE, StandardSAEConfig
        >>> sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=64))
        >>> v = SteeringVector(2 * sae.W_dec[5].detach() - sae.W_dec[40].detach(), "blocks.0.hook_resid_pre")
        >>> d = decompose(v, sae, k=2)
        >>> sorted(d.features), round(d.explained, 4)
        ([5, 40], 1.0)
    """
    compat.require_sae("steering.decompose")  # sae-lens requires TransformerLens < 4
    if vector.space != "residual":
        raise InputError(f"decompose takes a residual-space vector; {vector.name!r} is already in SAE space")
    sae_id, hook = sae_identity(sae)
    if hook is not None and hook != vector.hook_name:
        raise InputError(f"decompose: {vector.name!r} was read at {vector.hook_name}, the SAE {sae_id!r} reads {hook}; "
                         "decompose a vector with the SAE trained at its own site")
    check_count(k, "k", what="decompose")
    W = sae.W_dec.detach().double().cpu()  # (d_sae, d_in)
    if W.shape[1] != vector.vector.shape[0]:
        raise ShapeError(f"decompose: the SAE has d_in={W.shape[1]}, the vector has {vector.vector.shape[0]} entries")
    check_count(k, "k", high=W.shape[0], what="decompose", items="features (d_sae)")
    v = vector.vector.double().cpu()
    v2 = float(v @ v)
    if v2 == 0.0:
        raise InputError(f"decompose: {vector.name!r} is the zero vector")
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    chosen: list[int] = []
    residual, coef = v.clone(), torch.zeros(0, dtype=torch.float64)
    for _ in range(k):
        scores = (unit @ residual).abs()
        if chosen:
            scores[chosen] = -1.0
        chosen.append(int(scores.argmax()))
        basis = W[chosen]  # (m, d_in)
        coef = torch.linalg.lstsq(basis.T, v[:, None]).solution[:, 0]
        residual = v - coef @ basis
        if float(residual @ residual) <= tol * v2:
            break
    cosines = unit[chosen] @ v / v.norm()
    explained = 1.0 - float(residual @ residual) / v2
    return Decomposition(vector, tuple(chosen), coef.float(), residual.to(vector.vector.dtype), explained,
                         cosines.float(), sae)
